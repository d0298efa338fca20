"""Operations: ``GET /health`` (model, kind, queue length) and ``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    state = request.app.state.server
    return {"status": "ok", "model": state.model_name, "kind": state.engine.kind, "queued": state.engine.queued()}


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.server.metrics.registry), media_type=CONTENT_TYPE_LATEST)
