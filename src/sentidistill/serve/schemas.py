"""OpenAI-compatible request/response schemas (the subset a sentiment student can honour) and the task endpoint's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Clients (the openai SDK, LangChain, ...) send fields we do not use, such as `user` or
# `presence_penalty`: accept and ignore them rather than fail the request.
_LENIENT = ConfigDict(extra="ignore")


class ContentPart(BaseModel):
    model_config = _LENIENT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _LENIENT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


def _stop_tuple(v: str | list[str] | None) -> tuple[str, ...]:
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    return tuple(s for s in items if s)


class _SamplingFields(BaseModel):
    model_config = _LENIENT
    model: str = Field(..., min_length=1, description="A name from /v1/models.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 (the default here) decodes greedily.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    n: int = Field(1, ge=1, le=8)
    stream: bool = False

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop strings")
        return v

    def stop_tuple(self) -> tuple[str, ...]:
        return _stop_tuple(self.stop)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(..., description="One prompt or a list of prompts.")
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20, description="Return this many top alternatives per token.")
    echo: bool = False


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sentidistill"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AnalyzeItem(BaseModel):
    """One input with the extra fields some tasks need (``target`` for stance)."""

    model_config = ConfigDict(extra="allow")
    text: str


class Shot(BaseModel):
    """A demonstration: an input and its gold answer, as the task's rows hold them."""

    model_config = ConfigDict(extra="allow")
    text: str = Field(..., min_length=1)
    gold: Any


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str = Field(..., min_length=1, description="A SentiBench task name (see GET /v1/tasks) or alias.")
    texts: list[str | AnalyzeItem] = Field(..., min_length=1)
    shots: list[Shot] | None = Field(None, description="In-context demonstrations (text + gold).")
    style: Literal["plain", "chat"] | None = None
    max_tokens: int | None = Field(None, ge=1)


class AnalyzeResult(BaseModel):
    text: str
    prediction: Any = Field(None, description="The parsed answer: a label, or a list of tuples; null if unreadable.")
    valid: bool
    raw: str
    finish_reason: Literal["stop", "length"]


class AnalyzeResponse(BaseModel):
    task: str
    model: str
    results: list[AnalyzeResult]
    usage: UsageInfo


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
