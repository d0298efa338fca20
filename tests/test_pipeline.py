"""The whole pipeline on tiny models: every stage runs, the manifest records it, a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

POS = ["a wonderful, moving film", "great acting and a clever plot", "i loved every minute", "warm and funny",
       "a delightful surprise", "beautifully shot and acted", "the best film this year", "charming and smart"]
NEG = ["a dull, lifeless mess", "terrible acting and a silly plot", "i hated every minute", "boring and cold",
       "a painful waste of time", "badly shot and acted", "the worst film this year", "tedious and stupid"]


def _write_json(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8-sig")


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data folder in the SentiBench layout holding a tiny SST-2."""
    return write_tiny_data(tmp_path_factory.mktemp("data"))


def write_tiny_data(root: Path) -> Path:
    """A tiny SST-2 in the SentiBench layout, and a tiny aspect-term data set, under ``root``."""
    rows = [{"sentence": f"{t} ({i})", "label": lab} for i in range(3)
            for lab, texts in (("positive", POS), ("negative", NEG)) for t in texts]
    _write_json(root / "sentibench/sc/sst2/train.json", rows)
    _write_json(root / "sentibench/sc/sst2/val.json", rows[:6])
    _write_json(root / "sentibench/sc/sst2/test.json", [{"sentence": t, "label": lab}
                for lab, texts in (("positive", POS), ("negative", NEG)) for t in texts])
    # A tiny aspect-term dataset for the fine-tuning stage (paper 2's evaluation).
    absa = []
    for i, (food, pol) in enumerate([("pizza", "positive"), ("soup", "negative"), ("pasta", "positive"),
                                     ("salad", "negative"), ("bread", "positive"), ("fish", "negative")]):
        sentence = f"the {food} was {'great' if pol == 'positive' else 'awful'}"
        absa.append({"ID": str(i), "sentence": sentence, "aspects": [
            {"from": 4, "to": 4 + len(food), "target": food, "category": "FOOD#QUALITY", "polarity": pol,
             "opinion_words": [{"from": 9 + len(food), "to": len(sentence), "term": sentence.split()[-1]}]}]})
    for split in ("train", "dev", "test", "hard_test"):
        _write_json(root / "absa_tiny" / f"{split}.json", absa)
    return root


@pytest.fixture(scope="module")
def teacher_url():
    """A real OpenAI-compatible HTTP teacher on 127.0.0.1 (lexicon answers for classification prompts)."""
    from teacher_server import running_server

    with running_server() as url:
        yield url + "/v1"


def _config(tmp_path: Path, data_dir: Path, teacher_url: str, student_dir: Path, name: str) -> dict:
    return {
        "name": name,
        "runs_dir": str(tmp_path / "runs"),
        "data_dir": str(data_dir),
        "teacher": {"kind": "openai", "model": "echo", "base_url": teacher_url, "concurrency": 4},
        "student": {"model": str(student_dir), "max_source_length": 64, "max_target_length": 16},
        "knowdist": {"reviews": {"source": "sentibench:sst2", "limit": 6, "min_chars": 5},
                     "prompt_types": ["overall"], "max_tokens": 8},
        "icldist": {"tasks": ["sst2"], "n_prompts": 8, "max_shots": 1, "top_logprobs": 3},
        "training": {"max_steps": 3, "batch_size": 4, "save_steps": 2, "logging_steps": 1},
        "bench": {"tasks": ["sst2"], "limit": 6, "shots": 1},
        "finetune": {"enabled": True, "datasets": [f"atsa:{data_dir / 'absa_tiny'}"], "seeds": [42], "epochs": 1,
                     "batch_size": 4, "max_parallel": 1, "limit_eval": 4},
    }


SECRET = "sk-test-" + "5ecret" * 6  # what a user's OPENAI_API_KEY looks like


def _run_cli(cfg_path: Path, monkeypatch) -> str:
    """`sentidistill run CONFIG` in-process, with an API key in the environment; returns its output."""
    from typer.testing import CliRunner

    from sentidistill.cli import app

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("COLUMNS", "200")
    res = CliRunner().invoke(app, ["run", str(cfg_path)])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def _assert_no_secret(run: Path) -> None:
    """The key appears nowhere in the run directory: config, manifest, log, cache, corpora, models, report."""
    files = [f for f in run.rglob("*") if f.is_file()]
    assert len(files) > 20
    needles = [SECRET.encode(), SECRET.encode("utf-16-le"), SECRET[8:].encode()]
    leaks = [str(f.relative_to(run)) for f in files if any(n in f.read_bytes() for n in needles)]
    assert not leaks, f"the API key was written to {leaks}"


