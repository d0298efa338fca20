"""The FastAPI server: OpenAI-compatible completions over the student, a task endpoint, health and metrics.

The app is assembled here from its parts: the engine (:func:`open_engine`), the routes
(:mod:`sentidistill.serve.routes`: one ``APIRouter`` each for the OpenAI routes, /v1/analyze and the
operations routes), the error mapping (:mod:`sentidistill.serve.http_errors`: every bad input gets a 4xx JSON
body in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``; only a bug in the server itself
can produce a 500, and that one is JSON too) and the body-size guard + metrics middleware
(:mod:`sentidistill.serve.metrics`). What the routes share lives on ``app.state.server``
(:class:`~sentidistill.serve.state.ServerState`).

>>> app = create_app("builtin:minilm-encdec", max_batch_size=32)  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from sentidistill.errors import InputError
from sentidistill.serve.engine import GenerationEngine
from sentidistill.serve.http_errors import APIError, install_error_handlers
from sentidistill.serve.metrics import GuardMiddleware, ServerMetrics
from sentidistill.serve.routes import analyze, openai, ops
from sentidistill.serve.schemas import ErrorResponse
from sentidistill.serve.state import ServeLimits, ServerState

__all__ = ["APIError", "ServeLimits", "create_app", "open_engine"]


def open_engine(model_spec: str, *, backend: str = "torch", int8: bool = False, device: str | None = None,
                max_batch_size: int = 16, batch_wait_ms: float = 0.0, max_queue: int = 1024,
                on_batch: Callable[[int, float], None] | None = None) -> Any:
    """The serving engine for ``model_spec``: a classifier student (checkpoint or ONNX export) gets a
    :class:`~sentidistill.serve.classify.ClassifierEngine`, an ONNX export of a generating student an
    :class:`~sentidistill.serve.onnx.OnnxGenerationEngine`, anything else a :class:`GenerationEngine`.
    An export-onnx folder is served by onnxruntime whatever ``backend`` says (it holds no PyTorch weights).
    Raises ``InputError`` for an unknown backend."""
    from sentidistill.serve.classify import classifier_engine
    from sentidistill.serve.onnx import META_FILE

    if backend == "torch" and (Path(model_spec) / META_FILE).is_file():
        backend = "onnx"
    options = dict(max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, max_queue=max_queue)
    engine = classifier_engine(model_spec, backend=backend, int8=int8, device=device, on_batch=on_batch, **options)
    if engine is not None:
        return engine
    if backend == "onnx":
        from sentidistill.serve.onnx import OnnxGenerationEngine

        return OnnxGenerationEngine.from_dir(model_spec, int8=int8, on_batch=on_batch, **options)
    if backend == "torch":
        return GenerationEngine.from_spec(model_spec, device=device, on_batch=on_batch, **options)
    raise InputError(f"unknown backend '{backend}'", field="backend", expected="torch | onnx")


def create_app(
    model_spec: str,
    *,
    served_model_name: str | None = None,
    engine: Any = None,
    device: str | None = None,
    max_batch_size: int = 16,
    batch_wait_ms: float = 0.0,
    max_queue: int = 1024,
    limits: ServeLimits | None = None,
    prompt_style: str = "plain",
    backend: str = "torch",
    int8: bool = False,
    **limit_overrides: Any,
) -> FastAPI:
    """The server app for one model (an HF id/path, ``builtin:minilm-encdec``, a classifier student, or an
    ONNX export dir; see :func:`open_engine`), or for an ``engine`` already open.

    A ``classifier`` student answers /v1/analyze with class probabilities and /v1/completions and
    /v1/chat/completions with a 400 (it does not generate). ``int8``: the ONNX export's quantised graph(s).
    ``batch_wait_ms``: how long a batch that is not full may wait for more texts after its first (0: none;
    batches still form from what queues while the previous one runs, see :mod:`sentidistill.serve.batcher`).
    ``limit_overrides`` set :class:`ServeLimits` fields by name (``max_texts=8``, ``request_timeout_s=5``...);
    an unknown name is an ``InputError``.
    """
    limits = limits or ServeLimits()
    for k, v in limit_overrides.items():
        if not hasattr(limits, k):
            raise InputError(f"unknown option '{k}'", field=k, expected=", ".join(vars(ServeLimits())))
        setattr(limits, k, v)
    metrics = ServerMetrics()
    if engine is None:
        engine = open_engine(model_spec, backend=backend, int8=int8, device=device, max_batch_size=max_batch_size,
                             batch_wait_ms=batch_wait_ms, max_queue=max_queue, on_batch=metrics.on_batch)
    else:
        engine.on_batch = metrics.on_batch
    model_name = served_model_name or model_spec
    state = ServerState(engine=engine, limits=limits, metrics=metrics, model_name=model_name,
                        accepted_names={model_name, model_spec}, prompt_style=prompt_style)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        from sentidistill.serve.tasks import builtin_task_names

        builtin_task_names()  # read the task registry (~0.3 s of YAML) now, not in the first request
        yield
        engine.close()

    app = FastAPI(
        title="sentidistill student server",
        version="1",
        description="OpenAI-compatible completions over a distilled sentiment student, plus /v1/analyze.",
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
    )
    app.state.server = state
    app.state.engine, app.state.metrics, app.state.limits, app.state.model_name = engine, metrics, limits, model_name
    routers = [openai.router, analyze.router, ops.router]
    for router in routers:
        app.include_router(router)
    install_error_handlers(app)
    # The metric's endpoint labels: every route's path (FastAPI may keep an included router as one entry).
    endpoints = {getattr(r, "path", None) for rt in (app, *routers) for r in rt.routes} - {None}
    app.add_middleware(analyze.AnalyzeFastPath, state=state)  # inside the guard (added last = outermost)
    app.add_middleware(GuardMiddleware, max_body_bytes=limits.max_body_bytes, metrics=metrics, endpoints=endpoints)
    return app
