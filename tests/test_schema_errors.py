"""The README's promise "bad input gets a clear error", checked over EVERY field of the config and task schemas.

The test walks :class:`PipelineConfig` and :class:`TaskSpec` (pydantic ``model_fields``, recursively, the items of
``labels`` included) and, for each field, writes a file with the field in a wrong section and a file with a value
of the wrong type. Each must fail with the project's own error (``ConfigError``/``InputError``: the CLI prints it
as one message, no traceback) that names the file and the field, and - for a misplaced field - where it belongs.
Reader options (``loader.options``) are declared per reader: one a format's reader does not take is refused at
task load, naming the option, the reader and the options it takes. Contract: docs/errors.md.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from sentidistill.bench.registry import TASKS_DIR, load_task_file
from sentidistill.bench.task import TaskSpec
from sentidistill.config import PipelineConfig, load_config
from sentidistill.data.loading import FORMAT_READERS, reader_options
from sentidistill.data.readers import OPTION_TYPES
from sentidistill.errors import ConfigError, InputError, SentidistillError
from sentidistill.utils.schema import walk_fields

CANDIDATES: list[Any] = [["wrong", "list"], "not-a-number", 12345, {"wrong": {"nested": 1}}]
CONFIG_FIELDS = walk_fields(PipelineConfig)
TASK_FIELDS = walk_fields(TaskSpec)
TASK_BASE = yaml.safe_load((TASKS_DIR / "sst5.yaml").read_text(encoding="utf-8"))  # has loader.options


def wrong_value(model: type, name: str) -> Any:
    """A value the field's type refuses (None when the field takes anything)."""
    adapter = TypeAdapter(model.model_fields[name].annotation)
    for cand in CANDIDATES:
        try:
            adapter.validate_python(cand)
        except ValidationError:
            return cand
    return None


