"""Versioned prompt templates shipped as package data (``prompts/templates/*.yaml``).

Each YAML file holds ``templates:``, a list of ``{id, version, description, system, user, answer_format}``;
``system`` and ``user`` are Jinja2 (undefined variables are errors, not blanks).

>>> from sentidistill.prompts import get_template
>>> t = get_template("knowdist.aspects")
>>> req = t.request(text="The pizza was cold.")
>>> req.prompt_id, req.metadata["text"]
('knowdist.aspects', 'The pizza was cold.')
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import jinja2
import jinja2.meta
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentidistill.core.records import AnswerFormat, Message, SamplingParams, TeacherRequest
from sentidistill.errors import InputError

__all__ = ["Template", "get_template", "list_templates"]

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class Template(BaseModel):
    """One prompt: a system message and a Jinja2 user message, with the answer format it expects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")
    version: str
    description: str = ""
    system: str | None = None
    user: str
    answer_format: AnswerFormat = AnswerFormat()

    @property
    def variables(self) -> set[str]:
        """The Jinja2 variables the template needs."""
        names: set[str] = set()
        for src in (self.system or "", self.user):
            names |= jinja2.meta.find_undeclared_variables(_ENV.parse(src))
        return names

    def render(self, **variables: Any) -> list[Message]:
        """The chat messages for these variables (a missing variable raises ``InputError``)."""
        missing = self.variables - variables.keys()
        if missing:
            raise InputError(
                f"template '{self.id}' needs {sorted(missing)}", expected=f"variables {sorted(self.variables)}"
            )
        messages: list[Message] = []
        if self.system:
            messages.append({"role": "system", "content": _ENV.from_string(self.system).render(**variables).strip()})
        messages.append({"role": "user", "content": _ENV.from_string(self.user).render(**variables).strip()})
        return messages

    def request(
        self, params: SamplingParams | None = None, metadata: dict[str, Any] | None = None, **variables: Any
    ) -> TeacherRequest:
        """A ``TeacherRequest`` carrying this template's id, version and answer format.

        The variables go into ``metadata`` too (so a replayed corpus can match a request by its review text).
        """
        return TeacherRequest(
            messages=self.render(**variables),
            params=params or SamplingParams(),
            prompt_id=self.id,
            prompt_version=self.version,
            answer_format=self.answer_format,
            metadata={**variables, **(metadata or {})},
        )


@functools.cache
def _registry() -> dict[str, Template]:
    out: dict[str, Template] = {}
    folder = resources.files("sentidistill.prompts").joinpath("templates")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith((".yaml", ".yml")):
            continue
        where = f"sentidistill/prompts/templates/{entry.name}"
        data = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        items = data.get("templates") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise InputError("expected a 'templates:' list", path=where, field="templates")
        for i, item in enumerate(items):
            try:
                t = Template.model_validate(item)
            except ValidationError as exc:
                err = exc.errors()[0]
                raise InputError(
                    err["msg"], path=where, field=f"templates[{i}]." + ".".join(map(str, err["loc"]))
                ) from None
            if t.id in out:
                raise InputError(f"duplicate template id '{t.id}'", path=where, field=f"templates[{i}].id")
            out[t.id] = t
    return out


def list_templates(prefix: str = "") -> list[str]:
    """Template ids, sorted (``prefix="knowdist."`` for the KnowDist ones)."""
    return sorted(t for t in _registry() if t.startswith(prefix))


def get_template(template_id: str) -> Template:
    reg = _registry()
    if template_id not in reg:
        raise InputError(f"unknown prompt template '{template_id}'", expected="one of " + ", ".join(sorted(reg)))
    return reg[template_id]
