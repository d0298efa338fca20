"""``sentidistill distill`` (a user's own unlabeled texts -> a trained student) and ``sentidistill export-hf``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from sentidistill.errors import InputError

console = Console()


def distill_command(
    texts: Path = typer.Argument(..., help="Unlabeled texts: .txt (one per line), .csv/.tsv/.jsonl/.json/.parquet."),
    labels: str = typer.Option(..., "--labels", help="Comma-separated label names, e.g. negative,neutral,positive."),
    text_column: str = typer.Option("text", "--text-column", help="Column (field) holding the text in a table."),
    instruction: str | None = typer.Option(None, "--instruction", help="What the teacher is asked (default: "
                                           "'Classify the text. Answer with one of: <labels>.')."),
    test: Path | None = typer.Option(None, "--test", help="A labeled file: gold scores with 95% intervals."),
    label_column: str = typer.Option("label", "--label-column", help="Column holding the gold label in --test."),
    teacher: str = typer.Option("builtin:qwen2.5-coder-1.5b", "--teacher",
                                help="openai:MODEL | builtin:qwen2.5-coder-1.5b | builtin:qwen2.5-coder-0.5b | "
                                     "llamacpp:PATH.GGUF"),
    base_url: str | None = typer.Option(None, "--base-url", help="openai: the endpoint (default $OPENAI_BASE_URL "
                                        "or api.openai.com); the key is read from $OPENAI_API_KEY."),
    out: Path = typer.Option(Path("runs/distill"), "--out", help="Run folder (rerun the same command to resume)."),
    per_task: int | None = typer.Option(None, "--per-task", min=1, help="Texts the teacher labels (default: all)."),
    test_limit: int | None = typer.Option(None, "--test-limit", min=1, help="Stratified test items (default: all)."),
    encoder: str = typer.Option("builtin:minilm", "--encoder", help="The student's encoder (HF id or path)."),
    pooling: str = typer.Option("pooler", "--pooling", help="pooler (exportable with export-hf) | mean."),
    max_chars: int = typer.Option(300, "--max-chars", min=20, help="Texts are cut here for teacher and bench."),
    seed: int = typer.Option(42, "--seed"),
    set_: list[str] = typer.Option([], "--set", help="Override a config field, e.g. --set classifier.patience=2."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show third-party output (Trainer logs, "
                                 "weight-loading bars, warnings), hidden by default."),
) -> None:
    """Distil a teacher into a small classifier on YOUR unlabeled texts; gold scores when --test is given.

    Writes OUT/task.yaml and OUT/distill.yaml (`sentidistill run OUT/distill.yaml` repeats or resumes the run),
    the student (OUT/models/classifier/final) and OUT/distill_report.md.

    Example:

      sentidistill distill tweets.csv --text-column text --labels not-offensive,offensive
        --test test.csv --label-column label --teacher openai:gpt-4o-mini --out runs/offensive
    """
    from sentidistill.own_data import prepare_run
    from sentidistill.pipeline_cli import _parse_set
    from sentidistill.utils.cli import quiet_third_party

    if verbose:  # everything, the Trainer's own log lines included (as `sentidistill -v distill ...`)
        import logging

        logging.getLogger().setLevel(logging.DEBUG)
    quiet_third_party(verbose)
    config = prepare_run(
        texts, [x for x in labels.split(",")], out=out, text_column=text_column, instruction=instruction,
        test=test, label_column=label_column, teacher=teacher, base_url=base_url, per_task=per_task,
        test_limit=test_limit, encoder=encoder, pooling=pooling, max_chars=max_chars, seed=seed,
        overrides=_parse_set(set_))
    console.print(f"[bold]distill[/] {texts} -> {config.parent}  (config {config}; task {config.parent / 'task.yaml'})")
    run_and_show(config)


def run_and_show(config: Path) -> None:
    """Run a distill config with one line per stage, then the report table and where things are."""
    from sentidistill.own_data import run_distill

    student = run_distill(config, on_stage=lambda name, status: console.print(f"  [cyan]{name}[/]: {status}"))
    show_report(student.report)


def show_report(report: dict) -> None:
    """The distill report on the console: dev agreement, teacher cost, the gold table with intervals."""
    from rich.table import Table

    def pct(x: object) -> str:
        return f"{100 * x:.1f}" if isinstance(x, (int, float)) else "-"

    t = report.get("teacher") or {}
    console.print(f"agreement with the teacher on the held-out dev slice ({report.get('dev_rows')} texts): "
                  f"{pct(report.get('dev_agreement_before'))} before -> {pct(report.get('dev_agreement_after'))} after")
    console.print(f"teacher, soft labels: {int(t.get('sent', 0))} calls, "
                  f"{int(t.get('prompt_tokens', 0) + t.get('completion_tokens', 0))} tokens, "
                  f"{int(t.get('cache_hits', 0))} cache hits")
    if report.get("bench"):
        table = Table(title="gold test items (macro-F1 x100, 95% bootstrap interval)")
        for col, justify in (("model", "left"), ("macro-F1", "right"), ("95% interval", "left"),
                             ("items", "right"), ("items/s", "right")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for r in report["bench"]:
            speed = "cache" if r.get("from_cache") else (f"{r['items_per_s']:.1f}" if r.get("items_per_s") else "-")
            table.add_row(r["model"], pct(r["score"]), f"[{pct(r['ci_low'])}, {pct(r['ci_high'])}]",
                          str(r.get("n") or "-"), speed)
        console.print(table)
    console.print(f"student: {report['student']}  (sentidistill predict --model {report['student']} \"a text\"; "
                  f"sentidistill export-hf {report['student']} --out DIR)")
    if report.get("wall_s") is not None:
        console.print(f"wall time {report['wall_s']:.0f}s; report {report['run_dir']}/distill_report.md")


def export_hf_command(
    student: Path = typer.Argument(..., help="A classifier student folder, or a run folder (its "
                                   "models/classifier/final)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    task: str | None = typer.Option(None, "--task", help="The head to export (default: the only one)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also write model.onnx (input_ids, attention_mask, "
                              "token_type_ids -> logits)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show third-party output."),
) -> None:
    """Write a student's head as a stock Hugging Face AutoModelForSequenceClassification with a model card.

    Example:

      sentidistill export-hf runs/offensive --out offensive-minilm

      python -c "from transformers import pipeline; print(pipeline('text-classification',
        model='offensive-minilm', truncation=True)('you are great'))"
    """
    from sentidistill.students.classifier import is_classifier_checkpoint
    from sentidistill.students.hf_export import export_hf
    from sentidistill.utils.cli import quiet_third_party

    quiet_third_party(verbose)
    if not is_classifier_checkpoint(student) and is_classifier_checkpoint(student / "models" / "classifier" / "final"):
        student = student / "models" / "classifier" / "final"
    if not student.exists():
        raise InputError("not found", path=student, expected="a classifier student folder or a run folder")
    path = export_hf(student, out, task=task, onnx=onnx)
    console.print(f"exported {student} to {path} (stock transformers model, model card README.md"
                  f"{', model.onnx' if onnx else ''})")


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)
    app.command("export-hf")(export_hf_command)
