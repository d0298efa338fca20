"""Generation engine: a loaded student behind a dynamic batcher, with per-token top-k log-probabilities.

Callers (HTTP handlers, :func:`sentidistill.serve.predict`) submit one prompt each; a single worker
thread collects whatever arrives within ``batch_wait_ms`` (or until ``max_batch_size``), runs it as one
padded ``model.generate`` call and hands each caller its own :class:`Generation`. One worker owns the
model, so torch never runs two forward passes at once on the same weights.

Requests batch together only when their sampling settings match (greedy requests always do); per-row
``max_tokens`` and ``stop`` strings are enforced inside the batch by a per-row stopping criterion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from sentidistill.core.records import TokenLogprob
from sentidistill.errors import InputError
from sentidistill.serve.batcher import BatchedEngine, DynamicBatcher
from sentidistill.students import Student, load_student

FinishReason = Literal["stop", "length"]
MAX_TOP_LOGPROBS = 20  # OpenAI's ceiling for chat top_logprobs


@dataclass(frozen=True)
class GenParams:
    """Decoding settings of one request (OpenAI names). ``temperature == 0`` is greedy."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0

    def batch_key(self) -> tuple:
        """Requests with equal keys can share one ``generate`` call."""
        if self.temperature <= 0:
            return ("greedy",)
        return ("sample", self.temperature, self.top_p, self.seed)


