"""``train_student``: one call from a corpus file to a saved, resumable, distilled student.

Layout of ``output_dir``::

    checkpoints/checkpoint-<step>/   Trainer checkpoints (safetensors + optimizer/scheduler/RNG state)
    final/                           the trained model + tokenizer (save_pretrained), written atomically
    final/training_summary.json      method, corpus, steps, final metrics, token-KD alignment counts

Re-running the same call after a crash (even ``kill -9``) resumes from the last complete checkpoint with
the same data order (the Trainer restores the sampler's epoch/step and the RNG states). Multi-GPU:
``accelerate launch --config_file examples/accelerate_fsdp.yaml -m sentidistill.cli train ...`` (DDP,
FSDP or DeepSpeed come from accelerate's config; nothing here changes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from transformers import TrainerCallback

from sentidistill.config import (
    ICLDistConfig,
    OnPolicyConfig,
    StudentConfig,
    TrainingConfig,
    check_training_settings,
)
from sentidistill.errors import InputError
from sentidistill.train.arguments import resolve_precision
from sentidistill.train.methods import last_complete_checkpoint

__all__ = ["METHODS", "BenchEvalCallback", "build_training_args", "last_complete_checkpoint", "load_corpus",
           "resolve_precision", "sentibench_eval_fn", "train_student"]

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

def _method_fields(method: Method, student: StudentConfig, icl: ICLDistConfig | None,
                   onpolicy: OnPolicyConfig) -> dict[str, Any]:
    """The method's own arguments-class fields, from the config sections that hold them."""
    if method == "onpolicy":  # trl tokenises the prompts itself
        return {"beta": onpolicy.beta, "temperature": onpolicy.temperature,
                "max_completion_length": onpolicy.max_completion_length}
    fields: dict[str, Any] = {"max_source_length": student.max_source_length,
                              "max_target_length": student.max_target_length}
    if method == "icldist":
        icl = icl or ICLDistConfig()
        fields |= {"ce_weight": icl.ce_weight, "kl_weight": icl.kl_weight}
    return fields


def build_training_args(method: Method, output_dir: Path, training: TrainingConfig, student: StudentConfig,
                        icl: ICLDistConfig | None, seed: int, onpolicy: OnPolicyConfig | None = None) -> Any:
    """The method's ``TrainingArguments`` subclass for these config sections (the mapping is
    :func:`sentidistill.train.arguments.trainer_arguments`; trl's ``DistillationConfig`` for ``onpolicy``)."""
    from sentidistill.train.methods import arguments_for

    return arguments_for(method, training, output_dir, seed=seed,
                         **_method_fields(method, student, icl, onpolicy or OnPolicyConfig()))


def _teacher_spec(method: Method, teacher_model: str | Path | None, onpolicy: OnPolicyConfig) -> str:
    """The on-policy teacher's spec; raises InputError for an unknown method or an on-policy run without one."""
    if method not in METHODS:
        raise InputError(f"unknown training method '{method}'", field="method", expected=" or ".join(METHODS))
    spec = str(teacher_model or onpolicy.teacher_model or "")
    if method == "onpolicy" and not spec:
        raise InputError("method 'onpolicy' needs a teacher model", field="teacher_model",
                         expected="a local causal model (HF id or path, gguf:...) sharing the student's tokenizer")
    return spec


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
    """Train ``model_spec`` on the corpus and return ``output_dir/final`` (model + tokenizer, safetensors, and
    ``training_summary.json``: method, corpus, steps, final metrics, token-KD alignment counts).

    Resumes from the last complete checkpoint in ``output_dir/checkpoints`` when there is one.
    ``method="icldist"`` adds the token-level KL term (weights from ``icl``). ``method="onpolicy"`` distils
    the local causal ``teacher_model`` (a spec for ``load_model``; default ``onpolicy.teacher_model``) on the
    student's own completions to the corpus prompts, with trl's ``DistillationTrainer`` (knobs in ``onpolicy``).
    ``eval_fn(model, tokenizer)``, when given with ``training.eval_steps``, is called every ``eval_steps`` steps
    and its scores are logged. Raises InputError (bad method, corpus or model pair) or ConfigError (a training
    setting the method cannot honour) before any training.
    """
    from transformers import set_seed

    from sentidistill.students import load_student
    from sentidistill.train.methods import build_trainer, prepare_model, save_final, train_resumable

    onpolicy = onpolicy or OnPolicyConfig()
    teacher_spec = _teacher_spec(method, teacher_model, onpolicy)
    check_training_settings(training, method)
    student = student or StudentConfig()
    set_seed(seed)
    dataset, corpus_counts = load_corpus(corpus_path, method)
    lm = load_student(str(model_spec), student.kind)
    lm.require_method(method)  # before any (large) teacher loads
    extra: dict[str, Any] = {}
    if method == "onpolicy":
        from sentidistill.train.onpolicy import load_teacher

        precision = resolve_precision(training.precision)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if torch.cuda.is_available() else None
        extra["teacher_model"] = load_teacher(teacher_spec, lm.model, lm.tokenizer, dtype=dtype)
    model = prepare_model(lm.model, training, lm.lora_task_type)
    bench_cb = BenchEvalCallback(eval_fn, training.eval_steps) if eval_fn is not None and training.eval_steps else None
    trainer = build_trainer(method, training, output_dir, seed=seed, model=model, train_dataset=dataset,
                            processing_class=lm.tokenizer, callbacks=[bench_cb] if bench_cb else [],
                            trainer_class=lm.trainer_class(method), trainer_kwargs=extra,
                            **_method_fields(method, student, icl, onpolicy))
    if bench_cb is not None:
        bench_cb.trainer = trainer
    run = train_resumable(trainer, output_dir)
    summary = {"method": method, "base_model": str(model_spec), "corpus": str(corpus_path),
               "corpus_rows": corpus_counts, **run, "token_kd": None,
               **(trainer.summary() if hasattr(trainer, "summary") else {}),
               "bench_history": bench_cb.history if bench_cb else [], "training": training.model_dump(mode="json")}
    if method == "onpolicy":
        summary["onpolicy"] = onpolicy.model_dump(mode="json") | {"teacher_model": teacher_spec}
    return save_final(trainer, output_dir, summary, tokenizer=lm.tokenizer, kind=lm.kind)
