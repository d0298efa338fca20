"""A tiny label-free run end to end: an OpenAI-compatible teacher server on 127.0.0.1 gives soft labels (top-k
log-probs), calibration and curation build the corpus, a tiny encoder classifier trains with early stopping,
every model is benched on the same items, and a rerun resumes without a single new teacher request."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sentidistill.config import validate_config
from sentidistill.data.soft_label_corpus import read_soft_label_stats, read_soft_labels
from sentidistill.pipeline import run_pipeline
from sentidistill.testing import build_tiny_encoder
from teacher_server import running_server, server_stats

POS = ["wonderful", "great", "loved", "delightful", "charming"]
NEG = ["terrible", "boring", "dull", "tedious", "painful"]
FILL = ["the film", "our dinner", "this book", "the show", "that hotel", "the plot", "my stay"]


def _write_task(tmp: Path, n_train: int = 160, n_test: int = 60, name: str = "toy_reviews", seed: int = 0) -> Path:
    rng = random.Random(seed)

    def rows(n: int) -> list[dict]:
        out = []
        for i in range(n):
            pos = rng.random() < 0.5
            word = rng.choice(POS if pos else NEG)
            out.append({"review": f"{rng.choice(FILL)} was {word} and {rng.choice(FILL)} {i}",
                        "sentiment": "positive" if pos else "negative"})
        return out

    for split, n in (("train", n_train), ("test", n_test)):
        with (tmp / f"{name}.{split}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows(n):
                f.write(json.dumps(r) + "\n")
    task = tmp / f"{name}.yaml"
    task.write_text(f"""
name: {name}
category: basic
kind: classification
loader:
  format: jsonl
  splits: {{train: {tmp / (name + '.train.jsonl')}, test: {tmp / (name + '.test.jsonl')}}}
  options: {{text_field: review, label_field: sentiment}}
labels:
  - {{name: negative}}
  - {{name: positive}}
instruction: Classify the sentiment of the review as negative or positive.
demos: {{split: train, k: 0, selection: random}}
metric: macro_f1
""", encoding="utf-8")
    return task


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("enc") / "bert")


@pytest.mark.slow  # ~1-2 min on 2 cores: CI runs it with the slow tests
def test_label_free_run_trains_early_stops_and_resumes(tmp_path, encoder, monkeypatch):
    task = _write_task(tmp_path)
    unseen = _write_task(tmp_path, n_train=10, n_test=40, name="toy_unseen", seed=5)  # same labels, never taught
    monkeypatch.setenv("TOY_TEACHER_KEY", "sk-toy-secret-123")
    with running_server() as url:
        raw = {
            "name": "toy", "runs_dir": str(tmp_path / "runs"), "seed": 1,
            "teacher": {"kind": "openai", "model": "toy", "base_url": url + "/v1", "api_key_env": "TOY_TEACHER_KEY",
                        "concurrency": 8, "max_retries": 1, "repair_attempts": 0},
            "soft_labels": {"enabled": True, "tasks": [str(task)], "n_per_task": 150, "dev_fraction": 0.2},
            "classifier": {"enabled": True, "encoder": str(encoder), "max_length": 32, "patience": 3,
                           "training": {"epochs": 30, "learning_rate": 5e-3, "batch_size": 16, "eval_steps": 8,
                                        "save_steps": 8, "logging_steps": 100}},
            "knowdist": {"enabled": False}, "icldist": {"enabled": False},
            "bench": {"tasks": [str(task)], "shots": 0, "limit": 60, "bootstrap": 200,
                      "unseen_tasks": [str(unseen)]},
        }
        cfg = validate_config(raw)
        result = run_pipeline(cfg)
        sent = server_stats(url)["total"]
        run = result.run_dir
        rows = read_soft_labels(run / "corpus" / "soft_labels.parquet")
        stats = read_soft_label_stats(run / "corpus" / "soft_labels.parquet")
        # 150 texts asked, none unusable; read from the endpoint's top-k log-probs; no gold label stored.
        assert stats["tasks"]["toy_reviews"]["scored"] == 150
        assert stats["tasks"]["toy_reviews"]["via"] == {"logprobs": 150}
        assert len(rows) == 150 and all("gold" not in r or r.get("gold") is None for r in rows)
        assert {r["split"] for r in rows} == {"train", "dev"}
        # The pool, the 60 test items (the calibrated bench is all cache hits), the 40 unseen-task items.
        assert sent == 150 + 60 + 40
        m = result.metrics
        teacher = m["teacher"]["tasks"]["toy_reviews"]["score"]
        before = m["classifier_before"]["tasks"]["toy_reviews"]["score"]
        after = m["classifier_after"]["tasks"]["toy_reviews"]["score"]
        assert teacher >= 0.95  # the lexicon teacher is right on this data
        assert after >= 0.9 and after > before + 0.2
        summary = json.loads((run / "models" / "classifier" / "final" / "training_summary.json").read_text())
        assert summary["best_teacher_agreement"] >= 0.9
        assert summary["global_step"] < 30 * 8  # 120 training rows at batch 16 = 8 steps/epoch: stopped early
        report = (run / "report.md").read_text()
        assert "classifier student (after)" in report and "Unseen tasks" in report
        unseen_scores = json.loads((run / "bench_unseen" / "summary.json").read_text())
        # The classifier answers the unseen task through the head with the same label set.
        assert unseen_scores["classifier student (after)"]["toy_unseen"] >= 0.9
        assert unseen_scores["teacher"]["toy_unseen"] >= 0.95
        # Rerun: every stage is recognised as done and the teacher is not asked again.
        again = run_pipeline(cfg)
        assert "teach_soft" in again.skipped and "train_classifier" in again.skipped
        assert server_stats(url)["total"] == sent
    # The key reached the server but no file of the run directory.
    for f in run.rglob("*"):
        if f.is_file():
            assert b"sk-toy-secret-123" not in f.read_bytes(), f
