"""Losses over a task's label set: soft-label KL to a teacher's distribution, and CE on gold labels.

Shapes: ``B`` examples, ``K`` = the widest label set in the batch (narrower tasks are padded and masked).
All losses are in nats, averaged over the batch with optional per-example weights (class balancing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# What masked-out (padding) label positions hold in student logits: finite, so 0 * log-softmax stays 0.
MASKED_LOGIT = -1.0e4


def _weighted_mean(per_example: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return per_example.mean()
    w = weights.to(per_example.dtype)
    return (per_example * w).sum() / w.sum().clamp_min(1e-12)


def soft_label_kl(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``T² · KL(p_T ‖ softmax(z / T))`` averaged over the batch (Hinton, Vinyals & Dean 2015, "Distilling
    the Knowledge in a Neural Network").

    Args:
        student_logits: ``[B, K]`` float, the student's logits over each example's label set.
        teacher_probs: ``[B, K]`` float, the teacher's (calibrated) distribution; rows sum to 1 over ``mask``.
        mask: ``[B, K]`` bool, True where the label exists for the example's task.
        temperature: ``T > 0``; the teacher's distribution is sharpened/flattened as ``p^(1/T)`` renormalised,
            the student's as ``softmax(z / T)``; ``T²`` keeps gradient sizes comparable across temperatures.
        weights: ``[B]`` optional per-example weights.
    Returns:
        a scalar tensor, nats. Raises ``ValueError`` for ``temperature <= 0`` or mismatched shapes.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_probs.shape or student_logits.shape != mask.shape:
        raise ValueError(f"shapes differ: logits {tuple(student_logits.shape)}, teacher {tuple(teacher_probs.shape)}, "
                         f"mask {tuple(mask.shape)}")
    z = student_logits.float().masked_fill(~mask, MASKED_LOGIT) / temperature
    log_q = F.log_softmax(z, dim=-1)
    p = teacher_probs.float().clamp_min(0.0) * mask
    if temperature != 1.0:
        p = p.clamp_min(1e-12).pow(1.0 / temperature) * mask
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    kl = (torch.xlogy(p, p) - p * log_q).sum(-1)  # [B]
    return _weighted_mean(kl, weights) * temperature**2


def label_ce(
    student_logits: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor, *, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy to gold label indices ``[B]`` (``-100`` = no gold label; such rows add nothing).

    ``student_logits`` and ``mask`` are ``[B, K]``. Returns a scalar (nats); 0 when no row has a gold label."""
    has = gold >= 0
    if not bool(has.any()):
        return student_logits.sum() * 0.0
    z = student_logits.float().masked_fill(~mask, MASKED_LOGIT)
    ce = F.cross_entropy(z[has], gold[has], reduction="none")
    return _weighted_mean(ce, weights[has] if weights is not None else None)
