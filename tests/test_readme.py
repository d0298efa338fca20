"""The README's two fresh-machine commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", head, flags=re.S)


def test_readme_opens_with_two_commands():
    cmds = _commands()
    assert len(cmds) == 2, cmds
    install_run, tests = cmds
    assert "pip install" in install_run and "sentidistill quickstart" in install_run
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    tests = _commands()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests.replace("python3.11", "$PY") in ci


def test_pyproject_pins_cpu_torch():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"torch==2.13.0"' in pyproject


def test_readme_task_yaml_example_loads_a_users_data(tmp_path):
    """The own-task example (docs/bench.md, linked from the README) is a working task definition."""
    import json

    import yaml

    from sentidistill.bench import get_task

    text = (ROOT / "docs" / "bench.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(# my_reviews\.yaml.+?)```", text, flags=re.S).group(1)
    spec = yaml.safe_load(block)
    rows = [{"review": f"great place {i}", "sentiment": "positive"} for i in range(5)]
    rows += [{"review": f"awful place {i}", "sentiment": "negative"} for i in range(5)]
    for split in ("train", "test"):
        f = tmp_path / f"{split}.jsonl"
        f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
        spec["loader"]["splits"][split] = str(f)
    path = tmp_path / "my_reviews.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    task = get_task(str(path))
    test = task.load("test")
    assert len(test) == 10 and {r["gold"] for r in test} == {"positive", "negative"}
    assert task.parse("Label: Good.") == "positive"  # synonyms normalise to the label
