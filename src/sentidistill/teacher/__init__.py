"""One interface over every LLM teacher, with a response cache, retries, a budget and answer validation.

>>> from sentidistill.teacher import TeacherConfig, build_teacher
>>> cfg = TeacherConfig(kind="openai", base_url="http://localhost:8000/v1", model="qwen")  # doctest: +SKIP
>>> with build_teacher(cfg, "runs/x/teacher_cache.sqlite") as teacher:  # doctest: +SKIP
...     answers = teacher.generate(requests)
...     print(teacher.summary())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentidistill.core.records import (
    AnswerFormat,
    Message,
    SamplingParams,
    TeacherRequest,
    TeacherResponse,
    TokenLogprob,
    Usage,
)
from sentidistill.teacher.base import (
    Backend,
    BackendError,
    FatalBackendError,
    MissingAnswer,
    RequestRejected,
    RetryableError,
)
from sentidistill.teacher.cache import ResponseCache
from sentidistill.teacher.config import TEACHERS, TeacherConfig, TeacherOptions
from sentidistill.teacher.runner import CachedTeacher

__all__ = [
    "TEACHERS",
    "AnswerFormat",
    "Backend",
    "BackendError",
    "CachedTeacher",
    "FatalBackendError",
    "Message",
    "MissingAnswer",
    "RequestRejected",
    "ResponseCache",
    "RetryableError",
    "SamplingParams",
    "TeacherConfig",
    "TeacherOptions",
    "TeacherRequest",
    "TeacherResponse",
    "TokenLogprob",
    "Usage",
    "build_backend",
    "build_teacher",
]


def build_backend(cfg: TeacherConfig) -> Any:
    """The backend registered as ``cfg.kind`` in :data:`TEACHERS` (only that backend's module is imported)."""
    return TEACHERS.get(cfg.kind).from_config(cfg)


def build_teacher(
    cfg: TeacherConfig, cache_path: str | Path | None = None, *, progress: bool | None = None
) -> CachedTeacher:
    """A ``CachedTeacher`` for ``cfg``; answers are committed to ``cache_path`` (SQLite) when given."""
    backend = build_backend(cfg)
    cache = ResponseCache(cache_path) if cache_path is not None else None
    return CachedTeacher(backend, cfg, cache, progress=progress)
