"""Token alignment for token-level KD: the teacher's stored top-k log-probabilities -> student token ids.

The one place where teacher tokens meet student tokens (the losses, :mod:`sentidistill.train.losses`,
only see aligned ``[B, T, K]`` tensors). Two paths, tried in order per example by :func:`align_example_exact`:

**Shared vocabulary** (e.g. Qwen2.5-Coder 1.5B -> 0.5B). The teacher's top-k *are* student token ids once the
token strings the teacher backend returned are turned back into vocabulary entries:

* :func:`tokenizers_identical` checks that the vocabularies really are shared (never assumed);
* :class:`VocabIndex` / :func:`map_teacher_topk_to_ids` map the stored strings onto ids exactly. Backends
  return decoded text (``" positive"``; llama.cpp and transformers), sometimes raw vocabulary pieces
  (``"Ġpositive"``, ``"▁positive"``) or OpenAI-style ``"bytes:..."`` for pieces that are not valid UTF-8 on
  their own. Text that was decoded lossily (U+FFFD, or empty) cannot be mapped and is counted;
* :func:`align_shared_vocab`: the teacher's generated ids must contain the student's tokenisation of the
  target as one contiguous run.

**Character offsets** (any two tokenizers, :func:`align_example`). The corpus keeps, for each generated
teacher token, ``{"token", "logprob", "top": [[text, logprob], ...]}`` (``teacher_logprobs``, JSON):

1. The teacher tokens are laid out on the answer text (their concatenation must contain the target).
2. The student's tokens of the same answer (with char offsets) must coincide one-to-one with teacher
   tokens: same characters at the same offsets (whitespace at a token's edge is ignored, because some
   tokenizers report offsets without the leading space). Then each position's top-k alternatives are
   mapped to student ids: the teacher's chosen token becomes the student's own token at that position;
   an alternative whose text is exactly one student token maps to it; others are dropped (the loss
   renormalises over what is left).
3. An example whose tokens do not line up falls back to sequence-level CE only, and is counted
   (``KDStats.fallback``), so a run with a mismatched pair of tokenizers is visible, not silent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sentidistill.core.records import parse_logprob
from sentidistill.errors import InputError
from sentidistill.utils.bytelevel import byte_level_alphabet


@dataclass
class KDStats:
    """How many examples got token-level KD and why the others fell back to sequence level."""

    examples: int = 0
    with_logprobs: int = 0
    aligned: int = 0
    fallback: int = 0
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    positions: int = 0
    alternatives_kept: int = 0
    alternatives_dropped: int = 0

    def count_fallback(self, reason: str) -> None:
        self.fallback += 1
        self.fallback_reasons[reason] = self.fallback_reasons.get(reason, 0) + 1

    def as_metrics(self) -> dict[str, float]:
        return {"kd_examples_aligned": float(self.aligned), "kd_examples_fallback": float(self.fallback),
                "kd_examples_without_logprobs": float(self.examples - self.with_logprobs)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_teacher_logprobs(raw: Any, *, where: str = "") -> list[dict[str, Any]] | None:
    """The per-token entries of a corpus ``teacher_logprobs`` cell (JSON text, a list, or null)."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or raw == "":
        return None
    data = json.loads(raw) if isinstance(raw, str) else raw
    if data is None:
        return None
    if not isinstance(data, list) or not all(isinstance(e, dict) and "token" in e for e in data):
        raise InputError("teacher_logprobs is not a list of per-token entries", path=where or None,
                         field="teacher_logprobs", expected='JSON [{"token", "logprob", "top": [[text, lp], ...]}]')
    return data


def _content_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without whitespace at its edges (or the raw span for whitespace-only tokens)."""
    s, e = start, end
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if s < e else (start, end)


class TokenMapper:
    """Teacher token text -> student id, when the text is exactly one student token (cached)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, int | None] = {}

    def __call__(self, text: str) -> int | None:
        if text not in self._cache:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            self._cache[text] = int(ids[0]) if len(ids) == 1 else None
        return self._cache[text]


