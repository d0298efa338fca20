"""Moved to :mod:`sentidistill.core.records` (prompts, teachers, bench and serve all exchange these values)."""

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

__all__ = ["AnswerFormat", "Message", "SamplingParams", "Teacher", "TeacherRequest", "TeacherResponse",
           "TokenLogprob", "Usage"]
