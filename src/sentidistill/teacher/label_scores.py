"""Label log-probabilities from an endpoint's generated tokens and their top-k alternatives.

One function, :func:`label_logprobs_from_top_logprobs`, used by the benchmark's restricted scoring
(``bench.models.label_scores_from_logprobs``) and by soft labels from a teacher's answers.

Why a walk and not just the first token: label words may share their first token. SST-5's
``very negative, negative, neutral, positive, very positive`` all but tie on a first token ``very``;
reading only the first position scores ``very positive`` by whichever label happens to be an alternative
there (issue 15: a teacher that wrote ``very positive`` was scored ``positive``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sentidistill.core.records import parse_logprob

if TYPE_CHECKING:
    from sentidistill.core.records import TokenLogprob


def _norm(text: str) -> str:
    """Case-folded, with runs of whitespace as one space (leading whitespace is removed by the caller)."""
    return " ".join(text.casefold().split()) + (" " if text[-1:].isspace() and text.strip() else "")



def _reads(cand: str, target: str) -> str | None:
    """How ``cand`` (a normalised answer prefix) relates to a label ``target``: ``"complete"`` (the label,
    possibly followed by a non-word character such as ``.``, a space or a newline), ``"partial"`` (a
    proper prefix of the label), else None."""
    if cand == target:
        return "complete"
    if cand.startswith(target) and not cand[len(target)].isalnum() and cand[len(target)] not in "-_'#":
        return "complete"
    if target.startswith(cand) and len(cand) < len(target):
        return "partial"
    return None


def _owner(cand: str, targets: Sequence[str], consistent: Sequence[int]) -> int | None:
    """The one label ``cand`` identifies among the ``consistent`` ones, or None (none, or several)."""
    complete = [j for j in consistent if _reads(cand, targets[j]) == "complete"]
    partial = [j for j in consistent if _reads(cand, targets[j]) == "partial"]
    if len(complete) + len(partial) == 1:
        return (complete or partial)[0]
    if complete and not partial:  # "very positive." completes both "very positive" and ... the longest
        return max(complete, key=lambda j: len(targets[j]))
    return None


def _logsumexp(values: list[float]) -> float:
    """``log(sum(exp(v)))`` of log-probs in ``[-inf, 0]``: ``-inf`` entries add nothing, all ``-inf`` gives
    ``-inf`` (never NaN). Callers leave NaN (unknown) readings out before."""
    m = max(values)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(v - m) for v in values))


def label_logprobs_from_top_logprobs(logprobs: Sequence[TokenLogprob], words: Sequence[str]) -> list[float | None]:
    """Per label word, the log-probability (natural log, nats) that the answer is that word.

    ``logprobs``: the generated tokens, in order, each with ``.token`` (str), ``.logprob`` (float, nats)
    and ``.top`` (list of ``(token text, logprob)``, the top-k alternatives at that position, best first;
    the generated token is usually among them) - a ``TeacherResponse.logprobs`` list of
    :class:`~sentidistill.core.records.TokenLogprob`. ``words``: the label words (L of them).
    Returns a list of length L: a float <= 0 (``-inf`` when the server gave the label probability 0), None
    where the label cannot be read from the tokens, or NaN where the server named the label with an unknown
    log-prob (callers then treat the row as unusable: ``restricted.usable_scores``).

    Non-finite log-probs (read with :func:`sentidistill.core.records.parse_logprob`): an alternative at
    ``-inf`` (``-Infinity``, ``"-inf"``) is a reading with probability 0; an alternative at NaN/``null``
    makes its label NaN; a generated token at NaN makes the labels it may be spelling NaN and ends the walk
    (what follows has an unknown probability).

    The walk: the generated tokens spell a path. Matching is case-insensitive, runs of whitespace count as
    one space, and leading whitespace is looked through (a chat model that opens with ``"\\n"``).

    - A label the path spells out (the whole word, then the end of the answer or a non-word character)
      gets the sum of the path's log-probs up to the token that completes it.
    - At each position ``i`` while the path so far is a proper prefix of a label, every alternative token
      (other than the generated one) that, appended to the path, completes a label or starts exactly one
      label, gives that label ``(sum of the path's log-probs before i) + (the alternative's log-prob)``.
      An alternative that starts several labels (``"very"`` for ``very negative``/``very positive``)
      identifies none.
    - A label that is a prefix of another (``negative`` / ``negative-ish``) is read from the path only
      once the answer ends or a non-word character follows it; an alternative that could still go on to
      the longer label identifies neither.
    - The walk stops at the first position where the path is no prefix of any label (``"The sentiment
      is ..."``); later alternatives are not read. When the tokens run out inside a label's spelling
      (``"ne"`` cut off by ``max_tokens``), a path that starts exactly one label reads as that label.

    Several readings of one label (``"positive"`` and ``"Positive"`` as alternatives at one position, or at
    two positions) are different token sequences, so their probabilities add: the result is
    ``log(sum(exp(reading)))``, a lower bound on the label's probability (only the top-k is visible).

    Example (issue 15, SST-5, the model wrote ``very positive``)::

        pos 0: generated "very" -0.11; top: very -0.11, positive -2.42, Very -3.70, neutral -4.90,
               negative -6.30
        pos 1: generated " positive" -0.02
        words: very negative, negative, neutral, positive, very positive
        -> [None, -6.30, -4.90, -2.42, -0.13]   ("Very" starts two labels: it counts for neither)

    Restricted scoring picks ``very positive`` (-0.11 + -0.02).
    """
    targets = [_norm(w.strip()).strip() if w.strip() else "" for w in words]
    readings: list[list[float]] = [[] for _ in words]
    pending: dict[int, float] = {}  # spelled by the path, but a longer label could still follow
    unknown: set[int] = set()  # labels read at a NaN log-prob: their probability is not known
    path = ""  # the generated text so far (raw), leading whitespace included
    path_lp = 0.0
    for tl in logprobs:
        gen = str(getattr(tl, "token", ""))
        prefix = _norm(path.lstrip()) if path.strip() else ""
        consistent = [j for j, t in enumerate(targets) if t and t.startswith(prefix) and len(t) > len(prefix)]
        if not consistent:
            break
        seen = {gen}
        for alt, lp in getattr(tl, "top", None) or []:
            alt = str(alt)
            if alt in seen:
                continue
            seen.add(alt)
            text = (path + alt).lstrip()
            cand = _norm(text) if text else ""
            if len(cand.rstrip()) <= len(prefix.rstrip()):
                continue  # adds nothing but whitespace
            j = _owner(cand, targets, consistent)
            lp = parse_logprob(lp)
            if j is not None and math.isnan(lp):
                unknown.add(j)  # the server had this label but not its probability
            elif j is not None:
                readings[j].append(path_lp + lp)
        gen_lp = parse_logprob(getattr(tl, "logprob", 0.0))
        if math.isnan(gen_lp):
            # The path's probability is unknown from here on: the labels it may be spelling are unknown, and
            # nothing further along it can be read (a label already spelled keeps its reading).
            text = (path + gen).lstrip()
            cand = _norm(text) if text else ""
            unknown.update(j for j in consistent if cand.strip() and _reads(cand, targets[j]) is not None)
            break
        path += gen
        path_lp += gen_lp
        spelled = _norm(path.lstrip()) if path.strip() else ""
        if not spelled:
            continue
        for j in list(pending):
            if _reads(spelled, targets[j]) != "complete":
                del pending[j]  # "negative" went on as "negative-ish"
        for j in consistent:
            if _reads(spelled, targets[j]) == "complete":
                pending.setdefault(j, path_lp)
        still_partial = [k for k, t in enumerate(targets) if t and _reads(spelled, t) == "partial"]
        for j in list(pending):
            if not any(targets[k].startswith(targets[j]) for k in still_partial):
                readings[j].append(pending.pop(j))
    else:
        # The tokens ran out (max_tokens) inside a label's spelling: a prefix that starts one label only
        # reads as that label, as an alternative would.
        spelled = _norm(path.lstrip()) if path.strip() else ""
        starts = [j for j, t in enumerate(targets) if spelled and j not in pending and _reads(spelled, t) == "partial"]
        if len(starts) == 1 and not pending:
            readings[starts[0]].append(path_lp)
    for j, lp in pending.items():  # the answer ended right after the label
        readings[j].append(lp)
    return [math.nan if j in unknown else _logsumexp(r) if r else None for j, r in enumerate(readings)]