def align_example(
    target: str,
    student_ids: list[int],
    student_offsets: list[tuple[int, int]],
    teacher: list[dict[str, Any]] | None,
    mapper: TokenMapper,
    stats: KDStats,
) -> tuple[list[list[int]], list[list[float]]]:
    """Per student answer token: (student ids, teacher log-probs) of the teacher's top-k, or ([], []) lists
    of empty entries when the example falls back to sequence level (counted in ``stats``)."""
    stats.examples += 1
    empty: tuple[list[list[int]], list[list[float]]] = ([], [])
    if not teacher:
        return empty
    stats.with_logprobs += 1
    joined = "".join(str(e["token"]) for e in teacher)
    shift = joined.find(target) if target else -1
    if shift < 0:
        stats.count_fallback("text_mismatch")
        return empty
    # The teacher's tokens as content spans in target coordinates.
    by_span: dict[tuple[int, int], int] = {}
    pos = -shift
    for j, e in enumerate(teacher):
        n = len(str(e["token"]))
        s, t = max(pos, 0), min(pos + n, len(target))
        if s < t:
            by_span.setdefault(_content_span(target, s, t), j)
        pos += n
    ids_out: list[list[int]] = []
    lps_out: list[list[float]] = []
    used: set[int] = set()
    for sid, (s, t) in zip(student_ids, student_offsets, strict=True):
        j = by_span.get(_content_span(target, s, t))
        if j is None or j in used:
            stats.count_fallback("token_mismatch")
            return empty
        used.add(j)
        entry = teacher[j]
        # The chosen token is the student's own token here; alternatives map by exact text.
        chosen, chosen_lp, top = _entry_fields(entry)
        if math.isnan(chosen_lp):  # the teacher's probability of its own token is unknown: no KL target
            stats.count_fallback("nonfinite_logprob")
            return empty
        merged: dict[int, float] = {sid: chosen_lp}
        for alt, lp in top:
            if alt == chosen:
                continue
            aid = mapper(str(alt))
            if aid is None:
                stats.alternatives_dropped += 1
                continue
            stats.alternatives_kept += 1
            merged[aid] = float(lp) if aid not in merged else float(torch.logaddexp(
                torch.tensor(merged[aid]), torch.tensor(float(lp))))
        ids_out.append(list(merged))
        lps_out.append(list(merged.values()))
    stats.aligned += 1
    stats.positions += len(ids_out)
    return ids_out, lps_out


# -- shared vocabulary -------------------------------------------------------------------------------

# Fields of a tokenizer.json that do not change text <-> ids (limits and batch padding).
_IRRELEVANT = ("truncation", "padding", "version")

PROBE_TEXTS = (
    "The food was great, but the service was slow!",
    "Sentiment: positive\nLabel: negative\tneutral",
    "  leading spaces, CAPS, numbers 12345 and 3.14159",
    "émojis 😀 and accents: café, naïve, Übermaß; CJK 很好",
    "<|im_start|>user\nClassify:<|im_end|>\n<|im_start|>assistant\n",
    "[('pizza', 'positive'), ('waiter', 'negative')]",
)


def _byte_encoder() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table (used by every byte-level BPE)."""
    return byte_level_alphabet()


def _tokenizer_json(tok: Any) -> dict[str, Any] | None:
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return None
    data = json.loads(backend.to_str())
    for key in _IRRELEVANT:
        data.pop(key, None)
    # The post-processor only adds BOS/EOS around encodings; the collators add specials themselves.
    data.pop("post_processor", None)
    data["added_tokens"] = sorted(
        (t["id"], t["content"], bool(t.get("special"))) for t in data.get("added_tokens") or [])
    return data


def tokenizer_difference(tok_a: Any, tok_b: Any, probes: Iterable[str] = PROBE_TEXTS) -> str | None:
    """Why two tokenizers would give different ids for the same text, or None when they would not.

    Compares the vocabularies (added tokens included), the BPE model (merges), normaliser, pre-tokeniser and
    decoder of fast tokenizers, and the encodings and decodings of a set of probe texts.
    """
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va != vb:
        only_a = len(va.keys() - vb.keys())
        only_b = len(vb.keys() - va.keys())
        moved = sum(1 for k in va.keys() & vb.keys() if va[k] != vb[k])
        return f"vocabularies differ ({len(va)} vs {len(vb)} entries; {only_a}/{only_b} only in one; {moved} re-numbered)"
    ja, jb = _tokenizer_json(tok_a), _tokenizer_json(tok_b)
    if ja is not None and jb is not None:
        for key in sorted(set(ja) | set(jb)):
            if ja.get(key) != jb.get(key):
                return f"tokenizer.json field '{key}' differs"
    for text in probes:
        ea = list(tok_a(text, add_special_tokens=False)["input_ids"])
        eb = list(tok_b(text, add_special_tokens=False)["input_ids"])
        if ea != eb:
            return f"probe {text!r} encodes differently ({ea[:8]}... vs {eb[:8]}...)"
        if tok_a.decode(ea) != tok_b.decode(eb):
            return f"probe {text!r} decodes differently"
    return None


def tokenizers_identical(tok_a: Any, tok_b: Any) -> bool:
    """True when both tokenizers map every text to the same ids (see :func:`tokenizer_difference`)."""
    return tokenizer_difference(tok_a, tok_b) is None


class VocabIndex:
    """Token string (as a teacher backend reports it) -> vocabulary id, exactly or not at all."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = dict(tokenizer.get_vocab())
        data = _tokenizer_json(tokenizer) or {}
        kinds = json.dumps([data.get("pre_tokenizer"), data.get("decoder")])
        self.byte_level = '"ByteLevel"' in kinds
        self.metaspace = '"Metaspace"' in kinds or "▁" in kinds  # sentencepiece-style "▁" for spaces
        self._cache: dict[str, int | None] = {}

    def _piece_from_bytes(self, raw: bytes) -> int | None:
        if self.byte_level:
            enc = _byte_encoder()
            return self.vocab.get("".join(enc[b] for b in raw))
        if len(raw) == 1:  # sentencepiece byte-fallback pieces
            return self.vocab.get(f"<0x{raw[0]:02X}>")
        return None

    def _lookup(self, text: str) -> int | None:
        if text.startswith("bytes:"):  # OpenAI-style escape for a piece that is not valid UTF-8
            try:
                raw = text[len("bytes:"):].encode("latin-1").decode("unicode_escape").encode("latin-1")
            except (UnicodeDecodeError, UnicodeEncodeError):
                return None
            return self._piece_from_bytes(raw)
        if not text or "\ufffd" in text:
            return None  # decoded lossily (a partial UTF-8 sequence): the piece is unknowable
        if self.byte_level:
            hit = self._piece_from_bytes(text.encode("utf-8"))
            if hit is not None:
                return hit
        if self.metaspace:
            hit = self.vocab.get(text.replace(" ", "▁"))
            if hit is not None:
                return hit
        return self.vocab.get(text)  # already a raw vocabulary piece ('Ġpositive') or a special token

    def __call__(self, text: str) -> int | None:
        if text not in self._cache:
            self._cache[text] = self._lookup(text)
        return self._cache[text]


