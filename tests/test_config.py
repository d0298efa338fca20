"""Config validation: invalid configs fail before any work starts, naming field, value and expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sentidistill.config import PipelineConfig, load_config, validate_config
from sentidistill.errors import ConfigError


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def test_example_config_is_valid(tmp_path):
    from sentidistill.cli import example_config_text

    raw = yaml.safe_load(example_config_text())
    cfg = validate_config(raw)
    assert cfg.teacher.kind == "llamacpp"
    assert cfg.student.model == "builtin:smollm2-135m-instruct"  # the default generative student


def test_bad_field_names_the_field_value_and_expectation(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"training": {"learning_rate": -1}}))
    msg = str(err.value)
    assert "training.learning_rate" in msg
    assert "-1" in msg
    assert "greater than 0" in msg


def test_unknown_field_is_rejected(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"teacher": {"kind": "openai", "modle": "x"}}))
    assert "teacher.modle" in str(err.value)
    assert "unknown field" in str(err.value)


def test_unknown_teacher_kind(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"teacher": {"kind": "carrier-pigeon"}}))
    msg = str(err.value)
    assert "teacher.kind" in msg and "carrier-pigeon" in msg
    assert "'openai'" in msg and "'llamacpp'" in msg


def test_bad_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"data_dir": str(tmp_path / "nope")}))
    assert "data_dir" in str(err.value) and "not a directory" in str(err.value)


def test_replay_teacher_needs_a_transcript(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"teacher": {"kind": "replay"}}))
    assert "replay_path" in str(err.value)


def test_shot_bounds_checked(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"icldist": {"min_shots": 5, "max_shots": 2}}))
    assert "min_shots" in str(err.value)


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "cfg.yaml"
    p.write_text("teacher:\n  kind: openai\n   model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    # The line and column of the problem (the over-indented "model:" on line 3), not just the word "line".
    assert f"{p}: line 3, column 9 is not valid YAML" in str(err.value)


def test_relative_paths_resolve_against_config_folder(tmp_path):
    (tmp_path / "data").mkdir()
    cfg = load_config(_write(tmp_path, {"data_dir": "data"}))
    assert cfg.data_dir == (tmp_path / "data").resolve()


def test_config_hash_ignores_name_but_not_settings():
    a = PipelineConfig(name="a")
    b = PipelineConfig(name="b")
    c = PipelineConfig(name="a", seed=7)
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != c.config_hash()


def test_cli_reports_config_error_without_traceback(tmp_path):
    p = _write(tmp_path, {"teacher": {"kind": "carrier-pigeon"}})
    proc = subprocess.run(
        [sys.executable, "-c", "from sentidistill.cli import run; run()", "run", str(p)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "teacher.kind" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_config_example_and_validate(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "from sentidistill.cli import run; run()", "config", "--example"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    p = tmp_path / "example.yaml"
    p.write_text(out, encoding="utf-8")
    assert "#" in out  # commented
    res = subprocess.run(
        [sys.executable, "-c", "from sentidistill.cli import run; run()", "config", "--validate", str(p)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "config hash" in res.stdout
