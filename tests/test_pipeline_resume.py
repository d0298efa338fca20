"""`kill -9` in the middle of a stage, then `sentidistill run` again: the result equals an uninterrupted run's.

Three kill points: while the teacher answers (teaching), while KnowDist trains, while ICLDist trains. The
teacher is a real HTTP server that counts the requests it receives, so the tests check what resuming
costs: after a kill during teaching the resumed run asks only what the cache does not hold; after a kill
during training it asks nothing. The kill lands on what the run has done (a cached answer, a complete
checkpoint), not on a timer: the process is stopped (SIGSTOP) the moment that appears, checked, then killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from teacher_server import running_server, server_stats
from test_pipeline import SECRET, _assert_no_secret, _config, write_tiny_data

pytestmark = pytest.mark.slow  # four pipeline processes per test (~1-2 min on 2 busy cores)

CONCURRENCY = 2


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory) -> Path:
    return write_tiny_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def teacher() -> str:
    # A little latency per answer, so that a teaching stage lasts long enough to be killed in the middle.
    with running_server(latency_s=0.2) as url:
        yield url


def _raw(tmp_path: Path, data_dir: Path, url: str, student: Path, name: str) -> dict:
    raw = _config(tmp_path, data_dir, url + "/v1", student, name)
    raw["teacher"]["concurrency"] = CONCURRENCY
    raw["knowdist"]["reviews"]["limit"] = 12
    raw["icldist"]["n_prompts"] = 24
    raw["training"] = {"max_steps": 40, "batch_size": 4, "save_steps": 4, "logging_steps": 1,
                       "save_total_limit": 3}
    raw["bench"] = {"enabled": False}
    raw["finetune"] = {"enabled": False}
    return raw


def _cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-c", "from sentidistill.cli import run; run()", "run", str(cfg)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": SECRET}


def _write(tmp_path: Path, raw: dict) -> Path:
    cfg = tmp_path / f"{raw['name']}.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return cfg


def _run(cfg: Path) -> None:
    res = subprocess.run(_cmd(cfg), capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


def _run_until(cfg: Path, ready: Callable[[], bool]) -> None:
    """Start the run, stop it the moment ``ready()`` holds, then kill -9 it (the whole process group)."""
    proc = subprocess.Popen(_cmd(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None, "the run ended before the kill point"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _stages(run: Path) -> dict:
    if not (run / "manifest.json").exists():
        return {}
    return json.loads((run / "manifest.json").read_text(encoding="utf-8")).get("stages", {})


def _cached(run: Path) -> int:
    from sentidistill.teacher import ResponseCache

    if not (run / "teacher_cache.sqlite").exists():
        return 0
    with ResponseCache(run / "teacher_cache.sqlite") as cache:
        return len(cache)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _losses(folder: Path) -> dict[int, float]:
    state = json.loads((folder / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def _same_result(run: Path, ref: Path) -> None:
    """Same corpora (row for row), the same per-step training losses and the same final students as the
    reference run, up to float noise.

    Measured: a student resumed from a checkpoint ends within ~6e-4 (absolute, per weight) of the
    uninterrupted one after 40 steps; a different data order or a lost optimizer state moves the losses
    of the steps after the resume, which are compared at 1e-3 relative.
    """
    import torch

    for corpus in ("knowdist.parquet", "icl.parquet"):
        assert pq.read_table(run / "corpus" / corpus).to_pylist() == pq.read_table(ref / "corpus" / corpus).to_pylist()
    for stage in ("knowdist", "icldist"):
        a, b = _weights(run / "models" / stage / "final"), _weights(ref / "models" / stage / "final")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=2e-3), (stage, k, float((a[k] - b[k]).abs().max()))
        last = run / "models" / stage / "checkpoints" / "checkpoint-40"
        if last.is_dir():
            got, want = _losses(last), _losses(ref / "models" / stage / "checkpoints" / "checkpoint-40")
            for step, loss in got.items():
                assert loss == pytest.approx(want[step], rel=1e-3), (stage, step)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data_dir: Path, teacher: str, tiny_seq2seq_dir: Path) -> tuple[Path, int]:
    """An uninterrupted run, and how many requests the teacher received for it."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _write(tmp, _raw(tmp, tiny_data_dir, teacher, tiny_seq2seq_dir, "ref"))
    before = server_stats(teacher)["total"]
    _run(cfg)
    return tmp / "runs" / "ref", server_stats(teacher)["total"] - before


def test_kill_during_teaching(tmp_path, tiny_data_dir, teacher, tiny_seq2seq_dir, reference) -> None:
    ref, ref_requests = reference
    cfg = _write(tmp_path, _raw(tmp_path, tiny_data_dir, teacher, tiny_seq2seq_dir, "teach"))
    run = tmp_path / "runs" / "teach"
    start = server_stats(teacher)["total"]
    # Kill once the ICL teaching stage has cached a few answers of its own, well before it ends.
    at_start: list[int] = []

    def ready() -> bool:
        if _stages(run).get("teach_icl", {}).get("status") != "running":
            return False
        if not at_start:
            at_start.append(_cached(run))
        return _cached(run) >= at_start[0] + 4

    _run_until(cfg, ready)
    cached = _cached(run)
    stages = _stages(run)
    assert stages["teach_knowdist"]["status"] == "done" and stages["teach_icl"]["status"] == "running"
    killed_requests = server_stats(teacher)["total"] - start
    assert cached < ref_requests
    _run(cfg)
    resumed_requests = server_stats(teacher)["total"] - start - killed_requests
    # The resumed run asks exactly what was not cached; in all, at most the answers in flight at the kill
    # (concurrency) were paid twice.
    assert resumed_requests == ref_requests - cached
    assert killed_requests + resumed_requests <= ref_requests + CONCURRENCY
    _same_result(run, ref)
    _assert_no_secret(run)


@pytest.mark.parametrize("method", ["knowdist", "icldist"])  # KnowDist is killed in epoch 1, ICLDist in epoch 0
def test_kill_during_training(tmp_path, tiny_data_dir, teacher, tiny_seq2seq_dir, reference, method) -> None:
    from sentidistill.train.engine import last_complete_checkpoint

    ref, ref_requests = reference
    cfg = _write(tmp_path, _raw(tmp_path, tiny_data_dir, teacher, tiny_seq2seq_dir, method))
    run = tmp_path / "runs" / method
    checkpoints = run / "models" / method / "checkpoints"
    start = server_stats(teacher)["total"]
    _run_until(cfg, lambda: last_complete_checkpoint(checkpoints) is not None)
    assert server_stats(teacher)["total"] - start == ref_requests  # teaching finished before the kill
    killed_at = last_complete_checkpoint(checkpoints)
    assert not (run / "models" / method / "final").exists(), "the kill landed after training ended"
    assert _stages(run)[f"train_{method}"]["status"] == "running"
    _run(cfg)
    assert server_stats(teacher)["total"] - start == ref_requests, "the resumed run asked the teacher again"
    info = json.loads((run / "models" / method / "final" / "training_summary.json").read_text())
    assert info["resumed_from"] is not None and Path(info["resumed_from"]).name == killed_at.name
    assert info["global_step"] == 40
    _same_result(run, ref)
    _assert_no_secret(run)
