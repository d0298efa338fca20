"""train_student end to end on the tiny models: the loss goes down, kill -9 + restart resumes, 2-process DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentidistill.config import ICLDistConfig, StudentConfig, TrainingConfig
from sentidistill.errors import InputError
from sentidistill.train.engine import last_complete_checkpoint, load_corpus, train_student

REPO = Path(__file__).resolve().parents[1]
_REVIEWS = [("The food was great and the service was friendly.", "positive"),
            ("Terrible movie, boring plot and bad acting.", "negative"),
            ("I love this phone, the battery lasts all day.", "positive"),
            ("The screen is awful.", "negative")]


def _corpus(path: Path, n: int = 16, with_logprobs: bool = False) -> Path:
    rows = []
    for i in range(n):
        text, label = _REVIEWS[i % len(_REVIEWS)]
        lp = None
        if with_logprobs:
            other = "negative" if label == "positive" else "positive"
            lp = json.dumps([{"token": label, "logprob": -0.1, "top": [[label, -0.1], [other, -2.5]]}])
        rows.append({"source": f"Sentence: {text}\nLabel:", "target": label, "teacher_logprobs": lp,
                     "status": "valid", "task": "tiny"})
    rows.append({"source": "x", "target": "y", "teacher_logprobs": None, "status": "error", "task": "tiny"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path



@pytest.mark.parametrize("method,fixture", [("knowdist", "tiny_seq2seq_dir"), ("icldist", "tiny_causal_dir")])
def test_short_run_lowers_the_loss_and_saves_atomically(method, fixture, request, tmp_path) -> None:
    model_dir = request.getfixturevalue(fixture)
    corpus = _corpus(tmp_path / "c.parquet", with_logprobs=method == "icldist")
    training = TrainingConfig(max_steps=12, batch_size=8, learning_rate=3e-3, save_steps=6, logging_steps=1)
    final = train_student(str(model_dir), corpus, tmp_path / "out", training, method=method,
                          student=StudentConfig(max_source_length=32, max_target_length=8), icl=ICLDistConfig())
    assert final == tmp_path / "out" / "final"
    names = {p.name for p in final.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_summary.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    assert not (tmp_path / "out" / ".final.partial").exists()
    info = json.loads((final / "training_summary.json").read_text())
    assert info["global_step"] == 12 and info["corpus_rows"]["dropped_status"] == 1
    state = json.loads((tmp_path / "out" / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < 0.7 * losses[0], losses
    if method == "icldist":
        assert info["token_kd"]["with_logprobs"] == 16
        assert info["token_kd"]["aligned"] + info["token_kd"]["fallback"] == 16
    # The saved model loads back through the project's loader.
    from sentidistill.students import load_student

    assert load_student(str(final)).kind == ("seq2seq" if method == "knowdist" else "causal")


def test_bad_corpus_is_a_clear_error(tmp_path) -> None:
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "target": "b"}]), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"bad.parquet.*field 'source'"):
        load_corpus(tmp_path / "bad.parquet", "knowdist")
    (tmp_path / "notparquet.parquet").write_text("hello")
    with pytest.raises(InputError, match="not a readable Parquet"):
        load_corpus(tmp_path / "notparquet.parquet", "knowdist")


def _losses(out: Path, step: int = 12) -> dict[int, float]:
    """Step -> logged training loss, from the trainer state saved at ``checkpoint-<step>``."""
    hist = json.loads((out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in hist if "loss" in h}


_RESUME_SCRIPT = """
import json, sys, time
from sentidistill.config import StudentConfig, TrainingConfig
from sentidistill.train.engine import train_student
model, corpus, out, slow = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "slow"
def eval_fn(model, tok):  # the eval hook; here it also slows the first run so the test can kill it mid-way
    if slow:
        time.sleep(0.4)
    return {"probe": 1.0}
training = TrainingConfig(max_steps=12, batch_size=4, learning_rate=3e-3, save_steps=3, logging_steps=1, eval_steps=1,
                          save_total_limit=10)
print(train_student(model, corpus, out, training, method="knowdist", eval_fn=eval_fn,
                    student=StudentConfig(max_source_length=32, max_target_length=8)))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO / "src")}


