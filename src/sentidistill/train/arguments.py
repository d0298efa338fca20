"""The one mapping from :class:`~sentidistill.config.TrainingConfig` onto ``transformers.TrainingArguments``.

Every training method's arguments class (a dataclass extending ``TrainingArguments``, trl's pattern) mixes in
:class:`ConfigArguments` and is built with ``ArgsClass.from_config(training, output_dir, seed=..., **own)``:

1. :func:`trainer_arguments` maps the config fields (the same keyword names for every method);
2. the class's :meth:`ConfigArguments.adapt` hook changes what the method does differently (e.g. the soft-label
   methods evaluate and checkpoint on the same cadence; trl's on-policy sampler has no length grouping);
3. ``own`` are the method's own fields (``kl_weight``, ``max_source_length``, ...), declared on the dataclass.

Fields a method cannot honour are refused at config load (``sentidistill.config.UNHONOURED_SETTINGS``), never
dropped here. Fields applied outside ``TrainingArguments`` are listed in :data:`APPLIED_ELSEWHERE`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

import torch

from sentidistill.config import TrainingConfig

#: TrainingConfig fields not in :func:`trainer_arguments`, and the code that obeys them.
APPLIED_ELSEWHERE: dict[str, str] = {
    "lora": "sentidistill.train.methods.prepare_model (peft adapters; merged by save_final)",
    "lora_r": "sentidistill.train.methods.prepare_model",
    "eval_steps": "the method: BenchEvalCallback (knowdist, icldist, onpolicy) or the dev-slice evaluation "
                  "cadence (soft_label_classifier, soft_label_lm)",
}


def resolve_precision(precision: str) -> str:
    """``auto``: bf16 on a GPU that supports it, else fp32 (fp16 only when asked for)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def trainer_arguments(training: TrainingConfig, output_dir: str | Path, seed: int) -> dict[str, Any]:
    """``TrainingArguments`` keyword arguments for ``training`` (checkpoints under ``output_dir/checkpoints``;
    ``seed`` seeds init, dropout and the data order). The one place a TrainingConfig field meets transformers."""
    precision = resolve_precision(training.precision)
    return dict(
        output_dir=str(Path(output_dir) / "checkpoints"),
        num_train_epochs=training.epochs,
        max_steps=training.max_steps,
        learning_rate=training.learning_rate,
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        weight_decay=training.weight_decay,
        warmup_steps=training.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of total steps
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        logging_steps=training.logging_steps,
        logging_first_step=True,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        torch_compile=training.torch_compile,
        use_liger_kernel=training.use_liger_kernel,
        report_to=list(training.report_to) or "none",
        dataloader_num_workers=training.dataloader_num_workers,
        train_sampling_strategy="group_by_length" if training.group_by_length else "random",
        length_column_name="length",
        seed=seed,
        data_seed=seed,
        eval_strategy="no",
        disable_tqdm=not os.isatty(2),
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without a GPU, say so: a multi-process CPU launch then forms a gloo process group (DDP on CPU).
        use_cpu=not torch.cuda.is_available(),
    )


class ConfigArguments:
    """Mixin of a method's arguments dataclass: build it from a :class:`TrainingConfig` (no fields of its own)."""

    @classmethod
    def adapt(cls, kwargs: dict[str, Any], training: TrainingConfig) -> dict[str, Any]:
        """What this method sets differently from :func:`trainer_arguments` (default: nothing)."""
        return kwargs

    @classmethod
    def from_config(cls, training: TrainingConfig, output_dir: str | Path, /, *, seed: int = 42, **own: Any) -> Self:
        """The method's arguments for ``training`` (checkpoints under ``output_dir/checkpoints``); ``own``: the
        method's own fields, and explicit overrides of mapped keywords (e.g. ``output_dir``)."""
        kwargs = cls.adapt(trainer_arguments(training, output_dir, seed), training)
        return cls(**{**kwargs, **own})  # type: ignore[call-arg]
