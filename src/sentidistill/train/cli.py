"""``sentidistill train``: train a student on a distillation corpus (resumable; multi-GPU via accelerate)."""

from __future__ import annotations

from pathlib import Path

import typer

_HELP = """Train a student on a distillation corpus (Parquet from `sentidistill teach` / the pipeline).

Re-running the same command resumes from the last checkpoint in OUT/checkpoints; the model lands in OUT/final.

Examples:

  sentidistill train --student builtin:minilm-encdec --corpus runs/q/corpus/knowdist.parquet --method knowdist --out runs/q/models/knowdist --max-steps 200

  sentidistill train --student runs/q/models/knowdist/final --corpus runs/q/corpus/icl.parquet --method icldist --kl-weight 0.5 --out runs/q/models/icldist

  sentidistill train --student Qwen/Qwen2.5-0.5B-Instruct --teacher-model Qwen/Qwen2.5-3B-Instruct --corpus runs/q/corpus/icl.parquet --method onpolicy --out runs/q/models/onpolicy

  accelerate launch --config_file examples/accelerate_fsdp.yaml -m sentidistill.train.cli --student Qwen/Qwen2.5-1.5B-Instruct --corpus icl.parquet --method icldist --out out --lora
"""


def train_command(
    student: str = typer.Option(..., "--student", help="Model to train: builtin:minilm-encdec, an HF id, or a local folder."),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus Parquet file (columns source, target[, teacher_logprobs])."),
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoints/ and final/ go inside)."),
    method: str = typer.Option("knowdist", "--method", help="knowdist (sequence-level), icldist (CE + top-k KL) or onpolicy (student generates, local teacher's logits; trl)."),
    config: Path | None = typer.Option(None, "--config", help="Pipeline YAML: its training/student/icldist sections are the defaults."),
    epochs: float | None = typer.Option(None, "--epochs", help="Training epochs."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps (overrides --epochs when > 0)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Per-device batch size."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Gradient accumulation steps."),
    save_steps: int | None = typer.Option(None, "--save-steps", help="Checkpoint every N steps."),
    precision: str | None = typer.Option(None, "--precision", help="auto, fp32, bf16 or fp16."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (merged into the final model)."),
    max_source_length: int | None = typer.Option(None, "--max-source-length", help="Prompt tokens kept."),
    max_target_length: int | None = typer.Option(None, "--max-target-length", help="Answer tokens kept."),
    kl_weight: float | None = typer.Option(None, "--kl-weight", help="icldist: weight of the token-level KL term."),
    ce_weight: float | None = typer.Option(None, "--ce-weight", help="icldist: weight of the cross-entropy term."),
    teacher_model: str | None = typer.Option(None, "--teacher-model", help="onpolicy: local causal teacher (HF id, folder, gguf:...) sharing the student's tokenizer."),
    beta: float | None = typer.Option(None, "--beta", help="onpolicy: generalised JSD, 0 = forward KL, 1 = reverse KL."),
    max_completion_length: int | None = typer.Option(None, "--max-completion-length", help="onpolicy: tokens the student generates per prompt."),
    temperature: float | None = typer.Option(None, "--temperature", help="onpolicy: sampling and loss temperature."),
    report_to: list[str] = typer.Option([], "--report-to", help="Loggers: tensorboard, wandb, mlflow... (repeatable)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for init, data order and dropout."),
) -> None:
    from sentidistill.config import ICLDistConfig, OnPolicyConfig, StudentConfig, TrainingConfig, load_config
    from sentidistill.errors import InputError
    from sentidistill.train.engine import METHODS, train_student

    if method not in METHODS:
        raise InputError(f"unknown method '{method}'", field="--method", expected=" or ".join(METHODS))
    if method == "onpolicy" and not teacher_model:
        raise InputError("--method onpolicy needs --teacher-model", field="--teacher-model",
                         expected="a local causal model (HF id, folder, gguf:...) sharing the student's tokenizer")
    if config is not None:
        cfg = load_config(config)
        training, student_cfg, icl, run_seed = cfg.stage_training(method), cfg.student, cfg.icldist, cfg.seed  # type: ignore[arg-type]
    else:
        training, student_cfg, icl, run_seed = TrainingConfig(), StudentConfig(), ICLDistConfig(), 42
    t_over = {"epochs": epochs, "max_steps": max_steps, "learning_rate": lr, "batch_size": batch_size,
              "gradient_accumulation_steps": grad_accum, "save_steps": save_steps, "precision": precision,
              "report_to": list(report_to) or None}
    if lora:
        t_over["lora"] = True
    # model_validate re-checks every override against the config's bounds (a bad value names its field).
    training = TrainingConfig.model_validate({**training.model_dump(), **{k: v for k, v in t_over.items() if v is not None}})
    student_cfg = StudentConfig.model_validate({**student_cfg.model_dump(), "model": student, **{
        k: v for k, v in {"max_source_length": max_source_length, "max_target_length": max_target_length}.items()
        if v is not None}})
    icl = ICLDistConfig.model_validate({**icl.model_dump(), **{
        k: v for k, v in {"kl_weight": kl_weight, "ce_weight": ce_weight}.items() if v is not None}})
    onpolicy = OnPolicyConfig.model_validate({k: v for k, v in {
        "teacher_model": teacher_model, "beta": beta, "max_completion_length": max_completion_length,
        "temperature": temperature}.items() if v is not None})
    final = train_student(student, corpus, out, training, method=method, student=student_cfg,  # type: ignore[arg-type]
                          icl=icl, seed=seed if seed is not None else run_seed, onpolicy=onpolicy)
    print(final)


def register(app: typer.Typer) -> None:
    app.command("train", help=_HELP)(train_command)


def main() -> None:
    """``python -m sentidistill.train.cli ...`` (what ``accelerate launch -m`` runs on each process)."""
    import logging

    from sentidistill.utils.cli import run_cli

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(help=_HELP)(train_command)
    run_cli(app)


if __name__ == "__main__":
    main()
