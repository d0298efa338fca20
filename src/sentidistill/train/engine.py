"""``train_student``: one call from a corpus file to a saved, resumable, distilled student.

Layout of ``output_dir``::

    checkpoints/checkpoint-<step>/   Trainer checkpoints (safetensors + optimizer/scheduler/RNG state)
    final/                           the trained model + tokenizer (save_pretrained), written atomically
    final/training_info.json         method, corpus, steps, final metrics, token-KD alignment counts

Re-running the same call after a crash (even ``kill -9``) resumes from the last complete checkpoint with
the same data order (the Trainer restores the sampler's epoch/step and the RNG states). Multi-GPU:
``accelerate launch --config_file examples/accelerate_fsdp.yaml -m sentidistill.cli train ...`` (DDP,
FSDP or DeepSpeed come from accelerate's config; nothing here changes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from transformers import TrainerCallback

from sentidistill.config import ICLDistConfig, OnPolicyConfig, StudentConfig, TrainingConfig
from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

Method = Literal["knowdist", "icldist", "onpolicy"]
METHODS: tuple[str, ...] = get_args(Method)
EvalFn = Callable[[Any, Any], dict[str, float]]  # (model, tokenizer) -> scores

REQUIRED_COLUMNS = ("source", "target")
_DROP_STATUS = {"error", "missing"}  # no answer at all; invalid ones are the builder's call (filter_invalid)


# -- corpus ----------------------------------------------------------------------------------------

def load_corpus(path: str | Path, method: Method) -> tuple[Any, dict[str, int]]:
    """Read a distillation corpus (Parquet) as a ``datasets.Dataset``; rows that cannot train are dropped
    and counted (``dropped_status``: teacher requests that got no answer; ``dropped_empty``: no text)."""
    import pyarrow.parquet as pq
    from datasets import Dataset

    path = Path(path)
    if not path.is_file():
        raise InputError("corpus file not found", path=path, expected="a Parquet file written by `sentidistill teach`")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise InputError(f"not a readable Parquet file ({exc})", path=path) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"corpus lacks column(s) {missing}", path=path, field=missing[0],
                         expected=f"columns {list(REQUIRED_COLUMNS)} (see docs/architecture.md, Corpora)")
    keep = [c for c in ("source", "target", "teacher_logprobs", "status", "task") if c in table.column_names]
    rows = table.select(keep).to_pylist()
    counts = {"rows": len(rows), "dropped_status": 0, "dropped_empty": 0}
    kept = []
    for i, r in enumerate(rows):
        for col in REQUIRED_COLUMNS:
            if r[col] is not None and not isinstance(r[col], str):
                raise InputError("expected text", path=path, line=i + 1, field=col, got=type(r[col]).__name__)
        if (r.get("status") or "") in _DROP_STATUS:
            counts["dropped_status"] += 1
        elif not (r["source"] or "").strip() or not (r["target"] or "").strip():
            counts["dropped_empty"] += 1
        else:
            if method == "icldist" and "teacher_logprobs" not in r:
                r["teacher_logprobs"] = None
            kept.append({k: r[k] for k in ("source", "target", "teacher_logprobs") if k in r})
    if counts["dropped_status"] or counts["dropped_empty"]:
        log.warning("%s: %d of %d rows not trained on (%d error/missing teacher answers, %d empty)", path,
                    counts["dropped_status"] + counts["dropped_empty"], len(rows), counts["dropped_status"],
                    counts["dropped_empty"])
    if not kept:
        raise InputError("no trainable rows in the corpus", path=path,
                         expected="rows with non-empty source and target and a valid status")
    return Dataset.from_list(kept), counts


# -- checkpoints -------------------------------------------------------------------------------------

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


def resolve_precision(precision: str) -> str:
    """``auto``: bf16 on a GPU that supports it, else fp32 (fp16 only when asked for)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


# -- evaluation hook ---------------------------------------------------------------------------------

class BenchEvalCallback(TrainerCallback):
    """Every ``eval_steps`` optimizer steps, score the model with ``eval_fn(model, tokenizer)`` (e.g. a small
    SentiBench subset, :func:`sentibench_eval_fn`) on the main process and log the scores as ``bench/<name>``."""

    def __init__(self, eval_fn: EvalFn, eval_steps: int) -> None:
        self.eval_fn = eval_fn
        self.eval_steps = eval_steps
        self.trainer: Any = None  # set by train_student so the scores reach every logger
        self.history: list[dict[str, float]] = []

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.eval_steps or not state.is_world_process_zero or model is None:
            return control
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                scores = self.eval_fn(model, processing_class)
        finally:
            model.train(was_training)
        logs = {f"bench/{k}": float(v) for k, v in scores.items() if isinstance(v, int | float)}
        self.history.append({"step": state.global_step, **logs})
        if self.trainer is not None:
            # Trainer.log ends in on_log, which clears should_log: keep this step's own loss log.
            should_log = control.should_log
            self.trainer.log(logs)
            control.should_log = self.trainer.control.should_log = should_log
        else:
            log.info("step %d: %s", state.global_step, logs)
        return control


