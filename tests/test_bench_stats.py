"""Bootstrap intervals of bench scores: hand-checkable cases, exactness against the tasks' own metrics,
determinism, paired differences, and the bench -> report path that writes and shows them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sentidistill.bench import get_task
from sentidistill.bench import stats as S
from sentidistill.bench.metrics import classification_metrics
from sentidistill.bench.models import Answer
from sentidistill.bench.runner import run_bench

LABELS = ["neg", "pos"]


def _cls(preds: list[str | None], golds: list[str], labels: list[str] = LABELS, metric: str = "macro_f1"):
    return S.classification_items(metric, labels, [f"i{k}" for k in range(len(golds))], preds, golds)


def test_all_correct_predictions_give_a_point_interval():
    gold = ["neg"] * 7 + ["pos"] * 5
    reps = S.replicates([_cls(gold, gold)], "t", n_resamples=300)
    assert reps.shape == (300,)
    assert S.percentile_interval(reps) == (1.0, 1.0)


def test_interval_brackets_the_score_and_narrows_with_more_items():
    rng = np.random.default_rng(0)

    def width(n: int) -> tuple[float, float, float]:
        gold = ["pos" if x else "neg" for x in rng.random(n) < 0.5]
        pred = [g if ok else ("neg" if g == "pos" else "pos") for g, ok in zip(gold, rng.random(n) < 0.75, strict=True)]
        items = _cls(pred, gold)
        lo, hi = S.percentile_interval(S.replicates([items], "t"))
        return lo, items.point(), hi

    lo50, p50, hi50 = width(50)
    lo800, p800, hi800 = width(800)
    assert lo50 < p50 < hi50 and lo800 < p800 < hi800
    assert (hi800 - lo800) < 0.5 * (hi50 - lo50)  # ~1/sqrt(n): 4x narrower for 16x the items
    assert 0.05 < hi800 - lo800 < 0.09  # 95% of a 0.75 accuracy at n=800: ±1.96*sqrt(.75*.25/800) ≈ ±0.03


def test_resampled_scores_equal_the_task_metric_on_the_resampled_items():
    """Every replicate is the task's own metric recomputed on the drawn items (with repeats)."""
    rng = np.random.default_rng(1)
    labels = ["a", "b", "c", "d"]  # "d" is never gold nor predicted: sklearn counts its F1 as 0
    gold = [labels[i] for i in rng.integers(0, 3, 40)]
    pred = [None if r < 0.1 else labels[i] for r, i in zip(rng.random(40), rng.integers(0, 3, 40), strict=True)]
    for metric in ("macro_f1", "accuracy"):
        items = _cls(pred, gold, labels, metric)
        counts = next(S.resample_counts(40, 5, np.random.default_rng(3)))
        for row in counts:
            idx = np.repeat(np.arange(40), row.astype(int))
            want = classification_metrics([pred[i] for i in idx], [gold[i] for i in idx], labels)[metric]
            assert items.scores(row[None, :])[0] == pytest.approx(want, abs=1e-12)
        assert items.point() == pytest.approx(classification_metrics(pred, gold, labels)[metric], abs=1e-12)


def test_tuple_task_replicates_equal_its_micro_f1():
    task = get_task("atsa_rest16")
    golds = [[("pasta", "negative"), ("staff", "positive")], [("view", "positive")], [], [("wine", "neutral")],
             [("pizza", "positive"), ("pizza", "positive")]]
    preds = [[("Pasta", "NEG"), ("staff", "negative")], [("view", "positive"), ("bar", "positive")], [], None,
             [("pizza", "positive")]]
    rows = [{"id": k, "text": "x", "gold": g} for k, g in enumerate(golds)]
    norm_preds = [None if p is None else [task.normalise_tuple(t) for t in p] for p in preds]
    items = S.task_items(task, norm_preds, golds, rows)
    assert items.point() == pytest.approx(task.score(norm_preds, golds, rows)["score"])
    for row in next(S.resample_counts(5, 20, np.random.default_rng(0))):
        idx = np.repeat(np.arange(5), row.astype(int))
        want = task.score([norm_preds[i] for i in idx], [golds[i] for i in idx], [rows[i] for i in idx])["score"]
        assert items.scores(row[None, :])[0] == pytest.approx(want, abs=1e-12)


