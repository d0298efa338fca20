"""The README's first command, `sentidistill quickstart`, at a small size: the real default student
(``builtin:minilm-encdec``) and the real offline teacher (``builtin:qwen2.5-coder-0.5b`` in-process through
llama.cpp, installed by the ``dev`` extra), on the shared data, through every stage; then the table it prints
and the README's `/v1/analyze` request against the distilled student.

Only the sizes are overridden (``--set``), so the command, the config and the stage order are the
quickstart's own. Needs ``../shared/data`` (skips, with the reason, without it) and the teacher packages.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp, pytest.mark.shared]

SIZES = {
    "knowdist.reviews.limit": 8,       # 8 released Mixtral analyses (replayed from the shared data)
    "icldist.tasks": "[sst2, twitter]",
    "icldist.n_prompts": 6,
    "training.max_steps": 2,
    "training.batch_size": 4,
    "knowdist_training.max_steps": 2,
    "knowdist_training.batch_size": 4,
    "bench.tasks": "[sst2, twitter]",
    "bench.limit": 4,
    "teacher.n_ctx": 2048,
    "teacher.n_threads": 2,
}
MODELS = {"teacher": "teacher", "student_before": "student (before)", "student_knowdist": "student (KnowDist)",
          "student_after": "student (KnowDist+ICLDist)"}


def _needs() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[dev]' installs it)")
    from sentidistill.errors import InputError
    from sentidistill.teacher.weights import BUILTIN_GGUF, find_part_files

    try:
        find_part_files(BUILTIN_GGUF["builtin:qwen2.5-coder-0.5b"])
    except InputError as exc:
        pytest.skip(f"the quickstart teacher is not installed: {exc}")


def _table_rows(output: str) -> dict[str, list[str]]:
    """The results table's body rows: model name -> its cells (rich draws it with box characters)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)[1:-1]]
        if cells and cells[0] in MODELS.values():
            rows[cells[0]] = cells[1:]
    return rows


def test_quickstart_small(shared_data_dir: Path, tmp_path: Path) -> None:
    _needs()
    sets = [a for k, v in SIZES.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-c", "from sentidistill.cli import run; run()", "quickstart",
           "--data-dir", str(shared_data_dir), "--runs-dir", str(tmp_path / "runs"), *sets]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "runs" / "quickstart"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["config"]["student"]["model"] == "builtin:minilm-encdec"
    assert manifest["config"]["teacher"]["model"] == "builtin:qwen2.5-coder-0.5b"
    assert [s for s, v in manifest["stages"].items() if v["status"] == "done"] == [
        "teach_knowdist", "teach_icl", "bench_teacher", "bench_student_before", "train_knowdist",
        "bench_student_knowdist", "train_icldist", "bench_student_after", "report"]
    # The teacher answered every ICL prompt (log-probs included) and the students were trained on it.
    import pyarrow.parquet as pq

    icl = pq.read_table(run / "corpus" / "icl.parquet").to_pylist()
    assert 0 < len(icl) <= 6 and manifest["stages"]["teach_icl"]["rows"] == len(icl)
    assert any(r["teacher_logprobs"] for r in icl)
    assert len(pq.read_table(run / "corpus" / "knowdist.parquet")) == manifest["stages"]["teach_knowdist"]["rows"] > 0
    for stage in ("knowdist", "icldist"):
        info = json.loads((run / "models" / stage / "final" / "training_info.json").read_text())
        assert info["global_step"] == 2
    # The printed table: one row per model, in pipeline order, each score the one in its metrics.json (x100).
    rows = _table_rows(res.stdout)
    assert list(rows) == list(MODELS.values()), res.stdout
    for key, name in MODELS.items():
        metrics = json.loads((run / "bench" / key / "metrics.json").read_text())
        assert set(metrics["tasks"]) == {"sst2", "twitter"} and all(t["n"] == 4 for t in metrics["tasks"].values())
        assert rows[name][-2] == f"{100 * metrics['sentibench_score']:.1f}", (name, rows[name])
    assert (run / "report.html").is_file() and "student (KnowDist+ICLDist)" in (run / "report.md").read_text()

    # The README's serving example on the distilled student: `/v1/analyze` with task "sentiment".
    import httpx

    from sentidistill.serve import create_app
    from sentidistill.serve.background import BackgroundServer
    from test_serve_app import _readme_analyze_body

    body = _readme_analyze_body()
    with BackgroundServer(create_app(str(run / "models" / "icldist" / "final"))) as srv:
        r = httpx.post(srv.base_url + "/v1/analyze", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "sst2" and [x["text"] for x in out["results"]] == body["texts"]
    (result,) = out["results"]
    assert result["valid"] == (result["prediction"] is not None)
    assert result["prediction"] in (None, "positive", "negative") and isinstance(result["raw"], str)
