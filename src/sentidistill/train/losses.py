"""Distillation losses as plug-ins: registered functions with documented shapes, picked and weighted by config.

Every loss takes one :class:`LossInputs` and returns ``(value, n)``: a scalar tensor (a mean over the
positions or examples it covers) and how many there were (``n == 0``: the term does not apply to this
batch and is left out, e.g. no row carries teacher log-probabilities). The ICLDist trainer sums
``weight * value`` over the losses whose weight is > 0 (:func:`loss_weights` reads them from the config:
``ce_weight`` -> ``ce``, ``kl_weight`` -> ``topk_kl``).

========== ============================================================================================
``ce``      sequence-level cross-entropy on the teacher's answer (the model's own loss, or the answer-only
            CE for causal students); ``LossInputs.ce``, already computed by the forward pass.
``topk_kl`` token-level KL(teacher || student) on the teacher's stored top-k (:func:`topk_kl`).
========== ============================================================================================

A new loss (e.g. a label-distribution KL over the label words' sequence likelihoods against teacher soft
labels) is a function here (or in its own module) plus one :data:`LOSSES` entry and a config weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sentidistill.core.registry import Registry


@dataclass
class LossInputs:
    """What a loss may read from one batch. Shapes: B rows, T positions, V vocabulary, K teacher top-k."""

    ce: torch.Tensor | None = None  # scalar: the forward pass's cross-entropy on the answer tokens
    logits: torch.Tensor | None = None  # [B, T, V] (or [N, V] answer-only) student logits, t predicts target t
    teacher_ids: torch.Tensor | None = None  # [B, T, K] (or [N, K]) teacher top-k ids at each target position
    teacher_logprobs: torch.Tensor | None = None  # same shape; -inf marks an empty slot
    batch: Mapping[str, Any] | None = None  # the collated batch, for losses that need more (e.g. soft labels)
    model: Any = None  # the model being trained, for losses that score more than the target (label words)
    student: Any = None  # its sentidistill.students.Student (kind-specific helpers such as align_next_token)


LossFn = Callable[[LossInputs], tuple[torch.Tensor, torch.Tensor | int]]


def sequence_ce(inputs: LossInputs) -> tuple[torch.Tensor, int]:
    """The sequence-level cross-entropy the forward pass computed (mean over answer tokens; n = 1)."""
    if inputs.ce is None:
        raise ValueError("loss 'ce' needs LossInputs.ce (the forward pass's loss)")
    return inputs.ce, 1


def topk_kl(
    logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean KL(teacher || student) over positions that have teacher entries, and how many there were.

    ``logits`` ``[B, T, V]`` predict position t; ``teacher_ids``/``teacher_logprobs`` ``[B, T, K]`` hold the
    teacher's top-k at t, ``-inf`` where there is no entry. Answer-only logits ``[N, V]`` with ``[N, K]``
    teacher tensors work the same. Both distributions are renormalised over the teacher's top-k tokens: the
    teacher's because its tail is unknown, the student's so that both live on the same support and the
    term is a true divergence (>= 0, 0 iff the student ranks the k tokens in the teacher's proportions).
    Mass the student puts outside the top-k is the CE term's business. Returns ``(kl [], n [])``.
    """
    if logits.dim() == 2:
        logits, teacher_ids, teacher_logprobs = logits.unsqueeze(0), teacher_ids.unsqueeze(0), teacher_logprobs.unsqueeze(0)
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


def topk_kl_loss(inputs: LossInputs) -> tuple[torch.Tensor, torch.Tensor | int]:
    """:func:`topk_kl` on the aligned logits and teacher tensors (n = 0 when the batch has none)."""
    if inputs.logits is None or inputs.teacher_ids is None or inputs.teacher_logprobs is None:
        return torch.zeros(()), 0
    return topk_kl(inputs.logits, inputs.teacher_ids, inputs.teacher_logprobs)


#: loss name -> "module:function" (imported when first used).
LOSSES = Registry("loss", {
    "ce": "sentidistill.train.losses:sequence_ce",
    "topk_kl": "sentidistill.train.losses:topk_kl_loss",
}, field="loss")


def loss_weights(config: Any) -> dict[str, float]:
    """Loss name -> weight from a method config (``ICLDistConfig`` / ``ICLDistTrainingArguments``:
    ``ce_weight``, ``kl_weight``; a ``losses`` mapping, when present, adds or overrides terms)."""
    weights = {"ce": float(getattr(config, "ce_weight", 1.0)), "topk_kl": float(getattr(config, "kl_weight", 0.0))}
    weights.update({k: float(v) for k, v in (getattr(config, "losses", None) or {}).items()})
    for name in weights:
        LOSSES.check(name)
    return weights
