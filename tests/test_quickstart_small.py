"""The README's first command, `sentidistill quickstart`, at a small size: the real default student (the
``classifier`` kind on all-MiniLM-L6-v2) and a small real offline teacher (``builtin:qwen2.5-coder-0.5b``
in-process through llama.cpp, installed by the ``dev`` extra; the quickstart's own 1.5B is the ``teacher``
extra), on the shared data, through every stage; then the table it prints and the README's `/v1/analyze`
request against the distilled student.

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
    "soft_labels.tasks": "[sst2, twitter]",
    "soft_labels.n_per_task": 12,      # 12 unlabeled texts per task: ~10 train + 2 dev after curation
    "classifier.training.epochs": 2,
    "classifier.training.batch_size": 8,
    "classifier.training.eval_steps": 2,
    "classifier.training.save_steps": 2,
    "bench.tasks": "[sst2, twitter]",
    "bench.limit": 6,
    "bench.bootstrap": 100,
    "teacher.n_threads": 2,
}
MODELS = {"teacher": "teacher", "teacher_calibrated": "teacher (calibrated)",
          "classifier_before": "classifier student (before)", "classifier_after": "classifier student (after)"}


def _needs() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install -e '.[dev]' installs it)")
    from sentidistill.core.assets import BUILTIN_GGUF, find_part_files
    from sentidistill.errors import InputError

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
           "--data-dir", str(shared_data_dir), "--runs-dir", str(tmp_path / "runs"),
           "--teacher", "builtin:qwen2.5-coder-0.5b", *sets]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = tmp_path / "runs" / "quickstart"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["config"]["classifier"]["enabled"] and manifest["config"]["classifier"]["encoder"] == "builtin:minilm"
    assert manifest["config"]["teacher"]["model"] == "builtin:qwen2.5-coder-0.5b"
    assert [s for s, v in manifest["stages"].items() if v["status"] == "done"] == [
        "teach_soft", "bench_teacher", "bench_teacher_calibrated", "init_classifier", "bench_classifier_before",
        "train_classifier", "bench_classifier_after", "report"]
    # The teacher scored every text's labels exactly (llama.cpp in-process); no gold label is in the corpus.
    import pyarrow.parquet as pq

    soft = pq.read_table(run / "corpus" / "soft_labels.parquet").to_pylist()
    assert len(soft) == manifest["stages"]["teach_soft"]["rows"] == 24
    assert {r["via"] for r in soft} == {"exact"} and all(r["gold"] is None for r in soft)
    assert all(abs(sum(r["probs"]) - 1) < 1e-6 for r in soft)
    stats = json.loads((run / "corpus" / "soft_labels.stats.json").read_text())
    assert set(stats["priors"]) == {"sst2", "twitter"}
    summary = json.loads((run / "models" / "classifier" / "final" / "training_summary.json").read_text())
    assert 0 < summary["global_step"] <= 2 * 3 and summary["train_rows"] + summary["dev_rows"] == 24
    # The printed table: one row per model, in pipeline order, each score the one in its metrics.json (x100).
    rows = _table_rows(res.stdout)
    assert list(rows) == list(MODELS.values()), res.stdout
    for key, name in MODELS.items():
        metrics = json.loads((run / "bench" / key / "metrics.json").read_text())
        assert set(metrics["tasks"]) == {"sst2", "twitter"} and all(t["n"] == 6 for t in metrics["tasks"].values())
        assert rows[name][-3] == f"{100 * metrics['sentibench_score']:.1f}", (name, rows[name])
        low, high = (metrics.get("sentibench_score_ci_low"), metrics.get("sentibench_score_ci_high"))
        if low is not None:  # the 95% interval column
            assert rows[name][-2] == f"[{100 * low:.1f}, {100 * high:.1f}]", (name, rows[name])
    report = (run / "report.md").read_text()
    assert (run / "report.html").is_file() and "classifier student (after)" in report and "Paired difference" in report

    # The README's serving example on the distilled student: `/v1/analyze` with task "sentiment".
    import httpx

    from sentidistill.serve import create_app
    from sentidistill.serve.background import BackgroundServer
    from test_serve_app import _readme_analyze_body

    body = _readme_analyze_body()
    with BackgroundServer(create_app(str(run / "models" / "classifier" / "final"))) as srv:
        r = httpx.post(srv.base_url + "/v1/analyze", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "sst2" and [x["text"] for x in out["results"]] == body["texts"]
    (result,) = out["results"]
    assert result["valid"] == (result["prediction"] is not None)
    assert result["prediction"] in ("positive", "negative") and result["valid"]
    assert set(result["probabilities"]) == {"positive", "negative"}
