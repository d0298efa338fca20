"""The server's error mapping, in one place: every exception a request can raise -> a JSON body in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``, with its status.

=====================================  ======  ===========================================================
exception                              status  ``code``
=====================================  ======  ===========================================================
:class:`APIError`                      its own its own (400 bad value, 404 unknown model, 504 timeout...)
:class:`~sentidistill.errors.InputError`  400  ``invalid_value``; ``param`` = the error's field
:class:`~sentidistill.serve.batcher.OverloadedError`  503  ``overloaded``
``RequestValidationError`` (pydantic)  400     the pydantic error type (``invalid_json`` for a malformed
                                               body, ``invalid_text`` for a lone UTF-16 surrogate...);
                                               ``param`` = the field's path, e.g. ``texts.0``
Starlette ``HTTPException``            its own ``not_found`` (404), ``method_not_allowed`` (405)
any other exception (a server bug)     500     ``internal_error`` (JSON, never a bare text/plain page)
=====================================  ======  ===========================================================
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentidistill.errors import InputError
from sentidistill.serve.batcher import OverloadedError

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error answered in OpenAI's shape with HTTP ``status`` (raised by the route handlers)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    """The JSON error response: ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc.status, exc.message, exc.type, exc.param, exc.code)


async def _input_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    return error_response(400, str(exc), param=exc.field, code="invalid_value")


async def _overloaded(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc), "server_overloaded", code="overloaded")


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": "invalid"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return error_response(400, f"malformed JSON body: {first.get('ctx', {}).get('error', first['msg'])}",
                              code="invalid_json")
    ctx = first.get("ctx") or {}
    if "path" in ctx:  # errors found by a whole-body check name the field themselves (e.g. texts.0)
        loc = [str(ctx["path"])]
    msg = first.get("msg", "invalid value")
    where = ".".join(loc)
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return error_response(400, f"{where + ': ' if where else ''}{msg}{more}", param=where or None,
                          code=str(first.get("type", "invalid_value")))


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, str(exc.detail), code=codes.get(exc.status_code))


async def _internal(_: Request, exc: Exception) -> JSONResponse:
    log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return error_response(500, f"internal server error ({type(exc).__name__})", "server_error",
                          code="internal_error")


HANDLERS = {APIError: _api_error, InputError: _input_error, OverloadedError: _overloaded,
            RequestValidationError: _validation, StarletteHTTPException: _http, Exception: _internal}


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping of the module doc on ``app``."""
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)


async def response_for(request: Request, exc: Exception) -> JSONResponse:
    """The response the mapping gives ``exc`` (for code that runs outside FastAPI's routing: the
    /v1/analyze fast path); the handler of the nearest class in ``exc``'s MRO, as Starlette picks it."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return await handler(request, exc)
    return await _internal(request, exc)
