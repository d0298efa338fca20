"""The whole pipeline, top to bottom: teach -> train -> bench -> report, resumable stage by stage.

The stages are declared once, in :data:`STAGES`: each names the stages it is built from, the setting that
switches it on, the files it writes, the model it produces and the function that runs it. :func:`plan`
selects the stages a config switches on and checks the graph before anything runs (every dependency
known, switched on and earlier; no cycle; every model a stage reads produced before it);
:func:`run_pipeline` walks the plan.

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
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sentidistill.config import PipelineConfig
from sentidistill.errors import ConfigError
from sentidistill.rundir import RunDir
from sentidistill.utils.io import stable_hash

log = logging.getLogger(__name__)

# The benchmarked models, in the order the results table and the report list them.
BENCH_ORDER = ("teacher", "teacher_calibrated", "student_before", "student_before_fewshot", "student_knowdist",
               "student_after", "student_soft_after", "generative_after", "generative_after_fewshot",
               "generative_calibrated",
               "classifier_before", "classifier_after")


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` returns: the run directory, each benched model's metrics (by its
    :data:`BENCH_ORDER` key), the report files, the seconds of each stage run now and the stages skipped."""

    run_dir: Path
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> metrics.json
    report_md: Path | None = None
    report_html: Path | None = None
    stage_times: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class _LazyTeacher:
    """Starts the teacher (e.g. a llama.cpp server) on first use only; closed with ``stack`` (before the next
    stage that does not use the teacher, or when the run ends)."""

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


# -- the stage graph -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    """A model the plan knows: the configured base student, or one a stage of the plan produces.

    ``id``: the role it plays (``student_before``, ``student_after``, ``classifier_after``, ...; see
    :data:`STAGES`). ``path``: a folder of the run directory, or the base student's spec (HF id, path,
    ``builtin:...``). ``kind``: the student kind it loads as (None: the configured ``student.kind``).
    ``stage``: the stage that produces it (None for the base student).
    """

    id: str
    path: str
    kind: str | None = None
    stage: str | None = None


@dataclass(frozen=True)
class Produces:
    """The model a stage produces: the model ids it answers to, its folder under ``models/``, its kind.

    A stage later in the plan that produces the same id replaces it for the stages after that one (KnowDist
    then ICLDist: ``student_after`` is the ICLDist student when ICLDist runs, the KnowDist student otherwise).
    """

    ids: tuple[str, ...]
    folder: str
    kind: str | None = None


@dataclass(frozen=True)
class BenchTarget:
    """What a benchmark stage scores: ``key`` (its folder under ``bench/``, a name of :data:`BENCH_ORDER`),
    the model's label in the report, the model id it reads (None: the teacher), whether the teacher is
    calibrated with the soft-label priors, and whether the model is also scored on ``bench.unseen_tasks``."""

    key: str
    label: str | Callable[[PipelineConfig], str]
    model: str | None = None
    calibrated: bool = False
    unseen: bool = True
    fewshot: bool = False  # benched with generative.fewshot_bench demonstrations instead of bench.shots

    def label_for(self, cfg: PipelineConfig) -> str:
        """The label of this model in the results table and the report."""
        return self.label(cfg) if callable(self.label) else self.label


def _always(cfg: PipelineConfig) -> bool:
    return True


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage of the pipeline, declared once in :data:`STAGES`.

    - ``name``: the stage's key in the manifest (``manifest.json`` -> ``stages``) and in the notifications.
    - ``run(ctx)``: does the work and returns what the manifest records of it (a dict, or None).
    - ``enabled(cfg)``: whether a config runs this stage.
    - ``needs``: the stages it is built from, which must run (be enabled and earlier in :data:`STAGES`);
      :func:`plan` raises :class:`~sentidistill.errors.ConfigError` otherwise.
    - ``after``: stages it is built from when the config runs them (names, or a predicate over the earlier
      stages of the plan, e.g. every stage that produces a model).
    - ``reads``: model ids it reads (``ctx.model(id)``); each resolves to the latest stage before it that
      produces the id (or the base student), and that stage becomes a dependency too.
    - ``produces``: the model it writes (:class:`Produces`), or None.
    - ``outputs(rundir)``: the files or model folders that prove it finished (checked on resume); None: the
      folder of the model it produces.
    - ``workdir(rundir)``: its partial work (checkpoints, finished benchmark cells), kept to resume a killed
      attempt on the same inputs and removed when the inputs changed; None when it has none.
    - ``uses_teacher``: it asks the teacher (started on first use, stopped before the next stage that does not).
    - ``reported``: the report shows its results (the report is rebuilt when it is redone).
    - ``bench``: for benchmark stages, what they score (:class:`BenchTarget`).
    - ``settings(cfg)``: the config values its ``run`` reads (JSON-able). Their hash is recorded when it starts;
      a change reruns it (and, through the result ids, what is built from it), a change elsewhere keeps its
      result (new training epochs do not redo the student's 50-minute benchmark before distillation). None:
      the whole config (any change reruns it).

    :func:`plan` returns copies with ``built_from`` (the dependencies, resolved) and ``models`` (the models
    visible to the stage: the base student and every model produced before it) filled in.
    """

    name: str
    run: Callable[[StageContext], dict[str, Any] | None]
    enabled: Callable[[PipelineConfig], bool] = _always
    needs: tuple[str, ...] = ()
    after: tuple[str, ...] | Callable[[Stage], bool] = ()
    reads: tuple[str, ...] = ()
    produces: Produces | None = None
    outputs: Callable[[RunDir], list[Path]] | None = None
    workdir: Callable[[RunDir], Path] | None = None
    uses_teacher: bool = False
    reported: bool = False
    bench: BenchTarget | None = None
    settings: Callable[[PipelineConfig], Any] | None = None
    # Filled by plan():
    built_from: tuple[str, ...] = ()
    models: Mapping[str, Model] = field(default_factory=dict, compare=False, hash=False)

    def output_paths(self, rundir: RunDir) -> list[Path]:
        """What this stage's outputs are in ``rundir`` (its ``outputs``, else its model folder)."""
        if self.outputs is not None:
            return self.outputs(rundir)
        if self.produces is None:
            raise ConfigError(f"stage '{self.name}' declares neither outputs nor the model it produces")
        return [rundir.models_dir / self.produces.folder]

    def settings_hash(self, cfg: PipelineConfig) -> str:
        """The hash of :attr:`settings` under ``cfg`` (``config:<config hash>`` when the stage declares none)."""
        if self.settings is None:
            return "config:" + cfg.config_hash()
        return stable_hash(self.settings(cfg), 16)


