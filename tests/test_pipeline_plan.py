"""The stage graph (``pipeline.plan``): which stages a config runs, in which order, built from what, reading which
model; a broken graph is refused, naming the stages, before anything runs. No models, no teacher: fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sentidistill import pipeline
from sentidistill.config import load_config, validate_config
from sentidistill.errors import ConfigError
from sentidistill.pipeline import STAGES, Produces, Stage, plan, unseen_targets

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **sections) -> pipeline.PipelineConfig:
    return validate_config({"name": "plan", "runs_dir": str(tmp_path / "runs"), **sections})


def _names(cfg) -> list[str]:
    return [s.name for s in plan(cfg)]


def _stage(name: str, **kw) -> Stage:
    return Stage(name=name, run=lambda ctx: None, outputs=lambda r: [r.path / f"{name}.json"], **kw)


# -- the plans of real configs ------------------------------------------------------------------------

def test_plan_of_the_default_config_chains_knowdist_into_icldist(tmp_path):
    cfg = _cfg(tmp_path, finetune={"enabled": True}, bench={"unseen_tasks": ["sst2"]})
    stages = {s.name: s for s in plan(cfg)}
    assert list(stages) == ["teach_knowdist", "teach_icl", "bench_teacher", "bench_student_before",
                            "train_knowdist", "bench_student_knowdist", "train_icldist", "bench_student_after",
                            "finetune_eval", "bench_unseen", "report"]
    models = cfg.run_dir / "models"
    # ICLDist starts from the KnowDist student and is built from it; the distilled student is ICLDist's.
    assert stages["train_knowdist"].models["student_after"].path == cfg.student.model
    assert stages["train_icldist"].models["student_after"].path == str(models / "knowdist" / "final")
    assert stages["bench_student_after"].models["student_after"].path == str(models / "icldist" / "final")
    assert stages["bench_student_knowdist"].models["student_knowdist"].path == str(models / "knowdist" / "final")
    # What each stage is built from (the manifest's ``built_from``): as the pipeline has always recorded it,
    # so a run directory written before the stage graph resumes without redoing anything.
    built_from = {n: set(s.built_from) for n, s in stages.items()}
    assert built_from == {
        "teach_knowdist": set(), "teach_icl": set(), "bench_teacher": set(), "bench_student_before": set(),
        "train_knowdist": {"teach_knowdist"}, "bench_student_knowdist": {"train_knowdist"},
        "train_icldist": {"teach_icl", "train_knowdist"}, "bench_student_after": {"train_icldist"},
        "finetune_eval": {"train_knowdist"}, "bench_unseen": {"train_knowdist", "train_icldist"},
        "report": {"bench_teacher", "bench_student_before", "bench_student_knowdist", "bench_student_after",
                   "finetune_eval", "bench_unseen"},
    }


def test_plan_of_the_quickstart_example(tmp_path):
    from sentidistill.cli import example_config_text

    raw = yaml.safe_load(example_config_text())
    raw["runs_dir"] = str(tmp_path)
    stages = plan(validate_config(raw))
    assert [s.name for s in stages] == ["teach_soft", "bench_teacher", "bench_teacher_calibrated", "init_classifier",
                                        "bench_classifier_before", "train_classifier", "bench_classifier_after",
                                        "report"]
    assert {s.name: set(s.built_from) for s in stages}["train_classifier"] == {"teach_soft", "init_classifier"}


@pytest.mark.parametrize(("example", "expected"), [
    ("cpu_label_free.yaml", ["teach_soft", "bench_teacher", "bench_teacher_calibrated", "init_classifier",
                             "bench_classifier_before", "train_classifier", "bench_classifier_after",
                             "bench_student_before", "train_generative_soft", "bench_student_soft_after",
                             "bench_unseen", "report"]),
    ("paper1_offline.yaml", ["teach_icl", "bench_teacher", "bench_student_before", "train_icldist",
                             "bench_student_after", "report"]),
    ("cpu_knowdist.yaml", ["teach_knowdist", "train_knowdist", "finetune_eval"]),
    ("cpu_generative.yaml", ["teach_soft", "teach_tuples", "bench_teacher", "bench_teacher_calibrated",
                             "bench_student_before", "train_generative", "bench_generative_after",
                             "calibrate_generative", "bench_generative_calibrated", "report"]),
])
def test_plan_of_the_example_configs(example, expected):
    cfg = load_config(ROOT / "examples" / example)
    assert _names(cfg) == expected


def test_knowdist_only_with_unseen_tasks_benches_the_knowdist_student(tmp_path):
    """The bug of issue 23: the unseen-task stage looked for ``icldist/final``, which a KnowDist-only run never
    writes. It reads the models from the plan: the distilled student is the KnowDist one."""
    cfg = _cfg(tmp_path, icldist={"enabled": False}, bench={"unseen_tasks": ["sst2"]})
    stages = plan(cfg)
    assert [s.name for s in stages] == ["teach_knowdist", "bench_teacher", "bench_student_before", "train_knowdist",
                                        "bench_student_after", "bench_unseen", "report"]
    targets = {t.key: (t.label_for(cfg), m.path if m else None) for t, m in unseen_targets(stages)}
    knowdist_final = str(cfg.run_dir / "models" / "knowdist" / "final")
    assert targets == {"teacher": ("teacher", None), "student_before": ("student (before)", cfg.student.model),
                       "student_after": ("student (KnowDist)", knowdist_final)}
    assert list(targets) == ["teacher", "student_before", "student_after"]  # the report's order
    assert set({s.name: s for s in stages}["bench_unseen"].built_from) == {"train_knowdist"}


def test_icldist_only_starts_from_the_base_student(tmp_path):
    cfg = _cfg(tmp_path, knowdist={"enabled": False}, bench={"include_teacher": False})
    stages = {s.name: s for s in plan(cfg)}
    assert list(stages) == ["teach_icl", "bench_student_before", "train_icldist", "bench_student_after", "report"]
    assert stages["train_icldist"].models["student_after"].path == cfg.student.model
    assert stages["train_icldist"].built_from == ("teach_icl",)


def test_generative_student_plan_teaches_tuples_trains_and_benches_it(tmp_path):
    cfg = _cfg(tmp_path, knowdist={"enabled": False}, icldist={"enabled": False}, soft_labels={"enabled": True},
               finegrained={"enabled": True}, generative={"enabled": True, "fewshot_bench": 4},
               bench={"unseen_tasks": ["mr"]})
    stages = {s.name: s for s in plan(cfg)}
    assert list(stages) == ["teach_soft", "teach_tuples", "bench_teacher", "bench_teacher_calibrated",
                            "bench_student_before", "bench_student_before_fewshot", "train_generative",
                            "bench_generative_after", "bench_generative_after_fewshot", "bench_unseen", "report"]
    assert set(stages["train_generative"].built_from) == {"teach_soft", "teach_tuples"}
    assert stages["train_generative"].models["student_before"].path == cfg.student.model
    assert stages["bench_generative_after"].built_from == ("train_generative",)
    assert stages["bench_generative_after_fewshot"].bench.fewshot
    assert "train_generative" in stages["bench_unseen"].built_from
    # Soft labels only: the tuple stage is off and training is built from the soft labels alone.
    only_soft = {s.name: s for s in plan(cfg.model_copy(update={
        "finegrained": cfg.finegrained.model_copy(update={"enabled": False})}))}
    assert "teach_tuples" not in only_soft and only_soft["train_generative"].built_from == ("teach_soft",)


def test_generative_student_needs_a_corpus(tmp_path):
    from sentidistill.errors import ConfigError

    with pytest.raises(ConfigError, match=r"generative\.enabled needs"):
        _cfg(tmp_path, generative={"enabled": True})


def test_bench_off_plans_no_benchmark_and_no_report(tmp_path):
    cfg = _cfg(tmp_path, bench={"enabled": False}, finetune={"enabled": True})
    assert _names(cfg) == ["teach_knowdist", "teach_icl", "train_knowdist", "train_icldist", "finetune_eval"]


def test_every_declared_stage_is_planned_by_some_config(tmp_path):
    """No dead entry in STAGES: the union of a few configs' plans covers every declared stage."""
    configs = [
        _cfg(tmp_path, finetune={"enabled": True}, bench={"unseen_tasks": ["sst2"]}),
        _cfg(tmp_path, soft_labels={"enabled": True, "train_generative": True}, classifier={"enabled": True}),
        _cfg(tmp_path, soft_labels={"enabled": True}, finegrained={"enabled": True},
             generative={"enabled": True, "fewshot_bench": 4, "calibration": "batch"}),
    ]
    assert {n for c in configs for n in _names(c)} == {s.name for s in STAGES}