def sentibench_eval_fn(tasks: list[str], *, limit: int = 20, shots: int = 0, seed: int = 42,
                       data_dir: str | Path | None = None, kind: str = "auto") -> EvalFn:
    """An ``eval_fn`` that runs ``tasks`` (``limit`` test items each) with the bench runner in memory.

    ``kind``: the student kind of the model being trained (``auto``: read from the model)."""

    def run(model: Any, tokenizer: Any) -> dict[str, float]:
        import tempfile

        from sentidistill.bench import run_bench
        from sentidistill.bench.models import HFModelAdapter
        from sentidistill.students import student_class, student_for

        student = (student_for(model, tokenizer, "training") if kind == "auto"
                   else student_class(kind).wrap(model, tokenizer, "training"))
        adapter = HFModelAdapter(student)
        with tempfile.TemporaryDirectory() as tmp:
            metrics = run_bench(adapter, tasks, shots=shots, seeds=[seed], limit=limit, out_dir=Path(tmp),
                                data_dir=data_dir, model_name="training")
        out = {"score": metrics.get("score")}
        for name, t in (metrics.get("tasks") or {}).items():
            if isinstance(t, dict) and isinstance(t.get("mean"), int | float):
                out[name] = t["mean"]
        return {k: v for k, v in out.items() if isinstance(v, int | float)}

    return run


# -- the entry point ---------------------------------------------------------------------------------

def build_training_args(method: Method, output_dir: Path, training: TrainingConfig, student: StudentConfig,
                        icl: ICLDistConfig | None, seed: int, onpolicy: OnPolicyConfig | None = None) -> Any:
    """Map our ``TrainingConfig`` onto the method's ``TrainingArguments`` subclass (trl's ``DistillationConfig``
    for ``onpolicy``)."""
    from sentidistill.train.trainers import ICLDistTrainingArguments, KnowDistTrainingArguments

    precision = resolve_precision(training.precision)
    common: dict[str, Any] = dict(
        output_dir=str(output_dir / "checkpoints"),
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
        report_to=training.report_to or "none",
        dataloader_num_workers=training.dataloader_num_workers,
        train_sampling_strategy="group_by_length" if training.group_by_length else "random",
        length_column_name="length",
        seed=seed,
        data_seed=seed,
        eval_strategy="no",
        max_source_length=student.max_source_length,
        max_target_length=student.max_target_length,
        disable_tqdm=not os.isatty(2),
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without a GPU, say so: a multi-process CPU launch then forms a gloo process group (DDP on CPU).
        use_cpu=not torch.cuda.is_available(),
    )
    if method == "onpolicy":
        from sentidistill.train.onpolicy import DistillationConfig

        op = onpolicy or OnPolicyConfig()
        # trl's sampler replaces length grouping, and it tokenises the prompts itself.
        for key in ("max_source_length", "max_target_length", "train_sampling_strategy", "length_column_name"):
            common.pop(key)
        gpu = torch.cuda.is_available()
        return DistillationConfig(
            **common | {"bf16": precision == "bf16" and gpu, "fp16": precision == "fp16" and gpu},
            # trl defaults to checkpointing (generation + a teacher forward are memory-heavy on a GPU); on a CPU
            # it only costs time. (transformers 5 name; trl reads the mirrored `gradient_checkpointing`.)
            activation_checkpointing=gpu,
            beta=op.beta, temperature=op.temperature, max_completion_length=op.max_completion_length)
    if method == "icldist":
        icl = icl or ICLDistConfig()
        return ICLDistTrainingArguments(ce_weight=icl.ce_weight, kl_weight=icl.kl_weight, **common)
    return KnowDistTrainingArguments(**common)


def _apply_lora(model: Any, task_type: str, r: int) -> Any:
    """LoRA adapters on every linear layer (``task_type``: peft's ``TaskType`` name, from the student kind)."""
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules="all-linear",
                     task_type=TaskType[task_type])
    model = get_peft_model(model, cfg)
    model.print_trainable_parameters()
    return model


