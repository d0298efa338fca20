"""Restricted scoring through any teacher: the log-likelihood of each label word as the answer to a prompt.

This is what a classification benchmark of the teacher and the soft labels of a distillation corpus both
need: ``log P(label_k | prompt)`` for the K label words, renormalised over the label set (the "restricted"
protocol of SentiBench and of Zhang et al. 2025). Three ways, best first, chosen per backend:

1. **Exact** (``backend.supports_label_scoring``: llama.cpp in-process): the request carries
   ``params.score_labels`` and the backend returns the summed token log-probs of each label continuation.
   Labels that share their first token (SST-5 ``very negative`` / ``very positive``) are told apart by their
   later tokens, and multi-token labels are scored whole.
2. **Top-k log-probs of a generated answer** (OpenAI-compatible endpoints): the teacher generates a short
   answer greedily with its top-``k`` alternatives at each position; each label's log-prob is read along
   the generated path (:func:`sentidistill.teacher.label_scores.label_logprobs_from_top_logprobs`). A label
   outside every top-k gets ``-inf``.
3. **The generated label** when the endpoint returns no log-probs: the parsed answer gets probability 1
   (log 0), the others ``-inf``; an answer that names no label gives a row of NaN, which callers count and
   drop.

Every request goes through :class:`~sentidistill.teacher.runner.CachedTeacher`, so scores are cached,
resumable and budgeted like every other teacher call. Case variants of each word (``negative`` /
``Negative``) are scored and summed (log-sum-exp), since chat models often capitalise the answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sentidistill.core.records import SamplingParams, TeacherRequest, TeacherResponse, parse_logprob

Messages = list[dict[str, str]]


def case_variants(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """Each word and its capitalised form (when different), flattened, with the index of the word each
    variant belongs to: ``["negative", "positive"]`` -> ``(["negative", "Negative", "positive",
    "Positive"], [0, 0, 1, 1])``."""
    flat: list[str] = []
    owner: list[int] = []
    for j, w in enumerate(words):
        for v in dict.fromkeys([w, w[:1].upper() + w[1:]]):
            flat.append(v)
            owner.append(j)
    return flat, owner


def supports_exact_scoring(teacher: Any) -> bool:
    """Whether ``teacher`` (a CachedTeacher or a backend) scores label continuations exactly."""
    backend = getattr(teacher, "backend", teacher)
    return bool(getattr(backend, "supports_label_scoring", False))


def label_requests(
    teacher: Any, prompts: Sequence[Messages], words: Sequence[str], *, prompt_id: str, prompt_version: str = "1",
    top_logprobs: int = 20, max_tokens: int = 8, metadata: dict[str, Any] | None = None,
) -> list[TeacherRequest]:
    """The requests that score ``words`` after each prompt, for this teacher's backend (see module doc)."""
    if supports_exact_scoring(teacher):
        flat, _ = case_variants(words)
        params = SamplingParams(max_tokens=1, temperature=0.0, score_labels=tuple(flat))
    else:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=True, top_logprobs=top_logprobs)
    return [TeacherRequest(messages=list(p), params=params, prompt_id=prompt_id, prompt_version=prompt_version,
                           metadata=dict(metadata or {})) for p in prompts]


def usable_scores(scores: Sequence[float | None]) -> bool:
    """Whether a row of label log-probs (nats, ``-inf`` = probability 0, None/NaN = unknown) can be
    renormalised over the labels: no label unknown-as-NaN and at least one label with a finite score. The
    one test every reader of endpoint log-probs applies before trusting a row (else: the text fallback)."""
    vals = [-math.inf if s is None else float(s) for s in scores]
    return bool(vals) and not any(math.isnan(v) for v in vals) and any(math.isfinite(v) for v in vals)


def response_label_logprobs(
    resp: TeacherResponse, words: Sequence[str], parse: Callable[[str], int | None] | None = None,
) -> tuple[list[float], str]:
    """Per label word, ``log P(word | prompt)`` (nats; ``-inf`` when unreadable) from one response, and how it
    was read: ``exact`` | ``logprobs`` | ``text`` | ``none`` (then every entry is NaN).

    ``parse`` maps a generated answer to a label index (used only when there are no usable log-probs).
    Log-probs that are no use (:func:`usable_scores` false: every label ``-inf``, or an exact score that is
    NaN) fall back to the text exactly as a response without log-probs does, and the row says ``text``
    (or ``none``), never ``exact``/``logprobs``: stats count what the row was really read from."""
    k = len(words)
    if resp.status in ("error", "missing", "truncated"):
        return [math.nan] * k, "none"
    if resp.label_logprobs is not None:
        flat, owner = case_variants(words)
        if len(resp.label_logprobs) != len(flat):
            return [math.nan] * k, "none"
        groups: list[list[float]] = [[] for _ in range(k)]
        for lp, j in zip(resp.label_logprobs, owner, strict=True):
            groups[j].append(parse_logprob(lp))
        # np.logaddexp(-inf, -inf) is -inf (never NaN); a NaN variant leaves its label unknown.
        with np.errstate(invalid="ignore"):
            exact = [float(np.logaddexp.reduce(g)) for g in groups]
        if usable_scores(exact):
            return exact, "exact"
    elif resp.logprobs:
        from sentidistill.teacher.label_scores import label_logprobs_from_top_logprobs

        scores = label_logprobs_from_top_logprobs(resp.logprobs, list(words))
        row = [(-math.inf if s is None else float(s)) for s in scores]
        if usable_scores(row):
            return row, "logprobs"
    j = parse(resp.text) if parse is not None and resp.text else None
    if j is None:
        return [math.nan] * k, "none"
    return [0.0 if i == j else -math.inf for i in range(k)], "text"


def score_labels(
    teacher: Any, prompts: Sequence[Messages], words: Sequence[str], *, prompt_id: str, prompt_version: str = "1",
    parse: Callable[[str], int | None] | None = None, top_logprobs: int = 20, metadata: dict[str, Any] | None = None,
) -> tuple[np.ndarray, list[str], list[TeacherResponse]]:
    """Label log-likelihoods for every prompt: ``([N, K] float64 nats, how each row was read, responses)``.

    Rows read ``none`` are NaN (the teacher failed or named no label); callers count and drop them.
    Raises what ``teacher.generate`` raises (``BudgetExceeded``, a fatal backend error)."""
    reqs = label_requests(teacher, prompts, words, prompt_id=prompt_id, prompt_version=prompt_version,
                          top_logprobs=top_logprobs, metadata=metadata)
    responses = teacher.generate(reqs)
    out = np.full((len(prompts), len(words)), np.nan)
    via: list[str] = []
    for i, resp in enumerate(responses):
        row, how = response_label_logprobs(resp, words, parse)
        out[i] = row
        via.append(how)
    return out, via, responses
