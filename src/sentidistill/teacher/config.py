"""The teacher section of a config: which backend teaches, its own options, and how hard we may push it.

A config names the backend and writes that backend's options beside the runner settings, flat::

    teacher:
      kind: llamacpp             # a name in TEACHERS
      model: builtin:qwen2.5-coder-1.5b
      n_ctx: 2048                # llamacpp's own options (LlamaCppTeacher.Options) ...
      mode: server
      concurrency: 1             # ... and the runner's, common to every backend (TeacherConfig's fields)

Each backend class owns its options as a pydantic model (``Backend.Options``), validated when the config
loads: an option of another backend is an error naming that backend and the option, an unknown one an
error listing the backend's options. In Python the options are ``cfg.options``; ``model_dump`` writes the
section flat again. A section written for the old flat layout (every backend's fields, plus ``extra:``)
still loads: ``extra:``'s keys become options, and other backends' fields left at their defaults are
dropped; any other leftover is an error that says what to write instead.

(:mod:`sentidistill.config` re-exports :class:`TeacherConfig`; it lives here so that the teacher package
does not import the pipeline's config module, which sits above it.)
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from sentidistill.core.registry import Registry

#: kind name -> "module:BackendClass"; the class has ``Options`` (a :class:`TeacherOptions`) and
#: ``from_config(cfg)``. Register a new backend here (see docs/architecture.md).
TEACHERS = Registry("teacher", {
    "openai": "sentidistill.teacher.openai_backend:OpenAIBackend",
    "llamacpp": "sentidistill.teacher.llamacpp_inprocess:LlamaCppTeacher",
    "transformers": "sentidistill.teacher.transformers_backend:TransformersBackend",
    "replay": "sentidistill.teacher.replay:ReplayBackend",
    "vllm": "sentidistill.teacher.vllm_backend:VLLMBackend",
})


class TeacherOptions(BaseModel):
    """Base of every backend's options (a backend with none uses this class as is)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    #: Options that the old flat teacher section held under ``extra:`` but that now have other names.
    renamed: ClassVar[dict[str, str]] = {}

    def check(self, cfg: TeacherConfig) -> None:
        """Cross-field checks against the common settings (``cfg.model``...); raise ValueError."""


def options_class(kind: str) -> type[TeacherOptions]:
    """The options model of backend ``kind`` (imports that backend's module, not the others)."""
    return getattr(TEACHERS.get(kind), "Options", TeacherOptions)


def _error(kind: str, key: str, value: Any, loc: tuple[str, ...] | None = None) -> InitErrorDetails:
    owners = []
    for other in TEACHERS.names():
        if other != kind and key in options_class(other).model_fields:
            owners.append(other)
    if owners:
        err = PydanticCustomError(
            "teacher_option_of_other_backend",
            "option '{key}' belongs to the {owners} teacher backend, not to '{kind}': remove it, or set "
            "kind: {first}", {"key": key, "owners": " / ".join(owners), "kind": kind, "first": owners[0]})
    else:
        known = sorted(options_class(kind).model_fields)
        err = PydanticCustomError(
            "extra_forbidden", "unknown field (check the spelling; backend '{kind}' takes {known} besides the "
            "common teacher settings)", {"kind": kind, "known": ", ".join(known) or "no options"})
    return InitErrorDetails(type=err, loc=loc or (key,), input=value)


