"""A local GGUF teacher run in this process with llama-cpp-python, with cheap top-k log-probs.

Why not the OpenAI server (``mode: server``)? To return log-probs, llama-cpp-python's server needs
``logits_all=True``, which makes llama.cpp compute the full-vocabulary logits (151,936 floats for Qwen2.5)
for EVERY prompt token: about 7 s per short sentiment prompt for Qwen2.5-Coder-0.5B on 2 cores instead of
about 0.2 s. Here the model runs with ``logits_all=False`` and we decode token by token ourselves, reading
only the last position's logits, so top-k log-probs of the generated tokens cost one log-softmax per step.
It also needs no port, no subprocess and no start-up wait beyond loading the weights.

Decoding: the prompt is the GGUF's own chat template (what ``create_chat_completion`` uses), tokenised with
special tokens; greedy at ``temperature == 0``, else temperature + top-p sampling (seeded when the request
has a seed). Reported log-probs are the model's raw log-softmax, before temperature and top-p, as in the
transformers backend. Consecutive prompts that share a prefix (the instructions and few-shot demos of ICL
prompts) reuse llama.cpp's KV cache for it, so only the new suffix is evaluated.

One model, one lock. Requests in flight together (the runner's ``concurrency``) are micro-batched, up to
``batch_size`` per batch (:mod:`sentidistill.teacher.llamacpp_batch`): restricted-scoring requests
(``params.score_labels``) with many texts and all their label continuations per ``llama_decode``,
generation requests with one sequence each, one token of every unfinished answer per ``llama_decode``.
``batch_size: 1`` answers one request at a time (``generate_one``, the single-sequence path).
"""

from __future__ import annotations

import asyncio
import codecs
import importlib.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from sentidistill.core.assets import resolve_gguf
from sentidistill.core.records import SamplingParams, TeacherRequest, TeacherResponse, TokenLogprob, Usage
from sentidistill.teacher.base import FatalBackendError, RequestRejected
from sentidistill.teacher.batching import MicroBatcher
from sentidistill.teacher.config import TeacherConfig, TeacherOptions

log = logging.getLogger(__name__)


def _usable_cores() -> int:
    """The cores this process may run on (the affinity mask in a container, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64, copy=True)  # float64: log-probs of the tail stay exact enough to sum
    x -= x.max()
    x -= np.log(np.exp(x).sum())
    return x


def _top_k(lp: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``lp``, best first (argpartition: O(vocab), not a full sort)."""
    k = min(k, lp.shape[0])
    idx = np.argpartition(lp, -k)[-k:]
    # Ties broken by the lower id, as a stable arg-max would.
    return idx[np.lexsort((idx, -lp[idx]))]