@dataclass
class TopKIds:
    """One example's teacher top-k as student ids: ``ids``/``logprobs`` [T, K] (``-inf`` = no entry)."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    chosen: list[int | None]  # the id of the token the teacher generated at each position
    unmapped_positions: int = 0  # positions whose generated token has no id
    dropped_alternatives: int = 0  # top-k alternatives with no id (the rest is renormalised)

    @property
    def ok(self) -> bool:
        return self.unmapped_positions == 0 and len(self.chosen) > 0


@dataclass
class VocabKDStats:
    examples: int = 0
    mapped: int = 0
    fallback: int = 0
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    positions: int = 0
    unmapped_positions: int = 0
    dropped_alternatives: int = 0

    def count_fallback(self, reason: str) -> None:
        self.fallback += 1
        self.fallback_reasons[reason] = self.fallback_reasons.get(reason, 0) + 1


def _entry_fields(entry: Any) -> tuple[str, float, list[tuple[str, float]]]:
    """(token, log-prob, alternatives) of one ``teacher_logprobs`` entry (a dict or a ``TokenLogprob``).

    Log-probs are read with :func:`~sentidistill.core.records.parse_logprob` (``-Infinity``, strings, ``null``);
    alternatives whose log-prob is unknown (NaN) or ``-inf`` (probability 0: no mass for the KL target) are
    left out; the token's own log-prob may come back NaN, and the caller then falls back to sequence level."""
    if isinstance(entry, dict):
        token, lp, top = entry["token"], entry.get("logprob"), entry.get("top") or []
    else:
        token, lp, top = entry.token, entry.logprob, entry.top or []
    alts = [(str(a), parse_logprob(b)) for a, b in top]
    return str(token), parse_logprob(lp), [(a, b) for a, b in alts if math.isfinite(b)]


def map_teacher_topk_to_ids(teacher_logprobs: Any, tokenizer: Any, *, k: int | None = None) -> TopKIds:
    """Map one example's per-token teacher top-k (JSON text, dicts or ``TokenLogprob``) onto student ids.

    The generated token always enters its position's list (with its own log-prob) even when it fell outside
    the top-k; alternatives that map to no id are dropped and counted; duplicates (two strings for one id)
    are merged with log-sum-exp. A position whose generated token has no id is left empty and counted in
    ``unmapped_positions``; such an example should fall back to sequence-level training (``.ok`` is False).
    """
    index = tokenizer if isinstance(tokenizer, VocabIndex) else VocabIndex(tokenizer)
    entries = parse_teacher_logprobs(teacher_logprobs) if isinstance(teacher_logprobs, str) else teacher_logprobs
    entries = list(entries or [])
    rows: list[dict[int, float]] = []
    chosen: list[int | None] = []
    unmapped = dropped = 0
    for entry in entries:
        token, logprob, top = _entry_fields(entry)
        cid = index(token) if not math.isnan(logprob) else None  # unknown probability: no target here
        chosen.append(cid)
        merged: dict[int, float] = {}
        if cid is None:
            unmapped += 1
        else:
            merged[cid] = logprob
            for alt, lp in top[: k if k else None]:
                aid = index(alt)
                if aid is None:
                    dropped += 1
                elif aid == cid:
                    continue  # the generated token listed again among its alternatives
                elif aid in merged:
                    merged[aid] = float(torch.logaddexp(torch.tensor(merged[aid]), torch.tensor(lp)))
                else:
                    merged[aid] = lp
        rows.append(merged)
    width = max((len(r) for r in rows), default=0)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    lps = torch.full((len(rows), width), -math.inf)
    for t, merged in enumerate(rows):
        if merged:
            ids[t, : len(merged)] = torch.tensor(list(merged), dtype=torch.long)
            lps[t, : len(merged)] = torch.tensor(list(merged.values()), dtype=torch.float)
    return TopKIds(ids=ids, logprobs=lps, chosen=chosen, unmapped_positions=unmapped, dropped_alternatives=dropped)


