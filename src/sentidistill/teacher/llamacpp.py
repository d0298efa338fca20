"""A local GGUF teacher: llama-cpp-python's OpenAI-compatible server in a subprocess (``mode: server``).

``kind: llamacpp`` defaults to the in-process backend (``llamacpp_inprocess.py``), which returns top-k
log-probs without ``logits_all`` (far cheaper per prompt). This mode remains for a server that other clients
share. We start ``python -m llama_cpp.server`` on a free loopback port, wait for ``/v1/models``, and talk to
it with the same OpenAI backend as any remote endpoint (so retries, logprobs and caching behave alike).
The server is stopped on ``close()``. Options (``LlamaCppOptions``): ``logits_all`` (needed for
log-probs; costs n_ctx x vocab floats of memory), ``n_gpu_layers``, ``startup_timeout_s``, ``server_args``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from sentidistill.core.assets import resolve_gguf
from sentidistill.core.records import TeacherRequest, TeacherResponse
from sentidistill.teacher.base import FatalBackendError
from sentidistill.teacher.config import TeacherConfig
from sentidistill.teacher.openai_backend import OpenAIBackend

log = logging.getLogger(__name__)
ALIAS = "sentidistill-teacher"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaCppServer:
    """``python -m llama_cpp.server`` for one GGUF file, on 127.0.0.1."""

    def __init__(
        self, gguf: Path, *, n_ctx: int = 4096, n_threads: int | None = None, logits_all: bool = False,
        n_gpu_layers: int = 0, extra_args: list[str] | None = None, startup_timeout_s: float = 300.0,
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise FatalBackendError("the llamacpp teacher needs llama-cpp-python: pip install 'sentidistill[llamacpp]'")
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._log_path = Path(tempfile.mkstemp(prefix="llamacpp-server-", suffix=".log")[1])
        threads = str(n_threads or os.cpu_count() or 1)
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
            # The server defaults n_threads_batch (prompt evaluation) to all cores, whatever n_threads says.
            "--n_threads", threads, "--n_threads_batch", threads, "--n_gpu_layers", str(n_gpu_layers),
        ]
        if logits_all:
            cmd += ["--logits_all", "true"]
        cmd += list(extra_args or [])
        log.info("starting llama.cpp server on port %d for %s", self.port, gguf.name)
        self._log = self._log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait(startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self._log_path.read_text(errors="replace")[-2000:]
                raise FatalBackendError(f"the llama.cpp server exited with {self.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/models", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise FatalBackendError(f"the llama.cpp server did not answer within {timeout:.0f}s (log: {self._log_path})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self._log_path.unlink(missing_ok=True)


class LlamaCppBackend:
    """A GGUF file (or ``builtin:qwen2.5-coder-*``) served locally, queried through ``OpenAIBackend``."""

    def __init__(self, model: str, *, n_ctx: int = 4096, n_threads: int | None = None, timeout_s: float = 600.0,
                 extra: dict[str, Any] | None = None) -> None:
        extra = dict(extra or {})
        gguf = resolve_gguf(model)
        self.model_id = model
        self.server = LlamaCppServer(
            gguf, n_ctx=n_ctx, n_threads=n_threads, logits_all=bool(extra.get("logits_all", False)),
            n_gpu_layers=int(extra.get("n_gpu_layers", 0)), extra_args=extra.get("server_args"),
            startup_timeout_s=float(extra.get("startup_timeout_s", 300)),
        )
        self._client = OpenAIBackend(model, self.server.base_url, api_key_env="SENTIDISTILL_UNUSED_KEY",
                                     timeout_s=timeout_s, served_model=ALIAS)

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> LlamaCppBackend:
        o = cfg.options
        return cls(cfg.model, n_ctx=o.n_ctx, n_threads=o.n_threads, timeout_s=cfg.timeout_s,  # type: ignore[attr-defined]
                   extra=o.model_dump())

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        return await self._client.agenerate_one(request)

    async def aclose(self) -> None:
        await self._client.aclose()

    def close(self) -> None:
        self.server.stop()
