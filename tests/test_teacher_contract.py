"""Contract tests over every registered teacher backend: its options validate when the config loads.

A new backend is covered by registering it in sentidistill.teacher.TEACHERS; nothing here names a kind
except the old-layout checks at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sentidistill.config import load_config
from sentidistill.errors import ConfigError
from sentidistill.teacher import TEACHERS, TeacherConfig, TeacherOptions
from sentidistill.teacher.cli import parse_options
from sentidistill.teacher.config import options_class

KINDS = TEACHERS.names()


def _required(kind: str, tmp_path: Path) -> dict:
    """Values for the options a backend cannot do without (e.g. a transcript path)."""
    out = {}
    for name, f in options_class(kind).model_fields.items():
        if f.is_required():
            out[name] = str(tmp_path / f"{name}.jsonl") if "path" in name else "x"
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_backend_declares_options_and_a_factory(kind):
    backend = TEACHERS.get(kind)
    assert callable(getattr(backend, "from_config", None)), f"{kind}: needs from_config(cfg)"
    opts = options_class(kind)
    assert issubclass(opts, TeacherOptions)
    assert opts.model_config.get("extra") == "forbid"
    common = set(TeacherConfig.model_fields)
    assert not common & set(opts.model_fields), f"{kind}: an option shadows a common teacher setting"
    for name, f in opts.model_fields.items():
        assert f.description, f"{kind}.{name} needs a description (it documents the config)"


@pytest.mark.parametrize("kind", KINDS)
def test_flat_section_round_trips(kind, tmp_path):
    cfg = TeacherConfig(kind=kind, model="m", concurrency=3, **_required(kind, tmp_path))
    assert isinstance(cfg.options, options_class(kind))
    flat = cfg.model_dump(mode="json")
    assert "options" not in flat and flat["kind"] == kind and flat["concurrency"] == 3
    assert TeacherConfig.model_validate(flat) == cfg


@pytest.mark.parametrize("kind", KINDS)
def test_options_of_other_backends_and_unknown_options_are_refused(kind, tmp_path):
    base = {"kind": kind, "model": "m", **_required(kind, tmp_path)}
    for other in KINDS:
        foreign = sorted(set(options_class(other).model_fields) - set(options_class(kind).model_fields))
        if other == kind or not foreign:
            continue
        key = foreign[0]
        with pytest.raises(ValidationError) as e:
            TeacherConfig.model_validate(base | {key: "not-a-default"})
        msg = str(e.value)
        assert f"option '{key}'" in msg and other in msg and "kind: " in msg
    with pytest.raises(ValidationError, match="unknown field"):
        TeacherConfig.model_validate(base | {"no_such_option": 1})


def test_cli_options_are_parsed_generically():
    assert parse_options(["n_ctx=2048", "mode=server", "server_args=[-fa]", "base_url=http://h:1/v1"]) == {
        "n_ctx": 2048, "mode": "server", "server_args": ["-fa"], "base_url": "http://h:1/v1"}
    cfg = TeacherConfig(kind="llamacpp", **parse_options(["n_ctx=2048", "mode=server"]))
    assert cfg.options.n_ctx == 2048 and cfg.options.mode == "server"


# -- configs written for the old flat teacher section ----------------------------------------------------

OLD_FLAT = {  # what `model_dump` wrote before backends owned their options: every backend's fields
    "kind": "llamacpp", "model": "builtin:qwen2.5-coder-0.5b", "base_url": None, "api_key_env": "OPENAI_API_KEY",
    "replay_path": None, "concurrency": 1, "max_retries": 3, "repair_attempts": 1, "timeout_s": 120.0,
    "max_requests": None, "max_total_tokens": None, "price_per_1k_prompt_tokens": None,
    "price_per_1k_completion_tokens": None, "n_ctx": 2048, "n_threads": 2, "extra": {"mode": "server", "logits_all": True},
}


def _load(tmp_path: Path, teacher: dict):
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump({"teacher": teacher}), encoding="utf-8")
    return load_config(p)


def test_an_old_flat_section_still_loads(tmp_path):
    cfg = _load(tmp_path, OLD_FLAT)
    t = cfg.teacher
    assert (t.kind, t.concurrency, t.options.n_ctx, t.options.n_threads) == ("llamacpp", 1, 2048, 2)
    assert t.options.mode == "server" and t.options.logits_all is True  # extra: moved into the options


def test_an_old_flat_section_with_another_backends_setting_says_how_to_rewrite_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, OLD_FLAT | {"base_url": "http://localhost:8000/v1"})
    msg = str(e.value)
    assert "teacher.base_url" in msg and "belongs to the openai teacher backend, not to 'llamacpp'" in msg
    assert "remove it, or set kind: openai" in msg
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, OLD_FLAT | {"extra": {"engine_args": {"x": 1}}})
    assert "teacher.extra.engine_args" in str(e.value) and "vllm" in str(e.value)


def test_config_hash_sees_the_old_flat_layout():
    """Runs started before backends owned their options keep their config hash (and so their finished stages)."""
    assert TeacherConfig.model_validate(OLD_FLAT).legacy_dump() == OLD_FLAT
    openai_old = OLD_FLAT | {"kind": "openai", "base_url": "http://h/v1", "n_ctx": 4096, "n_threads": None,
                             "extra": {"extra_body": {"top_k": 5}}}
    assert TeacherConfig.model_validate(openai_old).legacy_dump() == openai_old
