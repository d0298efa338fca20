"""The FastAPI server: OpenAI-compatible completions over the student, a task endpoint, health and metrics.

Every bad input gets a 4xx JSON body in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``;
only a bug in the server itself can produce a 500.

>>> app = create_app("builtin:minilm-encdec", max_batch_size=32)  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentidistill.errors import InputError
from sentidistill.serve.batcher import OverloadedError
from sentidistill.serve.engine import GenerationEngine, GenParams
from sentidistill.serve.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    AnalyzeResult,
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatTokenLogprob,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    TopLogprob,
    UsageInfo,
)
from sentidistill.serve.tasks import (
    build_prompts,
    default_max_tokens,
    jsonable_prediction,
    make_row,
    resolve_task,
)

log = logging.getLogger(__name__)


@dataclass
class ServeLimits:
    """Guards against oversized or slow requests (all enforced before any model work)."""

    max_texts: int = 64  # texts per /v1/analyze request, prompts per /v1/completions request
    max_chars: int = 8000  # characters per text, prompt or message
    max_body_bytes: int = 1 << 20
    max_tokens: int = 512  # ceiling on max_tokens a client may ask for
    request_timeout_s: float = 60.0


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


class _Metrics:
    """Prometheus metrics in a registry of this app's own (several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sentidistill_requests", "HTTP requests by endpoint and status.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("sentidistill_request_latency_seconds", "HTTP request latency.", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.batch_size = Histogram("sentidistill_batch_size", "Requests per generate() batch.",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_latency = Histogram("sentidistill_batch_latency_seconds", "Seconds per generate() batch.",
                                       registry=self.registry)
        self.tokens = Counter("sentidistill_generated_tokens", "Completion tokens generated.",
                              registry=self.registry)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)


