"""Issue 22.1, serving at engine speed: what the speed work must not break (behaviour, never time).

* A burst of concurrent one-text /v1/analyze requests is answered in full, each with its own text's answer
  (the batcher hands a whole batch's results back to the event loop at once: a mix-up would show here), and
  the requests really shared batches.
* The access log (one line per request) is off by default and on with ``--access-log``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer
from sentidistill.serve.predict import predict
from sentidistill.testing import build_tiny_classifier

TASKS = [{"name": "sst2", "labels": ["negative", "positive"]}]
WORDS = ["great", "awful", "lovely", "bad", "fine", "cold", "the food", "our visit", "this phone", "that movie"]


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("burst") / "clf", tasks=TASKS)


def _texts(n: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]} number {i}" for i in range(n)]


def test_a_burst_of_concurrent_requests_is_answered_in_full_and_in_order(clf: Path) -> None:
    texts = _texts(96)
    expected = predict(texts, task="sentiment", model=str(clf))
    app = create_app(str(clf), served_model_name="clf", max_batch_size=32, max_texts=4)
    with BackgroundServer(app) as srv:

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=96)
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=120, limits=limits) as http:
                return list(await asyncio.gather(*(
                    http.post("/v1/analyze", json={"task": "sentiment", "texts": [t]}) for t in texts)))

        responses = asyncio.run(burst())
        assert [r.status_code for r in responses] == [200] * len(texts)
        for r, text, want in zip(responses, texts, expected, strict=True):
            got = r.json()["results"][0]
            assert got["text"] == text and got["prediction"] == want["prediction"]
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-5)
        # A two-text request next to one-text ones: its answers stay in its own order.
        r = httpx.post(srv.base_url + "/v1/analyze", json={"task": "sentiment", "texts": texts[5:7]}, timeout=60)
        assert [x["text"] for x in r.json()["results"]] == texts[5:7]
        metrics = httpx.get(srv.base_url + "/metrics", timeout=30).text
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("sentidistill_batch_size_")}
    assert values["sentidistill_batch_size_sum"] == len(texts) + 2
    assert values["sentidistill_batch_size_count"] < len(texts)  # concurrent requests shared batches


def _served_with(clf: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> dict:
    """The keyword arguments ``sentidistill serve MODEL *flags`` passes to ``uvicorn.run`` (not started: the
    app's engine is closed by the server that :func:`_access_lines` runs)."""
    import uvicorn
    from typer.testing import CliRunner

    from sentidistill.cli import app

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: seen.update(kw, app=asgi))
    out = CliRunner().invoke(app, ["serve", str(clf), "--port", "0", "--verbose", *flags])
    assert out.exit_code == 0, out.output
    return seen


def _access_lines(options: dict) -> list[str]:
    """Run a real server with ``options`` (what the CLI passes to uvicorn), send two requests, and return the
    lines of the ``uvicorn.access`` logger (a handler of ours on it: uvicorn drops the logger's handlers when
    the access log is off, and logs to it when it is on)."""
    import logging

    import uvicorn

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    access = logging.getLogger("uvicorn.access")
    saved = access.handlers[:], access.level, access.propagate
    access.handlers, access.propagate = [Collect()], False
    access.setLevel(logging.INFO)
    app = options.pop("app")
    server = uvicorn.Server(uvicorn.Config(app, **{**options, "port": 0, "log_config": None}))
    thread = threading.Thread(target=server.run, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        assert httpx.post(url + "/v1/analyze", json={"task": "sentiment", "texts": ["great food"]},
                          timeout=60).status_code == 200
        assert httpx.get(url + "/health", timeout=30).status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)
        access.handlers, access.level, access.propagate = saved
    return lines


def test_access_log_is_off_by_default_and_on_with_the_flag(clf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = _served_with(clf, monkeypatch)
    assert default["access_log"] is False
    assert _access_lines(default) == []
    on = _served_with(clf, monkeypatch, "--access-log")
    assert on["access_log"] is True
    lines = _access_lines(on)
    assert any("POST /v1/analyze" in line and "200" in line for line in lines), lines