# -- a broken graph is refused, naming the stages -------------------------------------------------------

def test_a_need_that_is_no_stage_is_refused(tmp_path):
    stages = (*STAGES, _stage("train_extra", needs=("teach_nothing",)))
    with pytest.raises(ConfigError, match="stage 'train_extra' depends on 'teach_nothing', which is not a stage"):
        plan(_cfg(tmp_path), stages)


def test_a_need_the_config_does_not_run_is_refused(tmp_path):
    stages = (*STAGES, _stage("train_extra", needs=("teach_soft",)))
    with pytest.raises(ConfigError, match="stage 'train_extra' needs stage 'teach_soft', which this config does "
                                          "not run"):
        plan(_cfg(tmp_path), stages)  # soft labels are off by default
    # With the dependency switched on, the same graph plans, and the new stage is built from it.
    planned = plan(_cfg(tmp_path, soft_labels={"enabled": True}), stages)
    assert planned[-1].name == "train_extra" and planned[-1].built_from == ("teach_soft",)


def test_a_need_declared_after_the_stage_is_refused(tmp_path):
    stages = (_stage("train_extra", needs=("teach_extra",)), _stage("teach_extra"))
    with pytest.raises(ConfigError, match="stage 'train_extra' needs stage 'teach_extra', which runs after it"):
        plan(_cfg(tmp_path), stages)


