"""On-policy distillation from a local causal teacher, on trl's :class:`trl.DistillationTrainer`.

The student samples a completion for each corpus prompt, and both models score it: the loss is trl's
generalised Jensen-Shannon divergence (``beta``: 0 = forward KL, 1 = reverse KL) between their full next-token
distributions over the completion tokens (Agarwal et al., 2024). Nothing of the loss is re-derived here; this
module only turns a sentidistill corpus into trl's ``prompt`` column and checks that the pair can be distilled
(both causal, one tokenizer) with errors that say so. The corpus ``target`` (the teacher's stored answer) is not
used: trl 1.16's ``DistillationTrainer`` trains on its own generations only (no off-policy mixing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from datasets import Dataset
from trl import DistillationConfig, DistillationTrainer
from trl.trainer.utils import RepeatSampler

from sentidistill.errors import InputError
from sentidistill.students import student_for
from sentidistill.students.collate import parse_messages, source_text
from sentidistill.train.align import tokenizer_difference
from sentidistill.train.arguments import ConfigArguments, resolve_precision

log = logging.getLogger(__name__)

__all__ = ["DistillationConfig", "OnPolicyTrainer", "OnPolicyTrainingArguments", "check_distillable",
           "corpus_prompts", "load_teacher", "require_causal"]


@dataclass
class OnPolicyTrainingArguments(ConfigArguments, DistillationConfig):
    """trl's ``DistillationConfig`` (``beta``, ``temperature``, ``max_completion_length``, ...) built from a
    :class:`~sentidistill.config.TrainingConfig`: no length grouping (trl's sampler orders the prompts, and trl
    tokenises them itself), mixed precision and activation checkpointing on a GPU only."""

    @classmethod
    def adapt(cls, kwargs: dict[str, Any], training: Any) -> dict[str, Any]:
        gpu = torch.cuda.is_available()
        precision = resolve_precision(training.precision)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("train_sampling_strategy", "length_column_name")}
        # trl defaults to checkpointing (generation + a teacher forward are memory-heavy on a GPU); on a CPU it
        # only costs time. (transformers 5 name; trl reads the mirrored `gradient_checkpointing`.)
        return kwargs | {"bf16": precision == "bf16" and gpu, "fp16": precision == "fp16" and gpu,
                         "activation_checkpointing": gpu}


def corpus_prompts(dataset: Dataset, tokenizer: Any) -> Dataset:
    """The corpus ``source`` column as trl's ``prompt`` column.

    Chat-message sources stay conversational (trl applies the chat template with the generation cue). trl decides
    the format per batch from its first row, so a corpus that mixes plain and chat layouts gets every chat source
    rendered to text with the tokenizer's template instead (what the other methods train on, too).
    """
    sources = list(dataset["source"])
    parsed = [parse_messages(s) for s in sources]
    if all(m is not None for m in parsed):
        # Arrow needs one struct type per column: keep role/content only, content as text.
        prompts: list[Any] = [[{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in msgs]
                              for msgs in parsed if msgs is not None]
    else:
        if any(m is not None for m in parsed):
            log.info("corpus mixes chat and plain prompts: chat prompts are rendered with the chat template")
        prompts = [source_text(tokenizer, s)[0] for s in sources]
    return Dataset.from_list([{"prompt": p} for p in prompts])


def _vocab_size(model: Any) -> int:
    return int(model.config.get_text_config().vocab_size)


def require_causal(model: Any, role: str) -> None:
    """Raise :class:`InputError` when ``model`` (the ``role``: student or teacher) cannot take part in on-policy
    distillation (its student kind does not list the method, e.g. an encoder-decoder)."""
    student_for(model, None).require_method("onpolicy", role)


def check_distillable(student: Any, student_tok: Any, teacher: Any, teacher_tok: Any, teacher_spec: str = "") -> None:
    """Raise :class:`InputError` unless student and teacher are causal LMs with one tokenizer and vocabulary.

    The divergence compares the two next-token distributions id by id, so the ids must mean the same text.
    """
    require_causal(student, "student")
    require_causal(teacher, "teacher")
    why = tokenizer_difference(student_tok, teacher_tok)
    if why is not None:
        named = f" ({teacher_spec})" if teacher_spec else ""
        raise InputError(f"student and teacher{named} must share a tokenizer for on-policy distillation: {why}",
                         field="teacher_model",
                         expected="a teacher from the student's model family (same tokenizer), or --method icldist "
                                  "with a corpus of teacher log-probs")
    s_vocab, t_vocab = _vocab_size(student), _vocab_size(teacher)
    if s_vocab != t_vocab:
        # Same tokenizer, but embedding matrices padded differently (e.g. Qwen2.5 0.5B vs 7B).
        raise InputError(f"student and teacher output layers differ in size ({s_vocab} vs {t_vocab} rows) although "
                         "they share a tokenizer", field="teacher_model",
                         expected="models with the same vocab_size in their configs")


def load_teacher(spec: str, student: Any, student_tok: Any, dtype: torch.dtype | None = None) -> Any:
    """Load the teacher through :func:`sentidistill.students.load_student` (HF ids/paths, ``gguf:`` specs), frozen,
    after checking it can teach ``student`` (:func:`check_distillable`)."""
    from sentidistill.students import load_student

    lm = load_student(str(spec), "auto", dtype=dtype)
    check_distillable(student, student_tok, lm.model, lm.tokenizer, str(spec))
    teacher = lm.model
    teacher.requires_grad_(False)  # only ever run under no_grad; keeps it out of any optimiser or DDP wrapper
    teacher.eval()
    return teacher


class _EpochSeededRepeatSampler(RepeatSampler):
    """trl's ``RepeatSampler`` whose shuffle depends on (seed, epoch) alone. trl's draws each epoch's order from
    one generator, so a run resumed in epoch k > 0 (a fresh generator) would see epoch 0's order again; the
    Trainer calls ``set_epoch`` before each epoch, so reseeding there gives a resumed run the same order as an
    uninterrupted one (as the other methods' samplers do)."""

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) + epoch)


class OnPolicyTrainer(DistillationTrainer):
    """trl's ``DistillationTrainer`` (its ``compute_loss``: chunked generalised JSD on the student's own
    completions) that takes a sentidistill corpus (``source`` column) like the other methods' trainers."""

    arguments_class: ClassVar[type] = OnPolicyTrainingArguments

    def __init__(self, model: Any, teacher_model: Any, args: DistillationConfig | None = None,
                 train_dataset: Dataset | None = None, processing_class: Any = None, **kwargs: Any) -> None:
        if isinstance(model, torch.nn.Module):
            require_causal(model, "student")
        if train_dataset is not None and "prompt" not in train_dataset.column_names:
            if processing_class is None:
                raise InputError("a corpus without a 'prompt' column needs the student's tokenizer",
                                 field="processing_class")
            train_dataset = corpus_prompts(train_dataset, processing_class)
        super().__init__(model=model, teacher_model=teacher_model, args=args, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)

    def _get_train_sampler(self, dataset: Dataset | None = None) -> RepeatSampler:
        base = super()._get_train_sampler(dataset)  # trl's generation-batch layout, unchanged
        return _EpochSeededRepeatSampler(base.data_source, base.mini_repeat_count, batch_size=base.batch_size,
                                         repeat_count=base.repeat_count, shuffle=base.shuffle, seed=base.seed)
