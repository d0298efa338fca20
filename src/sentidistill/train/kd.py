"""Token-level distillation against the teacher's stored top-k log-probabilities.

The corpus keeps, for each generated teacher token, ``{"token", "logprob", "top": [[text, logprob], ...]}``
(``teacher_logprobs``, JSON). Teacher and student usually tokenise differently, so before training each
example is *aligned*:

1. The teacher tokens are laid out on the answer text (their concatenation must contain the target).
2. The student's tokens of the same answer (with char offsets) must coincide one-to-one with teacher
   tokens: same characters at the same offsets (whitespace at a token's edge is ignored, because some
   tokenizers report offsets without the leading space). Then each position's top-k alternatives are
   mapped to student ids: the teacher's chosen token becomes the student's own token at that position;
   an alternative whose text is exactly one student token maps to it; others are dropped (the loss
   renormalises over what is left).
3. An example whose tokens do not line up falls back to sequence-level CE only, and is counted
   (``KDStats.fallback``), so a run with a mismatched pair of tokenizers is visible, not silent.

:func:`topk_kl` is the loss: KL(teacher || student) on the teacher's top-k support, averaged over answer
positions that have teacher entries.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sentidistill.errors import InputError


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
        merged: dict[int, float] = {sid: float(entry["logprob"])}
        chosen = str(entry["token"])
        for alt, lp in entry.get("top") or []:
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


def topk_kl(
    logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean KL(teacher || student) over positions that have teacher entries, and how many there were.

    ``logits`` [B, T, V] predict position t; ``teacher_ids``/``teacher_logprobs`` [B, T, K] hold the
    teacher's top-k at t, ``-inf`` where there is no entry. Both distributions are renormalised over the
    teacher's top-k tokens: the teacher's because its tail is unknown, the student's so that both live on
    the same support and the term is a true divergence (>= 0, 0 iff the student ranks the k tokens in the
    teacher's proportions). Mass the student puts outside the top-k is the CE term's business.
    """
    valid = torch.isfinite(teacher_logprobs)  # [B, T, K]
    has = valid.any(-1)  # [B, T]
    n = has.sum()
    if n == 0:
        return logits.new_zeros(()), n
    lt = teacher_logprobs[has]  # [N, K]
    ids = teacher_ids[has]
    mask = valid[has]
    student = logits[has].float().gather(-1, ids)  # [N, K] raw logits at the teacher's tokens
    neg_inf = torch.finfo(student.dtype).min
    log_q = torch.log_softmax(student.masked_fill(~mask, neg_inf), dim=-1)
    log_p = torch.log_softmax(lt.float().masked_fill(~mask, neg_inf), dim=-1)
    p = log_p.exp() * mask
    kl = (p * (log_p - log_q)).masked_fill(~mask, 0.0).sum(-1)  # [N]
    return kl.mean(), n
