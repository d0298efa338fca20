"""``sentidistill finetune-eval``: paper 2's fine-tuning evaluation from the command line, and as a stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sentidistill.errors import InputError

_EXAMPLE = (
    "Example: sentidistill finetune-eval --model base=builtin:minilm-encdec "
    "--model distilled=runs/quickstart/models/knowdist --suite fsa --datasets rest14,laptop14 "
    "--seeds 42,52,62 --train-fractions 0.25,1.0 --epochs 20 --out runs/ft"
)


def parse_models(items: list[str]) -> dict[str, str]:
    """``NAME=SPEC`` pairs (a bare SPEC is named after its last path part)."""
    out: dict[str, str] = {}
    for item in items:
        name, spec = item.split("=", 1) if "=" in item else (Path(item.rstrip("/")).name.replace(":", "-"), item)
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise InputError("bad --model", field="--model", expected="NAME=SPEC, e.g. base=builtin:minilm-encdec",
                             got=item)
        if name in out:
            raise InputError(f"model name '{name}' given twice", field="--model")
        out[name] = spec
    return out


def _csv(text: str | None, cast: type, field: str) -> list[Any]:
    if not text:
        return []
    try:
        return [cast(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError("not a comma-separated list", field=field, expected=f"{cast.__name__} values",
                         got=text) from None


def run_finetune_stage(models: dict[str, str], out_dir: str | Path, settings: Any = None, **extra: Any):
    """Pipeline hook: run (or resume) the evaluation into ``out_dir`` and return its results.

    ``settings``: a :class:`~sentidistill.finetune.runner.FinetuneSettings`, or the pipeline's
    :class:`~sentidistill.config.FinetuneEvalConfig` (``extra``: the settings it lacks, e.g. ``data_dir``).
    """
    from sentidistill.finetune.runner import FinetuneSettings, run_finetune

    if isinstance(settings, dict):  # the untyped form of before FinetuneSettings; goes away in 0.2
        import warnings

        warnings.warn("run_finetune_stage(options: dict) is deprecated: pass a FinetuneSettings or the "
                      "FinetuneEvalConfig", DeprecationWarning, stacklevel=2)
        options = dict(settings)
        if "lr" in options:
            options["learning_rate"] = options.pop("lr")
        settings = FinetuneSettings(**options)
    if settings is None or not isinstance(settings, FinetuneSettings):
        settings = FinetuneSettings.from_config(settings, **extra) if settings is not None else FinetuneSettings(**extra)
    elif extra:
        from dataclasses import replace

        settings = replace(settings, **extra)
    return run_finetune(models, settings, out_dir)


def register(app: typer.Typer) -> None:
    @app.command("finetune-eval", help=f"Fine-tune students on fine-grained sentiment (paper 2) over seeds; "
                 f"report F1 mean ± std and paired differences with confidence intervals.\n\n{_EXAMPLE}")
    def finetune_eval(
        model: list[str] = typer.Option(..., "--model", "-m", help="NAME=SPEC (repeatable); the first is the baseline."),
        suite: str = typer.Option("fsa", help="Dataset suite: fsa (all four), atsa, acsa."),
        datasets: str | None = typer.Option(None, help="Comma-separated subset: rest14,laptop14,rest16,laptop16 "
                                            "or atsa:/folder, acsa:/folder."),
        seeds: str = typer.Option("42,52,62,72,82", help="Comma-separated seeds (paper: 42,52,...,182)."),
        train_fractions: str = typer.Option("1.0", help="Comma-separated fractions of train; 0.1,0.25,0.5,1.0 draws the data-efficiency curve (nested, seeded subsets)."),
        epochs: float = typer.Option(20.0, help="Training epochs (paper: 20)."),
        lr: float = typer.Option(3e-4, help="Learning rate (paper: 3e-4)."),
        batch_size: int = typer.Option(16, help="Training batch size (paper: 16)."),
        weight_decay: float = typer.Option(0.01),
        max_parallel: int | None = typer.Option(None, help="Cells at once (default: one per GPU, or cores/2; more than the GPUs shares them)."),
        eval_every: int = typer.Option(1, help="Decode dev for checkpoint selection every N epochs (paper: 1)."),
        data_dir: Path | None = typer.Option(None, help="Folder holding fsa/ (default: $SENTIDISTILL_DATA_DIR or ../shared/data)."),
        limit_train: int | None = typer.Option(None, help="Cap the training set (smoke tests)."),
        limit_eval: int | None = typer.Option(None, help="Cap dev and each test split (smoke tests)."),
        limit_dev: int | None = typer.Option(None, help="Decode only a seeded sample of this many dev sentences "
                                             "for checkpoint selection (the test sets stay whole)."),
        max_new_tokens: int = typer.Option(100, help="Greedy decoding length cap (paper: 100)."),
        eval_batch_size: int = typer.Option(32, help="Sentences per generation batch."),
        out: Path = typer.Option(Path("finetune_eval"), "--out", "-o", help="Output folder (resumable)."),
    ) -> None:
        from sentidistill.finetune.runner import SUITES

        if suite not in SUITES:
            raise InputError(f"unknown suite '{suite}'", field="--suite", expected=" | ".join(SUITES))
        ds = _csv(datasets, str, "--datasets") or list(SUITES[suite])
        from sentidistill.finetune.runner import FinetuneSettings

        results = run_finetune_stage(parse_models(model), out, FinetuneSettings(
            datasets=ds, seeds=_csv(seeds, int, "--seeds"),
            train_fractions=_csv(train_fractions, float, "--train-fractions"), epochs=epochs, learning_rate=lr,
            batch_size=batch_size, weight_decay=weight_decay, max_parallel=max_parallel, eval_every_epochs=eval_every,
            data_dir=data_dir, limit_train=limit_train, limit_eval=limit_eval, limit_dev=limit_dev,
            max_new_tokens=max_new_tokens, eval_batch_size=eval_batch_size))
        from sentidistill.finetune.report import score_table

        header, rows = score_table(results)
        print(" | ".join(header))
        for r in rows:
            print(" | ".join(r))
        print(f"report: {out / 'finetune_report.md'} and {out / 'finetune_report.html'}")
        if results.failed:
            raise typer.Exit(1)

    @app.command("zero-shot-eval", help="Zero-shot sentiment classification from a pre-trained student's "
                 "analyses (paper 2), beside the teacher's own texts.\n\nExample: sentidistill zero-shot-eval "
                 "--model runs/quickstart/models/knowdist --datasets sst2,yelp2,imdb,yelp5 --limit 200 --out runs/zs")
    def zero_shot(
        model: str = typer.Option(..., "--model", "-m", help="Model spec of the (KnowDist) student."),
        datasets: str = typer.Option("sst2,yelp2,imdb,yelp5", help="Comma-separated: sst2, yelp2, imdb, yelp5."),
        limit: int | None = typer.Option(200, help="Seeded sample per dataset (omit for all)."),
        prompt_template: str | None = typer.Option(None, help="Student input with {review} for the text "
                                                   "(default: the KnowDist 'overall' source; '{review}' = paper 2)."),
        max_new_tokens: int = typer.Option(192),
        data_dir: Path | None = typer.Option(None, help="Folder holding sentibench/ and fsa/."),
        out: Path = typer.Option(Path("zero_shot_eval"), "--out", "-o"),
    ) -> None:
        from sentidistill.finetune.zeroshot import zero_shot_eval, zero_shot_markdown

        res = zero_shot_eval(model, _csv(datasets, str, "--datasets"), data_dir=data_dir, limit=limit,
                             prompt_template=prompt_template, max_new_tokens=max_new_tokens, out_dir=out)
        print(zero_shot_markdown(res))
