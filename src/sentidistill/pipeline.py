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
BENCH_ORDER = ("teacher", "teacher_calibrated", "student_before", "student_knowdist", "student_after",
               "student_soft_after", "classifier_before", "classifier_after")


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
    soft_corpus = rundir.corpus_dir / "soft_labels.parquet"
    classifier_init = rundir.models_dir / "classifier" / "init"
    classifier_final = rundir.models_dir / "classifier" / "final"

    try:
        with ExitStack() as stack:
            teacher = _LazyTeacher(cfg, rundir, stack)

            # 1. Teaching: the teacher writes the two corpora (every response cached as it arrives).
            if cfg.knowdist.enabled:
                stage("teach_knowdist", [knowdist_corpus], lambda: _teach_knowdist(cfg, teacher, knowdist_corpus, data_dir))
            if cfg.icldist.enabled:
                stage("teach_icl", [icl_corpus], lambda: _teach_icl(cfg, teacher, icl_corpus, data_dir))

            if cfg.soft_labels.enabled:
                stage("teach_soft", [soft_corpus, soft_corpus.with_suffix(".stats.json")],
                      lambda: _teach_soft(cfg, teacher, soft_corpus, data_dir))

            # 2. The teacher's own score on the benchmark (same prompts as the students), raw and, with soft
            # labels, calibrated with the priors estimated on the unlabeled pool (cache hits: no new calls).
            if cfg.bench.enabled and cfg.bench.include_teacher:
                out = rundir.bench_dir / "teacher"
                stage("bench_teacher", [out / "metrics.json"],
                      lambda: _bench(cfg, "teacher", out, data_dir, teacher=teacher), workdir=out)
                if cfg.soft_labels.enabled and cfg.soft_labels.calibration != "none":
                    out_cal = rundir.bench_dir / "teacher_calibrated"
                    stage("bench_teacher_calibrated", [out_cal / "metrics.json"],
                          lambda: _bench(cfg, "teacher (calibrated)", out_cal, data_dir, teacher=teacher,
                                         priors=soft_corpus), deps=("teach_soft",), workdir=out_cal)

        # 3. The classifier student: zero-shot start (label-embedding heads), trained on the soft labels.
        if cfg.classifier.enabled:
            stage("init_classifier", [classifier_init],
                  lambda: _init_classifier(cfg, soft_corpus, classifier_init), deps=("teach_soft",))
            if cfg.bench.enabled:
                out = rundir.bench_dir / "classifier_before"
                stage("bench_classifier_before", [out / "metrics.json"],
                      lambda: _bench(cfg, "classifier student (before)", out, data_dir, model=str(classifier_init),
                                     kind="classifier"), deps=("init_classifier",), workdir=out)
            stage("train_classifier", [classifier_final],
                  lambda: _train_classifier(cfg, soft_corpus, rundir.models_dir / "classifier", classifier_init),
                  deps=("teach_soft", "init_classifier"), workdir=rundir.models_dir / "classifier" / "checkpoints")
            if cfg.bench.enabled:
                out = rundir.bench_dir / "classifier_after"
                stage("bench_classifier_after", [out / "metrics.json"],
                      lambda: _bench(cfg, "classifier student (after)", out, data_dir, model=str(classifier_final),
                                     kind="classifier"), deps=("train_classifier",), workdir=out)

        # 4. The generative student before distillation.
        generative_soft = cfg.soft_labels.enabled and cfg.soft_labels.train_generative
        if cfg.bench.enabled and cfg.bench.include_student_before and (
                cfg.knowdist.enabled or cfg.icldist.enabled or generative_soft or not cfg.classifier.enabled):
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
        # 5b. The generative student learning the same soft labels (label-distribution KL).
        if generative_soft:
            gen_dir = rundir.models_dir / "generative_soft"
            stage("train_generative_soft", [gen_dir / "final"],
                  lambda: _train_generative_soft(cfg, soft_corpus, gen_dir), deps=("teach_soft",), workdir=gen_dir)
            if cfg.bench.enabled:
                out = rundir.bench_dir / "student_soft_after"
                stage("bench_student_soft_after", [out / "metrics.json"],
                      lambda: _bench(cfg, "generative student (soft labels)", out, data_dir,
                                     model=str(gen_dir / "final")), deps=("train_generative_soft",), workdir=out)
        # 6. Paper 2's evaluation: fine-tune the student before and after KnowDist on FSA data.
        finetune_dir = rundir.path / "finetune"
        if cfg.finetune.enabled:
            models = {"base": base_student}
            if cfg.knowdist.enabled:
                models["knowdist"] = str(knowdist_model)
            stage("finetune_eval", [finetune_dir / "results.json"],
                  lambda: _finetune(cfg, models, finetune_dir, data_dir),
                  deps=("train_knowdist",) if cfg.knowdist.enabled else (), workdir=finetune_dir)
        # 7. Tasks no corpus saw, for every benched model that can answer them (apart from the mean).
        if cfg.bench.enabled and cfg.bench.unseen_tasks:
            unseen_dir = rundir.path / "bench_unseen"
            model_stages = tuple(n for n in invoked if n.startswith(("train_", "init_")))
            with ExitStack() as stack:
                teacher = _LazyTeacher(cfg, rundir, stack)
                stage("bench_unseen", [unseen_dir / "summary.json"],
                      lambda: _bench_unseen(cfg, rundir, teacher, data_dir), deps=model_stages, workdir=unseen_dir)
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


