"""`predict` and `serve` print no third-party warnings by default; `--verbose` shows them.

The CLI runs in a subprocess with a real built-in student (MiniLM encoder-decoder), whose loading makes transformers print
warnings (unsharded layers, progress bars; on the first build also a load report of missing weights).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sentidistill

# What transformers / huggingface_hub / torch print while loading weights.
NOISE = re.compile(r"\[transformers\]|LOAD REPORT|MISSING|UNEXPECTED|Loading weights|it/s\]|Warning|warn",
                   re.IGNORECASE)
CLI = [sys.executable, "-c", "from sentidistill.cli import run; run()"]


def _env() -> dict[str, str]:
    """The test process's environment without the verbosity switches conftest sets, running this tree's code."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "PYTHONWARNINGS")}
    src = str(Path(sentidistill.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if NOISE.search(line)]


def test_predict_is_quiet_by_default_and_verbose_on_request(tmp_path):
    # The small MiniLM test student: what is checked is the CLI's quietness, not the default model.
    args = [*CLI, "predict", "I loved it", "--task", "sentiment", "--model", "builtin:minilm-encdec"]
    # Both at once: each spends most of its ~20 s loading torch and the model.
    procs = [subprocess.Popen(a, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in (args, [*args, "--verbose"])]
    (out_q, err_q), (out_v, err_v) = (p.communicate(timeout=300) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], err_q + err_v
    assert _noise(err_q) == [], err_q
    assert any("[transformers]" in line for line in _noise(err_v)), err_v  # real warnings; --verbose shows them
    assert json.loads(out_q)["task"] == json.loads(out_v)["task"] == "sst2"
    assert json.loads(out_q)["raw"] == json.loads(out_v)["raw"]  # same answer either way


@pytest.mark.slow
def test_serve_is_quiet_by_default_and_verbose_on_request(tmp_path):
    from teacher_server import free_port

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([*CLI, "serve", "builtin:minilm-encdec", "--port", str(free_port()), *extra],
                                cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [start(), start("--verbose")]
    outputs = []
    try:
        for p in procs:
            lines: list[str] = []
            deadline = time.monotonic() + 300
            assert p.stdout is not None
            while time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if "Uvicorn running" in line:
                    break
            outputs.append("".join(lines))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    quiet, verbose = outputs
    assert "Uvicorn running" in quiet and "Uvicorn running" in verbose, quiet + verbose
    assert _noise(quiet) == [], quiet
    assert any("[transformers]" in line for line in _noise(verbose)), verbose
