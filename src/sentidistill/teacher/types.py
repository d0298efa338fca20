"""Deprecated, removed in 0.3 (importing it warns). Moved to :mod:`sentidistill.core.records` (prompts, teachers, bench and serve all exchange these values)."""

from sentidistill.core.records import (
    AnswerFormat,
    Message,
    SamplingParams,
    Teacher,
    TeacherRequest,
    TeacherResponse,
    TokenLogprob,
    Usage,
)
from sentidistill.utils.deprecation import warn_moved

warn_moved("sentidistill.teacher.types", "sentidistill.core.records")

__all__ = ["AnswerFormat", "Message", "SamplingParams", "Teacher", "TeacherRequest", "TeacherResponse",
           "TokenLogprob", "Usage"]