def _teach_soft(cfg: PipelineConfig, teacher: _LazyTeacher, out: Path, data_dir: Path | None) -> dict:
    from sentidistill.distill.soft_labels import build_soft_label_corpus

    stats = build_soft_label_corpus(cfg.soft_labels, teacher.get(), out, data_dir=data_dir, seed=cfg.seed)
    return {"rows": stats.rows, "tasks": stats.tasks, "curation": stats.curation, "teacher": teacher.stats}


def _teach_tuples(cfg: PipelineConfig, teacher: _LazyTeacher, out: Path, data_dir: Path | None) -> dict:
    from sentidistill.distill.tuples import build_tuple_corpus

    stats = build_tuple_corpus(cfg.finegrained, teacher.get(), out, data_dir=data_dir, seed=cfg.seed)
    return {"rows": stats.rows, "tasks": stats.tasks, "teacher": teacher.stats}


def _train_generative(cfg: PipelineConfig, soft_corpus: Path | None, tuple_corpus: Path | None,
                      out_dir: Path) -> dict:
    """The multi-task generative student (``generative`` section) on the corpora this run wrote."""
    from sentidistill.bench import get_task
    from sentidistill.train.multitask_lm import MultiTaskSettings, train_multitask_generative

    g = cfg.generative
    specs = [*(cfg.soft_labels.tasks if soft_corpus else []), *(cfg.finegrained.tasks if tuple_corpus else [])]
    settings = MultiTaskSettings(icl_fraction=g.icl_fraction, icl_shots=g.icl_shots, kl_weight=g.kl_weight,
                                 seq_weight=g.seq_weight, temperature=g.temperature, patience=g.patience,
                                 dev_generate=g.dev_generate, max_length=g.max_length)
    final = train_multitask_generative(
        cfg.student.model, out_dir, g.training, settings, soft_corpus=soft_corpus, tuple_corpus=tuple_corpus,
        kind=cfg.student.kind, seed=cfg.seed, task_specs={get_task(s).name: s for s in specs},
    )
    summary = json.loads((out_dir / "training_summary.json").read_text(encoding="utf-8"))
    return {"model": str(final), **{k: summary.get(k) for k in ("global_step", "best_teacher_agreement", "wall_s")}}


def _init_classifier(cfg: PipelineConfig, corpus: Path, out: Path) -> dict:
    """The untrained classifier student (heads from label embeddings), saved for the 'before' bench."""
    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.students.classifier import build_classifier, save_classifier
    from sentidistill.train.classifier import _task_table

    c = cfg.classifier
    model, tok = build_classifier(c.encoder, _task_table(read_soft_labels(corpus)), head_init=c.head_init,
                                  dropout=c.dropout, max_length=c.max_length, seed=cfg.seed)
    save_classifier(model, tok, out)
    return {"model": str(out)}


def _train_classifier(cfg: PipelineConfig, corpus: Path, out_dir: Path, init: Path) -> dict:
    from sentidistill.train.classifier import train_classifier

    final = train_classifier(corpus, out_dir, cfg.classifier, seed=cfg.seed, init_from=str(init))
    summary = json.loads((out_dir / "training_summary.json").read_text(encoding="utf-8"))
    return {"model": str(final), **{k: summary.get(k) for k in ("global_step", "best_teacher_agreement", "wall_s")}}


def _train_generative_soft(cfg: PipelineConfig, corpus: Path, out_dir: Path) -> dict:
    from sentidistill.train.softlabel_lm import train_generative_on_soft_labels

    sl = cfg.soft_labels
    final = train_generative_on_soft_labels(
        cfg.student.model, corpus, out_dir, sl.generative_training, kind=cfg.student.kind,
        temperature=sl.generative_temperature, max_length=cfg.student.max_source_length, seed=cfg.seed,
    )
    summary = json.loads((out_dir / "training_summary.json").read_text(encoding="utf-8"))
    return {"model": str(final), **{k: summary.get(k) for k in ("global_step", "best_teacher_agreement", "wall_s")}}


def _train(cfg: PipelineConfig, model: str, corpus: Path, out_dir: Path, method: str) -> dict:
    from sentidistill.train import train_student

    final = train_student(
        model, corpus, out_dir, cfg.stage_training(method), method=method, student=cfg.student,
        icl=cfg.icldist if method == "icldist" else None, seed=cfg.seed,
    )
    return {"model": str(final)}


