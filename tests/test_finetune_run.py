"""Fine-tuning evaluation end to end with tiny models: cells, predictions, resume, kill + resume, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sentidistill.finetune.cell import CellConfig, run_cell
from sentidistill.finetune.data import load_fsa_dataset
from sentidistill.finetune.metrics import score_predictions
from sentidistill.finetune.runner import cell_dir, load_results, run_finetune_eval

SENTS = [
    ("The pizza was great.", [("pizza", "positive", "great")]),
    ("The service was slow but the view was nice.", [("service", "negative", "slow"), ("view", "positive", "nice")]),
    ("Terrible coffee.", [("coffee", "negative", "Terrible")]),
    ("We went on a Sunday.", []),
    ("The staff were friendly and the price fair.", [("staff", "positive", "friendly"), ("price", "positive", None)]),
    ("Bad music, good wine.", [("music", "negative", "Bad"), ("wine", "positive", "good")]),
]


def _items(rows):
    out = []
    for i, (s, aspects) in enumerate(rows):
        asp = []
        for t, p, ow in aspects:
            start = s.index(t)
            asp.append({"from": str(start), "to": str(start + len(t)), "target": t, "category": None,
                        "polarity": p, "opinion_words": ow})
        out.append({"ID": str(i), "sentence": s, "aspects": asp})
    return out


@pytest.fixture(scope="module")
def tiny_atsa(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("fsa") / "toy14"
    d.mkdir()
    for split, rows in {"train": SENTS, "dev": SENTS[:3], "test": SENTS[3:], "hard_test": SENTS[1:2]}.items():
        (d / f"{split}.json").write_text(json.dumps(_items(rows)), encoding="utf-8-sig")
    return f"atsa:{d}"


KW = {"epochs": 1, "batch_size": 4, "max_new_tokens": 12, "max_parallel": 1}


def test_end_to_end_seq2seq_and_causal(tiny_atsa, tiny_seq2seq_dir, tiny_causal_dir, tmp_path):
    out = tmp_path / "run"
    res = run_finetune_eval({"s2s": str(tiny_seq2seq_dir), "causal": str(tiny_causal_dir)}, [tiny_atsa],
                            seeds=[1], train_fractions=[0.5, 1.0], out_dir=out, **KW)
    assert len(res.cells) == 4 and not res.failed
    test = load_fsa_dataset(tiny_atsa).test_set
    for c in res.cells:
        d = cell_dir(out, c["model"], "toy14", c["train_fraction"], c["seed"])
        rows = [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == [e.id for e in test]
        # The stored metrics are exactly what the stored generations score.
        assert score_predictions(test, [r["output"] for r in rows], "atsa") == c["metrics"]
        assert c["n_train"] == (3 if c["train_fraction"] == 0.5 else 6)
        assert c["dev_history"] and c["best_epoch"] == 1
    md = (out / "finetune_report.md").read_text()
    assert "causal vs s2s" in md and "toy14" in md and (out / "curve_toy14.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "finetune_report.html").read_text()
    assert "data:image/png;base64," in html
    assert len(load_results(out).cells) == 4


def test_learns_the_task_when_trained_longer(tiny_atsa, tiny_seq2seq_dir, tmp_path):
    """Guards against a pipeline that 'runs' but cannot learn (e.g. labels misaligned): overfit 6 sentences."""
    cfg = CellConfig(model_name="s2s", model_spec=str(tiny_seq2seq_dir), dataset=tiny_atsa, cell_dir=str(tmp_path),
                     seed=0, epochs=40, learning_rate=3e-3, batch_size=6, max_new_tokens=16, eval_every_epochs=10)
    c = run_cell(cfg)
    assert [h["epoch"] for h in c["dev_history"]] == [10, 20, 30, 40]
    assert c["train_loss"] < 3.0
    assert c["best_dev_f1"] > 0.3, c["dev_history"]
    assert c["f1"] == c["metrics"]["all"]["f1"]


def test_finished_cells_are_not_recomputed(tiny_atsa, tiny_seq2seq_dir, tmp_path):
    models = {"s2s": str(tiny_seq2seq_dir)}
    run_finetune_eval(models, [tiny_atsa], seeds=[1], out_dir=tmp_path, **KW)
    first = cell_dir(tmp_path, "s2s", "toy14", 1.0, 1) / "metrics.json"
    stamp = first.stat().st_mtime_ns
    res = run_finetune_eval(models, [tiny_atsa], seeds=[1, 2], out_dir=tmp_path, **KW)
    assert first.stat().st_mtime_ns == stamp
    assert sorted(c["seed"] for c in res.cells) == [1, 2]


def test_killed_run_resumes(tiny_atsa, tiny_seq2seq_dir, tmp_path):
    seeds = [1, 2, 3]
    script = (
        "import sys; from sentidistill.finetune.runner import run_finetune_eval\n"
        f"run_finetune_eval({{'s2s': {str(tiny_seq2seq_dir)!r}}}, [{tiny_atsa!r}], seeds={seeds}, "
        f"out_dir={str(tmp_path)!r}, epochs=1, batch_size=2, max_new_tokens=8, max_parallel=1)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = cell_dir(tmp_path, "s2s", "toy14", 1.0, 1) / "metrics.json"
    try:
        deadline = time.time() + 120
        while not first.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert first.exists(), "the first cell never finished"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = {s for s in seeds if (cell_dir(tmp_path, "s2s", "toy14", 1.0, s) / "metrics.json").exists()}
    assert done_before and done_before != set(seeds), "kill came too late to test a resume"
    stamps = {s: (cell_dir(tmp_path, "s2s", "toy14", 1.0, s) / "metrics.json").stat().st_mtime_ns for s in done_before}
    res = run_finetune_eval({"s2s": str(tiny_seq2seq_dir)}, [tiny_atsa], seeds=seeds, out_dir=tmp_path,
                            epochs=1, batch_size=2, max_new_tokens=8, max_parallel=1)
    assert sorted(c["seed"] for c in res.cells) == seeds
    for s, t in stamps.items():
        assert (cell_dir(tmp_path, "s2s", "toy14", 1.0, s) / "metrics.json").stat().st_mtime_ns == t
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_parallel_spawned_workers(tiny_atsa, tiny_seq2seq_dir, tmp_path):
    res = run_finetune_eval({"s2s": str(tiny_seq2seq_dir)}, [tiny_atsa], seeds=[1, 2], out_dir=tmp_path,
                            epochs=1, batch_size=4, max_new_tokens=8, max_parallel=2, write_report=False)
    assert len(res.cells) == 2 and len({c["pid"] for c in res.cells}) == 2


def test_cli_help_and_run(tiny_atsa, tiny_seq2seq_dir, tmp_path):
    from typer.testing import CliRunner

    from sentidistill.cli import app
    from sentidistill.errors import InputError

    runner = CliRunner()
    r = runner.invoke(app, ["finetune-eval", "--help"])
    assert r.exit_code == 0 and "--train-fractions" in r.output and "Example:" in r.output
    r = runner.invoke(app, ["finetune-eval", "--model", f"tiny={tiny_seq2seq_dir}", "--datasets", tiny_atsa,
                            "--seeds", "7", "--epochs", "1", "--batch-size", "4", "--max-parallel", "1",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (cell_dir(tmp_path, "tiny", "toy14", 1.0, 7) / "metrics.json").exists()
    r = runner.invoke(app, ["finetune-eval", "--model", "=x", "--out", str(tmp_path)])
    assert isinstance(r.exception, InputError) and "field '--model': bad --model" in str(r.exception)
    assert "got '=x'" in str(r.exception)


def test_bad_model_or_dataset_fails_before_training(tiny_atsa, tiny_seq2seq_dir, tmp_path):
    from sentidistill.errors import InputError

    with pytest.raises(InputError, match="cannot load model 'ghost'"):
        run_finetune_eval({"ghost": str(tmp_path / "no-such-model")}, [tiny_atsa], seeds=[1], out_dir=tmp_path)
    with pytest.raises(InputError, match="unknown FSA dataset"):
        run_finetune_eval({"s2s": str(tiny_seq2seq_dir)}, ["rest99"], seeds=[1], out_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(InputError, match="bad model name"):
        run_finetune_eval({"a/b": str(tiny_seq2seq_dir)}, [tiny_atsa], seeds=[1], out_dir=tmp_path)
    assert not list((tmp_path).rglob("metrics.json"))
