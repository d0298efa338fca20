"""Run a server app under uvicorn in a background thread (tests, notebooks, benchmarks).

>>> with BackgroundServer(create_app("builtin:minilm-encdec")) as srv:  # doctest: +SKIP
...     OpenAI(base_url=srv.base_url + "/v1", api_key="none").models.list()
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


class BackgroundServer:
    """A real uvicorn server on ``host`` (an ephemeral port by default), started and stopped with ``with``."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 30.0,
                 access_log: bool = False) -> None:
        self.config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                     access_log=access_log)
        self.server = uvicorn.Server(self.config)
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self._thread = threading.Thread(target=self.server.run, name="sentidistill-uvicorn", daemon=True)
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (port in use, or startup failed; see the log)")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
