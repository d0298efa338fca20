"""``sentidistill teach`` end to end: SIGKILL and resume, secrets never written, input errors."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sentidistill.teacher import ResponseCache
from teacher_server import prompt_id, running_server, server_stats

# The teach command alone (python -m sentidistill.teacher.cli): the full app imports every stage (slow).
CLI = [sys.executable, "-m", "sentidistill.teacher.cli"]
# The package entry point (sentidistill.cli:run), independent of how the console script was installed.
FULL_CLI = [sys.executable, "-c", "from sentidistill.cli import run; run()"]


def _write_prompts(path: Path, n: int) -> list[str]:
    texts = [f"review number {i}: the soup was cold" for i in range(n)]
    path.write_text("".join(json.dumps({"id": i, "prompt": t}) + "\n" for i, t in enumerate(texts)))
    return texts


def _teach(url: str, inp: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [*CLI, "teach", "--teacher-kind", "openai", "--base-url", url + "/v1", "--model", "echo",
            "--input", str(inp), "--output", str(out), "--cache", str(cache), "--no-progress", *extra]


def test_sigkill_mid_run_then_resume_sends_nothing_twice(tmp_path: Path) -> None:
    inp, out, cache_path = tmp_path / "p.jsonl", tmp_path / "a.jsonl", tmp_path / "c.sqlite"
    texts = _write_prompts(inp, 24)
    with running_server(latency_s=0.25) as url:
        proc = subprocess.Popen(_teach(url, inp, out, cache_path, "--concurrency", "2"))
        deadline = time.monotonic() + 120

        def ready() -> bool:
            if not cache_path.exists():
                return False
            with ResponseCache(cache_path) as c:
                return len(c) >= 6

        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, "no 6 answers cached"
            time.sleep(0.02)
        # Stopped the moment 6 answers are cached (however slow the machine), then killed: the kill point
        # is what the run did, not a time.
        os.kill(proc.pid, signal.SIGSTOP)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not out.exists()  # killed before the end
        with ResponseCache(cache_path) as c:
            cached = {r["messages"][0]["content"] for r in c.iter_rows()}
        assert 6 <= len(cached) < 24
        before = server_stats(url)["by_prompt"]
        res = subprocess.run(_teach(url, inp, out, cache_path, "--concurrency", "4"), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        after = server_stats(url)["by_prompt"]
    for t in texts:
        pid = prompt_id([{"role": "user", "content": t}])
        if t in cached:
            assert after[pid] == before[pid], f"{t!r} was cached but sent again"
        else:
            assert after.get(pid, 0) - before.get(pid, 0) == 1
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(24))
    assert [r["text"] for r in rows] == ["echo: " + t for t in texts]
    assert sum(r["cached"] for r in rows) == len(cached)
    assert f"{len(cached)} cached" in res.stdout


def test_api_key_never_written(tmp_path: Path) -> None:
    secret = "sk-" + secrets.token_hex(24)
    inp, out, cache_path = tmp_path / "p.jsonl", tmp_path / "a.jsonl", tmp_path / "c.sqlite"
    _write_prompts(inp, 5)
    env = {**os.environ, "SENTIDISTILL_TEST_KEY": secret}
    with running_server() as url:
        for export in ("e.jsonl", "e.parquet"):
            res = subprocess.run(
                [*CLI, "-v", *_teach(url, inp, out, cache_path, "--api-key-env", "SENTIDISTILL_TEST_KEY",
                                     "--logprobs", "2", "--export", str(tmp_path / export))[len(CLI):]],
                capture_output=True, env=env,
            )
            assert res.returncode == 0, res.stderr
            (tmp_path / f"log-{export}.txt").write_bytes(res.stdout + res.stderr)
        # The key really was used: the server saw it.
        assert server_stats(url)["auth_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {"c.sqlite", "a.jsonl", "e.jsonl", "e.parquet"} <= {p.name for p in files}
    for p in files:
        data = p.read_bytes()
        assert secret.encode() not in data and secret[3:].encode() not in data, p


def test_bad_input_line_is_named(tmp_path: Path) -> None:
    inp = tmp_path / "p.jsonl"
    inp.write_text('{"prompt": "ok"}\n{"messages": "not a list"}\n')
    # Through the real `sentidistill` app: the command is registered and user errors exit 2, no traceback.
    args = _teach("http://127.0.0.1:9", inp, tmp_path / "o.jsonl", tmp_path / "c.sqlite")[len(CLI):]
    res = subprocess.run([*FULL_CLI, *args], capture_output=True, text=True)
    err = " ".join(res.stderr.split())  # rich wraps long lines
    assert res.returncode == 2
    assert "line 2, field 'messages'" in err and "Traceback" not in err


@pytest.mark.parametrize("row", ['{"text": "no prompt"}', "[1, 2]"])
def test_rows_without_prompt_rejected(tmp_path: Path, row: str) -> None:
    inp = tmp_path / "p.jsonl"
    inp.write_text(row + "\n")
    res = subprocess.run(_teach("http://127.0.0.1:9", inp, tmp_path / "o.jsonl", tmp_path / "c.sqlite"),
                         capture_output=True, text=True)
    assert res.returncode == 2 and "line 1" in " ".join(res.stderr.split())