@dataclass
class StageContext:
    """What a stage's ``run`` gets: the config, the run directory, the data folder, the teacher (None for a
    stage that does not use it), the stage itself as planned and the whole plan."""

    cfg: PipelineConfig
    rundir: RunDir
    data_dir: Path | None
    teacher: _LazyTeacher | None
    stage: Stage
    plan: list[Stage]

    @property
    def outputs(self) -> list[Path]:
        return self.stage.output_paths(self.rundir)

    def model(self, model_id: str) -> Model:
        """The model ``model_id`` as this stage sees it (see :attr:`Stage.reads`)."""
        try:
            return self.stage.models[model_id]
        except KeyError:
            raise ConfigError(f"stage '{self.stage.name}' asked for the model '{model_id}', which no stage "
                              f"before it produces (known: {sorted(self.stage.models)})") from None


def _soft_corpus(rundir: RunDir) -> Path:
    return rundir.corpus_dir / "soft_labels.parquet"


def _tuple_corpus(rundir: RunDir) -> Path:
    return rundir.corpus_dir / "tuples.parquet"


def _run_bench_stage(ctx: StageContext) -> dict:
    """Run a benchmark stage: the teacher (raw or calibrated) or the model its :class:`BenchTarget` reads."""
    b = ctx.stage.bench
    assert b is not None
    out = ctx.rundir.bench_dir / b.key
    label = b.label_for(ctx.cfg)
    if b.model is None:
        return _bench(ctx.cfg, label, out, ctx.data_dir, teacher=ctx.teacher,
                      priors=_soft_corpus(ctx.rundir) if b.calibrated else None)
    m = ctx.model(b.model)
    cfg = ctx.cfg
    if b.fewshot:
        cfg = cfg.model_copy(update={"bench": cfg.bench.model_copy(update={"shots": cfg.generative.fewshot_bench})})
        label = f"{label}, {cfg.bench.shots}-shot"
    return _bench(cfg, label, out, ctx.data_dir, model=m.path, kind=m.kind)


_BENCH_SELECTION = {"enabled", "include_teacher", "include_student_before", "unseen_tasks"}


def _data_dir_setting(cfg: PipelineConfig) -> str | None:
    return str(cfg.data_dir) if cfg.data_dir else None


def _bench_settings(target: BenchTarget) -> Callable[[PipelineConfig], dict[str, Any]]:
    """What a benchmark stage reads: the bench section (less the switches that select stages), the data
    folder, and the teacher's settings (teacher targets) or the student's (model targets; the model itself
    is an input), the shots of a few-shot target."""

    def settings(cfg: PipelineConfig) -> dict[str, Any]:
        out: dict[str, Any] = {"bench": cfg.bench.model_dump(mode="json", exclude=_BENCH_SELECTION),
                               "data_dir": _data_dir_setting(cfg)}
        if target.model is None:
            out["teacher"] = cfg.teacher.legacy_dump()
        else:
            out["student"] = cfg.student.model_dump(mode="json")
        if target.fewshot:
            out["shots"] = cfg.generative.fewshot_bench
        return out

    return settings


def _teach_settings(section: str) -> Callable[[PipelineConfig], dict[str, Any]]:
    """What a teaching stage reads: its section, the teacher, the seed and the data folder."""
    return lambda cfg: {section: getattr(cfg, section).model_dump(mode="json"), "teacher": cfg.teacher.legacy_dump(),
                        "seed": cfg.seed, "data_dir": _data_dir_setting(cfg)}


