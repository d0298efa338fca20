"""The report: several runs side by side, plots embedded, extra sections, clear errors."""

from __future__ import annotations

import json

import pytest

from sentidistill.errors import InputError
from sentidistill.report import write_report


def _metrics(name: str, params: int, sst2: float, opener: float, s_per_item: float) -> dict:
    tasks = {
        "sst2": {"category": "basic", "kind": "classification", "metric": "macro_f1", "n": 20, "score": sst2,
                 "score_std": 0.01, "unparseable_rate": 0.0},
        "opener": {"category": "fine-grained", "kind": "extraction", "metric": "graph_f1", "n": 20,
                   "score": opener, "score_std": 0.0, "unparseable_rate": 0.1},
    }
    return {"model": {"name": name, "params": params}, "config": {"shots": 4, "seeds": [42, 43], "limit": 20,
                                                                  "scoring": "restricted"},
            "tasks": tasks, "categories": {"basic": sst2, "fine-grained": opener},
            "sentibench_score": (sst2 + opener) / 2, "sentibench_score_std": 0.005, "unparseable_rate": 0.05,
            "items_per_s": 1 / s_per_item, "s_per_item": s_per_item, "created": "2025-01-01T00:00:00+00:00"}


def test_report_compares_runs(tmp_path):
    student = _metrics("student", 49_000_000, 0.80, 0.20, 0.01)
    f = tmp_path / "teacher" / "metrics.json"
    f.parent.mkdir()
    f.write_text(json.dumps(_metrics("teacher", 1_500_000_000, 0.90, 0.40, 0.2)))
    paths = write_report([student, f.parent], tmp_path / "rep", title="KD run",
                         extra_sections=[("Fine-tuning", "seed 1: 70.0\nseed 2: 71.0")])
    md = paths["markdown"].read_text()
    assert "| task | metric | student | teacher |" in md
    assert "| sst2 | macro_f1 | 80.0 ± 1.0 | 90.0 ± 1.0 |" in md
    assert "| score (mean of tasks) |  | 50.0 ± 0.5 | 65.0 ± 0.5 |" in md
    assert "## Fine-tuning" in md and (tmp_path / "rep" / "plots" / "tasks.png").is_file()
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 3  # per-task bars, vs params, vs latency
    assert '<td class="best">90.0 ± 1.0</td>' in page and "<pre>seed 1: 70.0" in page
    assert "<link" not in page and "<script" not in page  # self-contained


def test_report_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        write_report([tmp_path / "missing.json"], tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not a benchmark metrics file"):
        write_report([bad], tmp_path)