@dataclass
class Generation:
    """The result of one request."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    token_ids: list[int] = field(default_factory=list)


@dataclass
class _Job:
    input_ids: list[int]
    params: GenParams
    future: Future
    enqueued: float


class _RowStopper:
    """Per-row stopping: a row is done at its own ``max_tokens`` or when its text contains a stop string.

    transformers pads finished rows and ends the call when every row is done.
    """

    def __init__(self, tokenizer: Any, start: int, jobs: Sequence[_Job]) -> None:
        self.tokenizer = tokenizer
        self.start = start
        self.max_new = [j.params.max_tokens for j in jobs]
        self.stops = [j.params.stop for j in jobs]
        self.any_stop = any(self.stops)

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        n_new = input_ids.shape[1] - self.start
        done = torch.tensor([n_new >= m for m in self.max_new], dtype=torch.bool, device=input_ids.device)
        if self.any_stop:
            for i, stops in enumerate(self.stops):
                if stops and not done[i]:
                    text = self.tokenizer.decode(input_ids[i, self.start:], skip_special_tokens=True)
                    done[i] = any(s in text for s in stops)
        return done


class GenerationEngine(BatchedEngine):
    """A loaded model plus a dynamic batcher. Thread-safe; use as a context manager or call :meth:`close`.

    ``on_batch(size, seconds)`` is called after every batch (the server feeds its metrics from it).
    """

    def __init__(
        self,
        loaded: Student,
        *,
        max_batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.student = loaded
        self._setup(tokenizer=loaded.tokenizer, kind=loaded.kind, eos_ids=loaded.eos_token_ids(),
                    context_limit=loaded.context_limit(), max_batch_size=max_batch_size,
                    batch_wait_ms=batch_wait_ms, max_queue=max_queue, on_batch=on_batch)

    def _setup(self, *, tokenizer: Any, kind: str, eos_ids: set[int], context_limit: int | None,
               max_batch_size: int, batch_wait_ms: float, max_queue: int,
               on_batch: Callable[[int, float], None] | None) -> None:
        """Shared by every backend: model facts, the queue and the worker thread (``kind``: the student kind,
        reported by ``/health``)."""
        self.tokenizer = tokenizer
        self.kind = kind
        self.context_limit = context_limit
        self._eos_ids = eos_ids
        self._batcher = DynamicBatcher(
            self._generate_batch, group_key=lambda j: j.params.batch_key(), max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms, max_queue=max_queue, on_batch=on_batch, name="sentidistill-batcher")

    @classmethod
    def from_spec(cls, model_spec: str, *, device: str | None = None, **options: Any) -> GenerationEngine:
        return cls(load_student(model_spec, device=device), **options)

    # -- prompts -------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str | list[dict[str, str]]) -> list[int]:
        """Token ids of a raw prompt or of chat messages (rendered with the tokenizer's chat template)."""
        return self.student.encode_prompt(prompt)

    def check_length(self, n_prompt: int, max_tokens: int) -> None:
        """Reject prompts that would overflow the model's position table (a 4xx, not a crash mid-batch)."""
        if self.context_limit is None:
            return
        if self.student.tokens_needed(n_prompt, max_tokens) > self.context_limit:
            raise InputError(
                f"this model's context is {self.context_limit} tokens; the prompt has {n_prompt} tokens "
                f"and max_tokens is {max_tokens}",
                field="messages" if n_prompt > self.context_limit else "max_tokens",
                expected=f"prompt tokens + max_tokens <= {self.context_limit}",
            )

    # -- submission ----------------------------------------------------------------------------------

    def submit(self, prompt: str | list[dict[str, str]] | list[int], params: GenParams | None = None) -> Future:
        """Queue one prompt (text, chat messages or token ids); the future resolves to a :class:`Generation`."""
        params = params or GenParams()
        if params.max_tokens < 1:
            raise InputError("max_tokens must be >= 1", field="max_tokens", got=params.max_tokens)
        if not 0 <= params.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InputError("top_logprobs out of range", field="top_logprobs",
                             expected=f"0..{MAX_TOP_LOGPROBS}", got=params.top_logprobs)
        ids = prompt if _is_id_list(prompt) else self.encode_prompt(prompt)  # type: ignore[arg-type]
        self.check_length(len(ids), params.max_tokens)
        fut: Future = Future()
        self._batcher.put(_Job(list(ids), params, fut, time.perf_counter()))
        return fut

    def generate(self, prompts: Sequence[str | list[dict[str, str]]], params: GenParams | None = None,
                 timeout: float | None = None) -> list[Generation]:
        """Blocking helper: submit all prompts (they batch together) and wait for every result, in order."""
        futures = [self.submit(p, params) for p in prompts]
        return [f.result(timeout=timeout) for f in futures]

    @torch.inference_mode()
    def _generate_batch(self, jobs: list[_Job]) -> list[Generation]:
        from transformers import GenerationConfig, StoppingCriteriaList

        tok = self.tokenizer
        params = jobs[0].params  # sampling settings are shared within a group
        enc = tok.pad({"input_ids": [j.input_ids for j in jobs]}, return_tensors="pt", padding=True)
        input_ids = enc["input_ids"].to(self.loaded.device)
        attention = enc["attention_mask"].to(self.loaded.device)
        start = self.student.generation_offset(input_ids.shape[1])
        want_logprobs = any(j.params.logprobs for j in jobs)
        gen_cfg = self._generation_config(GenerationConfig, params, max(j.params.max_tokens for j in jobs),
                                          want_logprobs)
        if params.seed is not None:
            torch.manual_seed(params.seed)  # one worker thread: the global generator is ours
        seqs, out = self.student.generate_new_tokens(
            input_ids, attention, generation_config=gen_cfg,
            stopping_criteria=StoppingCriteriaList([_RowStopper(tok, start, jobs)]),
        )
        logp = None
        if want_logprobs:
            # Raw model logits (before temperature/top-p), as OpenAI reports them.
            logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # (B, T, V)
        return [self._finish(i, j, seqs[i].tolist(), logp) for i, j in enumerate(jobs)]

    def _generation_config(self, cls: Any, params: GenParams, max_new: int, want_logprobs: bool) -> Any:
        """The request's decoding settings plus the model's special token ids.

        transformers 5 still fills fields left unset here from the model's own ``generation_config``
        (e.g. a ``repetition_penalty``); the teacher's transformers backend gets the same, so both agree.
        """
        mcfg = getattr(self.loaded.model, "generation_config", None)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new,
            eos_token_id=list(self._eos_ids) or None,
            pad_token_id=self.tokenizer.pad_token_id,
            do_sample=params.temperature > 0,
            return_dict_in_generate=True,
            output_logits=want_logprobs,
        )
        if mcfg is not None and getattr(mcfg, "decoder_start_token_id", None) is not None:
            kwargs["decoder_start_token_id"] = mcfg.decoder_start_token_id
        if mcfg is not None and getattr(mcfg, "bos_token_id", None) is not None:
            kwargs["bos_token_id"] = mcfg.bos_token_id
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        return cls(**kwargs)

    def _finish(self, row: int, job: _Job, ids: list[int], logp: torch.Tensor | None) -> Generation:
        p = job.params
        # Cut at the first end-of-sequence (later positions are padding of a finished row).
        finish: FinishReason = "length"
        for k, t in enumerate(ids):
            if t in self._eos_ids:
                ids, finish = ids[:k], "stop"
                break
        ids = ids[: p.max_tokens]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if p.stop:
            cut = min((text.find(s) for s in p.stop if s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                ids = _ids_within(self.tokenizer, ids, cut)
        lps = None
        if p.logprobs and logp is not None:
            lps = []
            for k, t in enumerate(ids):
                row_lp = logp[row, k]
                prev = ids[k - 1] if k > 0 else None
                top: list[tuple[str, float]] = []
                if p.top_logprobs:
                    vals, idx = torch.topk(row_lp, p.top_logprobs)
                    top = [(self._piece(prev, int(i)), float(v)) for v, i in zip(vals, idx, strict=True)]
                lps.append(TokenLogprob(token=self._piece(prev, t), logprob=float(row_lp[t]), top=top))
        return Generation(text=text, finish_reason=finish, prompt_tokens=len(job.input_ids),
                          completion_tokens=len(ids), logprobs=lps, token_ids=ids)

    def _piece(self, prev: int | None, tid: int) -> str:
        """The text a token adds after ``prev`` (keeps the leading space of word-initial tokens and
        drops WordPiece's '##'), so the token texts of an answer concatenate to its text."""
        tok = self.tokenizer
        if prev is None:
            return tok.decode([tid], skip_special_tokens=False)
        before = tok.decode([prev], skip_special_tokens=False)
        both = tok.decode([prev, tid], skip_special_tokens=False)
        return both[len(before):] if both.startswith(before) else tok.decode([tid], skip_special_tokens=False)


def _is_id_list(x: object) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(i, int) for i in x)


def _ids_within(tokenizer: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose text reaches ``n_chars`` characters (tokens before a stop string)."""
    for k in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:k], skip_special_tokens=True)) >= n_chars:
            return ids[:k]
    return ids
