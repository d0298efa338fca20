"""Cheap losses for short answers: project hidden states onto the vocabulary only where there is a label.

An ICL prompt is a few hundred tokens and its answer a handful (``positive`` + EOS), yet a causal LM's
forward computes ``[B, T, V]`` logits: with Qwen2.5's 151,936-token vocabulary that is 620 MB of fp32 for a
4 x 256 batch, plus as much again for the gradient and the log-softmax. Almost all of it is thrown away by
the ``-100`` labels. Here the transformer body runs as usual (``model.base_model`` -> last hidden states),
the hidden states at the positions whose *next* label is not -100 are gathered (``[N, H]``, N = answer
tokens in the batch), and only those go through ``lm_head`` (by default inside the model's own forward, through
transformers' boolean ``logits_to_keep`` mask, so distributed and PEFT wrappers see a normal call). The cross-entropy is the same number as the
full-logits path (``ForCausalLMLoss``, mean over answer tokens), and so is its gradient; the token-level
KL term (:func:`sentidistill.train.losses.topk_kl`) is computed on the same ``[N, V]`` logits.

(An integer ``logits_to_keep`` would only serve when every row's answer is the same-length suffix; batches here
are right-padded with answers of varying lengths, so the positions are chosen per row.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from sentidistill.errors import InputError
from sentidistill.students import student_for
from sentidistill.train.losses import topk_kl

IGNORE_INDEX = -100


@dataclass
class AnswerLogits:
    """Logits at the answer positions of a batch, flattened over (row, position)."""

    logits: torch.Tensor  # [N, V] logits whose arg-max should be ``targets``
    targets: torch.Tensor  # [N] the next-token labels they predict
    batch_index: torch.Tensor  # [N] row of each entry
    position: torch.Tensor  # [N] position t of the hidden state (it predicts ``labels[row, t + 1]``)

    @property
    def n(self) -> int:
        return int(self.targets.numel())


def answer_positions(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, positions)`` of hidden states whose next-token label is not ``ignore_index``."""
    if labels.dim() != 2:
        raise InputError("labels must be [batch, seq]", field="labels", expected="a 2-D tensor", got=tuple(labels.shape))
    next_labels = labels[:, 1:]
    rows, pos = (next_labels != ignore_index).nonzero(as_tuple=True)
    return rows, pos


