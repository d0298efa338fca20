"""OpenAI-compatible request/response schemas (the subset a sentiment student can honour) and the task endpoint's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# Clients (the openai SDK, LangChain, ...) send fields we do not use, such as `user` or
# `presence_penalty`: accept and ignore them rather than fail the request.
_LENIENT = ConfigDict(extra="ignore")


def _drop_nulls(data: Any) -> Any:
    """The OpenAI API reads ``null`` as "not set": a null field takes its default (a required one is
    then reported missing). Clients send nulls for options they leave unset (the openai SDK when passed
    None, older LangChain for ``max_tokens``/``stop``, LiteLLM for optional params)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if v is not None}
    return data


def lone_surrogate(data: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], int, str] | None:
    """The first string in a parsed JSON body that holds a lone UTF-16 surrogate: ``(path, index, char)``,
    else ``None``. JSON may spell one (``"\\ud83d"`` without its pair); Python keeps it in the ``str``, but it
    is not text: UTF-8 cannot encode it, so a tokenizer (or the JSON response) fails on it."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as exc:
            return path, exc.start, data[exc.start]
        return None
    if isinstance(data, dict):
        for k, v in data.items():
            found = lone_surrogate(k, (*path, str(k))) if isinstance(k, str) else None
            found = found or lone_surrogate(v, (*path, str(k)))
            if found:
                return found
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found = lone_surrogate(v, (*path, i))
            if found:
                return found
    return None


class _TextBody(BaseModel):
    """A request body whose strings must all be text: a lone UTF-16 surrogate anywhere in it is refused with
    a 400 naming its field (``texts.0``, ``messages.0.content``, ``prompt``...). Checked on the whole body
    before the fields are read, so every endpoint that takes text refuses it the same way, and such a text
    never reaches the batcher (where it would have failed the requests batched with it)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_lone_surrogates(cls, data: Any) -> Any:
        found = lone_surrogate(data)
        if found:
            path, at, char = found
            where = ".".join(str(p) for p in path)
            raise PydanticCustomError(
                "invalid_text",
                "a lone UTF-16 surrogate (U+{code}) at character {at} is not text (UTF-8 cannot encode "
                "it): send the whole character (both halves of a surrogate pair) or U+FFFD",
                {"path": where, "code": f"{ord(char):04X}", "at": at})
        return data


class ContentPart(BaseModel):
    model_config = _LENIENT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _LENIENT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        return _drop_nulls(data)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


def _stop_tuple(v: str | list[str] | None) -> tuple[str, ...]:
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    return tuple(s for s in items if s)


class _SamplingFields(_TextBody):
    """The fields both OpenAI routes share. Every field the OpenAI API documents for a route is declared:
    honoured, accepted without effect on the answer (``user``, ``metadata``, ``store``...: bookkeeping the
    server does not do), or refused with a 400 naming it when set to a value the student cannot honour
    (:meth:`unsupported`). ``null`` means "not set" for every optional field."""

    model_config = _LENIENT
    model: str = Field(..., min_length=1, description="A name from /v1/models.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 (the default here) decodes greedily.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    n: int = Field(1, ge=1, le=8)
    stream: bool = False
    stream_options: dict[str, Any] | None = Field(None, description="{include_usage: true} adds a usage chunk.")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Only 0 (no penalty) is supported.")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Only 0 (no penalty) is supported.")
    logit_bias: dict[str, float] | None = Field(None, description="Only an empty map is supported.")
    user: str | None = Field(None, description="Accepted; no effect.")

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        return _drop_nulls(data)

    def unsupported(self) -> tuple[str, str] | None:
        """(field, message) for the first field set to a value this server cannot honour, else None."""
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name):
                return name, f"{name} is not supported (the student decodes without penalties); leave it unset or 0"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported; leave it unset or {}"
        return None

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

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
    response_format: dict[str, Any] | None = Field(None, description="Only {type: text} is supported.")
    tools: list[Any] | None = Field(None, description="Not supported (an empty list is accepted).")
    tool_choice: str | dict[str, Any] | None = Field(None, description="Only none/auto without tools.")
    functions: list[Any] | None = Field(None, description="Not supported (an empty list is accepted).")
    function_call: str | dict[str, Any] | None = Field(None, description="Only none/auto without functions.")
    parallel_tool_calls: bool | None = Field(None, description="Accepted; no effect without tools.")
    modalities: list[str] | None = Field(None, description="Only ['text'].")
    audio: dict[str, Any] | None = Field(None, description="Not supported.")
    reasoning_effort: str | None = Field(None, description="Not supported: the student is not a reasoning model.")
    verbosity: str | None = Field(None, description="Not supported.")
    web_search_options: dict[str, Any] | None = Field(None, description="Not supported.")
    prediction: dict[str, Any] | None = Field(None, description="Accepted; a latency hint with no effect on the answer.")
    metadata: dict[str, Any] | None = Field(None, description="Accepted; not stored.")
    store: bool | None = Field(None, description="Accepted; nothing is stored.")
    service_tier: str | None = Field(None, description="Accepted; one tier.")
    safety_identifier: str | None = Field(None, description="Accepted; no effect.")
    prompt_cache_key: str | None = Field(None, description="Accepted; no effect.")

    def unsupported(self) -> tuple[str, str] | None:
        found = super().unsupported()
        if found:
            return found
        fmt = (self.response_format or {}).get("type", "text")
        if fmt != "text":
            return "response_format", f"response_format type '{fmt}' is not supported; only 'text'"
        if self.tools:
            return "tools", "tools are not supported by this server (a sentiment student does not call tools)"
        if self.functions:
            return "functions", "functions are not supported by this server"
        for name in ("tool_choice", "function_call"):
            value = getattr(self, name)
            if value is not None and value not in ("none", "auto"):
                return name, f"{name} {value!r} is not supported: this server calls no tools"
        if self.modalities and list(self.modalities) != ["text"]:
            return "modalities", f"modalities {self.modalities} are not supported; only ['text']"
        for name in ("audio", "reasoning_effort", "verbosity", "web_search_options"):
            if getattr(self, name) is not None:
                return name, f"{name} is not supported by this server; leave it unset"
        return None


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(..., description="One prompt or a list of prompts.")
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20, description="Return this many top alternatives per token.")
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=20, description="Only best_of <= n (no extra candidates).")
    suffix: str | None = Field(None, description="Not supported (insertion); only empty.")

    def unsupported(self) -> tuple[str, str] | None:
        found = super().unsupported()
        if found:
            return found
        if self.best_of is not None and self.best_of > self.n:
            return "best_of", "best_of > n is not supported; leave it unset or equal to n"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported; leave it unset"
        return None


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


class AnalyzeRequest(_TextBody):
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
    probabilities: dict[str, float] | None = Field(
        None, description="A classifier student's probability of every label of the task (other students: null).")


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
