"""Trainer subclasses, one per distillation method, with their arguments as dataclasses (as trl does).

* :class:`KnowDistTrainer` (``Seq2SeqTrainer``): sequence-level KD, i.e. cross-entropy on the teacher's text.
* :class:`ICLDistTrainer` (``Trainer``): ``ce_weight * CE + kl_weight * KL`` where KL is the token-level term
  against the teacher's stored top-k log-probabilities; the terms and their weights come from the losses
  registry (:mod:`sentidistill.train.losses`).

Both take the corpus as a ``datasets.Dataset`` with ``source``/``target`` (and ``teacher_logprobs``) columns
and tokenise it themselves (like trl's SFTTrainer), adding a ``length`` column for length-grouped batches.
Everything else (DDP/FSDP/DeepSpeed through ``accelerate launch``, mixed precision, checkpoints, resume,
``torch_compile``, Liger kernels, loggers) is plain transformers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from datasets import Dataset
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments
from transformers.modeling_outputs import CausalLMOutput
from transformers.trainer_pt_utils import LengthGroupedSampler

from sentidistill.students import student_for
from sentidistill.students.collate import CausalCollator, Seq2SeqCollator
from sentidistill.train.align import (
    KDStats,
    TokenMapper,
    VocabIndex,
    align_example_exact,
    parse_teacher_logprobs,
)
from sentidistill.train.answer_logits import answer_ce, answer_logits, answer_teacher
from sentidistill.train.arguments import ConfigArguments
from sentidistill.train.losses import LOSSES, LossInputs, loss_weights

log = logging.getLogger(__name__)

_TEACHER_KEYS = ("teacher_ids", "teacher_logprobs")
_LOG_NAMES = {"topk_kl": "kl"}  # training-log names of the loss terms (``ce``, ``kl``)


@dataclass
class KnowDistTrainingArguments(ConfigArguments, Seq2SeqTrainingArguments):
    """``Seq2SeqTrainingArguments`` plus how corpus rows become tokens."""

    max_source_length: int = field(default=256, metadata={"help": "Prompt/source tokens kept."})
    max_target_length: int = field(default=128, metadata={"help": "Answer tokens kept (EOS included)."})
    source_truncation: Literal["left", "right"] = field(
        default="right", metadata={"help": "Which end of a long source is cut (KnowDist: keep the task tag)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the tokenised corpus columns (the collator picks what it needs)."})


@dataclass
class ICLDistTrainingArguments(ConfigArguments, TrainingArguments):
    """``TrainingArguments`` plus the ICLDist loss weights and tokenisation limits."""

    ce_weight: float = field(default=1.0, metadata={"help": "Weight of the sequence-level cross-entropy."})
    kl_weight: float = field(default=0.5, metadata={"help": "Weight of the token-level top-k KL term."})
    answer_only_logits: bool = field(default=True, metadata={
        "help": "Causal students: project onto the vocabulary only at answer positions when training (same loss)."})
    max_source_length: int = field(default=256, metadata={"help": "Prompt tokens kept (cut from the left)."})
    max_target_length: int = field(default=128, metadata={"help": "Answer tokens kept (EOS included)."})
    source_truncation: Literal["left", "right"] = field(
        default="left", metadata={"help": "ICL prompts end with the query: cut long ones from the left."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the tokenised corpus columns (the collator picks what it needs)."})


def _collator(model: Any, tokenizer: Any, args: Any) -> Any:
    """The student kind's collator with the method's limits."""
    return student_for(model, tokenizer).collator(
        max_source_length=args.max_source_length, max_target_length=args.max_target_length,
        source_truncation=args.source_truncation, eos_token_id=getattr(model.config, "eos_token_id", None))


def encode_corpus(
    dataset: Dataset, collator: Seq2SeqCollator | CausalCollator, *, token_kd: bool
) -> tuple[Dataset, KDStats]:
    """Tokenise ``source``/``target`` rows; with ``token_kd``, align ``teacher_logprobs`` to the student."""
    stats = KDStats()
    mapper = TokenMapper(collator.tokenizer)
    index = VocabIndex(collator.tokenizer) if token_kd else None
    has_lp = token_kd and "teacher_logprobs" in dataset.column_names
    rows: list[dict[str, Any]] = []
    for i, row in enumerate(dataset):
        enc = collator.encode(row["source"], row["target"])
        item = {"input_ids": enc["input_ids"], "labels": enc["labels"], "length": enc["length"],
                "answer_start": enc["answer_start"]}
        if token_kd:
            teacher = parse_teacher_logprobs(row.get("teacher_logprobs"), where=f"corpus row {i}") if has_lp else None
            n_ans = len(enc["answer_offsets"])
            # Exact id mapping when the teacher's tokens are the student's (shared vocabulary), else offsets.
            ids, lps = align_example_exact(row["target"], enc["labels"][-n_ans - 1:-1] if n_ans else [],
                                           enc["answer_offsets"], teacher, index, stats, mapper)
            item["kd_ids"], item["kd_logprobs"] = ids, lps
        rows.append(item)
    return Dataset.from_list(rows), stats


def _prepare(dataset: Dataset | None, collator: Any, token_kd: bool) -> tuple[Dataset | None, KDStats]:
    if dataset is None or "input_ids" in dataset.column_names:
        return dataset, KDStats()
    return encode_corpus(dataset, collator, token_kd=token_kd)


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' ``LengthGroupedSampler`` (mega-batches of similar length, shuffled) whose order depends on
    ``(seed, epoch)`` alone.

    The stock sampler draws each epoch's permutation from the global torch RNG, whose state at the start of
    epoch k depends on everything drawn before (dropout in the earlier epochs): a run resumed from a
    checkpoint inside epoch k > 0 then trains epoch k on a different order than the uninterrupted run did.
    The Trainer calls ``set_epoch`` before each epoch (and after skipping a resumed epoch's first batches),
    so reseeding there makes a resumed run's data order equal the uninterrupted one's.
    """

    def __init__(self, batch_size: int, dataset: Any = None, lengths: list[int] | None = None,
                 model_input_name: str | None = None, seed: int = 42) -> None:
        self.seed = seed
        super().__init__(batch_size, dataset=dataset, lengths=lengths, model_input_name=model_input_name,
                         generator=torch.Generator().manual_seed(seed))

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


