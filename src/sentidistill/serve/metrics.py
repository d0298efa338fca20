"""The server's Prometheus metrics and its outermost ASGI middleware (body-size guard + request metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from sentidistill.serve.http_errors import error_response


def replayed_receive(body: bytes, receive: Any) -> Any:
    """An ASGI ``receive`` that first gives the app ``body`` (already read from the client) as one
    ``http.request`` message, then defers to the real ``receive`` (for disconnects)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

class ServerMetrics:
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
        """The engines' per-batch callback (called on the worker thread)."""
        self.batch_size.observe(size)
        self.batch_latency.observe(seconds)


class GuardMiddleware:
    """Pure ASGI: rejects bodies over the byte limit (413) before parsing, and records request metrics
    (``endpoint`` is the route's path, or ``other`` for unknown paths)."""

    def __init__(self, app: Any, *, max_body_bytes: int, metrics: ServerMetrics, endpoints: set[str]) -> None:
        self.app, self.max_body_bytes, self.metrics, self.endpoints = app, max_body_bytes, metrics, endpoints
        self._children: dict[str, tuple[Any, Any]] = {}

    def _series(self, endpoint: str, status: int) -> tuple[Any, Any]:
        """The (counter, histogram) children of one label set, looked up once (``labels()`` costs a lock
        and a dict build per call)."""
        key = f"{endpoint} {status}"
        found = self._children.get(key)
        if found is None:
            found = (self.metrics.requests.labels(endpoint, str(status)), self.metrics.latency.labels(endpoint))
            self._children[key] = found
        return found

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Unknown paths share one label so that scanners cannot blow up the metric's cardinality.
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            body_receive = await self._buffer_body(scope, receive)
            if body_receive is None:
                await error_response(413, f"request body exceeds {self.max_body_bytes} bytes", param=None,
                                     code="request_too_large")(scope, receive, send_wrapper)
            else:
                await self.app(scope, body_receive, send_wrapper)
        finally:
            count, latency = self._series(endpoint, status)
            count.inc()
            latency.observe(time.perf_counter() - t0)

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
        return replayed_receive(b"".join(chunks), receive)