class _GuardMiddleware:
    """Pure ASGI: rejects bodies over the byte limit (413) before parsing, and records request metrics."""

    def __init__(self, app: Any, *, max_body_bytes: int, metrics: _Metrics, endpoints: set[str]) -> None:
        self.app, self.max_body_bytes, self.metrics, self.endpoints = app, max_body_bytes, metrics, endpoints

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label so that scanners cannot blow up the metric's cardinality.
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            body_receive = await self._buffer_body(scope, receive)
            if body_receive is None:
                await _error(413, f"request body exceeds {self.max_body_bytes} bytes", param=None,
                             code="request_too_large")(scope, receive, send_wrapper)
            else:
                await self.app(scope, body_receive, send_wrapper)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _buffer_body(self, scope: dict, receive: Callable) -> Callable | None:
        """Read the whole body (JSON requests are small) up to the limit; None when it is over."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        return None
                except ValueError:
                    pass
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def create_app(
    model_spec: str,
    *,
    served_model_name: str | None = None,
    engine: GenerationEngine | None = None,
    device: str | None = None,
    max_batch_size: int = 16,
    batch_wait_ms: float = 5.0,
    max_queue: int = 1024,
    limits: ServeLimits | None = None,
    prompt_style: str = "plain",
    backend: str = "torch",
    int8: bool = False,
    **limit_overrides: Any,
) -> FastAPI:
    """The server app for one model (an HF id/path, ``builtin:minilm-encdec``, or an ONNX export dir).

    A ``classifier`` student (checkpoint or ONNX export) is served by a
    :class:`~sentidistill.serve.classify.ClassifierEngine`: /v1/analyze answers with class probabilities,
    /v1/completions and /v1/chat/completions answer 400 (it does not generate). ``int8``: the ONNX
    export's quantised graph(s).

    ``limit_overrides`` set :class:`ServeLimits` fields by name (``max_texts=8``, ``request_timeout_s=5``...).
    """
    limits = limits or ServeLimits()
    for k, v in limit_overrides.items():
        if not hasattr(limits, k):
            raise InputError(f"unknown option '{k}'", field=k, expected=", ".join(vars(ServeLimits())))
        setattr(limits, k, v)
    metrics = _Metrics()
    if backend == "torch" and (Path(model_spec) / "sentidistill_onnx.json").is_file():
        backend = "onnx"  # an export-onnx folder holds no PyTorch weights
    if engine is None:
        from sentidistill.serve.classify import classifier_engine

        engine = classifier_engine(model_spec, backend=backend, int8=int8, device=device,  # type: ignore[assignment]
                                   max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, max_queue=max_queue)
    if engine is None:
        if backend == "onnx":
            from sentidistill.serve.onnx import OnnxGenerationEngine

            engine = OnnxGenerationEngine.from_dir(model_spec, int8=int8, max_batch_size=max_batch_size,
                                                   batch_wait_ms=batch_wait_ms, max_queue=max_queue,
                                                   on_batch=metrics.on_batch)
        elif backend == "torch":
            engine = GenerationEngine.from_spec(model_spec, device=device, max_batch_size=max_batch_size,
                                                batch_wait_ms=batch_wait_ms, max_queue=max_queue,
                                                on_batch=metrics.on_batch)
        else:
            raise InputError(f"unknown backend '{backend}'", field="backend", expected="torch | onnx")
    else:
        engine.on_batch = metrics.on_batch
    model_name = served_model_name or model_spec
    accepted_names = {model_name, model_spec}
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        engine.close()

    app = FastAPI(
        title="sentidistill student server",
        version="1",
        description="OpenAI-compatible completions over a distilled sentiment student, plus /v1/analyze.",
        lifespan=lifespan,
        responses={400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
    )
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.limits = limits
    app.state.model_name = model_name

    # -- errors --------------------------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error(400, str(exc), param=exc.field, code="invalid_value")

    @app.exception_handler(OverloadedError)
    async def _overloaded(_: Request, exc: OverloadedError) -> JSONResponse:
        return _error(503, str(exc), "server_overloaded", code="overloaded")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": "invalid"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return _error(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}",
                          code="invalid_json")
        msg = first.get("msg", "invalid value")
        where = ".".join(loc)
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return _error(400, f"{where + ': ' if where else ''}{msg}{more}", param=where or None,
                      code=str(first.get("type", "invalid_value")))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, str(exc.detail), code=codes.get(exc.status_code))

    # -- helpers -------------------------------------------------------------------------------------

    def check_supported(req: ChatCompletionRequest | CompletionRequest) -> None:
        found = req.unsupported()
        if found:
            raise APIError(400, found[1], param=found[0], code="unsupported_parameter")

    def check_model(name: str) -> None:
        if name not in accepted_names:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{model_name}'.",
                           param="model", code="model_not_found")
        if engine.kind == "classifier":
            from sentidistill.serve.classify import generation_refused

            raise APIError(400, generation_refused(model_name), param="model", code="model_does_not_generate")

    def check_chars(text: str, param: str) -> None:
        if len(text) > limits.max_chars:
            raise APIError(400, f"{param} has {len(text)} characters; the limit is {limits.max_chars}",
                           param=param, code="string_too_long")

    def clamp_tokens(n: int | None, default: int, param: str = "max_tokens") -> int:
        n = default if n is None else n
        if n > limits.max_tokens:
            raise APIError(400, f"{param} is {n}; this server allows at most {limits.max_tokens}",
                           param=param, code="max_tokens_too_large")
        return n

    def encode_checked(prompts: list[Any], max_tokens: int, param: str) -> list[list[int]]:
        """Token ids of each prompt; one that leaves no room for ``max_tokens`` is a 400 naming it."""
        id_lists = []
        for i, p in enumerate(prompts):
            ids = engine.encode_prompt(p)
            try:
                engine.check_length(len(ids), max_tokens)
            except InputError as exc:
                raise APIError(400, str(exc), param=f"{param}.{i}", code="context_length_exceeded") from None
            id_lists.append(ids)
        return id_lists

    async def run_all(jobs: list[tuple[list[int], GenParams]]) -> list[Any]:
        """Submit every job before awaiting any (so they batch, also with other requests' jobs) and
        await all of them under the per-request timeout."""
        futures = [engine.submit(ids, p) for ids, p in jobs]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)),
                                               timeout=limits.request_timeout_s))
        except TimeoutError:
            for f in futures:
                f.cancel()  # jobs still queued are skipped by the worker
            raise APIError(504, f"the request took longer than {limits.request_timeout_s} s", "timeout",
                           code="timeout") from None

    def usage(gens: list[Any], prompt_counted: list[Any] | None = None) -> UsageInfo:
        src = prompt_counted if prompt_counted is not None else gens
        p = sum(g.prompt_tokens for g in src)
        c = sum(g.completion_tokens for g in gens)
        metrics.tokens.inc(c)
        return UsageInfo(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)

    def seeded(params: GenParams, i: int) -> GenParams:
        """The i-th of n samples: a distinct seed so that n > 1 gives n different samples."""
        if i == 0 or params.temperature <= 0:
            return params
        seed = None if params.seed is None else params.seed + i
        return GenParams(**{**params.__dict__, "seed": seed})

    # -- OpenAI endpoints ----------------------------------------------------------------------------

    @app.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=model_name, created=created)])

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(req: ChatCompletionRequest) -> Any:
        check_model(req.model)
        check_supported(req)
        if req.top_logprobs and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        messages = []
        for i, m in enumerate(req.messages):
            text = m.text()
            check_chars(text, f"messages.{i}.content")
            # 'developer' is OpenAI's new name for 'system'; the student's template knows 'system'.
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        params = GenParams(
            max_tokens=clamp_tokens(req.max_completion_tokens or req.max_tokens, min(256, limits.max_tokens)),
            temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=req.stop_tuple(),
            logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0,
        )
        ids = engine.encode_prompt(messages)
        engine.check_length(len(ids), params.max_tokens)
        gens = await run_all([(ids, seeded(params, i)) for i in range(req.n)])
        choices = []
        for i, g in enumerate(gens):
            lp = None
            if req.logprobs:
                lp = ChoiceLogprobs(content=[
                    ChatTokenLogprob(
                        token=t.token, logprob=t.logprob, bytes=list(t.token.encode("utf-8")),
                        top_logprobs=[TopLogprob(token=a, logprob=v, bytes=list(a.encode("utf-8")))
                                      for a, v in t.top],
                    ) for t in g.logprobs or []
                ])
            choices.append(ChatChoice(index=i, message=AssistantMessage(content=g.text),
                                      finish_reason=g.finish_reason, logprobs=lp))
        resp = ChatCompletionResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                                      model=model_name, choices=choices, usage=usage(gens, gens[:1]))
        if req.stream:
            return _sse_chat(resp, include_usage=req.include_usage())
        return resp

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(req: CompletionRequest) -> Any:
        check_model(req.model)
        check_supported(req)
        if req.echo:
            raise APIError(400, "echo is not supported", param="echo", code="unsupported")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise APIError(400, "prompt is an empty list", param="prompt")
        if len(prompts) * req.n > limits.max_texts:
            raise APIError(400, f"{len(prompts)} prompts x n={req.n}; the limit is {limits.max_texts}",
                           param="prompt", code="too_many_prompts")
        for i, p in enumerate(prompts):
            check_chars(p, f"prompt.{i}" if len(prompts) > 1 else "prompt")
            if not p:
                raise APIError(400, "empty prompt", param="prompt", code="empty_prompt")
        k = req.logprobs
        params = GenParams(max_tokens=clamp_tokens(req.max_tokens, 16), temperature=req.temperature,
                           top_p=req.top_p, seed=req.seed, stop=req.stop_tuple(),
                           logprobs=k is not None, top_logprobs=k or 0)
        id_lists = encode_checked(prompts, params.max_tokens, "prompt")
        # Prompts of one request (and their n samples) batch together.
        results = await run_all([(ids, seeded(params, j)) for ids in id_lists for j in range(req.n)])
        choices = []
        for i, g in enumerate(results):
            lp = None
            if k is not None:
                offsets, pos = [], 0
                for t in g.logprobs or []:
                    offsets.append(pos)
                    pos += len(t.token)
                lp = CompletionLogprobs(
                    tokens=[t.token for t in g.logprobs or []],
                    token_logprobs=[t.logprob for t in g.logprobs or []],
                    top_logprobs=[dict(t.top) for t in g.logprobs or []] if k else None,
                    text_offset=offsets,
                )
            choices.append(CompletionChoice(index=i, text=g.text, finish_reason=g.finish_reason, logprobs=lp))
        firsts = results[:: req.n]
        out = CompletionResponse(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_name,
                                 choices=choices, usage=usage(list(results), list(firsts)))
        if req.stream:
            return _sse_completion(out, include_usage=req.include_usage())
        return out

    # -- task endpoint -------------------------------------------------------------------------------

    @app.post("/v1/analyze", response_model=AnalyzeResponse)
    async def analyze(req: AnalyzeRequest) -> AnalyzeResponse:
        if engine.kind == "classifier":
            from sentidistill.serve.classify import analyze_request

            return await analyze_request(engine, req, limits=limits, model_name=model_name,  # type: ignore[arg-type]
                                          api_error=APIError)
        if len(req.texts) > limits.max_texts:
            raise APIError(400, f"{len(req.texts)} texts; the limit is {limits.max_texts} per request",
                           param="texts", code="too_many_texts")
        task = resolve_task(req.task)
        rows = []
        for i, item in enumerate(req.texts):
            row = make_row(item if isinstance(item, str) else item.model_dump(), i)
            check_chars(row["text"], f"texts.{i}")
            rows.append(row)
        demos = []
        for i, s in enumerate(req.shots or []):
            check_chars(s.text, f"shots.{i}.text")
            demo = s.model_dump()
            try:
                task.answer_text(demo)  # an unknown label in a shot is the client's error
            except (KeyError, TypeError, ValueError) as exc:
                raise APIError(400, f"shot {i} has an invalid gold answer for task '{task.name}': {exc}",
                               param=f"shots.{i}.gold") from None
            demos.append(demo)
        prompts = build_prompts(task, rows, demos, style=req.style or prompt_style)
        params = GenParams(max_tokens=clamp_tokens(req.max_tokens, min(default_max_tokens(task), limits.max_tokens)))
        id_lists = encode_checked(prompts, params.max_tokens, "texts")
        gens = await run_all([(ids, params) for ids in id_lists])
        results = []
        for row, g in zip(rows, gens, strict=True):
            pred = task.parse(g.text)
            results.append(AnalyzeResult(text=row["text"], prediction=jsonable_prediction(pred),
                                         valid=pred is not None, raw=g.text, finish_reason=g.finish_reason))
        return AnalyzeResponse(task=task.name, model=model_name, results=results, usage=usage(gens))

    @app.get("/v1/tasks")
    async def tasks() -> dict[str, Any]:
        from sentidistill.serve.tasks import TASK_ALIASES, builtin_task_names

        return {"aliases": TASK_ALIASES, "tasks": builtin_task_names()}

    # -- operations ----------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "kind": engine.kind, "queued": engine.queued()}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    endpoints = {r.path for r in app.routes if hasattr(r, "path")}
    app.add_middleware(_GuardMiddleware, max_body_bytes=limits.max_body_bytes, metrics=metrics,
                       endpoints=endpoints)
    return app


def _sse_chat(resp: ChatCompletionResponse, include_usage: bool = False) -> StreamingResponse:
    """Server-sent events in OpenAI's chunk format. The answer is generated whole first (batching
    matters more than time-to-first-token for short sentiment answers), then sent as chunks."""

    def chunk(choice_delta: dict[str, Any], finish: str | None, index: int, logprobs: Any = None) -> str:
        body = {"id": resp.id, "object": "chat.completion.chunk", "created": resp.created, "model": resp.model,
                "choices": [{"index": index, "delta": choice_delta, "finish_reason": finish,
                             "logprobs": logprobs}]}
        return f"data: {json.dumps(body)}\n\n"

    async def events() -> Any:
        for c in resp.choices:
            yield chunk({"role": "assistant", "content": ""}, None, c.index)
            yield chunk({"content": c.message.content}, None, c.index,
                        c.logprobs.model_dump() if c.logprobs else None)
            yield chunk({}, c.finish_reason, c.index)
        if include_usage:  # stream_options.include_usage: a last chunk with no choices and the usage
            body = {"id": resp.id, "object": "chat.completion.chunk", "created": resp.created, "model": resp.model,
                    "choices": [], "usage": resp.usage.model_dump()}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _sse_completion(resp: CompletionResponse, include_usage: bool = False) -> StreamingResponse:
    """Server-sent events for /v1/completions (``stream: true``), generated whole first like the chat route."""

    def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"id": resp.id, "object": "text_completion", "created": resp.created,
                                "model": resp.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    async def events() -> Any:
        for c in resp.choices:
            yield event([{"index": c.index, "text": c.text, "finish_reason": None,
                          "logprobs": c.logprobs.model_dump() if c.logprobs else None}])
            yield event([{"index": c.index, "text": "", "finish_reason": c.finish_reason, "logprobs": None}])
        if include_usage:
            yield event([], resp.usage.model_dump())
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")

