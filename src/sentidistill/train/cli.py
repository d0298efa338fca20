"""``sentidistill train``: train a student on a distillation corpus (resumable; multi-GPU via accelerate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel

from sentidistill.config import (
    ICLDistConfig,
    OnPolicyConfig,
    StudentConfig,
    TrainingConfig,
    load_config,
)
from sentidistill.utils.cli import config_options

_HELP = """Train a student on a distillation corpus (Parquet from `sentidistill teach` / the pipeline).

Re-running the same command resumes from the last checkpoint in OUT/checkpoints; the model lands in OUT/final.

Examples:

  sentidistill train --student builtin:minilm-encdec --corpus runs/q/corpus/knowdist.parquet --method knowdist --out runs/q/models/knowdist --max-steps 200

  sentidistill train --student runs/q/models/knowdist/final --corpus runs/q/corpus/icl.parquet --method icldist --kl-weight 0.5 --out runs/q/models/icldist

  sentidistill train --student Qwen/Qwen2.5-0.5B-Instruct --teacher-model Qwen/Qwen2.5-3B-Instruct --corpus runs/q/corpus/icl.parquet --method onpolicy --out runs/q/models/onpolicy

  accelerate launch --config_file examples/accelerate_fsdp.yaml -m sentidistill.train.cli --student Qwen/Qwen2.5-1.5B-Instruct --corpus icl.parquet --method icldist --out out --lora
"""


#: The config fields that are ``sentidistill train`` options (``--learning-rate`` for ``learning_rate``), by section.
_SECTIONS: dict[str, tuple[type[BaseModel], tuple[str, ...]]] = {
    "training": (TrainingConfig, tuple(TrainingConfig.model_fields)),
    "student": (StudentConfig, ("max_source_length", "max_target_length")),
    "icldist": (ICLDistConfig, ("kl_weight", "ce_weight")),
    "onpolicy": (OnPolicyConfig, tuple(OnPolicyConfig.model_fields)),
}


def _override(section: BaseModel, overrides: dict[str, Any], names: tuple[str, ...]) -> Any:
    """``section`` with the command-line values of its fields; ``model_validate`` re-checks them against the
    config's bounds (a bad value names its field)."""
    return type(section).model_validate(section.model_dump() | {k: overrides[k] for k in names if k in overrides})


@config_options(*[(model, name) for model, names in _SECTIONS.values() for name in names])
def train_command(
    student: str = typer.Option(..., "--student", help="Model to train: builtin:minilm-encdec, an HF id, or a local folder."),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus Parquet file (columns source, target[, teacher_logprobs])."),
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoints/ and final/ go inside)."),
    method: str = typer.Option("knowdist", "--method", help="knowdist (sequence-level), icldist (CE + top-k KL) or onpolicy (student generates, local teacher's logits; trl)."),
    config: Path | None = typer.Option(None, "--config", help="Pipeline YAML: its training/student/icldist sections are the defaults."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for init, data order and dropout."),
    overrides: dict[str, Any] | None = None,
) -> None:
    """Every field of the ``training`` section (and the method knobs of ``student``, ``icldist``, ``onpolicy``) is
    an option of its own name, generated from the config (:func:`sentidistill.utils.cli.config_options`)."""
    from sentidistill.errors import InputError
    from sentidistill.train.engine import METHODS, train_student

    overrides = overrides or {}
    if method not in METHODS:
        raise InputError(f"unknown method '{method}'", field="--method", expected=" or ".join(METHODS))
    if method == "onpolicy" and not overrides.get("teacher_model"):
        raise InputError("--method onpolicy needs --teacher-model", field="--teacher-model",
                         expected="a local causal model (HF id, folder, gguf:...) sharing the student's tokenizer")
    if config is not None:
        cfg = load_config(config)
        training, student_cfg, icl, run_seed = cfg.stage_training(method), cfg.student, cfg.icldist, cfg.seed  # type: ignore[arg-type]
    else:
        training, student_cfg, icl, run_seed = TrainingConfig(), StudentConfig(), ICLDistConfig(), 42
    sections = {"training": training, "student": student_cfg.model_copy(update={"model": student}), "icldist": icl,
                "onpolicy": OnPolicyConfig()}
    given = {key: _override(value, overrides, _SECTIONS[key][1]) for key, value in sections.items()}
    final = train_student(student, corpus, out, given["training"], method=method, student=given["student"],  # type: ignore[arg-type]
                          icl=given["icldist"], seed=seed if seed is not None else run_seed, onpolicy=given["onpolicy"])
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