class _ResumableSamplerMixin:
    """The Trainer's length-grouped train sampler replaced by :class:`EpochSeededLengthGroupedSampler`, so a
    run resumed inside any epoch trains on the uninterrupted run's data order (random sampling already is:
    accelerate's seedable sampler)."""

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Any:
        sampler = super()._get_train_sampler(train_dataset)  # type: ignore[misc]
        if type(sampler) is LengthGroupedSampler:
            args = self.args  # type: ignore[attr-defined]
            seed = args.data_seed if args.data_seed is not None else args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)
        return sampler


class _MetricsMixin:
    """Averages of per-step loss parts, added to the Trainer's logs (and so to every logger)."""

    _parts: dict[str, list[torch.Tensor]]

    def _record(self, name: str, value: torch.Tensor) -> None:
        self._parts[name].append(value.detach().float())

    def _flush(self, logs: dict[str, float]) -> None:
        if "loss" in logs:  # training logs only, not eval/final summaries
            for name, values in self._parts.items():
                if values:
                    logs[name] = round(torch.stack(values).mean().item(), 6)
            self._parts.clear()


class KnowDistTrainer(_ResumableSamplerMixin, _MetricsMixin, Seq2SeqTrainer):
    """Sequence-level KD: plain cross-entropy on the teacher's answers (prompt positions masked)."""

    arguments_class: ClassVar[type] = KnowDistTrainingArguments

    def __init__(self, model: Any = None, args: KnowDistTrainingArguments | None = None,
                 train_dataset: Dataset | None = None, processing_class: Any = None,
                 data_collator: Any = None, **kwargs: Any) -> None:
        args = args or KnowDistTrainingArguments(output_dir="checkpoints")
        collator = data_collator or _collator(model, processing_class, args)
        train_dataset, _ = _prepare(train_dataset, collator, token_kd=False)
        if "eval_dataset" in kwargs:
            kwargs["eval_dataset"], _ = _prepare(kwargs["eval_dataset"], collator, token_kd=False)
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         data_collator=collator, **kwargs)
        self._parts = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        for key in _TEACHER_KEYS:  # a corpus with log-probs still trains at sequence level here
            inputs.pop(key, None)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


