"""Restricted scoring of many texts per ``llama_decode``: one llama.cpp context with many sequences.

Why: on a CPU, llama.cpp evaluates a batch of ``n`` tokens in about the time of ``n`` tokens of ONE long
prompt (the matrix products are what cost), but scoring texts one by one evaluates each text's few new
tokens, then one token per label prefix, in separate small decodes; small decodes run well below that peak
(62 tokens/s at 16 tokens vs 90 at 128 for Qwen2.5-Coder-1.5B on 2 cores, issue 22). Here every text of a
batch and every label continuation of every text go into the same ``llama_batch``:

- **The shared instruction prefix** (the longest common prefix of the batch's chat prompts) is evaluated
  once into sequence 0 and kept there across batches (the next batch reuses what it still shares);
  ``llama_memory_seq_cp(mem, 0, s, -1, -1)`` then makes it visible to every text's sequences (in a unified
  KV cache that only adds the sequence id to its cells: no copy, no recomputation).
- **Each text** gets its own sequence ids, one per branch of the label trie: its new tokens are one run
  of batch entries that belong to ALL of the text's sequences (a token may carry several sequence ids),
  and the logits of its last token are the distribution of the answer's first token.
- **Labels**: the label variants' token sequences form a trie; every proper prefix of a label ("very" for
  "very negative" / "very positive") is a trie node that needs the next token's distribution. Each node is
  one batch entry (position = the text's length + depth) carrying the sequence ids of the branches through
  it, with its logits requested. So a label's tokens are conditioned on exactly the prompt and the label's
  earlier tokens, as in one-by-one scoring, and all labels of all texts of a wave cost one decode.

The log-probs equal one-by-one scoring up to float rounding of the different batch shapes (the tests
check 1e-3 nats on a tiny f32 model; ``benchmarks/local_teacher_speed.py`` prints the largest difference
on the real teacher).

Low-level API used (llama-cpp-python >= 0.3.8): ``llama_batch_init``/``llama_batch_free``,
``llama_decode``, ``llama_get_logits_ith``, ``llama_get_memory`` + ``llama_memory_seq_cp`` /
``llama_memory_seq_rm`` / ``llama_memory_clear`` (older releases named them ``llama_kv_self_*`` /
``llama_kv_cache_*``; :func:`_memory_api` picks whichever the installed version has).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _logsumexp(logits: np.ndarray) -> float:
    """log(sum(exp(x))) of one row of logits, in float64 (as the one-by-one path's log-softmax)."""
    x = logits.astype(np.float64)
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum()))