def split_causal_lm(model: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body (hidden states out) and the LM head of a causal LM, PEFT-wrapped or not."""
    inner = getattr(model, "module", model)  # DDP (the split path bypasses its hooks: single process only)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT: LoRA is injected in place
    if not student_for(inner, None).answer_only_logits:
        raise InputError("answer-only logits are for decoder-only (causal) models", field="model",
                         expected="a causal LM", got=type(inner).__name__)
    body = inner.base_model
    head = inner.get_output_embeddings()
    if body is inner or head is None:
        raise InputError("cannot split the model into a body and an LM head", field="model",
                         expected="a *ForCausalLM model with base_model and lm_head", got=type(inner).__name__)
    return body, head


def _mask_slicing_available() -> bool:
    """Whether this transformers slices hidden states with a 2-D boolean ``logits_to_keep`` (probed, not
    inferred from a version number: older 5.x releases take only ints and 1-D index tensors)."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    try:
        out = slice_logits_to_keep(torch.zeros(1, 3, 2), torch.tensor([[True, False, True]]))
    except (IndexError, RuntimeError, TypeError):
        return False
    return tuple(out.shape) == (2, 2)


def supports_mask_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` accepts a 2-D boolean ``logits_to_keep`` (``via="forward"`` works)."""
    import inspect

    if not _mask_slicing_available():
        return False
    inner = getattr(model, "module", model)  # DDP / FSDP wrapper
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    via: Literal["auto", "forward", "split", "full"] = "auto",
    **model_kwargs: Any,
) -> AnswerLogits:
    """Logits at the answer positions only (see the module docstring).

    ``via="forward"`` calls the model itself with a boolean ``logits_to_keep`` mask, so DDP/FSDP/PEFT wrappers
    and the model's own head (soft-capping, scaling) behave exactly as in a normal forward; ``"split"`` runs
    ``base_model`` and ``lm_head`` separately (for models without ``logits_to_keep``; single process only);
    ``"full"`` computes all logits and gathers the answer rows (no saving; always correct); ``"auto"`` picks
    forward, else split, else (a DDP/FSDP-wrapped model on an older transformers) full.
    """
    rows, pos = answer_positions(labels)
    targets = labels[rows, pos + 1]
    if via == "auto":
        wrapped = type(model).__name__ in ("DistributedDataParallel", "FullyShardedDataParallel")
        via = "forward" if supports_mask_logits_to_keep(model) else ("full" if wrapped else "split")
    elif via == "forward" and not supports_mask_logits_to_keep(model):
        raise InputError("this model/transformers version has no boolean logits_to_keep", field="via",
                         expected="'auto' or 'split'", got=via)
    if via == "forward":
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[rows, pos] = True  # row-major, the same order as ``nonzero``
        out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False,
                    **model_kwargs)
        logits = out.logits
        if logits.dim() != 2 or logits.shape[0] != rows.numel():
            raise InputError("the model ignored the boolean logits_to_keep mask", field="model",
                             expected=f"[{rows.numel()}, vocab] logits", got=tuple(logits.shape))
        return AnswerLogits(logits=logits, targets=targets, batch_index=rows, position=pos)
    if via == "full":
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **model_kwargs)
        return AnswerLogits(logits=out.logits[rows, pos], targets=targets, batch_index=rows, position=pos)
    body, head = split_causal_lm(model)
    out = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **model_kwargs)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    picked = hidden[rows, pos]  # [N, H]
    logits = head(picked)
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if cap:  # Gemma-2 style soft-capping, applied by the full forward too
        logits = torch.tanh(logits / cap) * cap
    if picked.numel() == 0:
        # Keep the graph connected so backward() works on a batch without answers.
        logits = logits + hidden.sum() * 0.0
    return AnswerLogits(logits=logits, targets=targets, batch_index=rows, position=pos)


def answer_ce(ans: AnswerLogits, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the answer tokens: the mean, or the sum / ``num_items_in_batch`` like transformers'
    ``ForCausalLMLoss`` under gradient accumulation."""
    if ans.n == 0:
        return ans.logits.sum() * 0.0
    if num_items_in_batch is None:
        return F.cross_entropy(ans.logits.float(), ans.targets)
    return F.cross_entropy(ans.logits.float(), ans.targets, reduction="sum") / num_items_in_batch


def answer_only_loss(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    num_items_in_batch: int | torch.Tensor | None = None,
    *,
    via: Literal["auto", "forward", "split", "full"] = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CE loss, logits at the answer positions [N, V])``; the loss equals the full-logits path's."""
    ans = answer_logits(model, input_ids, attention_mask, labels, via=via)
    return answer_ce(ans, num_items_in_batch), ans.logits


def answer_teacher(ans: AnswerLogits, teacher_ids: torch.Tensor,
                   teacher_logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top-k ``[N, K]`` at the answer positions of ``ans`` (aligned with ``ans.logits``).

    ``teacher_ids``/``teacher_logprobs`` are ``[B, T, K]`` aligned with ``labels`` (as the collators write
    them): the entry for the token predicted at hidden position t sits at t + 1.
    """
    return (teacher_ids[ans.batch_index, ans.position + 1], teacher_logprobs[ans.batch_index, ans.position + 1])


def answer_kl(ans: AnswerLogits, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k KL term (:func:`sentidistill.train.losses.topk_kl`) on answer-only logits."""
    return topk_kl(ans.logits, *answer_teacher(ans, teacher_ids, teacher_logprobs))
