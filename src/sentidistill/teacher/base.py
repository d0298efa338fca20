"""What every backend implements, and the typed errors the runner's retry loop understands."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sentidistill.core.records import TeacherRequest, TeacherResponse, Usage
from sentidistill.errors import SentidistillError


class BackendError(SentidistillError):
    """A backend call failed. ``retryable`` errors are retried with backoff by the runner.

    ``usage``: the tokens the failed call was billed for, when the endpoint said (a body that parsed but
    held no usable answer); the runner counts them against the budget and the cost.
    """

    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None, status_code: int | None = None,
                 usage: Usage | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status_code = status_code
        self.usage = usage


class RetryableError(BackendError):
    """429, 5xx, timeouts, dropped connections, truncated or invalid response bodies."""

    retryable = True


class RequestRejected(BackendError):
    """The backend refused this one request (e.g. 400: prompt too long); other requests may succeed."""


class FatalBackendError(BackendError):
    """Nothing will succeed (bad key, unknown model, missing package): the whole run stops."""


class MissingAnswer(BackendError):
    """A replayed transcript holds no answer for this request."""


@runtime_checkable
class Backend(Protocol):
    """One LLM: answers one request at a time (concurrency, retries and caching are the runner's job)."""

    model_id: str

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse: ...

    async def aclose(self) -> None: ...
