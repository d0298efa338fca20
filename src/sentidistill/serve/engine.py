"""Generation engine: a loaded student behind a dynamic batcher, with per-token top-k log-probabilities.

Callers (HTTP handlers, :func:`sentidistill.serve.predict`) submit one prompt each; a single worker
thread collects whatever arrives within ``batch_wait_ms`` (or until ``max_batch_size``), runs it as one
padded ``model.generate`` call and hands each caller its own :class:`Generation`. One worker owns the
model, so torch never runs two forward passes at once on the same weights.

Requests batch together only when their sampling settings match (greedy requests always do); per-row
``max_tokens`` and ``stop`` strings are enforced inside the batch by a per-row stopping criterion.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field

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


class ServedTokenLogprob(TokenLogprob):
    """A :class:`~sentidistill.core.records.TokenLogprob` with the true bytes of the token (``bytes``) and of
    each alternative (``top_bytes``, parallel to ``top``), as OpenAI's log-probs report them."""

    bytes: list[int] = Field(default_factory=list)
    top_bytes: list[list[int]] = Field(default_factory=list)


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
    future: Future | asyncio.Future
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
        batch_wait_ms: float = 0.0,
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

    def submit(self, prompt: str | list[dict[str, str]] | list[int], params: GenParams | None = None, *,
               future: Future | asyncio.Future | None = None) -> Future | asyncio.Future:
        """Queue one prompt (text, chat messages or token ids); the future resolves to a :class:`Generation`.
        ``future``: an ``asyncio.Future`` of the caller's loop (the server), else a new blocking one."""
        params = params or GenParams()
        if params.max_tokens < 1:
            raise InputError("max_tokens must be >= 1", field="max_tokens", got=params.max_tokens)
        if not 0 <= params.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InputError("top_logprobs out of range", field="top_logprobs",
                             expected=f"0..{MAX_TOP_LOGPROBS}", got=params.top_logprobs)
        ids = prompt if _is_id_list(prompt) else self.encode_prompt(prompt)  # type: ignore[arg-type]
        self.check_length(len(ids), params.max_tokens)
        fut = future if future is not None else Future()
        self._batcher.put(_Job(list(ids), params, fut, time.perf_counter()))
        return fut

    def generate(self, prompts: Sequence[str | list[dict[str, str]]], params: GenParams | None = None,
                 timeout: float | None = None) -> list[Generation]:
        """Blocking helper: submit all prompts (they batch together) and wait for every result, in order."""
        futures = [self.submit(p, params) for p in prompts]
        return [f.result(timeout=timeout) for f in futures]  # type: ignore[call-arg]

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
        text_out = self.tokenizer.decode(ids, skip_special_tokens=True)
        if p.stop:
            cut = min((text_out.find(s) for s in p.stop if s in text_out), default=-1)
            if cut >= 0:
                text_out, finish = text_out[:cut], "stop"
                ids = _ids_within(self.tokenizer, ids, cut)
        lps = None
        if p.logprobs and logp is not None:
            lps = []
            for k, t in enumerate(ids):
                row_lp = logp[row, k]
                prev = ids[k - 1] if k > 0 else None
                text, raw = self._token_text(prev, t)
                top = self._alternatives(row_lp, prev, p.top_logprobs) if p.top_logprobs else []
                lps.append(ServedTokenLogprob(token=text, logprob=float(row_lp[t]), bytes=list(raw),
                                              top=[(a, v) for a, v, _ in top], top_bytes=[list(b) for _, _, b in top]))
        return Generation(text=text_out, finish_reason=finish, prompt_tokens=len(job.input_ids),
                          completion_tokens=len(ids), logprobs=lps, token_ids=ids)

    def _alternatives(self, row_lp: torch.Tensor, prev: int | None, k: int) -> list[tuple[str, float, bytes]]:
        """The ``k`` most likely tokens at one position as ``(text, logprob, bytes)``, best first, with distinct
        texts (OpenAI's completions ``top_logprobs`` is a map from token text to log-prob, so two tokens with
        the same text would collapse into one entry): a token whose text an earlier (more likely) one already
        has is skipped and the next one is taken, so there are always ``k`` (fewer only when the vocabulary
        has fewer distinct texts)."""
        out: list[tuple[str, float, bytes]] = []
        seen: set[str] = set()
        n = min(row_lp.shape[-1], 2 * k + 16)
        while True:
            vals, idx = torch.topk(row_lp, n)
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
                text, raw = self._token_text(prev, int(i))
                if text not in seen:
                    seen.add(text)
                    out.append((text, float(v), raw))
                    if len(out) == k:
                        return out
            if n >= row_lp.shape[-1]:
                return out
            out, seen, n = [], set(), min(row_lp.shape[-1], 4 * n)

    def _token_text(self, prev: int | None, tid: int) -> tuple[str, bytes]:
        """A generated token's text and its true bytes (OpenAI's ``token`` and ``bytes``).

        A token whose bytes are not UTF-8 on their own (a fragment of a multi-byte character: byte-level
        BPE splits "☕" into up to three tokens, sentencepiece's byte fallback writes ``<0xE2>``) has the text
        ``"bytes:\\xe2\\x98"`` (OpenAI's own spelling for such tokens) and its real bytes, never U+FFFD's.
        Any other token: its text in context (:meth:`_piece`) and that text's UTF-8 bytes."""
        raw = self._vocab_bytes.get(tid)
        if raw is not None:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return "bytes:" + "".join(f"\\x{b:02x}" for b in raw), raw
        piece = self._piece(prev, tid)
        return piece, piece.encode("utf-8")

    @functools.cached_property
    def _vocab_bytes(self) -> TokenBytes:
        return TokenBytes(self.tokenizer)

    def _piece(self, prev: int | None, tid: int) -> str:
        """The text a token adds after ``prev`` (keeps the leading space of word-initial tokens and
        drops WordPiece's '##'), so the token texts of an answer concatenate to its text."""
        tok = self.tokenizer
        if prev is None:
            return tok.decode([tid], skip_special_tokens=False)
        before = tok.decode([prev], skip_special_tokens=False)
        both = tok.decode([prev, tid], skip_special_tokens=False)
        return both[len(before):] if both.startswith(before) else tok.decode([tid], skip_special_tokens=False)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level BPE alphabet (:func:`sentidistill.utils.bytelevel.byte_level_alphabet`)."""
    from sentidistill.utils.bytelevel import byte_level_alphabet

    return byte_level_alphabet()


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class TokenBytes:
    """A token id's true bytes from the tokenizer's vocabulary, or ``None`` where the vocabulary does not
    spell bytes (then the decoded text is the truth).

    * byte-level BPE (GPT-2, Qwen, Llama 3; the decoder is ``ByteLevel``): the token string mapped back
      through :func:`bytes_to_unicode` (``"Ġcaf"`` -> ``b" caf"``, ``"âĺ"`` -> ``b"\\xe2\\x98"``);
    * sentencepiece byte fallback (Llama 2, Mistral, Gemma): ``<0xE2>`` -> ``b"\\xe2"``;
    * special and added tokens, and any other token: ``None``.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.byte_level = _decoder_kind(tokenizer) == "ByteLevel"
        self._decoder = {c: b for b, c in bytes_to_unicode().items()}
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._cache: dict[int, bytes | None] = {}

    def get(self, tid: int) -> bytes | None:
        """The bytes of token ``tid`` (cached), or ``None``."""
        if tid not in self._cache:
            self._cache[tid] = self._lookup(tid)
        return self._cache[tid]

    def _lookup(self, tid: int) -> bytes | None:
        if tid in self._special:
            return None
        s = self.tokenizer.convert_ids_to_tokens(tid)
        if not isinstance(s, str):
            return None
        m = _BYTE_FALLBACK.match(s)
        if m:
            return bytes([int(m.group(1), 16)])
        if self.byte_level:
            try:
                return bytes(self._decoder[c] for c in s)
            except KeyError:  # an added token spelled in plain text
                return None
        return None


def _decoder_kind(tokenizer: Any) -> str | None:
    """``"ByteLevel"`` when a fast tokenizer's decoder is (or contains) byte-level decoding, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except (ValueError, AttributeError):
        return None
    return "ByteLevel" if '"ByteLevel"' in json.dumps(decoder) else None


def _is_id_list(x: object) -> bool:
    return isinstance(x, list) and bool(x) and all(isinstance(i, int) for i in x)


def _ids_within(tokenizer: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose text reaches ``n_chars`` characters (tokens before a stop string)."""
    for k in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:k], skip_special_tokens=True)) >= n_chars:
            return ids[:k]
    return ids
