"""The student's own label priors (batch calibration of a distilled student): measured on unlabeled texts with
the benchmark's prompts, saved with the model, applied when the folder is benchmarked; the file is validated;
the settings reach the stage that reads them and no other."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from sentidistill.errors import InputError
from toy_task import write_toy_task

LABELS = ("negative", "neutral", "positive")
TEXTS = ["the soup was cold", "fine I guess", "we loved every minute", "meh", "awful service, never again",
         "the staff smiled", "a film about a bus", "best pizza in town", "it rained", "dull and long"]


@pytest.fixture()
def toy_task(tmp_path: Path) -> Path:
    # Gold labels are all "negative": a prior that read them would be one-hot; the student's is not.
    return write_toy_task(tmp_path, [{"t": t, "y": "negative"} for t in TEXTS], labels=LABELS,
                          instruction="Classify the sentiment as negative, neutral or positive.")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_prior_is_the_students_mean_label_distribution_over_n_unlabeled_texts(tiny_causal_dir, toy_task):
    """Checked against an independent path: the full-sequence log-likelihood of each label word after the same
    prompt (HFModelAdapter.loglikelihood), softmaxed over the three labels and averaged over the texts drawn."""
    from sentidistill.bench import get_task
    from sentidistill.bench.models import HFModelAdapter
    from sentidistill.distill.soft_labels import unlabeled_texts
    from sentidistill.distill.student_calibration import student_label_priors

    adapter = HFModelAdapter(str(tiny_causal_dir))
    priors = student_label_priors(adapter, [str(toy_task)], data_dir=None, n=7, seed=3, max_chars=12)
    entry = priors["toy"]
    assert entry["labels"] == list(LABELS) and entry["n"] == 7 and entry["unusable"] == 0
    task = get_task(str(toy_task))
    rows = unlabeled_texts(task, 7, data_dir=None, seed=3, max_chars=12)
    assert all(len(r["text"]) <= 12 for r in rows)
    prompts = [task.prompt(r, [], style=adapter.prompt_style) for r in rows]
    conts, _ = adapter.student.label_continuations(list(LABELS), adapter.prompt_style)
    ll = np.array([adapter.loglikelihood([p] * 3, conts) for p in prompts])
    expected = _softmax(ll).mean(axis=0)
    assert np.allclose(entry["prior"], expected, atol=2e-3), (entry["prior"], expected)
    assert math.isclose(sum(entry["prior"]), 1.0, abs_tol=1e-9)
    assert np.allclose(entry["log_prior"], np.log(entry["prior"]))
    # The texts drawn are what `n` and `seed` say (another seed, another mean).
    other = student_label_priors(adapter, [str(toy_task)], data_dir=None, n=7, seed=4, max_chars=12)["toy"]
    assert other["prior"] != entry["prior"]


def test_a_calibrated_folder_is_benchmarked_with_its_priors(tiny_causal_dir, toy_task, tmp_path):
    from sentidistill.bench import get_task
    from sentidistill.bench.models import CalibratedAdapter, HFModelAdapter, student_adapter
    from sentidistill.bench.runner import run_task
    from sentidistill.distill.student_calibration import calibrate_student
    from sentidistill.students.label_priors import LABEL_PRIORS_FILE

    out = tmp_path / "models" / "calibrated"
    result = calibrate_student(tiny_causal_dir, out, [str(toy_task)], data_dir=None, n=10, seed=0, max_chars=None)
    assert result["model"] == str(out) and set(result["tasks"]) == {"toy"}
    weights = next(p for p in Path(tiny_causal_dir).iterdir() if p.suffix == ".safetensors")
    assert os.path.samefile(weights, out / weights.name)  # hard-linked, not a second copy
    assert not (Path(tiny_causal_dir) / LABEL_PRIORS_FILE).exists()  # the source folder is left as it was

    raw = student_adapter(tiny_causal_dir)
    assert isinstance(raw, HFModelAdapter)
    calibrated = student_adapter(out)
    assert isinstance(calibrated, CalibratedAdapter)

    task = get_task(str(toy_task))
    prior = json.loads((out / LABEL_PRIORS_FILE).read_text(encoding="utf-8"))["tasks"]["toy"]["log_prior"]
    raw_res = run_task(raw, task, shots=0, out_dir=tmp_path / "raw")
    cal_res = run_task(calibrated, task, shots=0, out_dir=tmp_path / "cal")
    raw_rows = [json.loads(x) for x in (tmp_path / "raw" / "predictions" / "toy.seed42.jsonl").read_text().splitlines()]
    cal_rows = [json.loads(x) for x in (tmp_path / "cal" / "predictions" / "toy.seed42.jsonl").read_text().splitlines()]
    for r, c in zip(raw_rows, cal_rows, strict=True):
        scores = [r["label_scores"][w] for w in LABELS]
        assert c["parsed"] == LABELS[int(np.argmax(np.array(scores) - np.array(prior)))]
    assert raw_res["n"] == cal_res["n"] == len(TEXTS)

    # A prior that says the student calls nearly everything "negative": dividing it out, nothing is.
    data = json.loads((out / LABEL_PRIORS_FILE).read_text(encoding="utf-8"))
    data["tasks"]["toy"]["log_prior"] = [0.0, -50.0, -50.0]
    (out / LABEL_PRIORS_FILE).write_text(json.dumps(data), encoding="utf-8")
    answers = student_adapter(out).choose([task.prompt({"text": t}, [], style="plain") for t in TEXTS],
                                          list(LABELS), task="toy")
    assert all(a.text != "negative" for a in answers)


def test_label_priors_files_are_validated(tmp_path):
    from sentidistill.students.label_priors import LABEL_PRIORS_FILE, read_label_priors, write_label_priors

    assert read_label_priors(tmp_path) is None
    entry = {"labels": ["a", "b", "c"], "prior": [0.2, 0.3, 0.5], "log_prior": [math.log(x) for x in (0.2, 0.3, 0.5)],
             "n": 9, "unusable": 0}
    write_label_priors(tmp_path, {"t": entry}, shots=0, prompt_style="plain")
    assert read_label_priors(tmp_path)["tasks"]["t"]["log_prior"] == entry["log_prior"]
    path = tmp_path / LABEL_PRIORS_FILE
    bad = [("{not json", "cannot read"), (json.dumps({"schema": 1}), "field 'tasks'"),
           (json.dumps({"schema": 7, "tasks": {}}), "field 'schema'"),
           (json.dumps({"schema": 1, "tasks": {"t": {**entry, "log_prior": [0.0, 0.0]}}}), "tasks.t.log_prior"),
           (json.dumps({"schema": 1, "tasks": {"t": {**entry, "log_prior": [0.0, None, 0.0]}}}), "non-finite")]
    for text, where in bad:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=where) as info:
            read_label_priors(tmp_path)
        assert str(path) in str(info.value)
    with pytest.raises(InputError, match="one log_prior per label"):
        write_label_priors(tmp_path, {"t": {**entry, "labels": ["a"]}})


# -- the pipeline: the stage, its settings, refusals ----------------------------------------------------------

def _cfg(tmp_path: Path, **generative):
    from sentidistill.config import validate_config

    return validate_config({"name": "cal", "runs_dir": str(tmp_path / "runs"), "knowdist": {"enabled": False},
                            "icldist": {"enabled": False}, "soft_labels": {"enabled": True},
                            "finegrained": {"enabled": True}, "generative": {"enabled": True, **generative}})


def test_calibration_plans_a_calibrated_student_and_its_bench(tmp_path):
    from sentidistill.pipeline import plan

    stages = {s.name: s for s in plan(_cfg(tmp_path, calibration="batch"))}
    names = list(stages)
    assert names.index("train_generative") < names.index("calibrate_generative") < names.index(
        "bench_generative_calibrated") < names.index("report")
    assert stages["calibrate_generative"].built_from == ("train_generative",)
    assert stages["calibrate_generative"].models["generative_after"].path.endswith("generative/final")
    assert stages["bench_generative_calibrated"].built_from == ("calibrate_generative",)
    assert "bench_generative_calibrated" in stages["report"].built_from
    assert "calibrate_generative" not in {s.name for s in plan(_cfg(tmp_path))}  # default: none


def test_calibration_settings_reach_only_the_calibration_stage(tmp_path):
    from sentidistill.pipeline import STAGES

    by_name = {s.name: s for s in STAGES}
    a, b = _cfg(tmp_path, calibration="batch"), _cfg(tmp_path, calibration="batch", calibration_texts=64)
    assert by_name["calibrate_generative"].settings_hash(a) != by_name["calibrate_generative"].settings_hash(b)
    assert by_name["calibrate_generative"].settings(b)["calibration_texts"] == 64
    for name in ("train_generative", "bench_generative_after", "bench_student_before"):
        assert by_name[name].settings_hash(a) == by_name[name].settings_hash(b) == by_name[name].settings_hash(
            _cfg(tmp_path)), name
    # The few-shot benchmarks' shots re-bench the student; they do not retrain it.
    c = _cfg(tmp_path, fewshot_bench=4)
    assert by_name["train_generative"].settings_hash(c) == by_name["train_generative"].settings_hash(a)
    assert by_name["bench_generative_after_fewshot"].settings_hash(c) != by_name[
        "bench_generative_after_fewshot"].settings_hash(_cfg(tmp_path, fewshot_bench=2))


def test_calibration_without_soft_labels_is_refused_at_load(tmp_path):
    from sentidistill.config import validate_config
    from sentidistill.errors import ConfigError

    with pytest.raises(ConfigError, match=r"generative\.calibration needs soft_labels"):
        validate_config({"name": "x", "soft_labels": {"enabled": False}, "finegrained": {"enabled": True},
                         "generative": {"enabled": True, "calibration": "batch"}})
    with pytest.raises(ConfigError, match="calibration"):
        _cfg(tmp_path, calibration="contextual")
