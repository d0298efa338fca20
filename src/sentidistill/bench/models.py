"""Model adapters for the benchmark: local HF models, teacher endpoints, and replayed predictions.

Every adapter offers ``generate(prompts, max_new_tokens)`` (greedy) and ``choose(prompts, words)``
(restricted-label scoring: which of the label words the model prefers). ``prompt_style`` says
whether it wants plain strings or chat messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from sentidistill.errors import InputError
from sentidistill.utils.io import stable_hash

log = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]


@dataclass
class Answer:
    """What an adapter answered: the text to parse, and per-label scores when it scored labels."""

    text: str
    scores: list[float | None] | None = None  # None for a label the model gave no score (outside a top-k)
    meta: dict[str, Any] = field(default_factory=dict)  # written to the predictions file (via, response...)


class ModelAdapter(Protocol):
    name: str
    prompt_style: Literal["plain", "chat"]
    n_params: int | None

    def generate(self, prompts: list[Prompt], max_new_tokens: int, *, task: str = "",
                 stop: list[str] | None = None) -> list[str]: ...

    def choose(self, prompts: list[Prompt], words: list[str], *, task: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[Answer]: ...


# -- local Hugging Face models --------------------------------------------------------------------------

class HFModelAdapter:
    """A local student of any kind (:func:`sentidistill.students.load_student`, or an already loaded one).

    ``choose`` asks the student for label scores (a generative student: the log-likelihood of each label
    word after the prompt, summed over its tokens, or of its first token only with ``first_token=True`` as
    the SentiBench reference code does); ``generate`` asks it for greedy text. Labels whose words share
    their first token (SST-5's ``very negative`` / ``very positive``) and label words that are prefixes of
    others are handled by the student (:meth:`sentidistill.students.hf.HFStudent.label_continuations`).
    """

    def __init__(
        self,
        model: str | Any,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        first_token: bool = False,
        device: str | None = None,
        kind: str = "auto",
        prompt_style: Literal["auto", "plain", "chat"] = "auto",
    ) -> None:
        import torch

        from sentidistill.students import Student, load_student

        if isinstance(model, Student):
            self.student = model
        else:
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self.student = load_student(str(model), kind, device=device)
        self.lm = self.student  # the name older callers use
        self.name = str(self.student.source)
        self.kind = self.student.kind
        self.tok = self.student.tokenizer
        self.model = self.student.model
        self.batch_size = batch_size
        self.first_token = first_token
        # Chat style renders messages with the tokenizer's chat template (instruct models). "auto" takes the
        # student kind's default (a causal model with a chat template is scored on the chat rendering its
        # ICL corpus was trained on).
        if prompt_style == "auto":
            prompt_style = self.student.default_prompt_style
        if prompt_style not in ("plain", "chat"):
            raise InputError("unknown prompt style", field="prompt_style", expected="auto | plain | chat",
                             got=prompt_style)
        self.prompt_style: Literal["plain", "chat"] = prompt_style
        self.n_params: int | None = self.student.n_params
        self.max_length = max_length or min(int(self.student.position_limit() or 1024), 4096)

    def fingerprint(self) -> dict[str, Any]:
        """What decides this adapter's answers (the bench runner's resume key): the source and a digest of
        the weights as loaded now (a checkpoint retrained in place gets a new digest), plus scoring options."""
        import torch

        h = hashlib.sha256()
        with torch.inference_mode():
            for pname, p in self.model.named_parameters():
                # Two float64 reductions per tensor: one pass over the weights, and any retraining moves them.
                h.update(f"{pname}:{tuple(p.shape)}:{p.dtype}:{float(p.sum(dtype=torch.float64))!r}:"
                         f"{float(torch.linalg.vector_norm(p, dtype=torch.float64))!r};".encode())
        return {"adapter": "hf", "source": self.name, "kind": self.kind, "weights": h.hexdigest()[:32],
                "first_token": self.first_token, "max_length": self.max_length, "prompt_style": self.prompt_style}

    # -- scoring ---------------------------------------------------------------------------------------
    def loglikelihood(self, prompts: list[Prompt], continuations: list[str],
                      n_tokens: list[int] | None = None) -> list[float]:
        """log P(continuation | prompt) for each pair (natural log, summed over its tokens).

        ``n_tokens``: per pair, how many of the continuation's first tokens are scored; default: all, or
        1 with ``first_token``."""
        import torch

        if len(prompts) != len(continuations) or (n_tokens is not None and len(n_tokens) != len(prompts)):
            raise ValueError("one continuation (and one n_tokens) per prompt")
        if n_tokens is None:
            n_tokens = [1 if self.first_token else 1 << 30] * len(prompts)
        out: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(prompts), self.batch_size):
                ps = [self.student.render(p) for p in prompts[i : i + self.batch_size]]
                out.extend(self.student.loglikelihood(ps, continuations[i : i + self.batch_size],
                                                      n_tokens=n_tokens[i : i + self.batch_size],
                                                      max_length=self.max_length))
        return out

    def choose(self, prompts: list[Prompt], words: list[str], *, task: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[Answer]:
        """Arg-max over the student's label scores (ties: the first label). ``rows`` (the task rows, with
        ``text``) are passed on for student kinds that score the raw text of a task."""
        texts = [str(r.get("text", "")) for r in rows] if rows is not None else None
        all_scores = self.student.label_scores(words, prompts=prompts, task=task or None, texts=texts,
                                               first_token=self.first_token, batch_size=self.batch_size,
                                               max_length=self.max_length, prompt_style=self.prompt_style,
                                               rows=rows)
        answers = []
        for scores in all_scores:
            best = max(range(len(words)), key=lambda j: scores[j])
            answers.append(Answer(text=words[best], scores=list(scores)))
        return answers

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, prompts: list[Prompt], max_new_tokens: int, *, task: str = "",
                 stop: list[str] | None = None) -> list[str]:
        """Greedy decoding, batched; returns only the new text (generation halts at a ``stop`` string)."""
        room = max(8, self.student.prompt_room(self.max_length, max_new_tokens))
        return self.student.generate(prompts, max_new_tokens, batch_size=self.batch_size, max_length=room,
                                     truncation_side="left", stop=stop)

    def close(self) -> None:
        pass


# -- teacher endpoints ----------------------------------------------------------------------------------

class TeacherAdapter:
    """Any teacher from :func:`sentidistill.teacher.build_teacher` (endpoint, llama.cpp, replay...).

    Restricted-label scoring generates a short answer with the top-k log-probabilities of each token and
    picks the best label read from the generated tokens and their alternatives (see
    :func:`label_scores_from_logprobs`; labels sharing a first token are told apart by the next ones);
    when none is read (a chat model that starts "The sentiment is ...", a reasoning model that thinks
    first, or a backend without log-probabilities) the generated text is parsed instead.

    A benchmark scores the model's first answer: while the adapter asks, the teacher's repair re-asks are
    off (an empty answer is scored as unparseable, not replaced by a second try). The adapter owns the
    teacher: :meth:`close` closes it.
    """

    prompt_style: Literal["plain", "chat"] = "chat"

    def __init__(self, teacher: Any, *, top_logprobs: int = 10, choose_max_tokens: int = 16,
                 name: str | None = None, n_params: int | None = None) -> None:
        if not 1 <= top_logprobs <= 20:
            raise InputError("top_logprobs out of range", field="top_logprobs", expected="1..20 (OpenAI's limit)",
                             got=top_logprobs)
        self.teacher = teacher
        self.top_logprobs = top_logprobs
        # Room for the fallback: "The sentiment of this sentence is negative." must fit.
        self.choose_max_tokens = choose_max_tokens
        self.name = name or str(getattr(teacher, "model_id", "teacher"))
        self.kind = "teacher"
        self.n_params = n_params
        self.errors = 0

    def fingerprint(self) -> dict[str, Any]:
        """What decides this adapter's answers (the bench runner's resume key)."""
        from sentidistill.teacher.restricted import supports_exact_scoring

        cfg = getattr(self.teacher, "cfg", None)
        return {"adapter": "teacher", "model": str(getattr(self.teacher, "model_id", self.name)),
                "backend": getattr(cfg, "kind", None), "top_logprobs": self.top_logprobs,
                "choose_max_tokens": self.choose_max_tokens, "prompt_style": self.prompt_style,
                "label_scoring": "exact" if supports_exact_scoring(self.teacher) else "top_logprobs"}

    def _requests(self, prompts: list[Prompt], max_tokens: int, task: str, logprobs: bool,
                  stop: list[str] | None = None) -> list[Any]:
        from sentidistill.core.records import SamplingParams, TeacherRequest

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=logprobs,
                                top_logprobs=self.top_logprobs if logprobs else 0, stop=tuple(stop or ()))
        reqs = []
        for p in prompts:
            messages = p if isinstance(p, list) else [{"role": "user", "content": p}]
            reqs.append(TeacherRequest(messages=messages, params=params, prompt_id=f"bench.{task or 'adhoc'}",
                                       prompt_version="1", metadata={"task": task}))
        return reqs

    def _ask(self, requests: list[Any]) -> list[Any]:
        """``teacher.generate`` with repairs switched off for the duration (the teacher may be shared)."""
        cfg = getattr(self.teacher, "cfg", None)
        if cfg is None or not getattr(cfg, "repair_attempts", 0):
            return self.teacher.generate(requests)
        self.teacher.cfg = cfg.model_copy(update={"repair_attempts": 0})
        try:
            return self.teacher.generate(requests)
        finally:
            self.teacher.cfg = cfg

    def _texts(self, responses: list[Any]) -> list[str]:
        out = []
        for r in responses:
            if r.status in ("error", "missing"):
                self.errors += 1
                log.warning("teacher answered with status %s: %s", r.status, (r.error or "")[:200])
            out.append(r.text or "")
        return out

    def generate(self, prompts: list[Prompt], max_new_tokens: int, *, task: str = "",
                 stop: list[str] | None = None) -> list[str]:
        return self._texts(self._ask(self._requests(prompts, max_new_tokens, task, False, stop)))

    def choose(self, prompts: list[Prompt], words: list[str], *, task: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[Answer]:
        """Per prompt: exact label log-likelihoods where the backend scores labels (llama.cpp in-process, see
        :mod:`sentidistill.teacher.restricted`), else the best label among the first content token's top-k,
        else the parsed text."""
        from sentidistill.teacher.restricted import score_labels, supports_exact_scoring, usable_scores

        if supports_exact_scoring(self.teacher):
            messages = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts]
            scores_arr, _, responses = score_labels(self.teacher, messages, words, prompt_id=f"bench.{task or 'adhoc'}",
                                                    metadata={"task": task})
            out = []
            for resp, sc in zip(responses, scores_arr, strict=True):
                if resp.status in ("error", "missing") or not np.isfinite(sc).any():
                    self.errors += 1
                    out.append(Answer(text="", meta={"via": "error", "response": resp.error or ""}))
                    continue
                best = int(np.argmax(sc))
                out.append(Answer(text=words[best], scores=[float(x) for x in sc], meta={"via": "exact"}))
            return out
        responses = self._ask(self._requests(prompts, self.choose_max_tokens, task, True))
        texts = self._texts(responses)
        answers = []
        for resp, text in zip(responses, texts, strict=True):
            scores, top = label_scores_from_logprobs(resp.logprobs or [], words)
            meta: dict[str, Any] = {"response": text, "top": [list(t) for t in top]}
            scored = [(s, j) for j, s in enumerate(scores) if s is not None]
            if usable_scores(scores):  # every label read at -inf says nothing: the text decides
                best = max(scored, key=lambda sj: sj[0])[1]  # ties: the first label
                answers.append(Answer(text=words[best], scores=scores, meta={"via": "logprobs", **meta}))
            else:
                answers.append(Answer(text=text, meta={"via": "text", **meta}))
        return answers

    def close(self) -> None:
        close = getattr(self.teacher, "close", None)
        if close is not None:
            close()


class CalibratedAdapter:
    """A model whose label scores are corrected by a per-task label prior (label-free calibration,
    :mod:`sentidistill.distill.calibration`): ``score_k - log prior_k``, arg-max. The prior of a task comes
    from the teacher's distribution over the unlabeled training pool (batch calibration) or content-free
    inputs (contextual calibration), never from gold labels. Tasks without a prior are answered as the
    inner model answers them. Same prompts as the inner adapter, so a cached teacher answers for free."""

    def __init__(self, inner: Any, log_priors: dict[str, list[float]], *, name: str | None = None) -> None:
        self.inner = inner
        self.log_priors = {k: [float(x) for x in v] for k, v in log_priors.items()}
        self.name = name or f"{getattr(inner, 'name', 'model')} (calibrated)"
        self.prompt_style = inner.prompt_style
        self.n_params = getattr(inner, "n_params", None)
        self.kind = getattr(inner, "kind", None)

    @property
    def errors(self) -> int:
        return int(getattr(self.inner, "errors", 0) or 0)

    def fingerprint(self) -> dict[str, Any]:
        from sentidistill.bench.runner import adapter_fingerprint

        return {"adapter": "calibrated", "inner": adapter_fingerprint(self.inner), "log_priors": self.log_priors}

    def generate(self, prompts: list[Prompt], max_new_tokens: int, *, task: str = "",
                 stop: list[str] | None = None) -> list[str]:
        return self.inner.generate(prompts, max_new_tokens, task=task, stop=stop)

    def choose(self, prompts: list[Prompt], words: list[str], *, task: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[Answer]:
        answers = self.inner.choose(prompts, words, task=task, rows=rows)
        prior = self.log_priors.get(task)
        if prior is None:
            return answers
        if len(prior) != len(words):
            raise InputError(f"calibration prior for task '{task}' has {len(prior)} labels, the task {len(words)}",
                             field="log_priors", expected=f"{len(words)} values")
        out = []
        for a in answers:
            if not a.scores or all(s is None or not math.isfinite(s) for s in a.scores):
                out.append(a)
                continue
            cal = [(-np.inf if s is None else float(s)) - p for s, p in zip(a.scores, prior, strict=True)]
            best = int(np.argmax(cal))
            out.append(Answer(text=words[best], scores=cal, meta={**a.meta, "calibrated": True}))
        return out

    def close(self) -> None:
        self.inner.close()


def label_scores_from_logprobs(logprobs: list[Any], words: list[str]) -> tuple[list[float | None], list[tuple[str, float]]]:
    """Label scores from a generated answer's per-token top-k (``TeacherResponse.logprobs``).

    The scores are :func:`sentidistill.teacher.label_scores.label_logprobs_from_top_logprobs` (the
    generated path is walked, so labels that share their first token, SST-5's ``very positive`` and
    ``very negative``, are told apart by the tokens after it). Returns the scores and, for the
    predictions file, the alternatives at the answer's first non-whitespace token.
    """
    from sentidistill.teacher.label_scores import label_logprobs_from_top_logprobs

    shown: list[tuple[str, float]] = []
    for tl in logprobs:
        shown = [(str(t), float(lp)) for t, lp in (tl.top or [])]
        if str(tl.token).strip():
            break
    return label_logprobs_from_top_logprobs(logprobs, words), shown


def first_token_label_scores(top: list[tuple[str, float]] | list[list[Any]], words: list[str]) -> list[float | None]:
    """Per label word, the log-probability read from one position's alternatives alone (no generated path).

    An alternative counts for a word when, stripped and case-folded, it completes that word or starts it
    and no other (``"non"`` identifies ``non-irony``; ``"very"``, shared by ``very negative`` and
    ``very positive``, identifies neither); several alternatives for one word add up (log-sum-exp).
    """
    from sentidistill.core.records import TokenLogprob
    from sentidistill.teacher.label_scores import label_logprobs_from_top_logprobs

    position = TokenLogprob(token="", logprob=0.0, top=[(str(t), float(lp)) for t, lp in top])
    return label_logprobs_from_top_logprobs([position], words)


# -- replay ---------------------------------------------------------------------------------------------

def prompt_key(prompt: Prompt) -> str:
    return stable_hash(prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False), 32)


class ReplayAdapter:
    """Answers from earlier predictions (``predictions/*.jsonl`` of a run), matched by the exact prompt.

    Rescoring a run with other parsers or metrics costs no model calls. A prompt that is not in the
    files raises :class:`InputError` (the shots, seeds, limit or task version must be the same).
    """

    def __init__(self, path: str | Path, *, name: str | None = None) -> None:
        from sentidistill.utils.io import read_jsonl

        path = Path(path)
        files = sorted(path.glob("**/*.jsonl")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise InputError("no predictions to replay", path=path, expected="a predictions JSONL file or folder")
        self.answers: dict[str, str] = {}
        for f in files:
            for row in read_jsonl(f):
                if "prompt" not in row or "raw" not in row:
                    raise InputError("not a predictions row", path=f, expected="fields 'prompt' and 'raw'")
                self.answers[prompt_key(row["prompt"])] = str(row["raw"])
        self.name = name or f"replay:{path.name}"
        self.n_params: int | None = None
        meta = (path if path.is_dir() else path.parent).parent / "metrics.json"
        if meta.is_file():
            info = json.loads(meta.read_text(encoding="utf-8")).get("model", {})
            self.n_params = info.get("params")
            self.name = name or info.get("name") or self.name
        self.prompt_style: Literal["plain", "chat"] = "plain"
        first_prompt = next(iter(self._first_prompts(files)), None)
        if isinstance(first_prompt, list):
            self.prompt_style = "chat"
        self.path = path

    @staticmethod
    def _first_prompts(files: list[Path]):
        from sentidistill.utils.io import read_jsonl

        for f in files:
            for row in read_jsonl(f):
                yield row.get("prompt")
                return

    def fingerprint(self) -> dict[str, Any]:
        files = sorted(self.path.glob("**/*.jsonl")) if self.path.is_dir() else [self.path]
        return {"adapter": "replay", "path": str(self.path.resolve()),
                "files": [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]}

    def _lookup(self, prompts: list[Prompt]) -> list[str]:
        out = []
        for p in prompts:
            key = prompt_key(p)
            if key not in self.answers:
                raise InputError("a prompt has no recorded answer", path=self.path,
                                 expected="predictions made with the same tasks, shots, seeds and limit")
            out.append(self.answers[key])
        return out

    def generate(self, prompts: list[Prompt], max_new_tokens: int, *, task: str = "",
                 stop: list[str] | None = None) -> list[str]:
        return self._lookup(prompts)

    def choose(self, prompts: list[Prompt], words: list[str], *, task: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[Answer]:
        return [Answer(text=t, meta={"via": "replay"}) for t in self._lookup(prompts)]

    def close(self) -> None:
        pass


def student_adapter(model: str | Path, **kwargs: Any) -> Any:
    """:class:`HFModelAdapter` for the student ``model`` (``kwargs`` go to it), wrapped in a
    :class:`CalibratedAdapter` when the model folder holds its own label priors
    (:mod:`sentidistill.students.label_priors`, written by ``sentidistill.distill.student_calibration``):
    a calibrated student is benchmarked as it was calibrated. The priors were estimated with the prompts
    their file names (``shots``); they are applied to the task names they list, at any shots."""
    from sentidistill.students.label_priors import log_priors_by_task, read_label_priors

    adapter = HFModelAdapter(str(model), **kwargs)
    priors = read_label_priors(model) if Path(str(model)).is_dir() else None
    if priors is None:
        return adapter
    log.info("%s: applying its label priors (%s calibration, %d tasks)", model, priors.get("method"),
             len(priors["tasks"]))
    return CalibratedAdapter(adapter, log_priors_by_task(priors))


def build_adapter(spec: str, *, cache_path: str | Path | None = None, batch_size: int = 8,
                  first_token: bool = False, prompt_style: str = "auto", **kwargs: Any) -> Any:
    """``openai:MODEL@BASE_URL`` → TeacherAdapter; ``replay:FILE`` → ReplayAdapter; else an HF model spec.

    ``prompt_style`` (HF models): ``auto`` = chat for a causal model with a chat template, else plain."""
    if spec.startswith("replay:"):
        return ReplayAdapter(spec.split(":", 1)[1])

    if spec.startswith("openai:"):
        from sentidistill.config import TeacherConfig
        from sentidistill.teacher import build_teacher

        body = spec.split(":", 1)[1]
        model, _, base_url = body.partition("@")
        if not model:
            raise InputError("openai spec needs a model name", field="--model", expected="openai:MODEL@BASE_URL",
                             got=spec)
        cfg = TeacherConfig(kind="openai", model=model, base_url=base_url or None, **kwargs)
        return TeacherAdapter(build_teacher(cfg, cache_path, progress=False), name=spec)
    return student_adapter(spec, batch_size=batch_size, first_token=first_token, prompt_style=prompt_style)