def test_graph_f1_replicates_equal_the_task_metric(shared_data_dir):
    task = get_task("opener")
    rows = task.load(data_dir=shared_data_dir, limit=30)
    golds = [r["gold"] for r in rows]
    # Half the gold opinions back as predictions, one with a shortened expression (partial overlap).
    preds = [[task.normalise_tuple(t) for t in g[: max(1, len(g) // 2)]] if k % 3 else [] for k, g in enumerate(golds)]
    preds[1] = [(h, t, " ".join(e.split()[:1]), p) for h, t, e, p in preds[1]] if preds[1] else preds[1]
    items = S.task_items(task, preds, golds, rows)
    assert items.point() == pytest.approx(task.score(preds, golds, rows)["score"])
    for row in next(S.resample_counts(30, 5, np.random.default_rng(0))):
        idx = np.repeat(np.arange(30), row.astype(int))
        want = task.score([preds[i] for i in idx], [golds[i] for i in idx], [rows[i] for i in idx])["score"]
        assert items.scores(row[None, :])[0] == pytest.approx(want, abs=1e-12)


def test_replicates_are_deterministic_per_seed_and_task():
    gold = ["neg", "pos"] * 20
    pred = ["neg"] * 40
    items = [_cls(pred, gold)]
    a = S.replicates(items, "sst2", n_resamples=100, seed=7)
    assert np.array_equal(a, S.replicates(items, "sst2", n_resamples=100, seed=7))
    assert not np.array_equal(a, S.replicates(items, "sst2", n_resamples=100, seed=8))
    assert not np.array_equal(a, S.replicates(items, "imdb", n_resamples=100, seed=7))  # each task its own draws
    # Blocks of draws: asking for more replicates extends, never reshuffles, the first ones.
    assert np.array_equal(S.replicates(items, "sst2", n_resamples=600, seed=7)[:100], a)


def test_paired_difference_sees_a_consistent_gain_and_no_gain():
    gold = ["neg", "pos"] * 25
    a_pred = ["neg"] * 50  # right on every "neg", wrong on every "pos"
    b_pred = list(gold)  # right wherever A is, and where A is wrong
    per_task, mean = S.paired_difference({"t": [_cls(a_pred, gold)]}, {"t": [_cls(b_pred, gold)]}, n_resamples=500)
    d = per_task["t"]
    assert d.value == pytest.approx(1.0 - classification_metrics(a_pred, gold, LABELS)["macro_f1"])
    assert d.low > 0 and d.excludes_zero and mean is not None and mean.excludes_zero
    # A model compared with itself: every replicate's difference is exactly 0.
    same, _ = S.paired_difference({"t": [_cls(a_pred, gold)]}, {"t": [_cls(a_pred, gold)]}, n_resamples=200)
    assert (same["t"].low, same["t"].high) == (0.0, 0.0) and not same["t"].excludes_zero


def test_paired_difference_is_tighter_than_unpaired_intervals():
    """Pairing removes the item difficulty both models share: B = A plus 3 more right answers."""
    rng = np.random.default_rng(5)
    gold = ["pos" if x else "neg" for x in rng.random(300) < 0.5]
    flip = {"pos": "neg", "neg": "pos"}
    a_pred = [g if ok else flip[g] for g, ok in zip(gold, rng.random(300) < 0.7, strict=True)]
    wrong = [k for k, (p, g) in enumerate(zip(a_pred, gold, strict=True)) if p != g]
    b_pred = list(a_pred)
    for k in wrong[:12]:
        b_pred[k] = gold[k]
    a, b = _cls(a_pred, gold, metric="accuracy"), _cls(b_pred, gold, metric="accuracy")
    d = S.paired_difference({"t": [a]}, {"t": [b]})[0]["t"]
    lo_a, hi_a = S.percentile_interval(S.replicates([a], "t"))
    assert d.value == pytest.approx(12 / 300)
    assert d.excludes_zero and (d.high - d.low) < 0.5 * (hi_a - lo_a)
    assert lo_a < b.point() < hi_a  # the unpaired intervals overlap: only the paired test sees the gain


def test_paired_difference_matches_items_by_id_and_refuses_different_items():
    gold = ["neg", "pos", "pos", "neg"]
    a = S.classification_items("macro_f1", LABELS, ["w", "x", "y", "z"], ["neg", "neg", "pos", "neg"], gold)
    b_shuffled = S.classification_items("macro_f1", LABELS, ["z", "y", "x", "w"], ["neg", "pos", "neg", "neg"],
                                        gold[::-1])
    per_task, _ = S.paired_difference({"t": [a]}, {"t": [b_shuffled]}, n_resamples=50)
    assert (per_task["t"].value, per_task["t"].low, per_task["t"].high) == (0.0, 0.0, 0.0)  # same answers
    other = S.classification_items("macro_f1", LABELS, ["w", "x", "y", "q"], gold, gold)
    with pytest.raises(ValueError, match=r"different items.*only in A, e.g. \['z'\]"):
        S.paired_difference({"t": [a]}, {"t": [other]})
    dup = S.classification_items("macro_f1", LABELS, ["w", "w", "y", "z"], gold, gold)
    with pytest.raises(ValueError, match="duplicate item ids"):
        S.paired_difference({"t": [a]}, {"t": [dup]})


def test_mean_interval_resamples_tasks_independently():
    gold = ["neg", "pos"] * 30
    perfect = _cls(gold, gold)
    noisy = _cls(["neg"] * 60, gold)
    r1 = S.replicates([perfect], "t1")
    r2 = S.replicates([noisy], "t2")
    mean = S.mean_interval({"t1": (1.0, r1), "t2": (noisy.point(), r2)})
    lo2, hi2 = S.percentile_interval(r2)
    assert mean.value == pytest.approx((1.0 + noisy.point()) / 2)
    assert mean.low == pytest.approx((1.0 + lo2) / 2) and mean.high == pytest.approx((1.0 + hi2) / 2)


def test_finetune_bootstrap_is_the_shared_one():
    from sentidistill.finetune.stats import bootstrap_ci

    diffs = [0.5, 1.5, -0.2, 2.0, 0.9]
    assert bootstrap_ci(diffs, seed=3) == S.bootstrap_mean_ci(diffs, n_resamples=10_000, seed=3)
    with pytest.raises(ValueError, match="confidence"):
        S.percentile_interval([1.0], confidence=1.5)


# -- bench -> metrics.json -> report -------------------------------------------------------------------

class KeywordModel:
    """A lexicon classifier: 'positive' when the sentence holds a word from ``good``. Deterministic."""

    prompt_style = "plain"
    n_params = None

    def __init__(self, name: str, good: set[str]) -> None:
        self.name, self.good = name, good

    def _label(self, prompt: str) -> str:
        sentence = prompt.rsplit("Sentence:", 1)[-1].lower()
        return "positive" if any(w in sentence for w in self.good) else "negative"

    def choose(self, prompts, words, *, task="", rows=None):
        return [Answer(text=self._label(p)) for p in prompts]

    def generate(self, prompts, max_new_tokens, *, task="", stop=None):
        return [self._label(p) for p in prompts]


@pytest.fixture()
def soup_task(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    words = ["great", "lovely", "tasty", "fine"]
    rows = [{"id": f"s{k}", "text": f"{words[k % 4]} soup number {k}", "label": "pos"} for k in range(120)]
    rows += [{"id": f"s{120 + k}", "text": f"awful soup number {k}", "label": "neg"} for k in range(120)]
    (data / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"name": "soup", "category": "basic", "kind": "classification",
            "loader": {"format": "jsonl", "splits": {"test": "test.jsonl"}, "options": {"label_field": "label"}},
            "labels": [{"name": "neg", "verbalizer": "negative"}, {"name": "pos", "verbalizer": "positive"}],
            "instruction": "Sentiment?", "demos": {"k": 0}, "metric": "macro_f1"}
    (tmp_path / "soup.yaml").write_text(yaml.safe_dump(spec))
    return get_task(str(tmp_path / "soup.yaml")), data


def test_bench_writes_intervals_and_the_report_pairs_the_models(soup_task, tmp_path: Path):
    from sentidistill.report import write_report

    task, data = soup_task
    teacher = KeywordModel("teacher", {"great", "lovely", "tasty", "fine"})
    student = KeywordModel("student", {"great"})  # misses 3 of 4 positive words
    mt = run_bench(teacher, [task], shots=0, limit=200, data_dir=data, out_dir=tmp_path / "teacher", bootstrap=500)
    ms = run_bench(student, [task], shots=0, limit=200, data_dir=data, out_dir=tmp_path / "student", bootstrap=500)
    et, es = mt["tasks"]["soup"], ms["tasks"]["soup"]
    assert et["n"] == 200 and (et["score"], et["ci_low"], et["ci_high"]) == (1.0, 1.0, 1.0)
    assert es["ci_low"] < es["score"] < es["ci_high"] and es["labels"] == ["neg", "pos"]
    assert (ms["sentibench_score_ci_low"], ms["sentibench_score_ci_high"]) == (es["ci_low"], es["ci_high"])
    assert ms["categories_ci"] == {"basic": [es["ci_low"], es["ci_high"]]}
    saved = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert saved["tasks"]["soup"]["ci_low"] == es["ci_low"] and saved["bootstrap"]["n_resamples"] == 500

    paths = write_report([tmp_path / "student", tmp_path / "teacher"], tmp_path / "rep", bootstrap=500)
    md = paths["markdown"].read_text()
    cell = f"{100 * es['score']:.1f} [{100 * es['ci_low']:.1f}, {100 * es['ci_high']:.1f}]"
    assert f"| soup | macro_f1 | {cell} | 100.0 [100.0, 100.0] |" in md
    assert f"| basic (mean) |  | {cell} | 100.0 [100.0, 100.0] |" in md
    assert "## Paired difference vs teacher" in md  # the teacher is the default reference, not the first run
    diff_row = next(line for line in md.splitlines() if line.startswith("| soup | 200 | 100.0 |"))
    cells = [c.strip() for c in diff_row.strip("|").split("|")]
    assert cells[4].startswith(f"{100 * (es['score'] - 1):+.1f} [") and cells[5] == "yes"
    html = paths["html"].read_text()
    assert "Paired difference vs teacher" in html and "#1f77b4" in html  # the teacher's fixed colour

    # Another reference; and runs on different items cannot be paired.
    md2 = write_report([tmp_path / "student", tmp_path / "teacher"], tmp_path / "rep2",
                       reference="student")["markdown"].read_text()
    assert "## Paired difference vs student" in md2 and "| soup | 200 |" in md2
    from sentidistill.errors import InputError

    run_bench(student, [task], shots=0, limit=100, data_dir=data, out_dir=tmp_path / "small", bootstrap=100)
    with pytest.raises(InputError, match="different items"):
        write_report([tmp_path / "teacher", tmp_path / "small"], tmp_path / "rep3")
    assert write_report([tmp_path / "teacher", tmp_path / "small"], tmp_path / "rep3", bootstrap=None)
    with pytest.raises(InputError, match="unknown reference"):
        write_report([tmp_path / "teacher"], tmp_path / "rep4", reference="nobody")
