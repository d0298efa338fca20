"""The config reference (``docs/config.md``), rendered from the config's JSON schema.

``render_config_reference()`` walks ``PipelineConfig.model_json_schema()`` (pydantic's JSON Schema, draft 2020-12)
and writes one Markdown table per section: every field with its type, default, bounds and description. A nested
section (``knowdist.reviews``, ``classifier.training``) gets its own table under its dotted path; a section whose
model was already shown (``classifier.training`` is a ``TrainingConfig``) links to that table and lists only the
defaults that differ. The teacher's backend options are not in the pipeline schema (each backend owns them, see
:mod:`sentidistill.teacher.config`), so each backend's ``Options`` schema is rendered after the teacher's table.

``sentidistill config --reference > docs/config.md`` writes the file; ``tests/test_config_docs.py`` fails when the
committed file differs from what this module renders now.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sentidistill.config import PipelineConfig
from sentidistill.teacher.config import TEACHERS, options_class

#: The command that regenerates the committed reference (named in the file and in the test's message).
REGENERATE = "sentidistill config --reference > docs/config.md"

_JSON_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "object": "mapping",
               "null": "null"}


def _ref_name(node: dict[str, Any]) -> str | None:
    """The ``$defs`` name a property points to (directly or as the non-null branch of ``anyOf``), else None."""
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1 and "$ref" in branches[0]:
        return branches[0]["$ref"].rsplit("/", 1)[-1]
    return None


def _type(node: dict[str, Any]) -> str:
    """A short type name for one JSON Schema node: ``int``, ``list[str]``, ``"a" | "b"``, ``path | null``."""
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    if "anyOf" in node:
        return " \\| ".join(_type(b) for b in node["anyOf"])
    t = node.get("type")
    if t == "array":
        return f"list[{_type(node['items'])}]" if "items" in node else "list"
    if t == "string" and node.get("format") == "path":
        return "path"
    if isinstance(t, list):
        return " \\| ".join(_JSON_TYPES.get(x, x) for x in t)
    return _JSON_TYPES.get(t, "any") if t else "any"


def _bounds(node: dict[str, Any]) -> str:
    """Bounds of a node and of its ``anyOf`` branches: ``≥ 1``, ``> 0``, ``≤ 20``, a pattern, lengths."""
    out: list[str] = []
    for n in [node, *node.get("anyOf", [])]:
        for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
                          ("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"),
                          ("maxItems", "items ≤")):
            if key in n:
                out.append(f"{sign} {n[key]}")
        if "pattern" in n:
            out.append(f"matches `{n['pattern']}`")
    return ", ".join(out)


def _value(v: Any) -> str:
    """A default as it is written in YAML-compatible JSON, in code quotes."""
    return f"`{json.dumps(v, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    """Text safe in Markdown: one line, pipes escaped, a ``<`` that would open an HTML tag (``<task>``) outside
    code spans written as ``&lt;``."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else re.sub(r"<(?=[A-Za-z/!?])", "&lt;", p) for i, p in enumerate(parts))


def _anchor(path: str) -> str:
    """GitHub's heading anchor for a heading that is just ``path`` in code quotes."""
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")


def _field_rows(props: dict[str, Any], required: set[str], defaults: dict[str, Any] | None,
                links: dict[str, str]) -> list[str]:
    """Table rows ``| field | type | default | bounds | description |``; defaults from the parent win."""
    rows = ["| field | type | default | bounds | description |", "| --- | --- | --- | --- | --- |"]
    for name, node in props.items():
        ref = _ref_name(node)
        typ = f"[{ref}](#{links[name]})" if ref and name in links else _type(node)
        if ref and name in links and "anyOf" in node:
            typ += " \\| null"
        if defaults is not None and name in defaults and not ref:
            default = _value(defaults[name])
        elif "default" in node and not (ref and isinstance(node["default"], dict)):
            default = _value(node["default"])
        elif ref:
            default = "see its section"
        else:
            default = "required" if name in required else ""
        rows.append(f"| `{name}` | {typ} | {default} | {_cell(_bounds(node))} | {_cell(node.get('description', ''))} |")
    return rows