class ICLDistTrainer(_ResumableSamplerMixin, _MetricsMixin, Trainer):
    """``ce_weight * CE + kl_weight * KL(teacher top-k || student)``, KL averaged over answer tokens with
    teacher log-probs. Examples whose tokens don't align with the teacher's are trained on CE only and
    counted (``self.kd_stats``; ``kd_examples_fallback`` in every training log)."""

    arguments_class: ClassVar[type] = ICLDistTrainingArguments

    def __init__(self, model: Any = None, args: ICLDistTrainingArguments | None = None,
                 train_dataset: Dataset | None = None, processing_class: Any = None,
                 data_collator: Any = None, **kwargs: Any) -> None:
        args = args or ICLDistTrainingArguments(output_dir="checkpoints")
        self._student = student_for(model, processing_class)
        collator = data_collator or _collator(model, processing_class, args)
        train_dataset, self.kd_stats = _prepare(train_dataset, collator, token_kd=args.kl_weight > 0)
        if "eval_dataset" in kwargs:
            kwargs["eval_dataset"], _ = _prepare(kwargs["eval_dataset"], collator, token_kd=args.kl_weight > 0)
        if self.kd_stats.fallback:
            log.warning("token-level KD: %d of %d examples with teacher log-probs fall back to sequence level "
                        "(student tokens do not align with the teacher's: %s)", self.kd_stats.fallback,
                        self.kd_stats.with_logprobs, self.kd_stats.fallback_reasons)
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         data_collator=collator, **kwargs)
        # CE and KL are both per-micro-batch token means, so they scale alike under gradient accumulation
        # (the Trainer's num_items_in_batch rescaling would apply to the CE only).
        self.model_accepts_loss_kwargs = False
        self._parts = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_ids = inputs.pop("teacher_ids", None)
        teacher_lps = inputs.pop("teacher_logprobs", None)
        args: ICLDistTrainingArguments = self.args  # type: ignore[assignment]
        ans = None
        if (self._student.answer_only_logits and args.answer_only_logits and model.training
                and not args.label_smoothing_factor):
            # No [B, T, V] logits: lm_head runs only where labels are (sentidistill.train.answer_logits).
            ans = answer_logits(model, inputs["input_ids"], inputs.get("attention_mask"), inputs["labels"])
            ce = answer_ce(ans)
            outputs = CausalLMOutput(loss=ce, logits=ans.logits)
        else:
            ce, outputs = super().compute_loss(model, inputs, return_outputs=True)
        parts = LossInputs(ce=ce, batch=inputs, model=model, student=self._student)
        if teacher_ids is not None:
            if ans is not None:
                parts.logits = ans.logits
                parts.teacher_ids, parts.teacher_logprobs = answer_teacher(ans, teacher_ids, teacher_lps)
            else:
                parts.logits, parts.teacher_ids, parts.teacher_logprobs = self._student.align_next_token(
                    outputs.logits, teacher_ids, teacher_lps)
        loss = None
        for name, weight in loss_weights(args).items():
            if weight <= 0 and name != "ce":  # CE is always logged (its weight may be 0)
                continue
            value, n = LOSSES.get(name)(parts)
            if n > 0:
                loss = weight * value if loss is None else loss + weight * value
                self._record(_LOG_NAMES.get(name, name), value)
        if loss is None:
            loss = ce * 0.0
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self._flush(logs)
        if "loss" in logs or "train_runtime" in logs:
            logs.update(self.kd_stats.as_metrics())
        super().log(logs, start_time)

    def summary(self) -> dict[str, Any]:
        """This method's part of ``training_summary.json``: the token-level alignment counts."""
        return {"token_kd": self.kd_stats.to_dict()}
