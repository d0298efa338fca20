"""docs/config.md is the config's JSON schema rendered as Markdown, and stays in step with it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

from sentidistill.config import PipelineConfig
from sentidistill.config_docs import REGENERATE, render_config_reference

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "config.md"


def test_committed_reference_matches_the_schema():
    """A field added, renamed or re-described without regenerating docs/config.md fails here."""
    assert DOC.read_text(encoding="utf-8") == render_config_reference(), (
        f"docs/config.md is out of date with the config schema: run `{REGENERATE}` and commit it")


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of any level."""
    body = text.split(heading + "\n", 1)[1]
    return body.split("\n#", 1)[0]


def test_every_section_and_field_is_documented():
    schema = PipelineConfig.model_json_schema()
    text = render_config_reference(schema)
    for name in schema["properties"]:
        assert f"`{name}`" in text, name
    for section, def_name in [("bench", "BenchConfig"), ("student", "StudentConfig"), ("training", "TrainingConfig"),
                              ("knowdist.reviews", "ReviewsConfig"), ("soft_labels", "SoftLabelsConfig"),
                              ("classifier", "ClassifierConfig"), ("finetune", "FinetuneEvalConfig")]:
        body = _section(text, f"{'###' if '.' in section else '##'} `{section}`")
        for field in schema["$defs"][def_name]["properties"]:
            assert f"| `{field}` |" in body, (section, field)
    # Type, default, bounds and description of one field, as in the schema.
    assert "| `shots` | int | `4` | ≥ 0, ≤ 32 |" in _section(text, "## `bench`")
    assert ('| `calibration` | "none" \\| "batch" \\| "contextual" | `"batch"` |  | batch (Zhou et al. 2023'
            in _section(text, "## `soft_labels`"))
    # A nested section with its own defaults lists those that differ from the first table of its model.
    nested = _section(text, "### `classifier.training`")
    assert "[`training`](#training)" in nested and "`epochs` `4.0`" in nested and "`batch_size` `32`" in nested
    # The teacher's backend options (each backend's own schema), e.g. a required option and an enum.
    replay = _section(text, "#### `kind: replay`")
    assert "| `replay_path` | path | required |" in replay and '"auto" \\| "key" \\| "field" \\| "prompt"' in replay
    assert "| `n_ctx` | int | `4096` | ≥ 256 |" in _section(text, "#### `kind: llamacpp`")


def test_a_new_field_shows_up_and_makes_the_committed_file_stale():
    schema = copy.deepcopy(PipelineConfig.model_json_schema())
    schema["$defs"]["BenchConfig"]["properties"]["new_knob"] = {
        "type": "integer", "default": 3, "minimum": 1, "maximum": 9, "description": "A knob <task> | pipe."}
    text = render_config_reference(schema)
    assert "| `new_knob` | int | `3` | ≥ 1, ≤ 9 | A knob &lt;task> \\| pipe. |" in _section(text, "## `bench`")
    assert text != DOC.read_text(encoding="utf-8")


def test_cli_writes_the_reference():
    """`sentidistill config --reference > docs/config.md` writes exactly the rendered text."""
    res = subprocess.run([sys.executable, "-c", "from sentidistill.cli import run; run()", "config", "--reference"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout == render_config_reference()
