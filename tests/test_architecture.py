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
    """Layers only import downward, no package-level cycles, production code never imports testing nor a moved
    module's old path (a shim: see ``test_moved_modules_warn_and_name_their_new_home``)."""
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


#: The old paths of moved modules -> where their names live now (each shim warns; removed in 0.3).
SHIMS = {
    "sentidistill.modeling": "sentidistill.students",
    "sentidistill.teacher.types": "sentidistill.core.records",
    "sentidistill.teacher.weights": "sentidistill.core.assets",
    "sentidistill.train.kd": "sentidistill.train.align",
    "sentidistill.train.collators": "sentidistill.students.collate",
    "sentidistill.train.vocab_kd": "sentidistill.train.align",
    "sentidistill.train.gguf_student": "sentidistill.students.gguf",
}


def test_moved_modules_warn_and_name_their_new_home():
    """Importing an old path still works, once per process, with a DeprecationWarning naming the new path and
    the version that removes it (trl's and distilabel's pattern); the shim's names are the new home's objects."""
    code = """if True:
        import importlib, json, sys, warnings
        out = {}
        for name in sys.argv[1:]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mod = importlib.import_module(name)
            ours = [str(w.message) for w in caught
                    if issubclass(w.category, DeprecationWarning) and str(w.message).startswith("sentidistill")]
            homes = sorted({getattr(mod, n).__module__ for n in mod.__all__ if hasattr(getattr(mod, n), "__module__")})
            out[name] = {"warnings": ours, "homes": homes}
        print(json.dumps(out))
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code, *SHIMS], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    import json

    out = json.loads(res.stdout.splitlines()[-1])
    for old, new in SHIMS.items():
        (message,) = out[old]["warnings"]
        assert message.startswith(f"{old} is deprecated and will be removed in sentidistill 0.3"), message
        assert new in message, message
        assert not any(h == old for h in out[old]["homes"]), (old, out[old]["homes"])
