"""One interface over every LLM teacher, with a response cache, retries, a budget and answer validation.

>>> from sentidistill.config import TeacherConfig
>>> from sentidistill.teacher import build_teacher
>>> cfg = TeacherConfig(kind="openai", base_url="http://localhost:8000/v1", model="qwen")  # doctest: +SKIP
>>> with build_teacher(cfg, "runs/x/teacher_cache.sqlite") as teacher:  # doctest: +SKIP
...     answers = teacher.generate(requests)
...     print(teacher.summary())
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentidistill.config import TeacherConfig
from sentidistill.teacher.base import (
    Backend,
    BackendError,
    FatalBackendError,
    MissingAnswer,
    RequestRejected,
    RetryableError,
)
from sentidistill.teacher.cache import ResponseCache
from sentidistill.teacher.runner import CachedTeacher
from sentidistill.teacher.types import (
    AnswerFormat,
    Message,
    SamplingParams,
    TeacherRequest,
    TeacherResponse,
    TokenLogprob,
    Usage,
)

__all__ = [
    "AnswerFormat", "Backend", "BackendError", "CachedTeacher", "FatalBackendError", "Message", "MissingAnswer",
    "RequestRejected", "ResponseCache", "RetryableError", "SamplingParams", "TeacherRequest", "TeacherResponse",
    "TokenLogprob", "Usage", "build_backend", "build_teacher",
]


def build_backend(cfg: TeacherConfig) -> Any:
    """The backend for ``cfg.kind`` (heavy imports happen only for the kind asked for)."""
    if cfg.kind == "openai":
        from sentidistill.teacher.openai_backend import OpenAIBackend

        return OpenAIBackend.from_config(cfg)
    if cfg.kind == "llamacpp":
        # extra.mode: "inprocess" (default: cheap top-k log-probs, no port) or "server" (llama.cpp's OpenAI server).
        from sentidistill.teacher.llamacpp_inprocess import build_llamacpp_backend

        return build_llamacpp_backend(cfg)
    if cfg.kind == "transformers":
        from sentidistill.teacher.transformers_backend import TransformersBackend

        return TransformersBackend.from_config(cfg)
    if cfg.kind == "replay":
        from sentidistill.teacher.replay import ReplayBackend

        return ReplayBackend.from_config(cfg)
    if cfg.kind == "vllm":
        from sentidistill.teacher.vllm_backend import VLLMBackend

        return VLLMBackend.from_config(cfg)
    raise ValueError(f"unknown teacher kind {cfg.kind!r}")  # pydantic's Literal makes this unreachable


def build_teacher(
    cfg: TeacherConfig, cache_path: str | Path | None = None, *, progress: bool | None = None
) -> CachedTeacher:
    """A ``CachedTeacher`` for ``cfg``; answers are committed to ``cache_path`` (SQLite) when given."""
    backend = build_backend(cfg)
    cache = ResponseCache(cache_path) if cache_path is not None else None
    return CachedTeacher(backend, cfg, cache, progress=progress)
