"""The whole pipeline, top to bottom: teach -> train -> bench -> report, resumable stage by stage.

Each stage writes its artefacts into the run directory and is marked done in the manifest; re-running
the same config skips finished stages (their outputs are checked, not just their flags), so a killed
run picks up where it stopped. The teacher's response cache makes even a half-finished teaching stage
resume without paying twice.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentidistill.config import PipelineConfig
from sentidistill.rundir import RunDir

log = logging.getLogger(__name__)

# The benchmarked models, in the order the results table and the report list them.
BENCH_ORDER = ("teacher", "student_before", "student_knowdist", "student_after")


@dataclass
class PipelineResult:
    run_dir: Path
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> metrics.json
    report_md: Path | None = None
    report_html: Path | None = None
    stage_times: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class _LazyTeacher:
    """Starts the teacher (e.g. a llama.cpp server) on first use only; closed when the run ends."""

    def __init__(self, cfg: PipelineConfig, rundir: RunDir, stack: ExitStack) -> None:
        self._cfg, self._rundir, self._stack = cfg, rundir, stack
        self._teacher = None

    def get(self):
        if self._teacher is None:
            from sentidistill.teacher import build_teacher

            self._teacher = self._stack.enter_context(build_teacher(self._cfg.teacher, self._rundir.cache_path))
        return self._teacher

    @property
    def stats(self) -> dict[str, Any]:
        return dict(self._teacher.stats) if self._teacher is not None else {}


def run_pipeline(cfg: PipelineConfig, *, on_stage: Callable[[str, str], None] | None = None) -> PipelineResult:
    """Run (or resume) every enabled stage of ``cfg`` and return where the results are."""
    from sentidistill.data import default_data_dir

    rundir = RunDir(cfg.run_dir)
    rundir.open(cfg, config_hash=cfg.config_hash(), seeds={"pipeline": cfg.seed, "bench": cfg.bench.seeds[0]})
    handler = rundir.attach_log()
    data_dir = cfg.data_dir or default_data_dir()
    result = PipelineResult(run_dir=rundir.path)
    notify = on_stage or (lambda name, status: None)
    invoked: list[str] = []  # the stages of this config, in order

    def stage(name: str, outputs: list[Path], fn: Callable[[], dict[str, Any] | None], *,
              deps: tuple[str, ...] = (), workdir: Path | None = None) -> None:
        """Run stage ``name`` unless it is done, its outputs check out and its inputs are unchanged.

        ``deps`` are the upstream stages whose results this one is built from: their result ids are
        recorded when it starts, and a redone upstream stage makes it stale. ``workdir`` holds its partial
        work (checkpoints, finished benchmark cells): kept to resume a killed attempt on the same inputs,
        removed when the inputs changed (or were never recorded: a folder from another config).
        """
        invoked.append(name)
        # ``built_from`` in the manifest: the result ids of the upstream stages when this one started.
        inputs = {d: rundir.stage_info(d).get("token") for d in deps}
        info = rundir.stage_info(name)
        stale = bool(info) and info.get("built_from") != inputs
        if info.get("status") == "done" and not stale:
            problem = next((p for p in (_output_problem(o, info) for o in outputs) if p), None)
            if problem is None:
                result.skipped.append(name)
                notify(name, "skipped (done)")
                return
            log.warning("stage %s was done, but %s: running it again", name, problem)
        elif stale:
            log.warning("stage %s: an upstream stage was redone since it started: starting it afresh", name)
        if workdir is not None and workdir.exists() and (stale or not info):
            shutil.rmtree(workdir)
        notify(name, "running")
        t0 = time.perf_counter()
        with rundir.stage(name, built_from=inputs) as stage_info:
            stage_info.update({k: v for k, v in (fn() or {}).items() if k != "built_from"})
        result.stage_times[name] = time.perf_counter() - t0
        notify(name, f"done in {result.stage_times[name]:.1f}s")

    base_student = cfg.student.model
    knowdist_model = rundir.models_dir / "knowdist" / "final"
    icldist_model = rundir.models_dir / "icldist" / "final"
    knowdist_corpus = rundir.corpus_dir / "knowdist.parquet"
    icl_corpus = rundir.corpus_dir / "icl.parquet"

    try:
        with ExitStack() as stack:
            teacher = _LazyTeacher(cfg, rundir, stack)

            # 1. Teaching: the teacher writes the two corpora (every response cached as it arrives).
            if cfg.knowdist.enabled:
                stage("teach_knowdist", [knowdist_corpus], lambda: _teach_knowdist(cfg, teacher, knowdist_corpus, data_dir))
            if cfg.icldist.enabled:
                stage("teach_icl", [icl_corpus], lambda: _teach_icl(cfg, teacher, icl_corpus, data_dir))

            # 2. The teacher's own score on the benchmark (same prompts as the students).
            if cfg.bench.enabled and cfg.bench.include_teacher:
                out = rundir.bench_dir / "teacher"
                stage("bench_teacher", [out / "metrics.json"],
                      lambda: _bench(cfg, "teacher", out, data_dir, teacher=teacher), workdir=out)

        # 3. The student before distillation.
        if cfg.bench.enabled and cfg.bench.include_student_before:
            out = rundir.bench_dir / "student_before"
            stage("bench_student_before", [out / "metrics.json"],
                  lambda: _bench(cfg, "student (before)", out, data_dir, model=base_student), workdir=out)

        # 4. KnowDist pre-training, then ICLDist on top of it.
        current, current_stage = base_student, None
        if cfg.knowdist.enabled:
            stage("train_knowdist", [knowdist_model],
                  lambda: _train(cfg, current, knowdist_corpus, rundir.models_dir / "knowdist", "knowdist"),
                  deps=("teach_knowdist",), workdir=rundir.models_dir / "knowdist")
            current, current_stage = str(knowdist_model), "train_knowdist"
            if cfg.bench.enabled and cfg.icldist.enabled:
                out = rundir.bench_dir / "student_knowdist"
                stage("bench_student_knowdist", [out / "metrics.json"],
                      lambda: _bench(cfg, "student (KnowDist)", out, data_dir, model=str(knowdist_model)),
                      deps=("train_knowdist",), workdir=out)
        if cfg.icldist.enabled:
            start_from = current
            stage("train_icldist", [icldist_model],
                  lambda: _train(cfg, start_from, icl_corpus, rundir.models_dir / "icldist", "icldist"),
                  deps=("teach_icl", *([current_stage] if current_stage else [])),
                  workdir=rundir.models_dir / "icldist")
            current, current_stage = str(icldist_model), "train_icldist"

        # 5. The distilled student on the same benchmark, then the report.
        if cfg.bench.enabled and current != base_student:
            label = "student (" + "+".join(
                n for n, on in (("KnowDist", cfg.knowdist.enabled), ("ICLDist", cfg.icldist.enabled)) if on) + ")"
            out = rundir.bench_dir / "student_after"
            final_model = current
            stage("bench_student_after", [out / "metrics.json"],
                  lambda: _bench(cfg, label, out, data_dir, model=final_model),
                  deps=(current_stage,) if current_stage else (), workdir=out)
        # 6. Paper 2's evaluation: fine-tune the student before and after KnowDist on FSA data.
        finetune_dir = rundir.path / "finetune"
        if cfg.finetune.enabled:
            models = {"base": base_student}
            if cfg.knowdist.enabled:
                models["knowdist"] = str(knowdist_model)
            stage("finetune_eval", [finetune_dir / "results.json"],
                  lambda: _finetune(cfg, models, finetune_dir, data_dir),
                  deps=("train_knowdist",) if cfg.knowdist.enabled else (), workdir=finetune_dir)
        if cfg.bench.enabled:
            report_deps = tuple(n for n in invoked if n.startswith("bench_") or n == "finetune_eval")
            stage("report", [rundir.path / "report.html"], lambda: _report(cfg, rundir), deps=report_deps)
            result.report_md = rundir.path / "report.md"
            result.report_html = rundir.path / "report.html"
            for name in BENCH_ORDER:
                metrics_file = rundir.bench_dir / name / "metrics.json"
                if metrics_file.exists():
                    result.metrics[name] = json.loads(metrics_file.read_text(encoding="utf-8"))
        rundir.finish("done", stage_times={k: round(v, 2) for k, v in result.stage_times.items()})
    except BaseException as exc:
        rundir.finish("failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted",
                      error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        logging.getLogger("sentidistill").removeHandler(handler)
        handler.close()
    return result


# -- stage bodies ----------------------------------------------------------------------------------

def _teach_knowdist(cfg: PipelineConfig, teacher: _LazyTeacher, out: Path, data_dir: Path | None) -> dict:
    from sentidistill.distill import build_knowdist_corpus

    # A replayed corpus needs no live teacher: don't start one for nothing.
    live = None if cfg.knowdist.replay_path else teacher.get()
    stats = build_knowdist_corpus(cfg.knowdist, live, out, data_dir=data_dir, seed=cfg.seed)
    return {**_as_dict(stats), "teacher": teacher.stats}


def _teach_icl(cfg: PipelineConfig, teacher: _LazyTeacher, out: Path, data_dir: Path | None) -> dict:
    from sentidistill.distill import build_icl_corpus

    stats = build_icl_corpus(cfg.icldist, teacher.get(), out, data_dir=data_dir, seed=cfg.seed)
    return {**_as_dict(stats), "teacher": teacher.stats}


def _train(cfg: PipelineConfig, model: str, corpus: Path, out_dir: Path, method: str) -> dict:
    from sentidistill.train import train_student

    final = train_student(
        model, corpus, out_dir, cfg.stage_training(method), method=method, student=cfg.student,
        icl=cfg.icldist if method == "icldist" else None, seed=cfg.seed,
    )
    return {"model": str(final)}


def _bench(cfg: PipelineConfig, label: str, out: Path, data_dir: Path | None, *,
           model: str | None = None, teacher: _LazyTeacher | None = None) -> dict:
    from sentidistill.bench import list_tasks, run_bench
    from sentidistill.bench.models import HFModelAdapter, TeacherAdapter

    tasks = cfg.bench.tasks or list_tasks(cfg.bench.suite)
    if teacher is not None:
        adapter = TeacherAdapter(teacher.get())
    else:
        adapter = HFModelAdapter(model, kind=cfg.student.kind, max_length=cfg.student.max_source_length)
    metrics = run_bench(
        adapter, tasks, shots=cfg.bench.shots, seeds=cfg.bench.seeds, limit=cfg.bench.limit,
        scoring=cfg.bench.scoring, out_dir=out, data_dir=data_dir, model_name=label,
    )
    return {"score": metrics.get("sentibench_score"), "bench_wall_s": metrics.get("wall_s")}


def _finetune(cfg: PipelineConfig, models: dict[str, str], out: Path, data_dir: Path | None) -> dict:
    from sentidistill.finetune.cli import run_finetune_stage

    f = cfg.finetune
    run_finetune_stage(models, out, {
        "datasets": f.datasets, "seeds": f.seeds, "train_fractions": f.train_fractions, "epochs": f.epochs,
        "lr": f.learning_rate, "batch_size": f.batch_size, "max_parallel": f.max_parallel, "data_dir": data_dir,
        "limit_train": f.limit_train, "limit_eval": f.limit_eval,
    })
    return {"results": str(out / "results.json")}


def _report(cfg: PipelineConfig, rundir: RunDir) -> dict:
    from sentidistill.report import write_report

    files = [rundir.bench_dir / n / "metrics.json" for n in BENCH_ORDER if (rundir.bench_dir / n / "metrics.json").exists()]
    extra = []
    if (rundir.path / "finetune" / "results.json").exists():
        from sentidistill.finetune import load_results
        from sentidistill.finetune.report import as_extra_section

        extra.append(as_extra_section(load_results(rundir.path / "finetune")))
    write_report(files, rundir.path, title=f"sentidistill run '{cfg.name}'", extra_sections=extra)
    return {"report": str(rundir.path / "report.html")}


def _output_problem(path: Path, info: dict[str, Any]) -> str | None:
    """Why ``path`` (an output of a finished stage, whose manifest entry is ``info``) is not usable, or None.

    A model folder needs its config and safetensors weights whose headers read (every shard of a sharded
    checkpoint); a Parquet corpus needs the row count its stage recorded; a JSON file must parse.
    """
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if not path.is_file():
            return f"{path} is missing"
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # pyarrow raises several types for a damaged file
            return f"{path} is not readable Parquet ({type(exc).__name__})"
        if info.get("rows") is not None and rows != info["rows"]:
            return f"{path} holds {rows} rows, the stage wrote {info['rows']}"
        return None
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"{path} is missing"
        except (ValueError, UnicodeDecodeError):
            return f"{path} is not valid JSON"
        return None
    if path.suffix:
        return None if path.is_file() else f"{path} is missing"
    return _model_problem(path)


def _model_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a loadable saved model (config + safetensors weights), or None."""
    from safetensors import safe_open

    if not (folder / "config.json").is_file():
        return f"{folder} has no config.json"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            return f"{index} is not a valid weight index"
    else:
        shards = ["model.safetensors"]
    for shard in shards:
        f = folder / shard
        if not f.is_file():
            return f"{f} is missing"
        try:
            with safe_open(str(f), framework="pt") as st:
                if not list(st.keys()):
                    return f"{f} holds no tensors"
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            return f"{f} is not loadable safetensors ({type(exc).__name__}: {exc})"
    return None


def _as_dict(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    if isinstance(stats, dict):
        return stats
    if hasattr(stats, "model_dump"):
        return stats.model_dump()
    if hasattr(stats, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(stats)
    return {"stats": str(stats)}