def _render_section(path: str, def_name: str, defs: dict[str, Any], defaults: dict[str, Any] | None,
                    description: str, shown: dict[str, tuple[str, dict[str, Any]]], out: list[str],
                    extra_links: dict[str, str] | None = None) -> None:
    """Append the heading and table of the section at ``path`` (model ``def_name``), then its subsections.

    ``shown``: model name -> (path, effective defaults) of the table already written for it.
    ``extra_links``: field -> anchor, for fields documented elsewhere on the page (the teacher's options).
    """
    model = defs[def_name]
    props = model.get("properties", {})
    effective = {k: (defaults or {}).get(k, v.get("default")) for k, v in props.items()
                 if "default" in v or k in (defaults or {})}
    level = "##" if path.count(".") == 0 else "###"
    out += [f"{level} `{path}`", ""]
    text = description or model.get("description", "")
    if text:
        out += [_cell(text), ""]
    if def_name in shown:
        # The same model again: point to its full table, list only the defaults that differ here.
        first, base = shown[def_name]
        diff = {k: v for k, v in (defaults or {}).items() if k in base and base[k] != v}
        out.append(f"A `{def_name}`: the fields of [`{first}`](#{_anchor(first)}).")
        if diff:
            out.append("Defaults that differ here: " + ", ".join(f"`{k}` {_value(v)}" for k, v in diff.items())
                       + ".")
        elif defaults is None:
            out.append("Default: `null` (unset).")
        out.append("")
        return
    shown[def_name] = (path, effective)
    subsections = {name: (_ref_name(node), node) for name, node in props.items()
                   if _ref_name(node) and defs[_ref_name(node)].get("properties")}
    links = {name: _anchor(f"{path}.{name}") for name in subsections} | (extra_links or {})
    out += _field_rows(props, set(model.get("required", [])), defaults, links)
    out.append("")
    for name, (ref, node) in subsections.items():
        sub_defaults = (defaults or {}).get(name, node.get("default"))
        _render_section(f"{path}.{name}", ref, defs, sub_defaults if isinstance(sub_defaults, dict) else None,
                        node.get("description", ""), shown, out)


def _render_teacher_options(out: list[str]) -> None:
    """One table per teacher backend: its ``Options`` model, whose fields are written flat in ``teacher:``."""
    out += ["### Teacher backend options", "",
            "Each backend (`teacher.kind`) owns its options, written flat beside the fields above; an option of "
            "another backend is refused at load, naming the backend it belongs to.", ""]
    for kind in sorted(TEACHERS.names()):
        schema = options_class(kind).model_json_schema()
        out += [f"#### `kind: {kind}`", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        if schema.get("properties"):
            out += _field_rows(schema["properties"], set(schema.get("required", [])), None, {})
        else:
            out.append("No options of its own.")
        out.append("")


def render_config_reference(schema: dict[str, Any] | None = None) -> str:
    """Markdown reference of every config section and field, from ``PipelineConfig.model_json_schema()``.

    ``schema``: a JSON schema of the same shape (for tests); default: the live one. Returns the text of
    ``docs/config.md``, ending with one newline. Deterministic: the same schema gives the same bytes.
    """
    schema = schema if schema is not None else PipelineConfig.model_json_schema()
    defs = schema.get("$defs", {})
    out = [
        "# Config reference",
        "",
        f"<!-- Generated from PipelineConfig.model_json_schema(): do not edit; run `{REGENERATE}`. -->",
        "",
        "One YAML file describes a run (`sentidistill run CONFIG`). `sentidistill config --example` prints a "
        "commented one, `sentidistill config --schema` the JSON schema this page is generated from, and "
        "`sentidistill config --validate FILE` checks a file. An invalid config fails before any work starts, "
        "naming the field, the value and what was expected; an unknown field is an error. Override any field "
        "from the command line with `--set section.field=value`. Relative paths in a config resolve against "
        "the config file's folder.",
        "",
    ]
    if schema.get("description"):
        out += [_cell(schema["description"]), ""]
    props = schema.get("properties", {})
    top = {n: p for n, p in props.items() if not (_ref_name(p) and defs[_ref_name(p)].get("properties"))}
    sections = {n: p for n, p in props.items() if n not in top}
    out += ["## Top level", ""]
    links = {n: _anchor(n) for n in sections}
    out += _field_rows(top, set(schema.get("required", [])), None, links)
    out += ["", "Sections: " + ", ".join(f"[`{n}`](#{links[n]})" for n in sections) + ".", ""]
    shown: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, node in sections.items():
        default = node.get("default")
        _render_section(name, _ref_name(node), defs, default if isinstance(default, dict) else None,
                        node.get("description", ""), shown, out,
                        {"options": _anchor("Teacher backend options")} if name == "teacher" else None)
        if name == "teacher":
            _render_teacher_options(out)
    return "\n".join(out).rstrip("\n") + "\n"