def test_a_cycle_is_refused(tmp_path):
    stages = (_stage("a", needs=("c",)), _stage("b", needs=("a",)), _stage("c", after=("b",)))
    with pytest.raises(ConfigError, match="cycle: a -> c -> b -> a"):
        plan(_cfg(tmp_path), stages)


def test_two_stages_with_one_name_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="two stages are named 'teach_icl'"):
        plan(_cfg(tmp_path), (*STAGES, _stage("teach_icl")))


def test_a_model_no_earlier_stage_produces_is_refused(tmp_path):
    stages = (*STAGES, _stage("export_classifier", reads=("classifier_after",)))
    with pytest.raises(ConfigError, match="stage 'export_classifier' reads the model 'classifier_after', which no "
                                          "stage before it in this plan produces \\(produced by: train_classifier\\)"):
        plan(_cfg(tmp_path), stages)


def test_a_new_stage_is_one_entry(tmp_path):
    """A stage added to the list: planned where declared, built from what it needs and reads, and a later stage
    producing the same model id replaces the model for the stages after it."""
    extra = _stage("train_multitask", needs=("teach_icl",), reads=("student_after",),
                   produces=Produces(("student_after",), "multitask/final"))
    stages = list(STAGES)
    stages.insert([s.name for s in stages].index("bench_student_after"), extra)
    planned = {s.name: s for s in plan(_cfg(tmp_path), stages)}
    assert planned["train_multitask"].built_from == ("teach_icl", "train_icldist")
    assert planned["bench_student_after"].models["student_after"].path == str(
        tmp_path / "runs" / "plan" / "models" / "multitask" / "final")
    assert planned["bench_student_after"].built_from == ("train_multitask",)


def test_run_refuses_a_broken_graph_before_touching_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "STAGES", (*STAGES, _stage("train_extra", needs=("teach_nothing",))))
    cfg = _cfg(tmp_path)
    with pytest.raises(ConfigError, match="train_extra"):
        pipeline.run_pipeline(cfg)
    assert not cfg.run_dir.exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sentidistill.cli import app

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({"name": "dry", "runs_dir": str(tmp_path / "runs"),
                                        "icldist": {"enabled": False}}), encoding="utf-8")
    monkeypatch.setenv("COLUMNS", "250")
    res = CliRunner().invoke(app, ["run", str(cfg_path), "--dry-run"])
    assert res.exit_code == 0, res.output
    rows = [line.split("│")[1].strip() for line in res.output.splitlines() if line.startswith("│")]
    assert [r for r in rows if r and r != "stage"] == ["teach_knowdist", "bench_teacher", "bench_student_before",
                                                       "train_knowdist", "bench_student_after", "report"]
    assert "to run" in res.output and "knowdist/final" in res.output
    assert not (tmp_path / "runs").exists()