def put(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``raw`` with ``path`` (``a.b``, ``labels[].name``: the first item) set to ``value``; sections created."""
    out = copy.deepcopy(raw)
    node: Any = out
    parts = path.split(".")
    for p in parts[:-1]:
        if p.endswith("[]"):
            key = p[:-2]
            if not isinstance(node.get(key), list) or not node[key]:
                node[key] = [{}]
            node = node[key][0]
        else:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
    node[parts[-1]] = value
    return out


def sections(fields: list[tuple[str, type, str]]) -> list[str]:
    """Dotted paths of the nested sections (fields that hold a model), list items excluded."""
    paths = {p for p, _, _ in fields}
    return [p for p in paths if any(q.startswith(p + ".") for q in paths) and "[]" not in p]


def misplaced(path: str, name: str, fields: list[tuple[str, type, str]], skip: tuple[str, ...] = ()) -> str:
    """Where to put field ``name`` (whose home is ``path``) so that it is in the wrong place: the top level
    for a nested field, else the first section that lacks a field of that name."""
    all_paths = {p for p, _, _ in fields}
    if "." in path and name not in {p for p in all_paths if "." not in p}:
        return name
    for sec in sorted(sections(fields)):
        if f"{sec}.{name}" not in all_paths and sec not in skip and not path.startswith(sec + "."):
            return f"{sec}.{name}"
    raise AssertionError(f"no wrong place for {path}")


def _config_error(tmp_path: Path, raw: dict[str, Any]) -> str:
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    text = str(err.value)
    assert str(f) in text and "Traceback" not in text
    return text


def _task_error(tmp_path: Path, raw: dict[str, Any]) -> str:
    f = tmp_path / "task.yaml"
    f.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_task_file(f)
    text = str(err.value)
    assert str(f) in text and "Traceback" not in text
    return text


def _value(model: type, name: str) -> Any:
    default = model.model_fields[name].default
    return default if isinstance(default, str | int | float | bool) and default is not None else "x"


def test_the_walk_sees_every_section():
    paths = {p for p, _, _ in CONFIG_FIELDS}
    assert {"classifier.training.epochs", "soft_labels.generative_training.lora_r", "knowdist.reviews.max_chars",
            "teacher.concurrency", "bench.limit"} <= paths
    assert {"demos.k", "loader.derive_splits.seed", "labels[].verbalizer", "prompt.answer_prefix"} <= {
        p for p, _, _ in TASK_FIELDS}
    assert len(CONFIG_FIELDS) > 150 and len(TASK_FIELDS) > 30


@pytest.mark.parametrize(("path", "model", "name"), CONFIG_FIELDS, ids=[p for p, _, _ in CONFIG_FIELDS])
def test_every_config_field_misplaced_and_mistyped(tmp_path, path, model, name):
    # Misplaced: the error names the field, the section it was found in, and where it belongs.
    where = misplaced(path, name, CONFIG_FIELDS, skip=("teacher",))
    text = _config_error(tmp_path, put({}, where, _value(model, name)))
    assert f"unknown field '{name}'" in text and "belongs in" in text
    assert path in text, text  # the right home is listed
    # Mistyped: the error names the dotted field.
    bad = wrong_value(model, name)
    if bad is None:
        pytest.skip(f"{path} takes any value")
    text = _config_error(tmp_path, put({}, path, bad))
    assert path in text, text


@pytest.mark.parametrize(("path", "model", "name"), TASK_FIELDS, ids=[p for p, _, _ in TASK_FIELDS])
def test_every_task_field_misplaced_and_mistyped(tmp_path, path, model, name):
    where = misplaced(path, name, TASK_FIELDS)
    text = _task_error(tmp_path, put(TASK_BASE, where, _value(model, name)))
    assert f"unknown field '{name}'" in text and "belongs in" in text
    assert path in text, text
    bad = wrong_value(model, name)
    if bad is None:
        pytest.skip(f"{path} takes any value")
    text = _task_error(tmp_path, put(TASK_BASE, path, bad))
    assert path.replace("[]", ".0") in text, text  # pydantic names the list item: labels.0.name


def test_reader_option_at_the_top_level_says_it_belongs_in_loader_options(tmp_path):
    text = _task_error(tmp_path, {**TASK_BASE, "label_field": "y"})
    assert "unknown field 'label_field'" in text and "loader.options.label_field" in text
    text = _task_error(tmp_path, put(TASK_BASE, "k", 4))  # `k` outside demos
    assert "unknown field 'k'" in text and "demos.k" in text


@pytest.mark.parametrize("fmt", sorted(FORMAT_READERS))
def test_every_reader_refuses_options_it_does_not_take(tmp_path, fmt):
    takes = reader_options(fmt)
    reader = FORMAT_READERS[fmt].__name__
    for option in OPTION_TYPES:
        raw = put(put(TASK_BASE, "loader.format", fmt), "loader.options", {option: "x"})
        if option in takes:
            continue
        text = _task_error(tmp_path, raw)
        assert f"'{option}'" in text and reader in text and f"'{fmt}'" in text, text
        assert ("one of: " + ", ".join(takes)) in text if takes else "no options" in text
    for option in takes:  # the right option with the wrong type
        types_, _ = OPTION_TYPES[option]
        bad = ["a list"] if dict in types_ or str in types_ else "text"
        text = _task_error(tmp_path, put(put(TASK_BASE, "loader.format", fmt), "loader.options", {option: bad}))
        assert f"loader.options.{option}" in text and "wrong type" in text, text


def test_load_records_refuses_an_option_the_reader_does_not_take(tmp_path):
    from sentidistill.data.loading import load_records

    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "a", "label": "b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"label_names.*read_table.*text_field, label_field, encoding, quoting"):
        load_records("jsonl", f, label_names={0: "neg"})
    assert load_records("jsonl", f, label_field="label")[0]["label"] == "b"


def test_every_builtin_task_loads_with_its_declared_options():
    for f in sorted(TASKS_DIR.glob("*.yaml")):
        load_task_file(f)  # no built-in task uses an option its reader does not declare


def test_errors_are_the_project_errors_that_the_cli_prints_without_traceback(tmp_path):
    import subprocess
    import sys

    f = tmp_path / "run.yaml"
    f.write_text("bench: {epochs: 3}\n", encoding="utf-8")
    res = subprocess.run([sys.executable, "-c", "from sentidistill.cli import run; run()", "config", "--validate",
                          str(f)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr + res.stdout
    assert "unknown field 'epochs' in bench" in res.stderr and "training.epochs" in res.stderr
    assert issubclass(ConfigError, SentidistillError) and issubclass(InputError, SentidistillError)