@pytest.mark.slow  # three training processes (~60 s on 2 busy cores)
def test_resume_after_sigkill_continues_from_the_checkpoint(tiny_seq2seq_dir, tmp_path) -> None:
    corpus = _corpus(tmp_path / "c.parquet")
    script = tmp_path / "run.py"
    script.write_text(_RESUME_SCRIPT)
    out = tmp_path / "out"
    args = [sys.executable, str(script), str(tiny_seq2seq_dir), str(corpus)]
    proc = subprocess.Popen([*args, str(out), "slow"], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while last_complete_checkpoint(out / "checkpoints") is None:
            assert proc.poll() is None, "the training process ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ckpt = last_complete_checkpoint(out / "checkpoints")
    killed_at = int(ckpt.name.split("-")[1])
    assert killed_at < 12 and not (out / "final").exists()
    done = subprocess.run([*args, str(out), "fast"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "final" / "training_summary.json").read_text())
    assert info["resumed_from"].endswith(f"checkpoint-{killed_at}") and info["global_step"] == 12
    # The restarted run logged only the steps after the checkpoint, and the eval hook ran on them.
    assert [h["step"] for h in info["bench_history"]] == list(range(killed_at + 1, 13))
    # Same data order and RNG: the resumed losses equal an uninterrupted run's.
    ref = tmp_path / "ref"
    subprocess.run([*args, str(ref), "fast"], env=_env(), capture_output=True, check=True, timeout=300)

    resumed, uninterrupted = _losses(out), _losses(ref)
    for step in range(killed_at + 1, 13):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-4), step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes importing torch + transformers (~30 s on 2 busy cores)
def test_two_process_ddp_on_cpu_with_accelerate_launch(tiny_seq2seq_dir, tmp_path) -> None:
    corpus = _corpus(tmp_path / "c.parquet")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "examples" / "accelerate_cpu_ddp.yaml"), "--main_process_port", str(_free_port()),
           "-m", "sentidistill.train.cli", "--student", str(tiny_seq2seq_dir), "--corpus", str(corpus),
           "--out", str(out), "--method", "knowdist", "--max-steps", "3", "--save-steps", "3",
           "--batch-size", "2", "--max-source-length", "32"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint-"))
    assert ckpts == ["checkpoint-3"]
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    # Two ranks: each step consumed 2 x batch 2 examples; both processes ran (one RNG state file each).
    assert (out / "checkpoints" / "checkpoint-3" / "rng_state_0.pth").exists()
    assert (out / "checkpoints" / "checkpoint-3" / "rng_state_1.pth").exists()
    assert (out / "final" / "model.safetensors").exists()


_RESUME_EPOCH_SCRIPT = """
import sys
from sentidistill.config import StudentConfig, TrainingConfig
from sentidistill.train.engine import train_student
training = TrainingConfig(max_steps=12, batch_size=4, learning_rate=3e-3, save_steps=6, logging_steps=1,
                          save_total_limit=10, group_by_length=sys.argv[4] == "grouped")
train_student(sys.argv[1], sys.argv[2], sys.argv[3], training, method="knowdist",
              student=StudentConfig(max_source_length=32, max_target_length=8))
"""


@pytest.mark.slow  # six short training processes (~1 min)
@pytest.mark.parametrize("sampling", ["grouped", "random"])
def test_resume_inside_a_later_epoch_sees_the_same_data_order(tiny_seq2seq_dir, tmp_path, sampling) -> None:
    """16 rows, batches of 4: checkpoint-6 lies inside epoch 1. A process that starts from that checkpoint
    alone must log the losses of the uninterrupted run for steps 7-12. (Found by the pipeline's kill -9 test:
    transformers' length-grouped sampler drew each epoch's order from the global RNG, so a resumed epoch 1
    trained on another order: step-7 loss 2.33 vs 2.45.)"""
    corpus = _corpus(tmp_path / "c.parquet")
    script = tmp_path / "run.py"
    script.write_text(_RESUME_EPOCH_SCRIPT)

    def train(out: Path) -> None:
        res = subprocess.run([sys.executable, str(script), str(tiny_seq2seq_dir), str(corpus), str(out), sampling],
                             env=_env(), capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]

    train(tmp_path / "ref")
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "ref" / "checkpoints" / "checkpoint-6", resumed / "checkpoints" / "checkpoint-6")
    train(resumed)

    got, want = _losses(resumed), _losses(tmp_path / "ref")
    assert [s for s in got if s > 6] == list(range(7, 13))
    for step in range(7, 13):
        assert got[step] == pytest.approx(want[step], rel=1e-5), step
