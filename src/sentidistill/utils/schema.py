"""Where each field of a nested pydantic schema lives, and validation errors that say so.

The config file (:class:`sentidistill.config.PipelineConfig`) and the task files
(:class:`sentidistill.bench.task.TaskSpec`) are nested sections with ``extra="forbid"``. Pydantic's own error
for a field in the wrong section is "Extra inputs are not permitted"; :func:`validation_error_lines` turns it
into "unknown field 'k' here; it belongs in demos.k", from a map of every field's homes built by walking the
schema (:func:`field_homes`). The error-message contract is in docs/errors.md.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def _models_in(annotation: Any, item: str = "") -> list[tuple[type[BaseModel], str]]:
    """The pydantic models an annotation can hold, each with the path step to reach it: ``""`` for a section
    (``Model``, ``Model | None``, ``SerializeAsAny[Model]``), ``"[]"`` for the items of ``list[Model]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, item)]
    out: list[tuple[type[BaseModel], str]] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0], item)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            out.extend(_models_in(arg, item))
    elif origin in (list, tuple) and not item:
        for arg in typing.get_args(annotation):
            out.extend(_models_in(arg, "[]"))
    return out


def walk_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel], str]]:
    """Every field of ``model`` and of its nested section models, depth first, as ``(dotted path, the model
    that declares it, field name)``; a nested section is listed, then its fields. The items of a list of
    models are written ``labels[].verbalizer``."""
    out: list[tuple[str, type[BaseModel], str]] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append((path, model, name))
        for sub, step in _models_in(info.annotation):
            out.extend(walk_fields(sub, prefix=f"{path}{step}."))
    return out


def field_homes(model: type[BaseModel], extra: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Field name -> the dotted paths where ``model`` takes it (``{"k": ["demos.k"], "epochs": ["training.epochs",
    "classifier.training.epochs", ...]}``), plus ``extra`` homes that are not model fields (reader options
    under ``loader.options``, a teacher backend's options)."""
    homes: dict[str, list[str]] = {}
    for path, _, name in walk_fields(model):
        homes.setdefault(name, []).append(path)
    for name, paths in (extra or {}).items():
        homes.setdefault(name, []).extend(p for p in paths if p not in homes.get(name, []))
    return homes


def where_it_belongs(name: str, loc: str, homes: dict[str, list[str]]) -> str:
    """The hint for an unknown field ``name`` found at ``loc``: the places that take it, else close spellings."""
    places = [p for p in homes.get(name, []) if p != loc]
    if places:
        shown = ", ".join(places[:10]) + (f" (+{len(places) - 10} more)" if len(places) > 10 else "")
        return f"it belongs in {shown}" if len(places) == 1 else f"it belongs in one of: {shown}"
    close = difflib.get_close_matches(name, list(homes), n=3, cutoff=0.75)
    if close:
        return "did you mean " + " or ".join(f"'{c}' ({homes[c][0]})" for c in close) + "?"
    return "no section takes a field of this name (check the spelling)"


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict) else "{...}"
    return text if len(text) <= 80 else text[:77] + "..."


def validation_error_lines(exc: ValidationError, homes: dict[str, list[str]]) -> list[str]:
    """One line per problem of ``exc``: ``<dotted field>: <what is wrong>; got <value>``, with where an unknown
    field belongs (see :func:`where_it_belongs`)."""
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        loc = ".".join(parts) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and parts:
            name = parts[-1]
            section = ".".join(parts[:-1]) or "the top level"
            own = "" if msg == "Extra inputs are not permitted" else f" ({msg})"
            msg = f"unknown field '{name}' in {section}; {where_it_belongs(name, loc, homes)}{own}"
        elif err["type"] == "missing":
            msg = f"missing field '{parts[-1] if parts else loc}'"
        elif err["type"] == "unhonoured_setting":  # a whole section was validated: name the field inside it
            ctx = err["ctx"]
            value = err.get("input")
            value = value.get(ctx["field"]) if isinstance(value, dict) else getattr(value, ctx["field"], value)
            lines.append(f"{loc}.{ctx['field']}: not honoured by the {ctx['method']} training method: "
                         f"{ctx['why']}; got {_shown(value)}")
            continue
        lines.append(f"{loc}: {msg}; got {_shown(err.get('input'))}" if err["type"] != "missing" else f"{loc}: {msg}")
    return lines
