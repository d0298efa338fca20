"""The architecture holds: import-linter's contracts (pyproject.toml) pass, and no module outside the
students package asks which architecture a model has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "sentidistill"


def test_import_contracts_hold():
    """Layers only import downward, no package-level cycles, production code never imports testing."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    res = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


ARCH_BRANCH = re.compile(r"is_encoder_decoder|[=!]=\s*[\"'](seq2seq|causal)[\"']|[\"'](seq2seq|causal)[\"']\s*[=!]=")


def test_no_architecture_branch_outside_students():
    hits = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "students":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ARCH_BRANCH.search(line):
                hits.append(f"{rel}:{n}: {line.strip()}")
    assert not hits, "architecture branches belong in sentidistill.students:\n" + "\n".join(hits)
