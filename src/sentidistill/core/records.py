"""The typed values that cross the teacher boundary: requests in, responses out.

Shared by prompts (which build requests), teachers (which answer them), bench and serve (which report
token log-probabilities). The old path :mod:`sentidistill.teacher.types` warns and goes away in 0.3.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sentidistill.utils.io import stable_hash

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


class SamplingParams(BaseModel):
    """Decoding parameters; they are part of every cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(256, ge=1, description="Most tokens to generate.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, description="Sampling seed where the backend supports it.")
    stop: tuple[str, ...] = Field((), description="Stop strings.")
    logprobs: bool = Field(False, description="Ask for the top-k log-probabilities of each generated token.")
    top_logprobs: int = Field(0, ge=0, le=20, description="k for top-k log-probabilities (OpenAI allows <= 20).")
    score_labels: tuple[str, ...] = Field(
        (), description="Restricted scoring: instead of generating, return the log-likelihood (nats) of each of "
        "these answers given the prompt (``TeacherResponse.label_logprobs``). Backends that cannot score "
        "(``supports_label_scoring`` false) are asked to generate with top-k log-probs instead; see "
        "sentidistill.distill.soft_labels.")

    def key_dump(self) -> dict[str, Any]:
        """The cache-key view: fields at their ``()`` default that older versions lacked are left out, so a
        cache written before they existed still answers."""
        data = self.model_dump(mode="json")
        if not data.get("score_labels"):
            data.pop("score_labels", None)
        return data


class AnswerFormat(BaseModel):
    """What a valid answer looks like; used to validate and to ask for a repair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["free", "label", "json", "tuples"] = "free"
    labels: tuple[str, ...] = ()  # for kind="label": the allowed labels (case-insensitive)
    tuple_arity: int | None = None  # for kind="tuples": the number of fields per tuple


class TeacherRequest(BaseModel):
    """One prompt for the teacher."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    params: SamplingParams = SamplingParams()
    prompt_id: str = "adhoc"  # template id, e.g. "knowdist.aspects"
    prompt_version: str = "0"  # template version; part of the cache key
    answer_format: AnswerFormat = AnswerFormat()
    metadata: dict[str, Any] = Field(default_factory=dict)  # carried through, not part of the key

    def cache_key(self, model_id: str) -> str:
        """Hash of (model, messages, sampling parameters, prompt id+version, answer format)."""
        return stable_hash(
            {
                "model": model_id,
                "messages": self.messages,
                "params": self.params.key_dump(),
                "prompt": [self.prompt_id, self.prompt_version],
                "format": self.answer_format.model_dump(mode="json"),
            }
        )


def parse_logprob(value: Any) -> float:
    """One log-probability as an endpoint or a stored file gives it -> a float in ``[-inf, 0]``, or NaN.

    The one reader of foreign log-probs (endpoints, caches, corpora). Accepts numbers and numeric strings,
    including the non-finite spellings servers emit (``-inf``, JSON ``-Infinity``, ``"-Infinity"``,
    ``NaN``; aphrodite, lmdeploy and mlx servers send ``-inf`` at low temperature). ``-inf`` stays ``-inf``
    (probability 0, a real answer). What carries no probability - NaN, ``null``, ``+inf``, text that is no
    number - becomes NaN, which readers treat as "unknown" (never as 0). A finite value above 0 is
    round-off in the server (``1e-7``) and is clamped to 0. Never raises.
    """
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        x = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return math.nan
    if math.isnan(x) or x == math.inf:
        return math.nan
    return min(x, 0.0)


class TokenLogprob(BaseModel):
    """One generated token with its log-probability and the top-k alternatives at that position.

    Log-probs are nats in ``[-inf, 0]`` or NaN (unknown), read with :func:`parse_logprob` whatever the
    source wrote (``-Infinity``, a string, ``null``). JSON keeps ``-inf``/NaN as ``-Infinity``/``NaN``, so a
    cached response reads back as it was written."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    token: str
    logprob: float
    top: list[tuple[str, float]] = Field(default_factory=list)  # (token text, logprob), best first

    @field_validator("logprob", mode="before")
    @classmethod
    def _logprob(cls, v: Any) -> float:
        return parse_logprob(v)

    @field_validator("top", mode="before")
    @classmethod
    def _top(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple):
            return v
        return [(str(a[0]), parse_logprob(a[1])) if isinstance(a, list | tuple) and len(a) == 2 else a for a in v]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TeacherResponse(BaseModel):
    """The teacher's answer to one request.

    ``text`` is the reply as the model wrote it (a ``<think>`` block included; readers take the answer part
    with :func:`sentidistill.utils.answers.split_reasoning`); ``reasoning`` is the reasoning an endpoint
    sent apart from the content (``reasoning_content``/``reasoning``), else the text of the reply's
    ``<think>`` block once the runner has split it; None when there was none. Status ``truncated``: the
    model stopped at ``max_tokens`` (``finish_reason=length``) before it wrote any answer (``error`` says
    what to do); it is cached like an answer, since the same request stops the same way again.
    """

    model_config = ConfigDict(ser_json_inf_nan="constants")  # label_logprobs may hold -inf

    text: str
    model: str = ""
    finish_reason: str | None = None
    usage: Usage = Usage()
    logprobs: list[TokenLogprob] | None = None
    # Restricted scoring (``params.score_labels``): per label, log P(label | prompt) in nats, same order.
    label_logprobs: list[float] | None = None
    reasoning: str | None = None
    status: Literal["valid", "repaired", "invalid", "unchecked", "truncated", "error", "missing"] = "unchecked"
    attempts: int = 1
    cached: bool = False
    error: str | None = None
    parsed: Any = None  # the validated answer (a label, a list of tuples, a JSON value)
    latency_s: float = 0.0

    @field_validator("label_logprobs", mode="before")
    @classmethod
    def _label_logprobs(cls, v: Any) -> Any:
        return [parse_logprob(x) for x in v] if isinstance(v, list | tuple) else v


@runtime_checkable
class Teacher(Protocol):
    """Anything that answers a batch of requests: an endpoint, a local model, a replayed transcript."""

    model_id: str

    def generate(self, requests: list[TeacherRequest]) -> list[TeacherResponse]: ...