def _sample(lp: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token id: arg-max at temperature 0, else temperature + nucleus (top-p) sampling."""
    if params.temperature <= 0.0:
        return int(np.argmax(lp))
    scaled = lp / params.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        # Keep the smallest prefix whose mass reaches top_p (at least one token).
        keep = order[: int(np.searchsorted(cum, params.top_p)) + 1]
        kept = probs[keep] / probs[keep].sum()
        return int(keep[rng.choice(len(keep), p=kept)])
    return int(rng.choice(probs.shape[0], p=probs))


class LlamaCppInProcessBackend:
    """A GGUF file (or ``builtin:qwen2.5-coder-*``) loaded once with ``llama_cpp.Llama``; see the module doc.

    Options (:class:`LlamaCppOptions`): ``n_gpu_layers`` (0), ``n_batch`` (512), ``prefix_cache`` (true:
    reuse the KV cache of the previous prompt's common prefix), ``batch_size`` (16: restricted-scoring
    requests scored together per batch; 1 = one by one).

    Restricted scoring (``params.score_labels``) is exact: log P(label tokens | prompt) summed over the
    label's tokens, each continuation evaluated on top of the prompt's KV cache (labels sharing a prefix,
    ``very positive`` / ``very negative``, evaluate it once).
    """

    supports_label_scoring = True

    def __init__(
        self, model: str, *, n_ctx: int = 4096, n_threads: int | None = None, n_gpu_layers: int = 0,
        n_batch: int = 512, prefix_cache: bool = True, batch_size: int = 16, batch_wait_s: float = 0.01,
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise FatalBackendError("the llamacpp teacher needs llama-cpp-python: pip install 'sentidistill[llamacpp]'")
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        gguf = resolve_gguf(model)
        self.model_id = model  # part of every cache key: the same as the server mode's, answers are alike
        self.gguf = gguf
        self.prefix_cache = prefix_cache
        threads = n_threads or _usable_cores()
        try:
            # n_threads_batch too: llama-cpp-python defaults it to ALL cores, and a prompt evaluated with more
            # threads than free cores is many times slower (llama.cpp's threads spin on barriers): a 28-token
            # prompt took 8.6 s with 2 threads vs 0.45 s with 1 on a busy 2-core machine.
            self.llm = llama_cpp.Llama(
                model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=n_gpu_layers, n_batch=n_batch, logits_all=False, verbose=False,
            )
        except (ValueError, RuntimeError) as exc:  # llama-cpp-python raises ValueError for an unloadable file
            raise FatalBackendError(f"llama.cpp could not load {gguf}: {exc}") from None
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        vocab = self.llm._model.vocab
        self._is_eog = lambda tok: bool(llama_cpp.llama_vocab_is_eog(vocab, tok))  # EOS, <|im_end|>, EOT...
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise FatalBackendError(
                f"{gguf.name} has no chat template (GGUF key tokenizer.chat_template): use an instruct/chat model"
            )
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        token_text = self.llm._model.token_get_text
        # Exactly how llama-cpp-python builds its default chat handler, so both modes see the same prompt.
        self._formatter = Jinja2ChatFormatter(
            template=template, eos_token=token_text(eos) if eos != -1 else "",
            bos_token=token_text(bos) if bos != -1 else "", add_generation_prompt=True,
        )
        self._lock = threading.Lock()
        self._rng = np.random.default_rng()
        self._piece_cache: dict[int, str] = {}
        self._closed = False
        self.batch_size = batch_size
        self._threads = threads
        self._n_batch = n_batch
        self._scorer: Any = None  # the multi-sequence context, made on the first batched scoring request
        # Scoring requests with the same label set are scored together; one worker thread (the model's lock).
        self._batcher = MicroBatcher(self._run_batch, wait_s=batch_wait_s, batch_size=batch_size,
                                     group_key=lambda r: r.params.score_labels, name="llamacpp batch")

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> LlamaCppInProcessBackend:
        o: LlamaCppOptions = cfg.options  # type: ignore[assignment]
        return cls(cfg.model, n_ctx=o.n_ctx, n_threads=o.n_threads, n_gpu_layers=o.n_gpu_layers, n_batch=o.n_batch,
                   prefix_cache=o.prefix_cache, batch_size=o.batch_size)

    # -- the backend interface ---------------------------------------------------------------------
    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        if self.batch_size > 1:
            n = len(self.format_prompt(request.messages))  # bad input is refused now, not inside a batch
            if request.params.score_labels:
                self._label_tokens(request.params.score_labels, n)
            elif n >= self.n_ctx:
                raise RequestRejected(f"the prompt has {n} tokens; the context holds {self.n_ctx} (n_ctx)")
            return await self._batcher.submit(request)
        return await asyncio.to_thread(self.generate_one, request)

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        """Free the model (waits for a request in progress)."""
        self._batcher.close()
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._scorer is not None:
                    self._scorer.close()
                self.llm.close()

    # -- generation --------------------------------------------------------------------------------
    def format_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat-templated prompt's token ids (the template writes its own special tokens)."""
        try:
            text = self._formatter(messages=messages).prompt
        except Exception as exc:  # jinja2 errors, raise_exception() in the template (e.g. bad role order)
            raise RequestRejected(f"the model's chat template rejected the messages: {exc}") from None
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate_one(self, request: TeacherRequest) -> TeacherResponse:
        """Answer one request synchronously (thread-safe: callers queue on the model's lock)."""
        t0 = time.perf_counter()
        prompt = self.format_prompt(request.messages)
        p = request.params
        if len(prompt) >= self.n_ctx:
            raise RequestRejected(f"the prompt has {len(prompt)} tokens; the context holds {self.n_ctx} (n_ctx)")
        with self._lock:
            if self._closed:
                raise FatalBackendError("the llama.cpp teacher is closed")
            try:
                resp = self._score_labels(prompt, p.score_labels) if p.score_labels else self._decode(prompt, p)
            except RuntimeError as exc:  # llama_decode failed (e.g. no KV slot): start clean next time
                self.llm.reset()
                raise RequestRejected(f"llama.cpp decode failed: {exc}") from None
        resp.latency_s = time.perf_counter() - t0
        return resp

    def _eval_prompt(self, prompt: list[int]) -> None:
        """Evaluate ``prompt``, reusing the KV cache of the longest prefix it shares with the last sequence."""
        llm = self.llm
        reuse = 0
        if self.prefix_cache and llm.n_tokens > 0:
            cached = llm.input_ids[: llm.n_tokens]
            n = min(len(cached), len(prompt))
            diff = np.flatnonzero(cached[:n] != np.asarray(prompt[:n], dtype=cached.dtype))
            reuse = int(diff[0]) if diff.size else n
            # The last prompt token is always evaluated again: its logits are the first step's.
            reuse = min(reuse, len(prompt) - 1)
            # Dropping the cache tail fails on recurrent models; then start from scratch.
            if reuse > 0 and not llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
                reuse = 0
        if reuse == 0:
            llm.reset()
        llm.n_tokens = reuse
        llm.eval(prompt[reuse:])

    def _last_logprobs(self) -> np.ndarray:
        # logits_all=False: llama.cpp keeps logits only for the last position of the last batch.
        ptr = self.llm._ctx.get_logits_ith(-1)
        return _log_softmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)))

    def _piece(self, tok: int) -> str:
        """One token's text on its own, for the top-k alternatives (control tokens by name, e.g. <|im_end|>;
        a lone fragment of a multi-byte character shows as U+FFFD)."""
        text = self._piece_cache.get(tok)
        if text is None:
            text = self.llm.detokenize([tok], special=True).decode("utf-8", errors="replace")
            self._piece_cache[tok] = text
        return text

    def _label_tokens(self, labels: tuple[str, ...], prompt_len: int) -> list[list[int]]:
        """Each label's token ids, tokenised as the start of the answer (no leading space, as the chat
        template's assistant turn begins). Raises ``RequestRejected`` for a label that tokenises to nothing
        or a prompt that, with its longest label, does not fit ``n_ctx``."""
        seqs = [self.llm.tokenize(w.encode("utf-8"), add_bos=False, special=False) for w in labels]
        if any(not s for s in seqs):
            raise RequestRejected(f"a label tokenises to nothing: {labels!r}")
        if prompt_len + max(len(s) for s in seqs) > self.n_ctx:
            raise RequestRejected(f"the prompt has {prompt_len} tokens; with the label it exceeds n_ctx={self.n_ctx}")
        return seqs

    def _run_batch(self, requests: list[TeacherRequest]) -> list[TeacherResponse]:
        """One micro-batch (same ``score_labels``): batched scoring, or batched generation when None."""
        return self.score_batch(requests) if requests[0].params.score_labels else self.generate_batch(requests)

    def _multi(self) -> Any:
        """The multi-sequence context (made on first use; the caller holds the lock)."""
        if self._scorer is None:
            from sentidistill.teacher.llamacpp_batch import MultiSequenceScorer

            self._scorer = MultiSequenceScorer(
                self.llm._model, n_ctx=self.n_ctx, n_batch=self._n_batch, n_threads=self._threads,
                n_seq_max=min(256, 1 + 16 * self.batch_size), n_vocab=self.n_vocab, base_params=self.llm.context_params)
        return self._scorer

    def generate_batch(self, requests: list[TeacherRequest]) -> list[TeacherResponse]:
        """Answer several generation requests together: one sequence each, one token of every unfinished
        answer per ``llama_decode`` (:meth:`MultiSequenceScorer.generate`). Each request keeps its own
        sampling parameters; greedy answers equal :meth:`generate_one`'s up to float rounding of the batch
        shapes (on a quantised model a near-tie may then break the other way). Raises ``RequestRejected``
        (a prompt too long, a failed decode) and ``FatalBackendError`` once closed."""
        t0 = time.perf_counter()
        prompts = [self.format_prompt(r.messages) for r in requests]
        for prompt in prompts:
            if len(prompt) >= self.n_ctx:
                raise RequestRejected(f"the prompt has {len(prompt)} tokens; the context holds {self.n_ctx} (n_ctx)")
        with self._lock:
            if self._closed:
                raise FatalBackendError("the llama.cpp teacher is closed")
            states = [_Generation(self, len(p), r.params) for p, r in zip(prompts, requests, strict=True)]
            try:
                self._multi().generate(prompts, states)
            except (RuntimeError, ValueError) as exc:
                raise RequestRejected(f"llama.cpp batched generation failed: {exc}") from None
        latency = (time.perf_counter() - t0) / len(requests)
        out = [st.response() for st in states]
        for r in out:
            r.latency_s = latency
        return out

    def score_batch(self, requests: list[TeacherRequest]) -> list[TeacherResponse]:
        """Restricted scoring of several requests with the same ``score_labels``, many texts per
        ``llama_decode`` (:class:`~sentidistill.teacher.llamacpp_batch.MultiSequenceScorer`). The same
        log-probs as :meth:`generate_one` one by one, up to float rounding (< 1e-3 nats). Raises
        ``RequestRejected`` (a prompt too long, a failed decode) and ``FatalBackendError`` once closed."""
        t0 = time.perf_counter()
        labels = requests[0].params.score_labels
        if any(r.params.score_labels != labels for r in requests):
            raise ValueError("score_batch needs requests with the same score_labels")
        prompts = [self.format_prompt(r.messages) for r in requests]
        seqs = self._label_tokens(labels, max(len(p) for p in prompts))
        with self._lock:
            if self._closed:
                raise FatalBackendError("the llama.cpp teacher is closed")
            try:
                results = self._multi().score(prompts, seqs)
            except (RuntimeError, ValueError) as exc:
                raise RequestRejected(f"llama.cpp batched scoring failed: {exc}") from None
        latency = (time.perf_counter() - t0) / len(requests)
        out = []
        for prompt, (scores, n_evals) in zip(prompts, results, strict=True):
            best = int(np.argmax(scores))
            out.append(TeacherResponse(
                text=labels[best], model=self.model_id, finish_reason="label_scores", latency_s=latency,
                usage=Usage(prompt_tokens=len(prompt), completion_tokens=n_evals), label_logprobs=scores))
        return out

    def _score_labels(self, prompt: list[int], labels: tuple[str, ...]) -> TeacherResponse:
        """log P(label | prompt) for each label (nats), one text at a time: the sum over the label's
        tokens (see :meth:`_label_tokens`), each label prefix evaluated on the prompt's KV cache."""
        seqs = self._label_tokens(labels, len(prompt))
        self._eval_prompt(prompt)
        # Log-probs of the next token after prompt + prefix, for every label prefix we need (one eval each).
        after: dict[tuple[int, ...], np.ndarray] = {(): self._last_logprobs()}
        scores: list[float] = []
        n_evals = 0
        for seq in seqs:
            total = 0.0
            for i, tok in enumerate(seq):
                prefix = tuple(seq[:i])
                lp = after.get(prefix)
                if lp is None:
                    self._eval_prompt(prompt + list(prefix))  # reuses the prompt's KV cache
                    lp = after[prefix] = self._last_logprobs()
                    n_evals += 1
                total += float(lp[tok])
            scores.append(total)
        best = int(np.argmax(scores))
        return TeacherResponse(
            text=labels[best], model=self.model_id, finish_reason="label_scores",
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=n_evals), label_logprobs=scores,
        )

    def _decode(self, prompt: list[int], p: SamplingParams) -> TeacherResponse:
        state = _Generation(self, len(prompt), p)
        self._eval_prompt(prompt)
        while not state.done:
            tok = state.step(self.llm._ctx.get_logits_ith(-1))
            if tok is None:
                break
            self.llm.eval([tok])  # the token chosen this step: its logits are the next step's distribution
        return state.response()

    def __repr__(self) -> str:
        return f"LlamaCppInProcessBackend({self.model_id!r}, gguf={Path(self.gguf).name}, n_ctx={self.n_ctx})"


