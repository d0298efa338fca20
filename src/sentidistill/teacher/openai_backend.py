"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM serve, llama.cpp server, ``sentidistill serve``).

The client's own retries are off (``max_retries=0``): the runner retries with exponential backoff and
full jitter, honouring ``Retry-After``, so that every backend behaves the same and every attempt is counted.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import time
from typing import Any

import httpx
import openai
import pydantic
from openai.types.chat import ChatCompletion

from sentidistill.teacher.base import FatalBackendError, RequestRejected, RetryableError
from sentidistill.teacher.config import TeacherConfig, TeacherOptions
from sentidistill.teacher.types import TeacherRequest, TeacherResponse, TokenLogprob, Usage

log = logging.getLogger(__name__)


def parse_retry_after(headers: httpx.Headers | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class OpenAIOptions(TeacherOptions):
    """Options of the ``openai`` backend (any OpenAI-compatible endpoint)."""

    base_url: str | None = pydantic.Field(None, description="Endpoint URL, e.g. http://localhost:8000/v1 (None: api.openai.com).")
    api_key_env: str = pydantic.Field("OPENAI_API_KEY", description="Name of the environment variable holding the API key (the key itself never goes in a config).")
    extra_body: dict[str, Any] | None = pydantic.Field(None, description="Extra JSON fields sent with every request.")

    def check(self, cfg: TeacherConfig) -> None:
        if not self.base_url and not cfg.model:
            raise ValueError("kind=openai needs 'model' (and usually 'base_url')")


class OpenAIBackend:
    """Chat completions through ``openai.AsyncOpenAI``; maps failures to typed errors."""

    Options = OpenAIOptions

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        extra: dict[str, Any] | None = None,
        max_connections: int = 8,
        pool_size: int = 8,
        served_model: str | None = None,
    ) -> None:
        self.model_id = model  # part of every cache key
        self.served_model = served_model or model  # the name sent in requests (a local server's alias)
        self.base_url = base_url
        self._extra = dict(extra or {})
        # The key is read here and handed to the clients only; it is never logged or stored.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        # httpcore's connection pool does work proportional to (connections x waiting requests) on every
        # event, which dominates CPU at high concurrency; several small pools, used round-robin, keep that
        # cost flat (measured by benchmarks/teacher_throughput.py).
        n_clients = max(1, -(-max_connections // pool_size))
        self._clients = [
            openai.AsyncOpenAI(
                base_url=base_url,
                api_key=api_key,
                max_retries=0,
                timeout=timeout_s,
                http_client=httpx.AsyncClient(
                    timeout=timeout_s,
                    limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
                ),
            )
            for _ in range(n_clients)
        ]
        self._next = 0

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> OpenAIBackend:
        o: OpenAIOptions = cfg.options  # type: ignore[assignment]
        return cls(
            cfg.model, o.base_url, api_key_env=o.api_key_env, timeout_s=cfg.timeout_s,
            extra={"extra_body": o.extra_body} if o.extra_body else None, max_connections=cfg.concurrency,
        )

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        p = request.params
        kwargs: dict[str, Any] = {
            "model": self.served_model,
            "messages": request.messages,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if p.seed is not None:
            kwargs["seed"] = p.seed
        if p.stop:
            kwargs["stop"] = list(p.stop)
        if p.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = p.top_logprobs
        kwargs.update(self._extra.get("extra_body") or {})
        client = self._clients[self._next % len(self._clients)]
        self._next += 1
        t0 = time.perf_counter()
        try:
            # ``post`` with a plain JSON body is ``chat.completions.create`` minus its per-call TypedDict
            # transform of the messages (~2 ms of CPU per request); parsing and typed errors are the same.
            completion = await client.post("/chat/completions", body=kwargs, cast_to=ChatCompletion)
        except openai.APITimeoutError as exc:  # subclass of APIConnectionError: check first
            raise RetryableError(f"timeout: {exc}") from None
        except openai.APIConnectionError as exc:
            raise RetryableError(f"connection error: {exc.__cause__ or exc}") from None
        except openai.APIStatusError as exc:
            code = exc.status_code
            msg = f"HTTP {code}: {_short(exc.message)}"
            if code in (408, 409, 425, 429) or code >= 500:
                raise RetryableError(msg, retry_after=parse_retry_after(exc.response.headers), status_code=code) from None
            if code in (401, 403, 404):
                raise FatalBackendError(
                    f"{msg} (check base_url, model name and the API key environment variable)", status_code=code
                ) from None
            raise RequestRejected(msg, status_code=code) from None
        except (json.JSONDecodeError, pydantic.ValidationError, openai.APIResponseValidationError) as exc:
            raise RetryableError(f"invalid response body: {_short(str(exc))}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise RetryableError(f"transport error: {exc}") from None
        return self._to_response(completion, time.perf_counter() - t0)

    def _to_response(self, completion: Any, latency: float) -> TeacherResponse:
        # A body that parsed but lacks the essentials is as broken as a truncated one.
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise RetryableError("invalid response body: no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None)
        if text is None:
            raise RetryableError("invalid response body: no message content")
        logprobs = None
        lp = getattr(choice, "logprobs", None)
        if lp is not None and getattr(lp, "content", None):
            logprobs = [
                TokenLogprob(
                    token=t.token,
                    logprob=float(t.logprob),
                    top=[(a.token, float(a.logprob)) for a in (t.top_logprobs or [])],
                )
                for t in lp.content
            ]
        usage = getattr(completion, "usage", None)
        return TeacherResponse(
            text=text,
            model=getattr(completion, "model", None) or self.model_id,
            finish_reason=choice.finish_reason,
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            logprobs=logprobs,
            latency_s=latency,
        )

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