def train_student(
    model_spec: str | Path,
    corpus_path: str | Path,
    output_dir: str | Path,
    training: TrainingConfig,
    method: Method = "knowdist",
    student: StudentConfig | None = None,
    icl: ICLDistConfig | None = None,
    eval_fn: EvalFn | None = None,
    seed: int = 42,
    teacher_model: str | Path | None = None,
    onpolicy: OnPolicyConfig | None = None,
) -> Path:
    """Train ``model_spec`` on the corpus and return ``output_dir/final`` (model + tokenizer, safetensors).

    Resumes from the last complete checkpoint in ``output_dir/checkpoints`` when there is one.
    ``method="icldist"`` adds the token-level KL term (weights from ``icl``). ``method="onpolicy"`` distils
    the local causal ``teacher_model`` (a spec for ``load_model``; default ``onpolicy.teacher_model``) on the
    student's own completions to the corpus prompts, with trl's ``DistillationTrainer`` (knobs in ``onpolicy``).
    ``eval_fn(model, tokenizer)``, when given with ``training.eval_steps``, is called every ``eval_steps`` steps
    and its scores are logged.
    """
    from transformers import set_seed

    from sentidistill.students import load_student
    from sentidistill.students.base import write_kind_marker
    from sentidistill.train.trainers import ICLDistTrainer, KnowDistTrainer

    if method not in METHODS:
        raise InputError(f"unknown training method '{method}'", field="method", expected=" or ".join(METHODS))
    onpolicy = onpolicy or OnPolicyConfig()
    teacher_spec = str(teacher_model or onpolicy.teacher_model or "")
    if method == "onpolicy" and not teacher_spec:
        raise InputError("method 'onpolicy' needs a teacher model", field="teacher_model",
                         expected="a local causal model (HF id or path, gguf:...) sharing the student's tokenizer")
    student = student or StudentConfig()
    output_dir = Path(output_dir)
    set_seed(seed)
    dataset, corpus_counts = load_corpus(corpus_path, method)
    lm = load_student(str(model_spec), student.kind)
    lm.require_method(method)  # before any (large) teacher loads
    model = lm.model
    teacher = None
    if method == "onpolicy":
        from sentidistill.train.onpolicy import load_teacher

        precision = resolve_precision(training.precision)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if torch.cuda.is_available() else None
        teacher = load_teacher(teacher_spec, model, lm.tokenizer, dtype=dtype)
    model.train()
    if training.lora:
        model = _apply_lora(model, lm.lora_task_type, training.lora_r)
    args = build_training_args(method, output_dir, training, student, icl, seed, onpolicy)
    callbacks = []
    bench_cb = None
    if eval_fn is not None and training.eval_steps:
        bench_cb = BenchEvalCallback(eval_fn, training.eval_steps)
        callbacks.append(bench_cb)
    if method == "onpolicy":
        from sentidistill.train.onpolicy import OnPolicyTrainer

        trainer: Any = OnPolicyTrainer(model=model, teacher_model=teacher, args=args, train_dataset=dataset,
                                       processing_class=lm.tokenizer, callbacks=callbacks)
    else:
        trainer_cls = lm.trainer_class(method) or (ICLDistTrainer if method == "icldist" else KnowDistTrainer)
        trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=lm.tokenizer,
                              callbacks=callbacks)
    if bench_cb is not None:
        bench_cb.trainer = trainer
    resume = last_complete_checkpoint(output_dir / "checkpoints")
    if resume is not None:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    final = output_dir / "final"
    tmp = output_dir / ".final.partial"
    if trainer.is_world_process_zero() and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    to_save = trainer.model
    if training.lora and trainer.is_world_process_zero():
        # Downstream stages load a plain model: fold the adapters into the weights.
        to_save = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        to_save.save_pretrained(tmp, safe_serialization=True)
    else:
        trainer.save_model(str(tmp))  # gathers FSDP/DeepSpeed shards; writes on the main process only
    if trainer.is_world_process_zero():
        lm.tokenizer.save_pretrained(tmp)
        write_kind_marker(tmp, lm.kind)  # load_student(final) picks the same student kind
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; training_info.json says the same
        kd = getattr(trainer, "kd_stats", None)
        info = {
            "method": method, "base_model": str(model_spec), "corpus": str(corpus_path), "corpus_rows": corpus_counts,
            "global_step": trainer.state.global_step, "resumed_from": str(resume) if resume else None,
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, int | float) and math.isfinite(v)},
            "token_kd": kd.to_dict() if kd is not None else None,
            "bench_history": bench_cb.history if bench_cb else [],
            "training": training.model_dump(mode="json"),
        }
        if method == "onpolicy":
            info["onpolicy"] = onpolicy.model_dump(mode="json") | {"teacher_model": teacher_spec}
        atomic_write_json(tmp / "training_info.json", info)
        old = output_dir / ".final.old"
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        log.info("saved %s (%d steps)", final, trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()
    return final
