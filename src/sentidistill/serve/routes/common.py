"""Helpers the route modules share: limits checks, awaiting the engine's futures, fast JSON responses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from sentidistill.serve.batcher import gather_within
from sentidistill.serve.http_errors import APIError
from sentidistill.serve.state import ServerState


def json_response(model: BaseModel) -> Response:
    """``model`` serialised once by pydantic-core (Rust), skipping FastAPI's re-validation against the
    route's ``response_model`` and its ``jsonable_encoder`` + ``json.dumps`` pass (the route still declares
    ``response_model`` for the OpenAPI schema)."""
    return Response(content=model.model_dump_json(), media_type="application/json")


def check_chars(state: ServerState, text: str, param: str) -> None:
    """400 ``string_too_long`` when ``text`` is over ``limits.max_chars``."""
    if len(text) > state.limits.max_chars:
        raise APIError(400, f"{param} has {len(text)} characters; the limit is {state.limits.max_chars}",
                       param=param, code="string_too_long")


def check_count(state: ServerState, n: int) -> None:
    """400 ``too_many_texts`` when a request has more than ``limits.max_texts`` texts (exactly
    ``max_texts`` is allowed)."""
    if n > state.limits.max_texts:
        raise APIError(400, f"{n} texts; the limit is {state.limits.max_texts} per request",
                       param="texts", code="too_many_texts")


async def await_all(state: ServerState, futures: Sequence[asyncio.Future]) -> list[Any]:
    """The results of one request's futures, in order; a 504 past ``limits.request_timeout_s`` (the
    futures are cancelled, so the worker skips those still queued)."""
    out = await gather_within(futures, state.limits.request_timeout_s)
    if out is None:
        raise APIError(504, f"the request took longer than {state.limits.request_timeout_s} s", "timeout",
                       code="timeout")
    return out
