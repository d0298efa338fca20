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
    root = tmp_path_factory.mktemp("data")
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


def test_pipeline_end_to_end(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir):
    from sentidistill.config import validate_config
    from sentidistill.pipeline import run_pipeline

    cfg = validate_config(_config(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, "e2e"))
    result = run_pipeline(cfg)
    run = result.run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    for stage in ["teach_knowdist", "teach_icl", "bench_teacher", "bench_student_before", "train_knowdist",
                  "bench_student_knowdist", "train_icldist", "bench_student_after", "finetune_eval", "report"]:
        assert manifest["stages"][stage]["status"] == "done", stage
        assert manifest["stages"][stage]["wall_s"] >= 0
    assert set(result.metrics) == {"teacher", "student_before", "student_knowdist", "student_after"}
    for m in result.metrics.values():
        assert 0.0 <= m["sentibench_score"] <= 1.0
    assert (run / "corpus" / "knowdist.parquet").exists() and (run / "corpus" / "icl.parquet").exists()
    assert (run / "models" / "icldist" / "final" / "model.safetensors").exists()
    html = (run / "report.html").read_text()
    assert "student (before)" in html and "teacher" in html
    finetune = json.loads((run / "finetune" / "results.json").read_text())
    assert {c["model"] for c in finetune["cells"]} == {"base", "knowdist"}
    assert "Fine-tuning" in html
    assert (run / "log.txt").stat().st_size > 0
    # Same config again: every stage is skipped, nothing recomputed.
    again = run_pipeline(cfg)
    assert again.stage_times == {}
    assert "train_icldist" in again.skipped


def test_killed_run_resumes_without_redoing_finished_stages(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir):
    raw = _config(tmp_path, tiny_data_dir, teacher_url, tiny_seq2seq_dir, "killed")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    manifest_path = tmp_path / "runs" / "killed" / "manifest.json"
    cmd = [sys.executable, "-c", "from sentidistill.cli import run; run()", "run", str(cfg_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
