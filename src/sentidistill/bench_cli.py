"""`sentidistill bench` and `sentidistill report` (a CLI module: it benches, then renders with the report writer)."""

from __future__ import annotations

from pathlib import Path

import typer


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        model: str = typer.Option(None, "--model", "-m", help="HF id/path, builtin:smollm2-135m-instruct (or gemma3-270m, minilm-encdec), "
                                  "openai:MODEL@BASE_URL (key from $OPENAI_API_KEY), or replay:PREDICTIONS(.jsonl|dir)."),
        suite: str = typer.Option("sentibench", help="sentibench | sentibench-cls | fsa | extra."),
        tasks: str = typer.Option("", help="Comma-separated task names or task YAML files (overrides --suite)."),
        shots: int = typer.Option(4, min=0, help="Demonstrations per prompt (0 = zero-shot)."),
        seeds: str = typer.Option("42", help="Comma-separated demonstration seeds; several give mean ± std."),
        limit: int = typer.Option(None, min=1, help="Stratified subsample of each test set (default: all items); "
                                  "the same items for every model. Use at least 200 to tell a gain from noise."),
        scoring: str = typer.Option("restricted", help="restricted (arg-max over label words) | generate."),
        demos: str = typer.Option(None, help="random | similar (MiniLM nearest neighbours); default: each task's."),
        first_token: bool = typer.Option(False, help="Score only the label words' first token (as the paper)."),
        prompt_style: str = typer.Option("auto", help="Local models: auto (chat template for causal instruct "
                                         "models, as their ICL corpus is rendered), plain or chat."),
        batch_size: int = typer.Option(8, min=1),
        max_new_tokens: int = typer.Option(None, min=1, help="Override the tasks' generation length."),
        out: Path = typer.Option(Path("bench_out"), help="Output folder (predictions/, metrics.json)."),
        data_dir: Path = typer.Option(None, help="Data folder (default $SENTIDISTILL_DATA_DIR or ../shared/data)."),
        name: str = typer.Option(None, help="Model name shown in reports."),
        list_only: bool = typer.Option(False, "--list", help="List suites and tasks, then exit."),
        report: bool = typer.Option(True, help="Also write report.md/report.html into --out."),
        resume: bool = typer.Option(True, help="Reuse each (task, seed) that an earlier run into --out finished "
                                    "with the same model and settings (a killed run continues)."),
        bootstrap: int = typer.Option(1000, min=0, help="Bootstrap resamples of the test items for the 95% "
                                      "intervals per task and for the score (0 = none)."),
        max_chars: int = typer.Option(None, min=1, help="Cut every test text and demonstration at this many "
                                      "characters (the same cut for every model; a run's `bench.max_chars`)."),
    ) -> None:
        """Evaluate a model on SentiBench (or any suite/task), e.g.

        sentidistill bench --model Qwen/Qwen2.5-1.5B-Instruct --suite sentibench --limit 100 --seeds 42,43,44
        """
        from rich.console import Console

        from sentidistill.bench.registry import get_task, list_suites, list_tasks, resolve_tasks
        from sentidistill.errors import InputError

        console = Console()
        if list_only:
            for s in list_suites():
                console.print(f"[bold]{s}[/]: " + ", ".join(list_tasks(s)))
            for n in list_tasks():
                t = get_task(n)
                console.print(f"  {n:24s} {t.category:13s} {t.kind:15s} {t.metric:9s} {t.spec.description}")
            return
        if not model:
            raise InputError("--model is required", field="--model", expected="an HF id/path, openai:MODEL@URL or replay:FILE")
        if scoring not in ("restricted", "generate"):
            raise InputError("unknown scoring", field="--scoring", expected="restricted | generate", got=scoring)
        if demos not in (None, "random", "similar"):
            raise InputError("unknown demonstration selection", field="--demos", expected="random | similar", got=demos)
        if prompt_style not in ("auto", "plain", "chat"):
            raise InputError("unknown prompt style", field="--prompt-style", expected="auto | plain | chat",
                             got=prompt_style)
        from sentidistill.bench.models import build_adapter
        from sentidistill.bench.runner import run_bench

        task_objs = resolve_tasks(suite, [t.strip() for t in tasks.split(",") if t.strip()])
        adapter = build_adapter(model, cache_path=out / "teacher_cache.sqlite", batch_size=batch_size,
                                first_token=first_token, prompt_style=prompt_style)
        try:
            metrics = run_bench(adapter, task_objs, shots=shots, seeds=_ints(seeds), limit=limit, scoring=scoring,
                                out_dir=out, data_dir=data_dir, model_name=name, demo_selection=demos,
                                suite=None if tasks else suite, max_new_tokens=max_new_tokens, resume=resume,
                                bootstrap=bootstrap, max_chars=max_chars)
        finally:
            close = getattr(adapter, "close", None)
            if close:
                close()
        def ci(lo: float | None, hi: float | None) -> str:
            return f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""

        for t, e in metrics["tasks"].items():
            sd = f" ± {100 * e['score_std']:.1f}" if e["score_std"] else ""
            console.print(f"{t:24s} {e['metric']:9s} {100 * e['score']:6.1f}{sd}{ci(e.get('ci_low'), e.get('ci_high'))}"
                          f"  (n={e['n']}, unparseable {100 * e['unparseable_rate']:.1f}%)", highlight=False)
        for c, v in metrics["categories"].items():
            console.print(f"[bold]{c:24s}[/] {100 * v:16.1f}")
        overall = ci(metrics.get("sentibench_score_ci_low"), metrics.get("sentibench_score_ci_high"))
        console.print(f"[bold]score{'':19s}[/] {100 * metrics['sentibench_score']:16.1f}{overall}   -> "
                      f"{out / 'metrics.json'}", highlight=False)
        if report:
            from sentidistill.report import write_report

            paths = write_report([out / "metrics.json"], out, title=f"SentiBench: {metrics['model']['name']}")
            console.print(f"report: {paths['html']}")

    @app.command("report")
    def report_cmd(
        runs: list[Path] = typer.Argument(..., help="metrics.json files or folders holding them (one column each)."),
        out: Path = typer.Option(Path("report"), help="Output folder for report.md and report.html."),
        title: str = typer.Option("SentiBench report"),
        reference: str = typer.Option(None, help="Model the others are compared with (paired differences on the "
                                      "same items); default: 'teacher' when present, else the first run."),
        bootstrap: int = typer.Option(1000, min=0, help="Bootstrap resamples for the paired differences "
                                      "(0 = no paired differences)."),
    ) -> None:
        """Compare several benchmark runs in one report (Markdown + self-contained HTML): scores with 95%
        intervals, and each model's paired difference from a reference model on the same test items.

        sentidistill report runs/demo/bench/teacher runs/demo/bench/student_after --reference teacher
        """
        from sentidistill.report import write_report

        paths = write_report(runs, out, title=title, reference=reference, bootstrap=bootstrap or None)
        print(f"{paths['markdown']}\n{paths['html']}")
