"""Model adapters for the benchmark: local HF models, teacher endpoints, and replayed predictions.

Every adapter offers ``generate(prompts, max_new_tokens)`` (greedy) and ``choose(prompts, words)``
(restricted-label scoring: which of the label words the model prefers). ``prompt_style`` says
whether it wants plain strings or chat messages.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
    """A seq2seq or causal LM from :func:`sentidistill.modeling.load_model` (or an already loaded one).

    ``loglikelihood`` sums the log-probabilities of the whole continuation; ``first_token=True`` scores
    only its first token, as the SentiBench reference code does. In :meth:`choose`, labels whose words
    share their first token (SST-5's ``very negative`` / ``very positive``) would tie there, so each label
    is scored up to its first token that no other label shares; and when one label word is a prefix of
    another (``negative`` / ``negative-ish``), every label is scored with the end of the answer after it
    (the end-of-sequence token, or a newline for plain causal prompts), else the shorter one always wins.
    """

    def __init__(
        self,
        model: str | Any,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        first_token: bool = False,
        device: str | None = None,
        kind: Literal["auto", "seq2seq", "causal"] = "auto",
        prompt_style: Literal["auto", "plain", "chat"] = "auto",
    ) -> None:
        import torch

        from sentidistill.modeling import LoadedModel, load_model

        if isinstance(model, LoadedModel):
            self.lm = model
        else:
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            self.lm = load_model(str(model), kind, device=device)
        self.name = str(self.lm.source)
        self.kind = self.lm.kind
        self.tok = self.lm.tokenizer
        self.model = self.lm.model
        self.batch_size = batch_size
        self.first_token = first_token
        # Chat style renders messages with the tokenizer's chat template (instruct models). "auto" picks chat
        # for a causal model whose tokenizer has a template: the ICL corpus is rendered the same way for
        # training (train.collators.source_text), so a distilled student is scored on the prompts it learned.
        if prompt_style == "auto":
            prompt_style = "chat" if self.kind == "causal" and getattr(self.tok, "chat_template", None) else "plain"
        if prompt_style not in ("plain", "chat"):
            raise InputError("unknown prompt style", field="prompt_style", expected="auto | plain | chat",
                             got=prompt_style)
        self.prompt_style: Literal["plain", "chat"] = prompt_style
        self.n_params: int | None = sum(p.numel() for p in self.model.parameters())
        cfg = getattr(self.model, "config", None)
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(getattr(cfg, "encoder", None),
                                                                        "max_position_embeddings", None)
        self.max_length = max_length or min(int(limit or 1024), 4096)

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

    # -- helpers -------------------------------------------------------------------------------------
    def _render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def _encode(self, text: str, special: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=special)["input_ids"])

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
                ps = [self._render(p) for p in prompts[i : i + self.batch_size]]
                cs = continuations[i : i + self.batch_size]
                ns = n_tokens[i : i + self.batch_size]
                out.extend(self._ll_causal(ps, cs, ns) if self.kind == "causal" else self._ll_seq2seq(ps, cs, ns))
        return out

    def _cont_ids(self, continuation: str) -> list[int]:
        """The continuation's token ids as :meth:`loglikelihood` scores them."""
        return self._encode(continuation if self.kind == "causal" else continuation.strip(), False)

    def _ll_causal(self, prompts: list[str], conts: list[str], n_tokens: list[int]) -> list[float]:
        import torch

        seqs, n_cont = [], []
        for p, c, n in zip(prompts, conts, n_tokens, strict=True):
            ctx = self._encode(p, True)
            cont = self._cont_ids(c)[:n]
            ctx = ctx[-max(1, self.max_length - len(cont)) :]  # keep the end of the prompt (the query)
            seqs.append(ctx + cont)
            n_cont.append(len(cont))
        width = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        dev = self.lm.device
        # Left padding puts every continuation at the right edge, so only the last positions need logits.
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=dev)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(n_cont) + 1
        try:
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
        except TypeError:  # models without logits_to_keep
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        logits = logits[:, -keep:, :].float()
        logp = torch.log_softmax(logits[:, :-1, :], dim=-1)  # position j predicts token j+1
        scores = []
        for b, n in enumerate(n_cont):
            targets = ids[b, width - n :]
            rows = logp[b, keep - 1 - n :, :]
            scores.append(float(rows.gather(-1, targets.unsqueeze(-1)).sum()))
        return scores

    def _ll_seq2seq(self, prompts: list[str], conts: list[str], n_tokens: list[int]) -> list[float]:
        import torch

        old_side = self.tok.truncation_side
        self.tok.truncation_side = "left"  # keep the query, drop the oldest demonstrations
        enc = self.tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        self.tok.truncation_side = old_side
        labels_list = [self._cont_ids(c)[:n] for c, n in zip(conts, n_tokens, strict=True)]
        width = max(len(x) for x in labels_list)
        labels = torch.tensor([x + [-100] * (width - len(x)) for x in labels_list])
        dev = self.lm.device
        out = self.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev),
                         labels=labels.to(dev))
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        safe = labels.clamp(min=0).to(dev)
        tok_lp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * (labels != -100).to(dev)
        return [float(x) for x in tok_lp.sum(-1)]

    def label_continuations(self, words: list[str]) -> tuple[list[str], list[int]]:
        """The text scored for each label word and how many of its tokens are scored (see the class doc)."""
        sep = " " if self.kind == "causal" and self.prompt_style == "plain" else ""
        folded = [w.strip().casefold() for w in words]
        nested = any(a != b and b.startswith(a) for a in folded for b in folded)
        end = ""
        if nested:  # "negative" vs "negative-ish": score the end of the answer too
            end = "\n" if self.kind == "causal" and self.prompt_style == "plain" else (self.tok.eos_token or "")
        conts = [sep + w + end for w in words]
        ids = [self._cont_ids(c) for c in conts]
        if not self.first_token:
            return conts, [len(x) for x in ids]
        lengths = []
        for j, a in enumerate(ids):
            shared = 0
            for k, b in enumerate(ids):
                if k != j:
                    m = 0
                    while m < min(len(a), len(b)) and a[m] == b[m]:
                        m += 1
                    shared = max(shared, m)
            lengths.append(max(1, min(len(a), shared + 1)))  # up to the first token no other label shares
        return conts, lengths

    def choose(self, prompts: list[Prompt], words: list[str], *, task: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[Answer]:
        """Arg-max over the label words' log-likelihood (ties: the first label)."""
        conts, lengths = self.label_continuations(words)
        flat_p = [p for p in prompts for _ in words]
        ll = self.loglikelihood(flat_p, conts * len(prompts), lengths * len(prompts))
        answers = []
        for i in range(len(prompts)):
            scores = ll[i * len(words) : (i + 1) * len(words)]
            best = max(range(len(words)), key=lambda j: scores[j])
            answers.append(Answer(text=words[best], scores=scores))
        return answers

    # -- generation ------------------------------------------------------------------------------------
    def generate(self, prompts: list[Prompt], max_new_tokens: int, *, task: str = "",
                 stop: list[str] | None = None) -> list[str]:
        """Greedy decoding, batched; returns only the new text (generation halts at a ``stop`` string)."""
        import torch

        out: list[str] = []
        old_side = self.tok.truncation_side
        self.tok.truncation_side = "left"
        try:
            with torch.inference_mode():
                for i in range(0, len(prompts), self.batch_size):
                    texts = [self._render(p) for p in prompts[i : i + self.batch_size]]
                    room = self.max_length - (max_new_tokens if self.kind == "causal" else 0)
                    enc = self.tok(texts, return_tensors="pt", padding=True, truncation=True,
                                   max_length=max(8, room)).to(self.lm.device)
                    gen = self.model.generate(
                        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                        pad_token_id=self.tok.pad_token_id,
                        **({"stop_strings": stop, "tokenizer": self.tok} if stop else {}),
                    )
                    if self.kind == "causal":
                        gen = gen[:, enc["input_ids"].shape[1] :]
                    out.extend(self.tok.batch_decode(gen, skip_special_tokens=True))
        finally:
            self.tok.truncation_side = old_side
        return out

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
        from sentidistill.teacher.types import SamplingParams, TeacherRequest

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
        from sentidistill.teacher.restricted import score_labels, supports_exact_scoring

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
            if scored:
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
            if not a.scores or all(s is None for s in a.scores):
                out.append(a)
                continue
            cal = [(-np.inf if s is None else float(s)) - p for s, p in zip(a.scores, prior, strict=True)]
            best = int(np.argmax(cal))
            out.append(Answer(text=words[best], scores=cal, meta={**a.meta, "calibrated": True}))
        return out

    def close(self) -> None:
        self.inner.close()


class ClassifierAdapter:
    """A ``classifier`` student (:mod:`sentidistill.students.classifier`) on the benchmark: class
    probabilities from the raw rows (no prompt, no generation). A task it was not trained on is answered by
    the head whose label set the task's labels map onto (or ``head``)."""

    prompt_style: Literal["plain", "chat"] = "plain"

    def __init__(self, path: str | Path, *, head: str | None = None, batch_size: int = 64,
                 name: str | None = None) -> None:
        from sentidistill.students.classifier import load_classifier

        self.path = Path(path)
        self.model, self.tok = load_classifier(self.path)
        self.name = name or str(path)
        self.kind = "classifier"
        self.head = head
        self.batch_size = batch_size
        self.n_params: int | None = sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> dict[str, Any]:
        weights = self.path / "model.safetensors"
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:32] if weights.is_file() else None
        return {"adapter": "classifier", "path": str(self.path.resolve()), "weights": digest, "head": self.head}

    def generate(self, prompts: list[Prompt], max_new_tokens: int, *, task: str = "",
                 stop: list[str] | None = None) -> list[str]:
        raise InputError(f"the classifier student cannot generate (task '{task}')", field="scoring",
                         expected="restricted scoring of a classification task")

    def choose(self, prompts: list[Prompt], words: list[str], *, task: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[Answer]:
        from sentidistill.students.classifier import classifier_input

        if rows is None:
            raise InputError("the classifier student scores rows, not prompts", field="rows",
                             expected="the benchmark rows (text, target)")
        probs = self.model.predict_proba(self.tok, task, [classifier_input(r) for r in rows], labels=words,
                                         head=self.head, batch_size=self.batch_size)
        with np.errstate(divide="ignore"):
            logp = np.log(probs)
        return [Answer(text=words[int(np.argmax(p))], scores=[float(x) for x in lp])
                for p, lp in zip(probs, logp, strict=True)]

    def close(self) -> None:
        pass


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
    from sentidistill.teacher.label_scores import label_logprobs_from_top_logprobs
    from sentidistill.teacher.types import TokenLogprob

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


def build_adapter(spec: str, *, cache_path: str | Path | None = None, batch_size: int = 8,
                  first_token: bool = False, prompt_style: str = "auto", **kwargs: Any) -> Any:
    """``openai:MODEL@BASE_URL`` → TeacherAdapter; ``replay:FILE`` → ReplayAdapter; else an HF model spec.

    ``prompt_style`` (HF models): ``auto`` = chat for a causal model with a chat template, else plain."""
    if spec.startswith("replay:"):
        return ReplayAdapter(spec.split(":", 1)[1])
    from sentidistill.students.classifier import is_classifier_checkpoint

    if is_classifier_checkpoint(spec):
        return ClassifierAdapter(spec, batch_size=max(batch_size, 32))
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
    return HFModelAdapter(spec, batch_size=batch_size, first_token=first_token,
                          prompt_style=prompt_style)  # type: ignore[arg-type]