class _Generation:
    """One answer being decoded: sampling, top-k log-probs, EOG and stop strings, one step per token.

    ``step(logits)`` takes the raw logits of the next position (a ctypes pointer or an array of n_vocab
    floats) and returns the chosen token to evaluate next, or None when the answer is finished (then
    ``done``). The same object drives the single-sequence path and the multi-sequence one, so both answer
    alike. Greedy at ``temperature == 0``, else temperature + top-p (seeded when ``params.seed`` is set);
    reported log-probs are the raw log-softmax, before temperature and top-p.
    """

    def __init__(self, backend: LlamaCppInProcessBackend, prompt_len: int, p: SamplingParams) -> None:
        self.b, self.p = backend, p
        self.prompt_len = prompt_len
        self.rng = np.random.default_rng(p.seed) if p.seed is not None else backend._rng
        self.k = p.top_logprobs if p.logprobs else 0
        # The answer is decoded incrementally: a token that ends inside a multi-byte character adds no text
        # and the one that completes it adds the whole character, so "".join(token texts) == the text
        # (the KD aligner in train/kd.py relies on that).
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pieces: list[str] = []
        self.entries: list[TokenLogprob] = []
        self.text = ""
        self.finish = "length"
        self.stop_at: int | None = None
        self.budget = min(p.max_tokens, backend.n_ctx - prompt_len)
        self.longest_stop = max((len(s) for s in p.stop if s), default=0)
        self.steps = 0
        self.done = self.budget <= 0

    def step(self, logits: Any) -> int | None:
        b, p = self.b, self.p
        lp = _log_softmax(np.ctypeslib.as_array(logits, shape=(b.n_vocab,)) if not isinstance(logits, np.ndarray)
                          else logits)
        tok = _sample(lp, p, self.rng)
        self.steps += 1
        if b._is_eog(tok):
            self.finish, self.done = "stop", True
            return None
        piece = self.utf8.decode(b.llm.detokenize([tok], special=False))
        self.pieces.append(piece)
        if p.logprobs:
            top = [(b._piece(int(i)), float(lp[i])) for i in _top_k(lp, self.k)] if self.k else []
            self.entries.append(TokenLogprob(token=piece, logprob=float(lp[tok]), top=top))
        start = len(self.text)
        self.text += piece
        if self.longest_stop:
            # Only the new text (plus a stop string's length of overlap) can contain a new match.
            window = max(0, start - self.longest_stop + 1)
            hits = [i for s in p.stop if s and (i := self.text.find(s, window)) >= 0]
            if hits:
                self.stop_at, self.finish, self.done = min(hits), "stop", True
                return None
        if self.steps >= self.budget:
            self.done = True
            return None
        return tok

    def response(self) -> TeacherResponse:
        """The finished answer (the text cut at a stop string, its tokens' log-probs)."""
        p, text, pieces, entries = self.p, self.text, self.pieces, self.entries
        if self.finish == "length" and self.budget < p.max_tokens:
            log.warning("answer cut at the context limit (n_ctx=%d, prompt %d tokens)", self.b.n_ctx, self.prompt_len)
        n_generated = len(pieces)
        if self.stop_at is None:
            tail = self.utf8.decode(b"", final=True)  # a dangling partial character at the end
            if tail:
                text += tail
                if pieces:
                    pieces[-1] += tail
                    if entries:
                        entries[-1] = entries[-1].model_copy(update={"token": pieces[-1]})
        else:
            text = text[: self.stop_at]
            # Drop the tokens that start at or after the stop string (they are not part of the answer).
            pos, keep = 0, 0
            for piece in pieces:
                if pos >= self.stop_at and piece:
                    break
                pos += len(piece)
                keep += 1
            entries = entries[:keep]
        return TeacherResponse(
            text=text, model=self.b.model_id, finish_reason=self.finish,
            usage=Usage(prompt_tokens=self.prompt_len, completion_tokens=n_generated),
            logprobs=entries if p.logprobs else None,
        )