def _generative_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What ``train_generative`` reads (the corpora are its inputs): the generative section less the settings
    only later stages read (:data:`_NOT_TRAINING_SETTINGS`), the student, the seed and the task lists of both
    corpora."""
    return {"generative": cfg.generative.model_dump(mode="json", exclude=_NOT_TRAINING_SETTINGS),
            "student": cfg.student.model_dump(mode="json"),
            "seed": cfg.seed, "soft_tasks": cfg.soft_labels.tasks if cfg.soft_labels.enabled else [],
            "tuple_tasks": cfg.finegrained.tasks if cfg.finegrained.enabled else []}


#: The generative section's settings the training does not read: the calibration stage's, and the shots of
#: the student's few-shot benchmarks (a new value re-benches, it does not retrain).
_NOT_TRAINING_SETTINGS = {"calibration", "calibration_texts", "fewshot_bench"}


def _calibration_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What ``calibrate_generative`` reads (the trained student is its input): the method, the texts per task,
    the tasks, the seed that draws the texts, the bench's text cut, the student's kind and length limit."""
    return {"calibration": cfg.generative.calibration, "calibration_texts": cfg.generative.calibration_texts,
            "tasks": cfg.soft_labels.tasks, "seed": cfg.seed, "max_chars": cfg.bench.max_chars,
            "data_dir": _data_dir_setting(cfg), "student": cfg.student.model_dump(mode="json")}


