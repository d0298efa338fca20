"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM serve, llama.cpp server, ``sentidistill serve``).

The client's own retries are off (``max_retries=0``): the runner retries with exponential backoff and
full jitter, honouring ``Retry-After``, so that every backend behaves the same and every attempt is counted.

Reasoning models: OpenAI's o-series and gpt-5 models reject ``max_tokens`` (they want
``max_completion_tokens``) and any non-default ``temperature``/``top_p``; ``reasoning_params`` (default:
on for those model names, see :func:`is_reasoning_model`) sends that shape. A 400 that names an unsupported
parameter stops the run with an error saying which option to set. Reasoning that the server sends apart
(``reasoning_content`` / ``reasoning``) is kept in ``TeacherResponse.reasoning``; a reply that stopped on
length before any content (``content: null, finish_reason: "length"``) is returned as it is (the runner
marks it ``truncated``, without retrying: a greedy request truncates the same way every time).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import time
from typing import Any

import httpx
import openai
import pydantic
from openai.types.chat import ChatCompletion

from sentidistill.core.records import TeacherRequest, TeacherResponse, TokenLogprob, Usage
from sentidistill.teacher.base import FatalBackendError, RequestRejected, RetryableError
from sentidistill.teacher.config import TeacherConfig, TeacherOptions

log = logging.getLogger(__name__)

# OpenAI reasoning families: o1, o1-mini, o3, o3-mini, o4-mini, gpt-5, gpt-5-mini... (optionally "openai/...").
_REASONING_MODEL = re.compile(r"(?:^|/)(?:o\d+(?:-[\w.-]+)?|gpt-5(?:[\w.-]*)?)$", re.IGNORECASE)
# Sampling fields that OpenAI reasoning models reject unless left at their defaults.
_SAMPLING_FIELDS = ("temperature", "top_p")


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` names an OpenAI reasoning model (o1/o3/o4-mini..., gpt-5...), whose API wants
    ``max_completion_tokens`` and no ``temperature``/``top_p``."""
    return bool(_REASONING_MODEL.search(model.strip()))


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
    reasoning_params: bool | None = pydantic.Field(None, description="OpenAI reasoning-model request shape (o1/o3/o4-mini, gpt-5...): send max_completion_tokens instead of max_tokens and leave out temperature/top_p. None = on for model names of those families, off otherwise.")

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
        reasoning_params: bool | None = None,
    ) -> None:
        self.model_id = model  # part of every cache key
        self.served_model = served_model or model  # the name sent in requests (a local server's alias)
        self.base_url = base_url
        self._extra = dict(extra or {})
        # None: decided by the model family; the user's true/false wins.
        self.reasoning_params = is_reasoning_model(self.served_model) if reasoning_params is None else reasoning_params
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
            reasoning_params=o.reasoning_params,
        )

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        p = request.params
        kwargs: dict[str, Any] = {"model": self.served_model, "messages": request.messages}
        if self.reasoning_params:
            # o-series / gpt-5: the token limit is max_completion_tokens (thinking included), and
            # temperature/top_p other than the defaults are rejected, so they are left out.
            kwargs["max_completion_tokens"] = p.max_tokens
        else:
            kwargs.update(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p)
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
            unsupported = self._unsupported_param(exc) if code == 400 else None
            if unsupported:
                # Every request carries the same fields, so none would succeed: stop the run with the fix.
                raise FatalBackendError(f"{msg}: {self._fix_for(unsupported)}", status_code=code) from None
            raise RequestRejected(msg, status_code=code) from None
        except (json.JSONDecodeError, pydantic.ValidationError, openai.APIResponseValidationError) as exc:
            raise RetryableError(f"invalid response body: {_short(str(exc))}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise RetryableError(f"transport error: {exc}") from None
        return self._to_response(completion, time.perf_counter() - t0)

    @staticmethod
    def _unsupported_param(exc: openai.APIStatusError) -> str | None:
        """The request field a 400 says the model does not support, or None for any other 400.

        OpenAI: ``{"error": {"param": "max_tokens", "code": "unsupported_parameter", "message":
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use
        'max_completion_tokens' instead."}}`` (``unsupported_value`` for ``temperature``); other servers
        only word it in the message."""
        text = str(getattr(exc, "message", "") or "")
        param = getattr(exc, "param", None)
        code = str(getattr(exc, "code", "") or "")
        if not (code.startswith("unsupported") or re.search(r"unsupported|not supported", text, re.IGNORECASE)):
            return None
        if isinstance(param, str) and param:
            return param
        m = re.search(r"['\"`](\w+)['\"`]", text)
        return m.group(1) if m else None

    def _fix_for(self, param: str) -> str:
        """Which option to set when the endpoint rejects ``param``."""
        if param in ("max_tokens", *_SAMPLING_FIELDS) and not self.reasoning_params:
            return (f"model '{self.served_model}' does not accept '{param}'; set teacher.reasoning_params: true "
                    "(sends max_completion_tokens instead of max_tokens and leaves out temperature/top_p)")
        if param == "max_completion_tokens" and self.reasoning_params:
            return (f"model '{self.served_model}' does not accept 'max_completion_tokens'; set "
                    "teacher.reasoning_params: false (sends max_tokens, temperature and top_p)")
        if param in ("logprobs", "top_logprobs"):
            return (f"model '{self.served_model}' does not return log-probabilities; ask without them "
                    "(icldist.top_logprobs: 0; for the bench, a generation task instead of restricted scoring)")
        if param in (self._extra.get("extra_body") or {}):
            return f"remove '{param}' from teacher.extra.extra_body"
        return f"model '{self.served_model}' does not accept '{param}'; leave it out of the request options"

    def _to_response(self, completion: Any, latency: float) -> TeacherResponse:
        usage = _usage(getattr(completion, "usage", None))
        # A body that parsed but lacks the essentials is as broken as a truncated one (its usage still counts).
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise RetryableError("invalid response body: no choices", usage=usage)
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None)
        reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
        reasoning = reasoning if isinstance(reasoning, str) and reasoning else None
        finish = getattr(choice, "finish_reason", None)
        if text is None and finish == "length":
            # The model spent max_tokens (on reasoning) before any content: not retried, the runner says why.
            return TeacherResponse(text="", model=getattr(completion, "model", None) or self.model_id,
                                   finish_reason="length", usage=usage, reasoning=reasoning, latency_s=latency)
        if text is None and finish == "content_filter":
            raise RequestRejected("no message content (finish_reason=content_filter)", usage=usage)
        if text is None:
            raise RetryableError(f"invalid response body: no message content (finish_reason={finish})", usage=usage)
        logprobs = None
        lp = getattr(choice, "logprobs", None)
        if lp is not None and getattr(lp, "content", None):
            logprobs = [
                TokenLogprob(
                    token=t.token,
                    logprob=t.logprob,  # parse_logprob: -inf, "-Infinity", NaN, null are all read
                    top=[(a.token, a.logprob) for a in (t.top_logprobs or [])],
                )
                for t in lp.content
            ]
        return TeacherResponse(
            text=text,
            model=getattr(completion, "model", None) or self.model_id,
            finish_reason=finish,
            usage=usage,
            reasoning=reasoning,
            logprobs=logprobs,
            latency_s=latency,
        )

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


def _usage(usage: Any) -> Usage:
    return Usage(prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                 completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