class TeacherConfig(BaseModel):
    """Which LLM teaches (``kind`` + its ``options``), and how hard we may push it (common to every backend)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: str = Field("llamacpp", description="Backend (sentidistill.teacher.TEACHERS): openai (any OpenAI-compatible URL), llamacpp (local GGUF), transformers (local HF model), replay (recorded JSONL), vllm (offline engine).")
    model: str = Field("builtin:qwen2.5-coder-1.5b", description="Model name (openai/vllm), HF id or path (transformers), GGUF path or builtin:qwen2.5-coder-0.5b|builtin:qwen2.5-coder-1.5b (llamacpp).")
    concurrency: int = Field(8, ge=1, le=1024, description="Requests in flight at once.")
    max_retries: int = Field(6, ge=0, le=50, description="Retries on 429/5xx/timeouts/connection errors.")
    repair_attempts: int = Field(2, ge=0, le=10, description="Re-asks with a repair instruction when an answer does not parse.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_requests: int | None = Field(None, ge=1, description="Budget: most requests sent to the backend in this run.")
    max_total_tokens: int | None = Field(None, ge=1, description="Budget: most prompt+completion tokens in this run.")
    price_per_1k_prompt_tokens: float | None = Field(None, ge=0, description="For the cost column of the progress bar.")
    price_per_1k_completion_tokens: float | None = Field(None, ge=0)
    reasoning_tokens: int = Field(0, ge=0, description="Tokens added to every request's max_tokens: room for a reasoning model's thinking before its answer (e.g. 2048); part of the cache key.")
    options: SerializeAsAny[TeacherOptions] = Field(default_factory=TeacherOptions, description="The backend's own options (written flat beside the fields above).")

    @model_validator(mode="wrap")
    @classmethod
    def _split_options(cls, data: Any, handler: Any) -> TeacherConfig:
        """Flat section -> common fields + ``options`` validated by the backend's own model."""
        if not isinstance(data, dict):
            return handler(data)
        data = dict(data)
        kind = data.get("kind", cls.model_fields["kind"].default)
        if not isinstance(kind, str) or kind not in TEACHERS:  # the kind validator reports it
            return handler({k: data[k] for k in cls.model_fields if k in data and k != "options"})
        opts_cls = options_class(kind)
        given = data.pop("options", None)
        if given is not None and not isinstance(given, dict | BaseModel):
            raise ValidationError.from_exception_data("TeacherConfig", [InitErrorDetails(
                type=PydanticCustomError("dict_type", "expected a mapping of the backend's options"),
                loc=("options",), input=given)])
        opts: dict[str, Any] = dict(given.model_dump() if isinstance(given, BaseModel) else (given or {}))
        common = {k: data[k] for k in cls.model_fields if k in data and k != "options"}
        errors: list[InitErrorDetails] = []
        for key, value in data.items():
            if key in common:
                continue
            if key == "extra" and isinstance(value, dict) and "extra" not in opts_cls.model_fields:
                for k, v in value.items():  # the old flat section's pass-through options
                    k = opts_cls.renamed.get(k, k)
                    if k in opts_cls.model_fields:
                        opts[k] = v
                    else:
                        errors.append(_error(kind, k, v, loc=("extra", k)))
            elif key in opts_cls.model_fields:
                opts[key] = value
            elif not _old_default(kind, key, value):
                errors.append(_error(kind, key, value))
        try:
            options = opts_cls.model_validate(opts)
        except ValidationError as exc:
            errors.extend(InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"]), loc=e["loc"],
                                           input=e["input"]) for e in exc.errors())
            options = None
        if errors:
            raise ValidationError.from_exception_data("TeacherConfig", errors)
        cfg = handler(common | {"kind": kind, "options": options})
        try:
            options.check(cfg)  # type: ignore[union-attr]
        except ValueError as exc:
            raise ValidationError.from_exception_data("TeacherConfig", [InitErrorDetails(
                type=PydanticCustomError("value_error", str(exc)), loc=(), input=data)]) from None
        return cfg

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in TEACHERS:
            close = difflib.get_close_matches(v, TEACHERS.names(), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown teacher kind {v!r}{hint}; expected one of "
                             + ", ".join(repr(n) for n in TEACHERS.names()))
        return v

    def legacy_dump(self) -> dict[str, Any]:
        """The section as the old flat layout wrote it (every backend's fields, the rest under ``extra``), so
        that a run's config hash (:meth:`sentidistill.config.PipelineConfig.config_hash`) stays what it was."""
        out = self.model_dump(mode="json", exclude={"options"})
        if not out.get("reasoning_tokens"):  # added later; at its default it leaves old hashes as they were
            out.pop("reasoning_tokens", None)
        opts = self.options.model_dump(mode="json")
        fields = type(self.options).model_fields
        defaults = {k: f.get_default(call_default_factory=True) for k, f in fields.items() if not f.is_required()}
        out.update({k: opts.get(k, d) for k, d in _LEGACY_FIELDS.items()})
        out["extra"] = {k: v for k, v in opts.items() if k not in _LEGACY_FIELDS and (k not in defaults or v != defaults[k])}
        return out

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if isinstance(out, dict) and isinstance(out.get("options"), dict):
            out = {k: v for k, v in out.items() if k != "options"} | out["options"]
        return out


#: The backend fields that the old flat section had at its top level, with their defaults there.
_LEGACY_FIELDS: dict[str, Any] = {"base_url": None, "api_key_env": "OPENAI_API_KEY", "replay_path": None, "n_ctx": 4096,
                                  "n_threads": None}


def _old_default(kind: str, key: str, value: Any) -> bool:
    """Whether ``key: value`` is another backend's option left at its default (old flat sections carried them)."""
    if key == "extra":
        return value in (None, {})
    for other in TEACHERS.names():
        fields = options_class(other).model_fields
        if other != kind and key in fields:
            default = fields[key].get_default(call_default_factory=True)
            return value is None or value == default or str(value) == str(default)
    return False
