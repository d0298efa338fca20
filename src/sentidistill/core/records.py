"""The typed values that cross the teacher boundary: requests in, responses out.

Shared by prompts (which build requests), teachers (which answer them), bench and serve (which report
token log-probabilities); :mod:`sentidistill.teacher.types` re-exports them.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

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
                "params": self.params.model_dump(mode="json"),
                "prompt": [self.prompt_id, self.prompt_version],
                "format": self.answer_format.model_dump(mode="json"),
            }
        )


class TokenLogprob(BaseModel):
    """One generated token with its log-probability and the top-k alternatives at that position."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = Field(default_factory=list)  # (token text, logprob), best first


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TeacherResponse(BaseModel):
    """The teacher's answer to one request."""

    text: str
    model: str = ""
    finish_reason: str | None = None
    usage: Usage = Usage()
    logprobs: list[TokenLogprob] | None = None
    status: Literal["valid", "repaired", "invalid", "unchecked", "error", "missing"] = "unchecked"
    attempts: int = 1
    cached: bool = False
    error: str | None = None
    parsed: Any = None  # the validated answer (a label, a list of tuples, a JSON value)
    latency_s: float = 0.0


@runtime_checkable
class Teacher(Protocol):
    """Anything that answers a batch of requests: an endpoint, a local model, a replayed transcript."""

    model_id: str

    def generate(self, requests: list[TeacherRequest]) -> list[TeacherResponse]: ...
