"""What the route modules share: the request limits and the per-app state kept on ``app.state.server``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from sentidistill.serve.metrics import ServerMetrics


@dataclass
class ServeLimits:
    """Guards against oversized or slow requests (all enforced before any model work)."""

    max_texts: int = 64  # texts per /v1/analyze request, prompts per /v1/completions request
    max_chars: int = 8000  # characters per text, prompt or message
    max_body_bytes: int = 1 << 20
    max_tokens: int = 512  # ceiling on max_tokens a client may ask for
    request_timeout_s: float = 60.0


@dataclass
class ServerState:
    """One app's engine, limits, metrics and names (``app.state.server``; read by every route)."""

    engine: Any  # GenerationEngine | ClassifierEngine
    limits: ServeLimits
    metrics: ServerMetrics
    model_name: str
    accepted_names: set[str]
    prompt_style: str = "plain"
    created: int = field(default_factory=lambda: int(time.time()))


def server_state(request: Request) -> ServerState:
    """The :class:`ServerState` of the app serving ``request`` (a FastAPI dependency)."""
    return request.app.state.server
