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
``label_kl`` soft-label KL over a task's label set (:func:`soft_label_kl`): the student's class logits, or a
            generative student's label-word sequence log-likelihoods, against the teacher's (calibrated)
            distribution. Reads ``soft_labels``, ``label_mask``, ``weights``, ``temperature`` from the batch.
``label_ce`` cross-entropy on gold label indices over the label set (:func:`label_ce`); rows without one
            (``gold == -100``) add nothing.
``answer_nll`` per-token NLL of whole teacher answers scored as continuations (:func:`answer_nll_loss`; the
            multi-task generative student's fine-grained tuple rows).
========== ============================================================================================

A new loss is a function here (or in its own module) plus one :data:`LOSSES` entry and a config weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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


# -- losses over a task's label set ---------------------------------------------------------------------
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


def label_kl_loss(inputs: LossInputs) -> tuple[torch.Tensor, int]:
    """:func:`soft_label_kl` on ``inputs.logits`` ``[B, K]`` and the batch's ``soft_labels`` ``[B, K]``,
    ``label_mask`` ``[B, K]``, ``weights`` ``[B]`` and ``temperature`` (n = B)."""
    b = inputs.batch or {}
    if inputs.logits is None or b.get("soft_labels") is None:
        return torch.zeros(()), 0
    return soft_label_kl(inputs.logits, b["soft_labels"], b["label_mask"], temperature=float(b.get("temperature", 1.0)),
                         weights=b.get("weights")), int(inputs.logits.shape[0])


def label_ce_loss(inputs: LossInputs) -> tuple[torch.Tensor, int]:
    """:func:`label_ce` on ``inputs.logits`` ``[B, K]`` and the batch's ``gold`` ``[B]`` (n = rows with gold)."""
    b = inputs.batch or {}
    if inputs.logits is None or b.get("gold") is None:
        return torch.zeros(()), 0
    n = int((b["gold"] >= 0).sum())
    return label_ce(inputs.logits, b["gold"], b["label_mask"], weights=b.get("weights")), n


def answer_nll_loss(inputs: LossInputs) -> tuple[torch.Tensor, int]:
    """Sequence-level cross-entropy on whole teacher answers scored as continuations (the multi-task
    generative student's tuple rows): ``-sum_i w_i · log P(answer_i | prompt_i) / sum_i w_i · |answer_i|``,
    i.e. the weighted mean negative log-likelihood per answer token (nats). Reads the batch's
    ``answer_logprob`` ``[N]`` (each answer's summed token log-likelihood, differentiable),
    ``answer_tokens`` ``[N]`` (its token count) and optional ``answer_weights`` ``[N]`` (n = N)."""
    b = inputs.batch or {}
    lp = b.get("answer_logprob")
    if lp is None or lp.numel() == 0:
        return torch.zeros(()), 0
    n_tok = b["answer_tokens"].to(lp.dtype)
    w = b.get("answer_weights")
    w = torch.ones_like(lp) if w is None else w.to(lp.dtype)
    return -(w * lp).sum() / (w * n_tok).sum().clamp(min=1.0), int(lp.shape[0])


#: loss name -> "module:function" (imported when first used).
LOSSES = Registry("loss", {
    "answer_nll": "sentidistill.train.losses:answer_nll_loss",
    "ce": "sentidistill.train.losses:sequence_ce",
    "topk_kl": "sentidistill.train.losses:topk_kl_loss",
    "label_kl": "sentidistill.train.losses:label_kl_loss",
    "label_ce": "sentidistill.train.losses:label_ce_loss",
}, field="loss")


def loss_weights(config: Any) -> dict[str, float]:
    """Loss name -> weight from a method config (``ICLDistConfig`` / ``ICLDistTrainingArguments``:
    ``ce_weight``, ``kl_weight``; a ``losses`` mapping, when present, adds or overrides terms)."""
    weights = {"ce": float(getattr(config, "ce_weight", 1.0)), "topk_kl": float(getattr(config, "kl_weight", 0.0))}
    weights.update({k: float(v) for k, v in (getattr(config, "losses", None) or {}).items()})
    for name in weights:
        LOSSES.check(name)
    return weights
