"""Training methods by name, and the steps every method shares: build, train (resumably), save.

A training method is (trl's pattern):

* an **arguments class**: a dataclass extending ``TrainingArguments`` (or a subclass) with the method's own
  fields, mixing in :class:`~sentidistill.train.arguments.ConfigArguments` so that it is built from a
  :class:`~sentidistill.config.TrainingConfig` by the one mapping;
* a **Trainer subclass** that reads its settings from ``self.args`` and names its arguments class in the class
  attribute ``arguments_class``;
* one line in :data:`TRAINING_METHODS` (name -> ``"module:TrainerClass"``, imported on first use).

Every method's run is :func:`build_trainer` -> :func:`train_resumable` -> :func:`save_final`, which writes
``<out>/final/`` (safetensors, tokenizer, student-kind marker) with ``training_summary.json`` inside, atomically.
:func:`read_training_summary` reads it back. See docs/architecture.md, "How to add a training method".
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentidistill.config import TrainingConfig, check_training_settings
from sentidistill.core.registry import Registry
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

#: Training method name -> its Trainer subclass (whose ``arguments_class`` is the method's arguments dataclass).
TRAINING_METHODS = Registry("training method", {
    "knowdist": "sentidistill.train.trainers:KnowDistTrainer",
    "icldist": "sentidistill.train.trainers:ICLDistTrainer",
    "onpolicy": "sentidistill.train.onpolicy:OnPolicyTrainer",
    "soft_label_classifier": "sentidistill.train.classifier:SoftLabelClassifierTrainer",
    "soft_label_lm": "sentidistill.train.softlabel_lm:SoftLabelLMTrainer",
    "multitask_lm": "sentidistill.train.multitask_lm:MultiTaskLMTrainer",
}, field="method")

SUMMARY_FILE = "training_summary.json"
_OLD_SUMMARY_FILES = ("final/training_info.json", "training_summary.json")  # runs saved before one name


def arguments_for(method: str, training: TrainingConfig, output_dir: str | Path, *, seed: int = 42,
                  **own: Any) -> Any:
    """The ``TrainingArguments`` (subclass) of ``method`` for ``training``; ``own`` are the method's own fields.
    Raises :class:`~sentidistill.config.ConfigError` when ``training`` sets a value the method cannot honour."""
    check_training_settings(training, method)
    return TRAINING_METHODS.get(method).arguments_class.from_config(training, output_dir, seed=seed, **own)


def prepare_model(model: Any, training: TrainingConfig, lora_task_type: str) -> Any:
    """The model in training mode, with LoRA adapters on every linear layer when ``training.lora``
    (``lora_task_type``: peft's ``TaskType`` name, from the student kind; alpha = 2 r, dropout 0.05)."""
    model.train()
    if not training.lora:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(r=training.lora_r, lora_alpha=2 * training.lora_r, lora_dropout=0.05,
                     target_modules="all-linear", task_type=TaskType[lora_task_type])
    model = get_peft_model(model, cfg)
    model.print_trainable_parameters()
    return model


def build_trainer(method: str, training: TrainingConfig, output_dir: str | Path, *, seed: int = 42,
                  model: Any, train_dataset: Any, processing_class: Any = None, eval_dataset: Any = None,
                  callbacks: Sequence[Any] = (), trainer_class: type | None = None,
                  trainer_kwargs: dict[str, Any] | None = None, **own: Any) -> Any:
    """The method's Trainer (``trainer_class`` overrides the registered one, e.g. a student kind's own), with
    its arguments from :func:`arguments_for`. ``trainer_kwargs``: extra constructor arguments (a teacher model)."""
    args = arguments_for(method, training, output_dir, seed=seed, **own)
    cls = trainer_class or TRAINING_METHODS.get(method)
    extra = {"eval_dataset": eval_dataset} if eval_dataset is not None else {}
    return cls(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
               callbacks=list(callbacks), **extra, **(trainer_kwargs or {}))


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` whose trainer state was written (the Trainer writes it last), so a
    checkpoint torn by a kill during saving is skipped rather than crashing the resume."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for d in folder.iterdir():
        if d.is_dir() and d.name.startswith("checkpoint-") and d.name[len("checkpoint-"):].isdigit():
            found.append((int(d.name[len("checkpoint-"):]), d))
    for _, d in sorted(found, reverse=True):
        try:
            json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("skipping incomplete checkpoint %s", d)
            continue
        if any(d.glob("*.safetensors")):
            return d
    return None


def train_resumable(trainer: Any, output_dir: str | Path) -> dict[str, Any]:
    """Train, resuming from the last complete checkpoint in ``output_dir/checkpoints`` when there is one.

    Returns the summary fields every method writes: ``global_step``, ``resumed_from`` and the finite final
    ``metrics`` of ``trainer.train``."""
    resume = last_complete_checkpoint(Path(output_dir) / "checkpoints")
    if resume is not None:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return {"global_step": trainer.state.global_step, "resumed_from": str(resume) if resume else None,
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, int | float) and math.isfinite(v)}}


def save_final(trainer_or_model: Any, out_dir: str | Path, summary: dict[str, Any], *, tokenizer: Any = None,
               kind: str | None = None) -> Path:
    """Write ``out_dir/final``: the model (safetensors; LoRA adapters merged into the weights), ``tokenizer``
    (default: the trainer's), the student-kind marker ``kind`` and ``summary`` as ``training_summary.json``.

    Atomic: everything goes to ``out_dir/.final.partial`` first, which then replaces ``final`` (a kill leaves the
    old ``final`` or none, never half of one). With a Trainer, every process takes part (FSDP/DeepSpeed shards
    are gathered) and the main process writes. Returns ``out_dir/final``."""
    from sentidistill.students.base import write_kind_marker

    out_dir = Path(out_dir)
    final, tmp, old = out_dir / "final", out_dir / ".final.partial", out_dir / ".final.old"
    trainer = trainer_or_model if hasattr(trainer_or_model, "save_model") else None
    main = trainer is None or trainer.is_world_process_zero()
    if main and tmp.exists():
        shutil.rmtree(tmp)
    if trainer is not None:
        trainer.accelerator.wait_for_everyone()
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = tokenizer if tokenizer is not None else trainer.processing_class
    else:
        model = trainer_or_model
    if hasattr(model, "merge_and_unload"):  # a peft model: downstream stages load a plain one
        if main:
            model.merge_and_unload().save_pretrained(tmp, safe_serialization=True)
    elif trainer is not None:
        trainer.save_model(str(tmp))  # gathers FSDP/DeepSpeed shards; writes on the main process only
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    if main:
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if kind:
            write_kind_marker(tmp, kind)  # load_student(final) picks the same student kind
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; training_summary.json says the same
        atomic_write_json(tmp / SUMMARY_FILE, summary)
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        log.info("saved %s (%s steps)", final, summary.get("global_step"))
    if trainer is not None:
        trainer.accelerator.wait_for_everyone()
    return final


def read_training_summary(out_dir: str | Path) -> dict[str, Any]:
    """The ``training_summary.json`` of a method's output folder (``out_dir/final/``; runs saved before the
    one name are read from their old places). Raises FileNotFoundError when there is none."""
    out_dir = Path(out_dir)
    for rel in (f"final/{SUMMARY_FILE}", *_OLD_SUMMARY_FILES):
        if (out_dir / rel).is_file():
            return json.loads((out_dir / rel).read_text(encoding="utf-8"))
    raise FileNotFoundError(f"no {SUMMARY_FILE} under {out_dir}/final")