def _classifier_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What ``init_classifier`` and ``train_classifier`` read (the soft-label corpus is their input)."""
    return {"classifier": cfg.classifier.model_dump(mode="json"), "seed": cfg.seed}


def _method_settings(method: str) -> Callable[[PipelineConfig], dict[str, Any]]:
    """What ``train_knowdist`` / ``train_icldist`` read: the stage's training settings, the student, the seed
    (and ICLDist's section: its prompt format)."""
    def settings(cfg: PipelineConfig) -> dict[str, Any]:
        out = {"training": cfg.stage_training(method).model_dump(mode="json"),  # type: ignore[arg-type]
               "student": cfg.student.model_dump(mode="json"), "seed": cfg.seed}
        if method == "icldist":
            out["icldist"] = cfg.icldist.model_dump(mode="json")
        return out

    return settings


def bench_stage(target: BenchTarget, enabled: Callable[[PipelineConfig], bool] = _always, *,
                needs: tuple[str, ...] = ()) -> Stage:
    """A stage ``bench_<key>`` that benches ``target`` when ``bench.enabled`` and ``enabled(cfg)``: it writes
    ``bench/<key>/metrics.json`` (its finished cells resume from the same folder), reads the target's model
    (the teacher when ``target.model`` is None) and is shown in the report."""
    return Stage(
        name=f"bench_{target.key}", run=_run_bench_stage, enabled=lambda cfg: cfg.bench.enabled and enabled(cfg),
        needs=needs, reads=(target.model,) if target.model else (),
        outputs=lambda r: [r.bench_dir / target.key / "metrics.json"], workdir=lambda r: r.bench_dir / target.key,
        uses_teacher=target.model is None, reported=True, bench=target, settings=_bench_settings(target),
    )


def _generative_soft(cfg: PipelineConfig) -> bool:
    return cfg.soft_labels.enabled and cfg.soft_labels.train_generative


def _generative(cfg: PipelineConfig) -> bool:
    return cfg.generative.enabled


def _calibrated(cfg: PipelineConfig) -> bool:
    return cfg.generative.enabled and cfg.generative.calibration != "none"


def _fewshot(cfg: PipelineConfig) -> bool:
    return cfg.generative.enabled and cfg.generative.fewshot_bench > 0


def _distilled_label(cfg: PipelineConfig) -> str:
    on = (("KnowDist", cfg.knowdist.enabled), ("ICLDist", cfg.icldist.enabled))
    return "student (" + "+".join(n for n, enabled in on if enabled) + ")"


def _finetune_stage(ctx: StageContext) -> dict:
    """Paper 2's evaluation: fine-tune the student before (and, with KnowDist, after) KnowDist on FSA data."""
    models = {"base": ctx.model("student_before").path}
    if "student_knowdist" in ctx.stage.models:
        models["knowdist"] = ctx.model("student_knowdist").path
    return _finetune(ctx.cfg, models, ctx.outputs[0].parent, ctx.data_dir)


def unseen_targets(stages: list[Stage]) -> list[tuple[BenchTarget, Model | None]]:
    """What the ``bench_unseen`` stage scores: every benchmark stage of the plan ``stages`` whose target is
    marked ``unseen``, in :data:`BENCH_ORDER`, with the model that stage reads (None: the teacher)."""
    benches = sorted((s for s in stages if s.bench is not None and s.bench.unseen),
                     key=lambda s: BENCH_ORDER.index(s.bench.key))
    return [(s.bench, s.models[s.bench.model] if s.bench.model else None) for s in benches]


def _bench_unseen_stage(ctx: StageContext) -> dict:
    """The teacher and every student benched in this plan, as the plan's benchmark stages read them, on
    ``bench.unseen_tasks``."""
    models: dict[str, dict[str, Any]] = {}
    for target, m in unseen_targets(ctx.plan):
        label = target.label_for(ctx.cfg)
        models[target.key] = ({"label": label, "teacher": ctx.teacher} if m is None
                              else {"label": label, "model": m.path, "kind": m.kind})
    return _bench_unseen(ctx.cfg, ctx.rundir, ctx.teacher, ctx.data_dir, models)


#: Every stage, in the order they run. A config runs those it switches on (:func:`plan`). Model ids:
#: ``student_before`` (the configured student), ``student_after`` (the generative student as the distillation
#: stages leave it: the base student until one has run, then each starts from it and replaces it),
#: ``student_knowdist``, ``student_soft_after``, ``classifier_before``, ``classifier_after``.
STAGES: tuple[Stage, ...] = (
    # Teaching: the teacher writes the corpora (every response cached as it arrives).
    Stage(name="teach_knowdist", enabled=lambda cfg: cfg.knowdist.enabled, uses_teacher=True,
          settings=_teach_settings("knowdist"),
          outputs=lambda r: [r.corpus_dir / "knowdist.parquet"],
          run=lambda ctx: _teach_knowdist(ctx.cfg, ctx.teacher, ctx.outputs[0], ctx.data_dir)),
    Stage(name="teach_icl", enabled=lambda cfg: cfg.icldist.enabled, uses_teacher=True,
          settings=_teach_settings("icldist"),
          outputs=lambda r: [r.corpus_dir / "icl.parquet"],
          run=lambda ctx: _teach_icl(ctx.cfg, ctx.teacher, ctx.outputs[0], ctx.data_dir)),
    Stage(name="teach_soft", enabled=lambda cfg: cfg.soft_labels.enabled, uses_teacher=True,
          settings=_teach_settings("soft_labels"),
          outputs=lambda r: [_soft_corpus(r), _soft_corpus(r).with_suffix(".stats.json")],
          run=lambda ctx: _teach_soft(ctx.cfg, ctx.teacher, ctx.outputs[0], ctx.data_dir)),
    Stage(name="teach_tuples", enabled=lambda cfg: cfg.finegrained.enabled, uses_teacher=True,
          settings=_teach_settings("finegrained"),
          outputs=lambda r: [_tuple_corpus(r), _tuple_corpus(r).with_suffix(".stats.json")],
          run=lambda ctx: _teach_tuples(ctx.cfg, ctx.teacher, ctx.outputs[0], ctx.data_dir)),
    # The teacher's own score (same prompts as the students), raw and, with soft labels, calibrated with the
    # priors estimated on the unlabeled pool (cache hits: no new calls).
    bench_stage(BenchTarget("teacher", "teacher"), lambda cfg: cfg.bench.include_teacher),
    bench_stage(BenchTarget("teacher_calibrated", "teacher (calibrated)", calibrated=True, unseen=False),
                lambda cfg: cfg.bench.include_teacher and cfg.soft_labels.enabled
                and cfg.soft_labels.calibration != "none", needs=("teach_soft",)),
    # The classifier student: zero-shot start (label-embedding heads), trained on the soft labels.
    Stage(name="init_classifier", enabled=lambda cfg: cfg.classifier.enabled, needs=("teach_soft",),
          produces=Produces(("classifier_before",), "classifier/init", "classifier"), settings=_classifier_settings,
          run=lambda ctx: _init_classifier(ctx.cfg, _soft_corpus(ctx.rundir), ctx.outputs[0])),
    bench_stage(BenchTarget("classifier_before", "classifier student (before)", "classifier_before"),
                lambda cfg: cfg.classifier.enabled),
    Stage(name="train_classifier", enabled=lambda cfg: cfg.classifier.enabled, needs=("teach_soft",),
          reads=("classifier_before",), produces=Produces(("classifier_after",), "classifier/final", "classifier"),
          settings=_classifier_settings,
          workdir=lambda r: r.models_dir / "classifier" / "checkpoints",
          run=lambda ctx: _train_classifier(ctx.cfg, _soft_corpus(ctx.rundir), ctx.rundir.models_dir / "classifier",
                                            Path(ctx.model("classifier_before").path))),
    bench_stage(BenchTarget("classifier_after", "classifier student (after)", "classifier_after"),
                lambda cfg: cfg.classifier.enabled),
    # The generative student before distillation.
    bench_stage(BenchTarget("student_before", "student (before)", "student_before"),
                lambda cfg: cfg.bench.include_student_before and (
                    cfg.knowdist.enabled or cfg.icldist.enabled or _generative_soft(cfg) or _generative(cfg)
                    or not cfg.classifier.enabled)),
    bench_stage(BenchTarget("student_before_fewshot", "student (before)", "student_before", unseen=False,
                            fewshot=True), lambda cfg: cfg.bench.include_student_before and _fewshot(cfg)),
    # KnowDist pre-training, then ICLDist on top of it (each starts from student_after and replaces it).
    Stage(name="train_knowdist", enabled=lambda cfg: cfg.knowdist.enabled, needs=("teach_knowdist",),
          reads=("student_after",), produces=Produces(("student_knowdist", "student_after"), "knowdist/final"),
          settings=_method_settings("knowdist"),
          workdir=lambda r: r.models_dir / "knowdist",
          run=lambda ctx: _train(ctx.cfg, ctx.model("student_after").path, ctx.rundir.corpus_dir / "knowdist.parquet",
                                 ctx.rundir.models_dir / "knowdist", "knowdist")),
    bench_stage(BenchTarget("student_knowdist", "student (KnowDist)", "student_knowdist", unseen=False),
                lambda cfg: cfg.knowdist.enabled and cfg.icldist.enabled),
    Stage(name="train_icldist", enabled=lambda cfg: cfg.icldist.enabled, needs=("teach_icl",),
          reads=("student_after",), produces=Produces(("student_after",), "icldist/final"),
          settings=_method_settings("icldist"),
          workdir=lambda r: r.models_dir / "icldist",
          run=lambda ctx: _train(ctx.cfg, ctx.model("student_after").path, ctx.rundir.corpus_dir / "icl.parquet",
                                 ctx.rundir.models_dir / "icldist", "icldist")),
    # The distilled student on the same benchmark.
    bench_stage(BenchTarget("student_after", _distilled_label, "student_after"),
                lambda cfg: cfg.knowdist.enabled or cfg.icldist.enabled),
    # The generative student learning the same soft labels (label-distribution KL).
    Stage(name="train_generative_soft", enabled=_generative_soft, needs=("teach_soft",),
          produces=Produces(("student_soft_after",), "generative_soft/final"),
          workdir=lambda r: r.models_dir / "generative_soft",
          run=lambda ctx: _train_generative_soft(ctx.cfg, _soft_corpus(ctx.rundir),
                                                 ctx.rundir.models_dir / "generative_soft")),
    bench_stage(BenchTarget("student_soft_after", "generative student (soft labels)", "student_soft_after"),
                _generative_soft),
    # One multi-task generative student on everything the teacher wrote: soft labels (label-distribution KL),
    # fine-grained tuples (sequence-level loss), a share of both in k-shot prompts.
    Stage(name="train_generative", enabled=_generative, after=("teach_soft", "teach_tuples"),
          reads=("student_before",), produces=Produces(("generative_after",), "generative/final"),
          settings=_generative_settings,
          workdir=lambda r: r.models_dir / "generative",
          run=lambda ctx: _train_generative(
              ctx.cfg, _soft_corpus(ctx.rundir) if ctx.cfg.soft_labels.enabled else None,
              _tuple_corpus(ctx.rundir) if ctx.cfg.finegrained.enabled else None, ctx.rundir.models_dir / "generative")),
    bench_stage(BenchTarget("generative_after", "generative student (multi-task)", "generative_after"), _generative),
    bench_stage(BenchTarget("generative_after_fewshot", "generative student (multi-task)", "generative_after",
                            unseen=False, fewshot=True), _fewshot),
    # The distilled student's own label prior per task, divided out (batch calibration, no gold labels).
    Stage(name="calibrate_generative", enabled=_calibrated, needs=("train_generative",),
          reads=("generative_after",), produces=Produces(("generative_calibrated",), "generative/calibrated"),
          settings=_calibration_settings,
          run=lambda ctx: _calibrate_generative(ctx.cfg, ctx.model("generative_after"), ctx.outputs[0],
                                                ctx.data_dir)),
    bench_stage(BenchTarget("generative_calibrated", "generative student (multi-task, calibrated)",
                            "generative_calibrated", unseen=False), _calibrated),
    # Paper 2's evaluation: fine-tune the student before and after KnowDist on FSA data.
    Stage(name="finetune_eval", enabled=lambda cfg: cfg.finetune.enabled, after=("train_knowdist",),
          reads=("student_before",), reported=True, outputs=lambda r: [r.path / "finetune" / "results.json"],
          workdir=lambda r: r.path / "finetune", run=_finetune_stage),
    # Tasks no corpus saw, for every benched model that can answer them (apart from the mean).
    Stage(name="bench_unseen", enabled=lambda cfg: cfg.bench.enabled and bool(cfg.bench.unseen_tasks),
          after=lambda s: s.produces is not None, uses_teacher=True, reported=True,
          outputs=lambda r: [r.path / "bench_unseen" / "summary.json"], workdir=lambda r: r.path / "bench_unseen",
          run=_bench_unseen_stage),
    Stage(name="report", enabled=lambda cfg: cfg.bench.enabled, after=lambda s: s.reported,
          outputs=lambda r: [r.path / "report.html"], run=lambda ctx: _report(ctx.cfg, ctx.rundir)),
)


def plan(cfg: PipelineConfig, stages: tuple[Stage, ...] | list[Stage] | None = None) -> list[Stage]:
    """The stages ``cfg`` runs, in order, each with its dependencies and visible models resolved.

    ``stages``: the declared stages (default :data:`STAGES`).

    Checks the declared graph first: names unique, every ``needs``/``after`` name a declared stage, no
    cycle; then the plan: every ``needs`` of a selected stage is selected and comes before it, and every
    model a stage reads is produced before it (or is the base student).

    Raises:
        ConfigError: naming the stage and the dependency (or model) at fault.
    """
    stages = STAGES if stages is None else stages
    by_name: dict[str, Stage] = {}
    for s in stages:
        if s.name in by_name:
            raise ConfigError(f"two stages are named '{s.name}'")
        by_name[s.name] = s
    for s in stages:
        named = s.needs + (s.after if isinstance(s.after, tuple) else ())
        for d in named:
            if d not in by_name:
                raise ConfigError(f"stage '{s.name}' depends on '{d}', which is not a stage "
                                  f"(stages: {', '.join(by_name)})")
    _check_acyclic(stages)

    base = Model("student_before", cfg.student.model)
    models: dict[str, Model] = {"student_before": base, "student_after": replace(base, id="student_after")}
    selected = [s for s in stages if s.enabled(cfg)]
    position = {s.name: i for i, s in enumerate(selected)}
    run_dir = RunDir(cfg.run_dir)
    planned: list[Stage] = []
    for i, s in enumerate(selected):
        for d in s.needs:
            if d not in position:
                raise ConfigError(f"stage '{s.name}' needs stage '{d}', which this config does not run: switch "
                                  f"'{d}' on, or '{s.name}' off")
            if position[d] > i:
                raise ConfigError(f"stage '{s.name}' needs stage '{d}', which runs after it: declare '{d}' "
                                  f"before '{s.name}' in the stage list")
        deps = list(s.needs)
        for model_id in s.reads:
            if model_id not in models:
                makers = [x.name for x in stages if x.produces and model_id in x.produces.ids]
                raise ConfigError(f"stage '{s.name}' reads the model '{model_id}', which no stage before it in "
                                  f"this plan produces (produced by: {', '.join(makers) or 'no stage'})")
            if models[model_id].stage is not None:
                deps.append(models[model_id].stage)
        earlier = selected[:i]
        if callable(s.after):
            deps += [x.name for x in earlier if s.after(x)]
        else:
            deps += [d for d in s.after if d in position and position[d] < i]
        planned.append(replace(s, built_from=tuple(dict.fromkeys(deps)), models=dict(models)))
        if s.produces is not None:
            made = Model(s.produces.ids[0], str(run_dir.models_dir / s.produces.folder), s.produces.kind, s.name)
            for model_id in s.produces.ids:
                models[model_id] = replace(made, id=model_id)
    return planned


def _check_acyclic(stages: tuple[Stage, ...] | list[Stage]) -> None:
    """Raise :class:`ConfigError` naming a cycle of ``needs``/``after`` names among ``stages``, if any."""
    edges = {s.name: list(s.needs) + (list(s.after) if isinstance(s.after, tuple) else []) for s in stages}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for d in edges.get(name, []):
            if state.get(d) == 1:
                cycle = [*path[path.index(d):], d] if d in path else [name, d]
                raise ConfigError("the stages depend on each other in a cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d, [*path, d])
        state[name] = 2

    for s in stages:
        if s.name not in state:
            visit(s.name, [s.name])


# -- running the plan ------------------------------------------------------------------------------

@dataclass
class _Resume:
    """Where a stage stands in the run directory: the result ids of its dependencies now (``inputs``), its
    manifest entry, whether it was started with other settings (``settings_changed``) or on other inputs or
    settings (``stale``), and why a finished stage is not usable (``problem``; None when it is)."""

    inputs: dict[str, str | None]
    info: dict[str, Any]
    stale: bool
    problem: str | None
    settings_changed: bool = False

    @property
    def reusable(self) -> bool:
        return self.info.get("status") == "done" and not self.stale and self.problem is None


def _resume_state(stage: Stage, rundir: RunDir, cfg: PipelineConfig,
                  recorded: dict[str, str] | None = None) -> _Resume:
    """Where ``stage`` stands: stale when it started on other inputs (``built_from``: the upstream stages'
    result ids then) or other settings (:meth:`Stage.settings_hash`; ``recorded`` supplies it for entries
    written before stages recorded their settings, see :func:`_legacy_settings`)."""
    inputs = {d: rundir.stage_info(d).get("token") for d in stage.built_from}
    info = rundir.stage_info(stage.name)
    settings_changed = bool(info) and info.get("settings", (recorded or {}).get(stage.name)) != stage.settings_hash(cfg)
    stale = settings_changed or (bool(info) and info.get("built_from") != inputs)
    problem = None
    if info.get("status") == "done" and not stale:
        problem = next((p for p in (_output_problem(o, info) for o in stage.output_paths(rundir)) if p), None)
    return _Resume(inputs, info, stale, problem, settings_changed)


def _legacy_settings(rundir: RunDir) -> dict[str, str]:
    """Settings hashes for manifest entries written before stages recorded theirs, computed from the config
    the manifest holds (the one they ran under: a changed config used to reset every entry). Empty when
    there is none or it no longer loads (those entries are then stale)."""
    manifest = rundir.read_manifest()
    legacy = [n for n, e in manifest.get("stages", {}).items() if "settings" not in e]
    if not legacy or "config" not in manifest:
        return {}
    try:
        old = PipelineConfig.model_validate(manifest["config"])
    except ValueError:  # pydantic.ValidationError: an old config this version no longer reads: its stages rerun
        return {}
    by_name = {s.name: s for s in STAGES}
    return {n: by_name[n].settings_hash(old) for n in legacy if n in by_name}


def _run_stage(stage: Stage, ctx: StageContext, result: PipelineResult, notify: Callable[[str, str], None]) -> None:
    """Run ``stage`` unless it is done, its outputs check out and its inputs are unchanged.

    Its dependencies' result ids are recorded when it starts, and a redone upstream stage makes it stale. Its
    workdir is kept to resume a killed attempt on the same inputs, removed when the inputs changed (or were
    never recorded: a folder from another config).
    """
    rundir, name = ctx.rundir, stage.name
    state = _resume_state(stage, rundir, ctx.cfg)
    if state.reusable:
        result.skipped.append(name)
        notify(name, "skipped (done)")
        return
    if state.problem is not None:
        log.warning("stage %s was done, but %s: running it again", name, state.problem)
    elif state.stale:
        log.warning("stage %s: its settings or an upstream stage changed since it started: starting it afresh", name)
    workdir = stage.workdir(rundir) if stage.workdir is not None else None
    if workdir is not None and workdir.exists() and (state.stale or not state.info):
        shutil.rmtree(workdir)
    notify(name, "running")
    t0 = time.perf_counter()
    with rundir.stage(name, built_from=state.inputs, settings=stage.settings_hash(ctx.cfg)) as stage_info:
        stage_info.update({k: v for k, v in (stage.run(ctx) or {}).items() if k not in ("built_from", "settings")})
    result.stage_times[name] = time.perf_counter() - t0
    notify(name, f"done in {result.stage_times[name]:.1f}s")


def run_pipeline(cfg: PipelineConfig, *, on_stage: Callable[[str, str], None] | None = None) -> PipelineResult:
    """Run (or resume) every stage of ``plan(cfg)`` and return where the results are.

    ``on_stage(name, status)`` is called with ``running``, ``done in <s>s`` or ``skipped (done)``. Raises
    :class:`ConfigError` (before the run directory is touched) when the plan does not hold.
    """
    from sentidistill.data import default_data_dir

    stages = plan(cfg)
    rundir = RunDir(cfg.run_dir)
    legacy = _legacy_settings(rundir)
    rundir.open(cfg, config_hash=cfg.config_hash(), seeds={"pipeline": cfg.seed, "bench": cfg.bench.seeds[0]})
    rundir.annotate_stages({name: {"settings": h} for name, h in legacy.items()})
    handler = rundir.attach_log()
    data_dir = cfg.data_dir or default_data_dir()
    result = PipelineResult(run_dir=rundir.path)
    notify = on_stage or (lambda name, status: None)
    try:
        with ExitStack() as teacher_stack:
            teacher: _LazyTeacher | None = None
            for stage in stages:
                if teacher is not None and not stage.uses_teacher:
                    teacher_stack.close()  # stop the teacher (e.g. a llama.cpp server) while students train
                    teacher = None
                if teacher is None and stage.uses_teacher:
                    teacher = _LazyTeacher(cfg, rundir, teacher_stack)
                _run_stage(stage, StageContext(cfg, rundir, data_dir, teacher, stage, stages), result, notify)
        if any(s.name == "report" for s in stages):
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


def describe_plan(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """The plan of ``cfg`` as rows for ``sentidistill run --dry-run``: per stage its name, what it is built
    from, the model it produces (path), and whether a run now would skip it (``done``) or run it (and why).

    Reads the run directory's manifest, writes nothing. A stage built from one that will run, runs too.
    """
    stages = plan(cfg)
    rundir = RunDir(cfg.run_dir)
    legacy = _legacy_settings(rundir)
    rows, will_run = [], set()
    for s in stages:
        state = _resume_state(s, rundir, cfg, legacy)
        redone = [d for d in s.built_from if d in will_run]
        if state.reusable and not redone:
            status = "done"
        elif state.reusable or (state.stale and not state.settings_changed):
            status = "to run (an upstream stage is redone)"
        elif state.settings_changed:
            status = "to run (its settings changed)"
        elif state.problem is not None:
            status = f"to run ({state.problem})"
        else:
            status = "to run" + (f" (last attempt: {state.info['status']})" if state.info.get("status") else "")
        if status != "done":
            will_run.add(s.name)
        produced = str(rundir.models_dir / s.produces.folder) if s.produces else ""
        rows.append({"stage": s.name, "built_from": list(s.built_from), "produces": produced, "status": status})
    return rows


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
    from sentidistill.train.methods import read_training_summary

    summary = read_training_summary(out_dir)
    return {"model": str(final), **{k: summary.get(k) for k in ("global_step", "best_teacher_agreement", "wall_s")}}


def _init_classifier(cfg: PipelineConfig, corpus: Path, out: Path) -> dict:
    """The untrained classifier student (heads from label embeddings), saved for the 'before' bench."""
    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.students.classifier import build_classifier, save_classifier
    from sentidistill.train.classifier import task_table

    c = cfg.classifier
    model, tok = build_classifier(c.encoder, task_table(read_soft_labels(corpus)), head_init=c.head_init,
                                  dropout=c.dropout, max_length=c.max_length, seed=cfg.seed, pooling=c.pooling)
    save_classifier(model, tok, out)
    return {"model": str(out)}


def _train_classifier(cfg: PipelineConfig, corpus: Path, out_dir: Path, init: Path) -> dict:
    from sentidistill.train.classifier import train_classifier
    from sentidistill.train.methods import read_training_summary

    final = train_classifier(corpus, out_dir, cfg.classifier, seed=cfg.seed, init_from=str(init))
    summary = read_training_summary(out_dir)
    return {"model": str(final), **{k: summary.get(k) for k in ("global_step", "best_teacher_agreement", "wall_s")}}


def _train_generative_soft(cfg: PipelineConfig, corpus: Path, out_dir: Path) -> dict:
    from sentidistill.train.methods import read_training_summary
    from sentidistill.train.softlabel_lm import train_generative_on_soft_labels

    sl = cfg.soft_labels
    final = train_generative_on_soft_labels(
        cfg.student.model, corpus, out_dir, sl.generative_training, kind=cfg.student.kind,
        temperature=sl.generative_temperature, max_length=cfg.student.max_source_length, seed=cfg.seed,
    )
    summary = read_training_summary(out_dir)
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
    from sentidistill.bench.models import CalibratedAdapter, TeacherAdapter, student_adapter

    tasks = cfg.bench.tasks or list_tasks(cfg.bench.suite)
    if teacher is not None:
        adapter = TeacherAdapter(teacher.get())
        if priors is not None:
            from sentidistill.data.soft_label_corpus import read_soft_label_stats

            stats = read_soft_label_stats(priors)
            adapter = CalibratedAdapter(adapter, {t: v["log_prior"] for t, v in stats["tasks"].items()})
    else:
        adapter = student_adapter(model, kind=kind or cfg.student.kind, max_length=cfg.student.max_source_length)
    sent_before = teacher.stats.get("sent", 0) if teacher is not None else 0
    metrics = run_bench(
        adapter, tasks, shots=cfg.bench.shots, seeds=cfg.bench.seeds, limit=cfg.bench.limit,
        scoring=cfg.bench.scoring, out_dir=out, data_dir=data_dir, model_name=label, max_chars=cfg.bench.max_chars,
        bootstrap=cfg.bench.bootstrap,
    )
    if teacher is not None and teacher.stats.get("sent", 0) == sent_before:
        # Every answer came from the teacher's cache: its items/s is a cache read, not the teacher's speed.
        from sentidistill.utils.io import atomic_write_json

        metrics["from_cache"] = True
        atomic_write_json(out / "metrics.json", metrics)
    return {"score": metrics.get("sentibench_score"), "bench_wall_s": metrics.get("wall_s")}


def _calibrate_generative(cfg: PipelineConfig, model: Model, out: Path, data_dir: Path | None) -> dict:
    """The trained student ``model`` with its label priors on the soft-label tasks, written to ``out``
    (:func:`sentidistill.distill.student_calibration.calibrate_student`)."""
    from sentidistill.distill.student_calibration import calibrate_student

    return calibrate_student(model.path, out, cfg.soft_labels.tasks, data_dir=data_dir,
                             n=cfg.generative.calibration_texts, seed=cfg.seed, max_chars=cfg.bench.max_chars,
                             kind=model.kind or cfg.student.kind, max_length=cfg.student.max_source_length)


def _finetune(cfg: PipelineConfig, models: dict[str, str], out: Path, data_dir: Path | None) -> dict:
    from sentidistill.finetune.cli import run_finetune_stage

    run_finetune_stage(models, out, cfg.finetune, data_dir=data_dir)
    return {"results": str(out / "results.json")}


def _bench_unseen(cfg: PipelineConfig, rundir: RunDir, teacher: _LazyTeacher | None, data_dir: Path | None,
                  models: dict[str, dict[str, Any]]) -> dict:
    """``bench.unseen_tasks`` for ``models`` (bench key -> ``{"label", "teacher"}`` for the teacher, or
    ``{"label", "model", "kind"}`` for a student; the plan's benchmark stages give them): one metrics.json per
    model under ``bench_unseen/<key>/``, and ``summary.json`` (label -> task -> score, or the reason it could
    not answer, e.g. no classifier head with the task's label set)."""
    from sentidistill.errors import InputError
    from sentidistill.utils.io import atomic_write_json

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
