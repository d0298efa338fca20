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


def test_plots_keep_one_colour_per_model_and_never_zoom_the_score_axis():
    """Two students 0.4 points apart (27.45 vs 27.85, the quickstart's case) stay 0.4 points apart on a
    0-100 axis, with their intervals as error bars, and each model has the same colour in every plot."""
    from matplotlib.colors import to_hex

    from sentidistill.report.writer import FIXED_COLOURS, figures, model_colours

    runs = [_metrics("student_before", 49_000_000, 0.2745, 0.2745, 0.01),
            _metrics("teacher", 1_500_000_000, 0.90, 0.40, 0.2),
            _metrics("student_after", 49_000_000, 0.2785, 0.2785, 0.01)]
    for r in runs:
        r["tasks"]["sst2"].update(ci_low=r["tasks"]["sst2"]["score"] - 0.05, ci_high=r["tasks"]["sst2"]["score"] + 0.04)
        r.update(sentibench_score_ci_low=r["sentibench_score"] - 0.03, sentibench_score_ci_high=r["sentibench_score"] + 0.03)
    names = ["student_before", "teacher", "student_after"]
    colours = model_colours(names)
    assert colours == {n: FIXED_COLOURS[n] for n in names}
    assert model_colours(["mine", "teacher", "yours"])["teacher"] == FIXED_COLOURS["teacher"]
    assert len(set(model_colours(["a", "b", "c", "teacher", "student_after"]).values())) == 5
    figs = figures(runs, names, colours)
    assert set(figs) == {"tasks", "params", "latency"}
    for fig in figs.values():
        ax = fig.axes[0]
        assert ax.get_ylim() == (0.0, 100.0)
    bars = figs["tasks"].axes[0].patches
    assert [to_hex(b.get_facecolor()) for b in bars] == [colours[n] for n in names for _ in range(2)]
    for key in ("params", "latency"):
        ax = figs[key].axes[0]
        points = [line for line in ax.lines if line.get_marker() == "o"]
        assert [to_hex(p.get_color()) for p in points] == [colours[n] for n in names]
    # Error bars are the 95% intervals: the teacher's sst2 bar spans 85-94.
    segs = [c for c in figs["tasks"].axes[0].collections if c.get_segments()]
    lows = [s[0][1] for c in segs for s in c.get_segments()]
    assert any(abs(v - 85.0) < 1e-6 for v in lows) and any(abs(v - 22.45) < 1e-6 for v in lows)
    import matplotlib.pyplot as plt

    for fig in figs.values():
        plt.close(fig)


def test_report_shows_intervals_when_the_bench_computed_them(tmp_path):
    m = _metrics("student", 49_000_000, 0.80, 0.20, 0.01)
    m["tasks"]["sst2"].update(ci_low=0.75, ci_high=0.846)
    m.update(sentibench_score_ci_low=0.47, sentibench_score_ci_high=0.53)
    md = write_report([m], tmp_path)["markdown"].read_text()
    assert "| sst2 | macro_f1 | 80.0 ± 1.0 [75.0, 84.6] |" in md
    assert "| opener | graph_f1 | 20.0 |" in md  # no interval computed: none shown
    assert "| score (mean of tasks) |  | 50.0 ± 0.5 [47.0, 53.0] |" in md
    assert "95% percentile bootstrap interval" in md and "fewer than 200 items (n = 20)" in md