def _memory_api(llama_cpp: Any, ctx: Any) -> tuple[Callable[..., Any], Callable[..., Any], Callable[[], Any]]:
    """``(seq_cp(src, dst), seq_rm(seq, p0, p1) -> bool, clear())`` for whichever KV-cache API is installed:
    ``llama_memory_*`` (llama.cpp since mid 2025), ``llama_kv_self_*`` (early 2025), ``llama_kv_cache_*``."""
    if hasattr(llama_cpp, "llama_memory_seq_cp"):
        mem = llama_cpp.llama_get_memory(ctx)
        return (lambda s, d: llama_cpp.llama_memory_seq_cp(mem, s, d, -1, -1),
                lambda s, p0, p1: bool(llama_cpp.llama_memory_seq_rm(mem, s, p0, p1)),
                lambda: llama_cpp.llama_memory_clear(mem, True))
    prefix = next((p for p in ("llama_kv_self_", "llama_kv_cache_") if hasattr(llama_cpp, p + "seq_cp")), None)
    if prefix is not None:
        cp, rm, clear = (getattr(llama_cpp, prefix + n) for n in ("seq_cp", "seq_rm", "clear"))
        return (lambda s, d: cp(ctx, s, d, -1, -1), lambda s, p0, p1: bool(rm(ctx, s, p0, p1)),
                lambda: clear(ctx))
    raise RuntimeError("this llama-cpp-python has no KV-cache sequence API (llama_memory_seq_cp)")


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix common to every prompt, one token short of the shortest prompt so that each
    keeps at least its last token to evaluate (its logits start the answer)."""
    lcp = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = 0
        while n < lcp and p[n] == first[n]:
            n += 1
        lcp = n
    return list(first[:lcp])


@dataclass
class _Text:
    """One text of a batch: its tokens after the shared prefix and, per label trie node, what it needs."""

    index: int
    suffix: list[int]
    start: int  # position of suffix[0] (= length of the shared prefix)
    seqs: list[int] = field(default_factory=list)  # sequence ids, one per maximal trie branch
    # trie node (label prefix) -> {next token: log-prob}; filled as the decodes' logits are read
    dist: dict[tuple[int, ...], dict[int, float]] = field(default_factory=dict)


class LabelTrie:
    """The label variants' token sequences as a trie: which prefixes need a next-token distribution.

    ``nodes``: every proper prefix of a label (the empty prefix first), each with the token ids that may
    follow it; ``branches``: the maximal non-empty proper prefixes (each becomes one sequence per text);
    ``node_branches[p]``: the branches passing through the non-empty node ``p``.
    """

    def __init__(self, labels: Sequence[Sequence[int]]) -> None:
        self.labels = [tuple(s) for s in labels]
        needed: dict[tuple[int, ...], set[int]] = {}
        for s in self.labels:
            for i in range(len(s)):
                needed.setdefault(s[:i], set()).add(s[i])
        self.nodes = sorted(needed, key=lambda p: (len(p), p))  # parents before children
        self.next_tokens = {p: sorted(v) for p, v in needed.items()}
        inner = [p for p in self.nodes if p]
        self.branches = [p for p in inner if not any(len(q) > len(p) and q[: len(p)] == p for q in inner)]
        self.node_branches = {p: [b for b, q in enumerate(self.branches) if q[: len(p)] == p] for p in inner}

    def n_sequences(self) -> int:
        """Sequence ids one text needs (at least 1: the text's own tokens)."""
        return max(1, len(self.branches))

    def score(self, dist: dict[tuple[int, ...], dict[int, float]]) -> tuple[list[float], int]:
        """Per label, the summed log-probs of its tokens (nats), and the nodes evaluated after the prompt."""
        scores = [sum(dist[s[:i]][s[i]] for i in range(len(s))) for s in self.labels]
        return scores, len(self.nodes) - 1


class MultiSequenceScorer:
    """Scores label continuations for many prompts per ``llama_decode`` (see the module doc).

    ``model``: a ``llama_cpp._internals.LlamaModel`` (the loaded weights, shared with the caller's
    ``Llama``); the scorer makes its own context with ``n_seq_max`` sequences and a unified KV cache of
    ``n_ctx`` cells, and decodes at most ``n_batch`` tokens per call, its other settings copied from
    ``base_params`` (the caller's ``llama_context_params``: flash attention, KV cache types) when given.
    Not thread-safe (the caller locks).
    """

    def __init__(self, model: Any, *, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int,
                 n_vocab: int, base_params: Any = None) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._lc = llama_cpp
        n_seq_max = int(min(n_seq_max, llama_cpp.llama_max_parallel_sequences()))
        if n_seq_max < 2:
            raise ValueError("multi-sequence scoring needs n_seq_max >= 2")
        # The caller's settings (flash attention off, KV types, rope...), so both paths compute alike.
        params = type(base_params).from_buffer_copy(base_params) if base_params is not None \
            else llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch  # one ubatch per decode: tokens of many sequences together
        params.n_seq_max = n_seq_max
        params.n_threads = params.n_threads_batch = n_threads
        if hasattr(params, "n_outputs_max"):  # newer llama.cpp: room for logits of every sequence (else n_batch)
            params.n_outputs_max = max(n_batch, n_seq_max)
        if hasattr(params, "kv_unified"):
            params.kv_unified = True  # a token may belong to several sequences; the prefix cells are shared
        self._ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        self.n_ctx, self.n_batch, self.n_seq_max, self.n_vocab = n_ctx, n_batch, n_seq_max, n_vocab
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq_max)
        self._seq_cp, self._seq_rm, self._clear = _memory_api(llama_cpp, self._ctx.ctx)
        self._prefix: list[int] = []  # the tokens held by sequence 0
        self.decodes = 0  # llama_decode calls made (for benchmarks and tests)
        self.tokens = 0  # tokens evaluated

    def close(self) -> None:
        """Free the batch and the context."""
        if self._batch is not None:
            self._lc.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()

    def reset(self) -> None:
        """Empty the KV cache (after a failed decode, or to measure from a cold start)."""
        self._clear()
        self._prefix = []

    # -- decoding ----------------------------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, Sequence[int], bool]]) -> None:
        """One ``llama_decode`` of ``entries`` = ``(token, position, sequence ids, want logits)``."""
        b = self._batch
        for i, (tok, pos, seqs, want) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = len(seqs)
            for j, s in enumerate(seqs):
                b.seq_id[i][j] = s
            b.logits[i] = want
        b.n_tokens = len(entries)
        rc = self._lc.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} ({len(entries)} tokens)")
        self.decodes += 1
        self.tokens += len(entries)

    def _logits(self, i: int) -> np.ndarray:
        ptr = self._lc.llama_get_logits_ith(self._ctx.ctx, i)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))

    def _set_prefix(self, prefix: list[int]) -> None:
        """Make sequence 0 hold exactly ``prefix``, reusing what it already shares with it."""
        keep = 0
        for a, b in zip(self._prefix, prefix, strict=False):
            if a != b:
                break
            keep += 1
        if keep < len(self._prefix) and not self._seq_rm(0, keep, -1):
            self.reset()
            keep = 0
        todo = prefix[keep:]
        for i in range(0, len(todo), self.n_batch):
            chunk = todo[i : i + self.n_batch]
            self._decode([(t, keep + i + j, (0,), False) for j, t in enumerate(chunk)])
        self._prefix = list(prefix)

    def score(self, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> list[tuple[list[float], int]]:
        """For each prompt, ``(per label: log P(label tokens | prompt) in nats, trie nodes evaluated)``.

        ``prompts``: token ids (each at least 1 token); ``labels``: each label's token ids (non-empty).
        Raises ``ValueError`` when a prompt plus its label does not fit ``n_ctx``, ``RuntimeError`` when
        ``llama_decode`` fails (the cache is then emptied)."""
        trie = LabelTrie(labels)
        n_nodes = len(trie.nodes) - 1
        per_text_seqs = trie.n_sequences()
        if per_text_seqs > self.n_seq_max - 1:
            raise ValueError(f"{per_text_seqs} label branches need more than n_seq_max={self.n_seq_max} sequences")
        prefix = shared_prefix(prompts)
        lcp = len(prefix)
        longest = max(len(p) for p in prompts) + max(len(s) for s in labels)
        if longest > self.n_ctx:
            raise ValueError(f"a prompt with its label has {longest} tokens; n_ctx={self.n_ctx}")
        try:
            self._set_prefix(prefix)
            texts = [_Text(i, list(p[lcp:]), lcp) for i, p in enumerate(prompts)]
            room = self.n_ctx - lcp  # KV cells left for a wave's texts
            wave: list[_Text] = []
            used = 0
            for t in texts:
                need = len(t.suffix) + n_nodes
                full = (len(wave) + 1) * per_text_seqs > self.n_seq_max - 1 or used + need > min(self.n_batch, room)
                if wave and full:
                    self._run_wave(wave, trie)
                    wave, used = [], 0
                wave.append(t)
                used += need
            if wave:
                self._run_wave(wave, trie)
        except RuntimeError:
            self.reset()
            raise
        return [trie.score(t.dist) for t in texts]

    def _run_wave(self, wave: list[_Text], trie: LabelTrie) -> None:
        """Decode the texts of one wave (their sequences all in flight at once), then drop their sequences."""
        per_text = trie.n_sequences()
        entries: list[tuple[int, int, Sequence[int], bool]] = []
        wants: list[tuple[_Text, tuple[int, ...]]] = []  # for each entry with logits: whose node
        for w, t in enumerate(wave):
            t.seqs = [1 + w * per_text + b for b in range(per_text)]
            for s in t.seqs:
                if self._prefix:
                    self._seq_cp(0, s)
            last = len(t.suffix) - 1
            for j, tok in enumerate(t.suffix):
                entries.append((tok, t.start + j, t.seqs, j == last))
                if j == last:
                    wants.append((t, ()))
            base = t.start + len(t.suffix)
            for node in trie.nodes[1:]:
                seqs = [t.seqs[b] for b in trie.node_branches[node]]
                entries.append((node[-1], base + len(node) - 1, seqs, True))
                wants.append((t, node))
        try:
            k = 0  # index into wants
            for i in range(0, len(entries), self.n_batch):
                chunk = entries[i : i + self.n_batch]
                self._decode(chunk)
                for j, (_, _, _, want) in enumerate(chunk):
                    if want:
                        t, node = wants[k]
                        k += 1
                        logits = self._logits(j)
                        norm = _logsumexp(logits)
                        t.dist[node] = {tok: float(logits[tok]) - norm for tok in trie.next_tokens[node]}
        finally:
            for t in wave:
                for s in t.seqs:
                    self._seq_rm(s, -1, -1)

    # -- generation --------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], states: Sequence[Any]) -> None:
        """Decode an answer for every prompt, one sequence each, all in flight in the same ``llama_decode``
        calls: the prompts' new tokens in one batch (shared prefix in sequence 0, as in :meth:`score`), then
        one token per unfinished sequence per decode.

        ``states[i]`` drives prompt ``i``: ``.budget`` (most tokens it may generate), ``.done``, and
        ``.step(logits) -> next token | None`` (None: finished), given the raw logits (n_vocab floats) of
        its next position. Raises ``ValueError`` when a prompt cannot fit ``n_ctx`` with its budget,
        ``RuntimeError`` when ``llama_decode`` fails (the cache is then emptied)."""
        prefix = shared_prefix(prompts)
        lcp = len(prefix)
        try:
            self._set_prefix(prefix)
            room = self.n_ctx - lcp
            wave: list[int] = []
            used = 0
            for i, p in enumerate(prompts):
                need = len(p) - lcp + max(0, states[i].budget)
                if need > room:
                    raise ValueError(f"a prompt of {len(p)} tokens with {states[i].budget} new ones exceeds n_ctx")
                if wave and (len(wave) + 1 > self.n_seq_max - 1 or used + need > room):
                    self._generate_wave([(prompts[j][lcp:], states[j], lcp) for j in wave])
                    wave, used = [], 0
                wave.append(i)
                used += need
            if wave:
                self._generate_wave([(prompts[j][lcp:], states[j], lcp) for j in wave])
        except RuntimeError:
            self.reset()
            raise

    def _generate_wave(self, items: list[tuple[Sequence[int], Any, int]]) -> None:
        seqs = list(range(1, len(items) + 1))
        entries: list[tuple[int, int, Sequence[int], bool]] = []
        owner: list[int] = []  # per entry with logits: which item
        for w, (suffix, _, start) in enumerate(items):
            if self._prefix:
                self._seq_cp(0, seqs[w])
            for j, tok in enumerate(suffix):
                last = j == len(suffix) - 1
                entries.append((tok, start + j, (seqs[w],), last))
                if last:
                    owner.append(w)
        pos = [start + len(suffix) for suffix, _, start in items]
        try:
            nxt: dict[int, int] = {}
            k = 0
            for i in range(0, len(entries), self.n_batch):
                chunk = entries[i : i + self.n_batch]
                self._decode(chunk)
                for j, e in enumerate(chunk):
                    if e[3]:
                        w = owner[k]
                        k += 1
                        state = items[w][1]
                        tok = None if state.done else state.step(self._logits(j))
                        if tok is not None:
                            nxt[w] = tok
            while nxt:
                order = sorted(nxt)
                self._decode([(nxt[w], pos[w], (seqs[w],), True) for w in order])
                for w in order:
                    pos[w] += 1
                nxt = {}
                for j, w in enumerate(order):
                    tok = items[w][1].step(self._logits(j))
                    if tok is not None:
                        nxt[w] = tok
        finally:
            for s in seqs:
                self._seq_rm(s, -1, -1)