def _hand_macro_f1(run: Path, model: str) -> float:
    rows = [json.loads(x) for x in (run / "bench" / model / "predictions" / "sst2.seed42.jsonl").read_text(
        encoding="utf-8").splitlines()]
    f1s = []
    for lab in ("negative", "positive"):
        tp = sum(r["parsed"] == lab == r["gold"] for r in rows)
        wrong = sum((r["parsed"] == lab) != (r["gold"] == lab) for r in rows)
        f1s.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
    return sum(f1s) / 2


STAGES = ["teach_knowdist", "teach_icl", "bench_teacher", "bench_student_before", "train_knowdist",
          "bench_student_knowdist", "train_icldist", "bench_student_after", "finetune_eval", "report"]


def test_pipeline_end_to_end(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, monkeypatch):

    from teacher_server import server_stats

    raw = _config(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, "e2e")
    cfg_path = tmp_path / "e2e.yaml"
    cfg_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    base = teacher_url.removesuffix("/v1")
    t0 = time.perf_counter()
    output = _run_cli(cfg_path, monkeypatch)
    wall = time.perf_counter() - t0
    run = tmp_path / "runs" / "e2e"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    for stage in STAGES:
        assert manifest["stages"][stage]["status"] == "done", stage
        assert 0 < manifest["stages"][stage]["wall_s"] <= wall, stage
    # The key was sent to the teacher (the server keeps only its hash) and written nowhere.
    import hashlib

    assert server_stats(base)["auth_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
    _assert_no_secret(run)
    # The teacher (a lexicon over the review words) is right on every test sentence; the students' scores
    # are what their predictions say.
    metrics = {m: json.loads((run / "bench" / m / "metrics.json").read_text())
               for m in ("teacher", "student_before", "student_knowdist", "student_after")}
    assert metrics["teacher"]["sentibench_score"] == 1.0
    for m, met in metrics.items():
        assert met["sentibench_score"] == pytest.approx(_hand_macro_f1(run, m)), m
    # The table printed at the end shows those scores (x100), one row per model, in pipeline order.
    rows = [line for line in output.splitlines() if line.startswith("│") and "score" not in line]
    names = ["teacher", "student (before)", "student (KnowDist)", "student (KnowDist+ICLDist)"]
    assert [r.split("│")[1].strip() for r in rows] == names, output
    for r, m in zip(rows, metrics, strict=True):
        cells = r.split("│")  # ... | score | 95% interval | items/s |
        assert f"{100 * metrics[m]['sentibench_score']:.1f}" in cells[-4], (r, m)
        lo, hi = metrics[m].get("sentibench_score_ci_low"), metrics[m].get("sentibench_score_ci_high")
        assert (f"[{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else "-") in cells[-3], (r, m)
    assert (run / "corpus" / "knowdist.parquet").exists() and (run / "corpus" / "icl.parquet").exists()
    assert (run / "models" / "icldist" / "final" / "model.safetensors").exists()
    html = (run / "report.html").read_text()
    assert "student (before)" in html and "teacher" in html
    finetune = json.loads((run / "finetune" / "results.json").read_text())
    assert {c["model"] for c in finetune["cells"]} == {"base", "knowdist"}
    assert "Fine-tuning" in html
    assert (run / "log.txt").stat().st_size > 0
    # Same config again: every stage is skipped, nothing recomputed, the teacher not asked.
    asked = server_stats(base)["total"]
    again = _run_cli(cfg_path, monkeypatch)
    assert again.count("skipped (done)") == len(STAGES) and server_stats(base)["total"] == asked
    _assert_no_secret(run)


LIGHT = ["teach_knowdist", "teach_icl", "train_knowdist", "bench_student_knowdist", "train_icldist",
         "bench_student_after", "report"]


def test_redone_stage_invalidates_what_depends_on_it(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir):
    """Finished stages are recognised by what they produced, and a redone stage makes its dependents stale."""
    import httpx
    import pyarrow.parquet as pq

    from sentidistill.config import validate_config
    from sentidistill.pipeline import run_pipeline

    raw = _config(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, "redo")
    raw["finetune"] = {"enabled": False}
    raw["bench"].update(include_teacher=False, include_student_before=False)
    cfg = validate_config(raw)
    run = cfg.run_dir
    stats = teacher_url.removesuffix("/v1") + "/stats"

    def rerun() -> list[str]:
        """Run again; the stages redone. The teacher cache answers anything asked again."""
        before = httpx.get(stats).json()["total"]
        res = run_pipeline(cfg)
        assert httpx.get(stats).json()["total"] == before, "the teacher cache should answer"
        assert sorted(res.skipped + list(res.stage_times)) == sorted(LIGHT)
        return [s for s in LIGHT if s in res.stage_times]

    assert list(run_pipeline(cfg).stage_times) == LIGHT
    assert rerun() == []
    # A model folder whose weights are gone (config.json still there) is not a finished stage: it is trained
    # again, and everything built on it (its benchmark, the ICLDist student, its benchmark, the report) is redone.
    (run / "models" / "knowdist" / "final" / "model.safetensors").unlink()
    assert rerun() == ["train_knowdist", "bench_student_knowdist", "train_icldist", "bench_student_after", "report"]
    assert (run / "models" / "knowdist" / "final" / "model.safetensors").exists()
    # Truncated weights (a disk filled up mid-write) do not load: the same.
    w = run / "models" / "icldist" / "final" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert rerun() == ["train_icldist", "bench_student_after", "report"]
    # A corpus with fewer rows than its stage wrote is rebuilt (from the teacher cache), and the model
    # trained on it, with all that follows, is redone.
    corpus = run / "corpus" / "icl.parquet"
    rows = pq.ParquetFile(corpus).metadata.num_rows
    pq.write_table(pq.read_table(corpus).slice(0, 3), corpus)
    assert rerun() == ["teach_icl", "train_icldist", "bench_student_after", "report"]
    assert pq.ParquetFile(corpus).metadata.num_rows == rows > 3
    # A benchmark whose metrics are unreadable is run again; nothing upstream is touched, the report is redone.
    (run / "bench" / "student_after" / "metrics.json").write_text("{", encoding="utf-8")
    assert rerun() == ["bench_student_after", "report"]
    assert rerun() == []


def test_a_changed_setting_reruns_the_stages_that_read_it_and_keeps_the_others(tmp_path, tiny_data_dir, teacher_url,
                                                                              tiny_seq2seq_dir):
    """Each stage records the hash of the settings it reads: new ICLDist training steps redo ICLDist training and
    what is built on it, not the benchmarks of the teacher or of the student before; a new bench limit redoes
    every benchmark and nothing else; a manifest written before stages recorded settings resumes as it was."""
    from sentidistill.config import validate_config
    from sentidistill.pipeline import describe_plan, run_pipeline

    raw = _config(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, "settings")
    raw["finetune"] = {"enabled": False}
    raw["icldist_training"] = {"max_steps": 2, "batch_size": 4, "save_steps": 2, "logging_steps": 1}
    first = run_pipeline(validate_config(raw))
    stages = list(first.stage_times)
    assert "bench_student_before" in stages and "bench_teacher" in stages

    def rerun(cfg_raw: dict) -> list[str]:
        res = run_pipeline(validate_config(cfg_raw))
        assert sorted(res.skipped + list(res.stage_times)) == sorted(stages)
        return list(res.stage_times)

    raw["icldist_training"]["max_steps"] = 3
    plan_rows = {r["stage"]: r["status"] for r in describe_plan(validate_config(raw))}
    assert plan_rows["train_icldist"] == "to run (its settings changed)"
    assert plan_rows["bench_student_after"] == "to run (an upstream stage is redone)"
    assert plan_rows["bench_student_before"] == plan_rows["train_knowdist"] == "done"
    assert rerun(raw) == ["train_icldist", "bench_student_after", "report"]
    manifest = json.loads((tmp_path / "runs" / "settings" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["previous_config_hash"] != manifest["config_hash"]
    raw["bench"]["limit"] = 4
    assert rerun(raw) == ["bench_teacher", "bench_student_before", "bench_student_knowdist", "bench_student_after",
                          "report"]
    assert json.loads((tmp_path / "runs" / "settings" / "bench" / "student_before" / "metrics.json").read_text(
        encoding="utf-8"))["tasks"]["sst2"]["n"] == 4
    # Entries from before settings were recorded: judged by the config the manifest holds (their own).
    path = tmp_path / "runs" / "settings" / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for entry in manifest["stages"].values():
        del entry["settings"]
    path.write_text(json.dumps(manifest), encoding="utf-8")
    assert rerun(raw) == []
    raw["training"]["max_steps"] = 2  # KnowDist's training (ICLDist has its own): redone, with what follows
    assert rerun(raw)[:2] == ["train_knowdist", "bench_student_knowdist"]


def test_knowdist_only_run_benches_the_knowdist_student_on_unseen_tasks(tmp_path, tiny_data_dir, teacher_url,
                                                                       tiny_seq2seq_dir):
    """KnowDist without ICLDist: the distilled student is ``knowdist/final``, and the unseen-task stage benches it
    (it once looked for ``icldist/final``, which such a run never writes)."""
    from sentidistill.config import validate_config
    from sentidistill.pipeline import run_pipeline

    raw = _config(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, "kd_unseen")
    raw["icldist"] = {"enabled": False}
    raw["finetune"] = {"enabled": False}
    raw["bench"].update(include_teacher=False, unseen_tasks=["sst2"])
    cfg = validate_config(raw)
    res = run_pipeline(cfg)
    assert list(res.stage_times) == ["teach_knowdist", "bench_student_before", "train_knowdist",
                                     "bench_student_after", "bench_unseen", "report"]
    run = cfg.run_dir
    assert not (run / "models" / "icldist").exists()
    summary = json.loads((run / "bench_unseen" / "summary.json").read_text())
    assert list(summary) == ["student (before)", "student (KnowDist)"]
    assert isinstance(summary["student (KnowDist)"].get("sst2"), float), summary
    # The unseen bench (here the same task) answered exactly as the KnowDist student did on the main bench.

    def parsed(folder: Path) -> list:
        lines = (folder / "predictions" / "sst2.seed42.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(x)["parsed"] for x in lines]

    assert parsed(run / "bench_unseen" / "student_after") == parsed(run / "bench" / "student_after")
    assert "Unseen tasks" in (run / "report.md").read_text()
    # The plan of the finished run: every stage done; without the KnowDist weights, it and all built on it rerun.
    from sentidistill.pipeline import describe_plan

    assert {r["status"] for r in describe_plan(cfg)} == {"done"}
    (run / "models" / "knowdist" / "final" / "model.safetensors").unlink()
    status = {r["stage"]: r["status"] for r in describe_plan(cfg)}
    assert [s for s, v in status.items() if v != "done"] == ["train_knowdist", "bench_student_after",
                                                             "bench_unseen", "report"]
    assert "model.safetensors is missing" in status["train_knowdist"]


@pytest.mark.slow  # two full pipeline processes (~2 min on 2 cores); test_pipeline_resume.py has the kill -9 variants
def test_killed_run_resumes_without_redoing_finished_stages(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir):
    raw = _config(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, "killed")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    manifest_path = tmp_path / "runs" / "killed" / "manifest.json"
    cmd = [sys.executable, "-c", "from sentidistill.cli import run; run()", "run", str(cfg_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": SECRET}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.time() + 300
    done_before: dict[str, str] = {}
    try:
        while time.time() < deadline and proc.poll() is None:
            if manifest_path.exists():
                try:
                    stages = json.loads(manifest_path.read_text()).get("stages", {})
                except json.JSONDecodeError:  # never happens with atomic writes, but don't flake on it
                    stages = {}
                if stages.get("teach_icl", {}).get("status") == "done":
                    done_before = {k: v["finished"] for k, v in stages.items() if v.get("status") == "done"}
                    break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert "teach_knowdist" in done_before and "teach_icl" in done_before
    assert json.loads(manifest_path.read_text())["status"] == "running"  # killed: never marked finished

    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "skipped (done)" in res.stdout
    stages = json.loads(manifest_path.read_text())["stages"]
    for name, finished in done_before.items():
        assert stages[name]["finished"] == finished, f"{name} was redone"
    assert stages["report"]["status"] == "done"
    _assert_no_secret(tmp_path / "runs" / "killed")