class LlamaCppOptions(TeacherOptions):
    """Options of the ``llamacpp`` backend (a local GGUF through llama-cpp-python)."""

    mode: str = Field("inprocess", description="inprocess (cheap top-k log-probs, no port) or server (llama.cpp's OpenAI server in a subprocess).")
    n_ctx: int = Field(4096, ge=256, description="Context length.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to a GPU (-1: all).")
    n_batch: int = Field(512, ge=1, description="Prompt tokens per llama.cpp batch (inprocess).")
    prefix_cache: bool = Field(True, description="Reuse the KV cache of the previous prompt's common prefix (inprocess).")
    batch_size: int = Field(16, ge=1, le=128, description="inprocess: requests answered together, many texts per llama_decode (restricted scoring: all their labels too; generation: one token of each answer per decode); 1 = one by one. Batches form from the requests in flight: set the teacher's concurrency >= batch_size.")
    logits_all: bool = Field(False, description="server mode: needed for top-k log-probs (ignored inprocess).")
    server_args: list[str] | None = Field(None, description="server mode: extra command-line arguments.")
    startup_timeout_s: float = Field(300.0, gt=0, description="server mode: how long the server may take to start.")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v.lower() not in ("inprocess", "server"):
            raise ValueError(f"expected 'inprocess' or 'server' for kind=llamacpp, got {v!r}")
        return v.lower()


def build_llamacpp_backend(cfg: TeacherConfig) -> Any:
    """``mode``: ``inprocess`` (default; cheap log-probs, no port) or ``server`` (llama.cpp's OpenAI
    server in a subprocess, the same HTTP path as a remote endpoint; log-probs need ``logits_all``)."""
    o: LlamaCppOptions = cfg.options  # type: ignore[assignment]
    if o.mode == "inprocess":
        if o.logits_all:
            log.info("teacher.logits_all is ignored in inprocess mode (log-probs need no full logits)")
        return LlamaCppInProcessBackend.from_config(cfg)
    from sentidistill.teacher.llamacpp import LlamaCppBackend

    return LlamaCppBackend.from_config(cfg)


class LlamaCppTeacher:
    """Kind ``llamacpp``: in-process (:class:`LlamaCppInProcessBackend`) or server mode (``LlamaCppBackend``)."""

    Options = LlamaCppOptions
    from_config = staticmethod(build_llamacpp_backend)