def align_shared_vocab(mapped: TopKIds, student_answer_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The rows of ``mapped`` for the student's answer tokens, ``([n, K] ids, [n, K] log-probs)``, or None.

    With a shared vocabulary the student's tokens of the (possibly stripped) target must appear in the
    teacher's generated ids as one contiguous run; the first such run is used. When they do not (the teacher
    generated a non-canonical tokenisation, or a position could not be mapped), the caller falls back.
    """
    want = [int(i) for i in student_answer_ids]
    n = len(want)
    if n == 0 or not mapped.ok:
        return None
    got = mapped.chosen
    for start in range(len(got) - n + 1):
        if got[start: start + n] == want:
            return mapped.ids[start: start + n], mapped.logprobs[start: start + n]
    return None


def map_corpus_topk(
    targets: Sequence[list[int]], teacher_logprobs: Sequence[Any], tokenizer: Any, *, k: int | None = None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor] | None], VocabKDStats]:
    """:func:`map_teacher_topk_to_ids` + :func:`align_shared_vocab` over a corpus, with counts of the examples
    that fall back to sequence level (``no_logprobs``, ``unmapped_token``, ``token_mismatch``)."""
    index = tokenizer if isinstance(tokenizer, VocabIndex) else VocabIndex(tokenizer)
    stats = VocabKDStats()
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for target_ids, raw in zip(targets, teacher_logprobs, strict=True):
        stats.examples += 1
        entries = parse_teacher_logprobs(raw)
        if not entries:
            stats.count_fallback("no_logprobs")
            out.append(None)
            continue
        mapped = map_teacher_topk_to_ids(entries, index, k=k)
        stats.unmapped_positions += mapped.unmapped_positions
        stats.dropped_alternatives += mapped.dropped_alternatives
        aligned = align_shared_vocab(mapped, target_ids) if mapped.ok else None
        if aligned is None:
            stats.count_fallback("unmapped_token" if not mapped.ok else "token_mismatch")
        else:
            stats.mapped += 1
            stats.positions += int(aligned[0].shape[0])
        out.append(aligned)
    return out, stats


def align_example_exact(
    target: str,
    student_ids: list[int],
    student_offsets: list[tuple[int, int]],
    teacher: list[dict[str, Any]] | None,
    index: VocabIndex,
    stats: KDStats,
    mapper: TokenMapper | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """Drop-in for :func:`align_example` that tries the exact shared-vocabulary path first.

    When the teacher's generated tokens map onto ids that reproduce the student's tokenisation of the target
    (checked per example, not assumed), every top-k alternative that is a vocabulary entry is kept, not only
    those that re-tokenise to one token. Otherwise the example goes through the offset alignment (:func:`align_example`)
    (and may fall back to sequence level there, counted in ``stats``).
    """
    if teacher and student_ids:
        mapped = map_teacher_topk_to_ids(teacher, index)
        aligned = align_shared_vocab(mapped, student_ids)
        if aligned is not None:
            ids_t, lps_t = aligned
            keep = torch.isfinite(lps_t)
            ids_out = [row[m].tolist() for row, m in zip(ids_t, keep, strict=True)]
            lps_out = [row[m].tolist() for row, m in zip(lps_t, keep, strict=True)]
            stats.examples += 1
            stats.with_logprobs += 1
            stats.aligned += 1
            stats.positions += len(ids_out)
            stats.alternatives_kept += sum(len(r) - 1 for r in ids_out)
            stats.alternatives_dropped += mapped.dropped_alternatives
            return ids_out, lps_out
    return align_example(target, student_ids, student_offsets, teacher, mapper or TokenMapper(index.tokenizer),
                            stats)