def _bench(cfg: PipelineConfig, label: str, out: Path, data_dir: Path | None, *,
           model: str | None = None, teacher: _LazyTeacher | None = None, priors: Path | None = None,
           kind: str | None = None) -> dict:
    from sentidistill.bench import list_tasks, run_bench
    from sentidistill.bench.models import CalibratedAdapter, HFModelAdapter, TeacherAdapter

    tasks = cfg.bench.tasks or list_tasks(cfg.bench.suite)
    if teacher is not None:
        adapter = TeacherAdapter(teacher.get())
        if priors is not None:
            from sentidistill.data.soft_label_corpus import read_soft_label_stats

            stats = read_soft_label_stats(priors)
            adapter = CalibratedAdapter(adapter, {t: v["log_prior"] for t, v in stats["tasks"].items()})
    else:
        adapter = HFModelAdapter(model, kind=kind or cfg.student.kind, max_length=cfg.student.max_source_length)
    metrics = run_bench(
        adapter, tasks, shots=cfg.bench.shots, seeds=cfg.bench.seeds, limit=cfg.bench.limit,
        scoring=cfg.bench.scoring, out_dir=out, data_dir=data_dir, model_name=label, max_chars=cfg.bench.max_chars,
        bootstrap=cfg.bench.bootstrap,
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


def _bench_unseen(cfg: PipelineConfig, rundir: RunDir, teacher: _LazyTeacher, data_dir: Path | None) -> dict:
    """``bench.unseen_tasks`` for the teacher (raw) and every student benched in this run: one metrics.json
    per model under ``bench_unseen/<model>/``, and ``summary.json`` (model -> task -> score, or the reason it
    could not answer, e.g. no classifier head with the task's label set)."""
    from sentidistill.errors import InputError
    from sentidistill.utils.io import atomic_write_json

    models: dict[str, dict[str, Any]] = {}
    if cfg.bench.include_teacher:
        models["teacher"] = {"label": "teacher", "teacher": teacher}
    sources = {
        "student_before": (cfg.student.model, None),
        "student_after": (str(rundir.models_dir / "icldist" / "final"), None),
        "student_soft_after": (str(rundir.models_dir / "generative_soft" / "final"), None),
        "classifier_before": (str(rundir.models_dir / "classifier" / "init"), "classifier"),
        "classifier_after": (str(rundir.models_dir / "classifier" / "final"), "classifier"),
    }
    for name, (model, kind) in sources.items():
        done = rundir.bench_dir / name / "metrics.json"
        if done.exists():
            label = json.loads(done.read_text(encoding="utf-8"))["model"]["name"]
            models[name] = {"label": label, "model": model, "kind": kind}
    sub = cfg.model_copy(update={"bench": cfg.bench.model_copy(update={"tasks": list(cfg.bench.unseen_tasks)})})
    summary: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        out = rundir.path / "bench_unseen" / name
        try:
            _bench(sub, m["label"], out, data_dir, model=m.get("model"), teacher=m.get("teacher"), kind=m.get("kind"))
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            summary[m["label"]] = {t: v["score"] for t, v in metrics["tasks"].items()}
        except InputError as exc:  # e.g. a classifier without a head for the task's label set
            summary[m["label"]] = {"error": str(exc)}
    atomic_write_json(rundir.path / "bench_unseen" / "summary.json", summary)
    return {"unseen": summary}


def _unseen_section(rundir: RunDir) -> tuple[str, str] | None:
    """The report section for ``bench_unseen/summary.json`` (None when there is none)."""
    path = rundir.path / "bench_unseen" / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    tasks = sorted({t for v in summary.values() for t in v if t != "error"})
    lines = ["| model | " + " | ".join(tasks) + " |", "| --- |" + " ---: |" * len(tasks)]
    for model, v in summary.items():
        if "error" in v:
            cells = [f"cannot answer: {v['error'][:160]}"] + [""] * (len(tasks) - 1)
        else:
            cells = [f"{100 * v[t]:.1f}" if t in v else "-" for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "Unseen tasks (no corpus saw them; not in the mean)", "\n".join(lines)


def _report(cfg: PipelineConfig, rundir: RunDir) -> dict:
    from sentidistill.report import write_report

    files = [rundir.bench_dir / n / "metrics.json" for n in BENCH_ORDER if (rundir.bench_dir / n / "metrics.json").exists()]
    extra = []
    if (rundir.path / "finetune" / "results.json").exists():
        from sentidistill.finetune import load_results
        from sentidistill.finetune.report import as_extra_section

        extra.append(as_extra_section(load_results(rundir.path / "finetune")))
    unseen = _unseen_section(rundir)
    if unseen is not None:
        extra.append(unseen)
    write_report(files, rundir.path, title=f"sentidistill run '{cfg.name}'", extra_sections=extra,
                 bootstrap=cfg.bench.bootstrap or None)
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
