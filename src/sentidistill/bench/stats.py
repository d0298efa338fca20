"""Bootstrap intervals for bench scores: per task, for the mean over tasks, and paired differences B − A.

Method (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 6 and 13): draw ``n`` of a task's
``n`` test items with replacement, recompute the task's own metric (macro-F1, accuracy, micro-F1 over
tuples, sentiment-graph F1) on the draw, repeat ``n_resamples`` times; the 95% *percentile interval* is the
2.5th and 97.5th percentile of those replicates. Metrics such as macro-F1 are not means of per-item values,
so the metric is recomputed on every replicate rather than averaging per-item scores.

* **Mean over tasks**: items are resampled within each task independently (tasks are separate test
  sets), the task scores are recomputed and averaged per replicate.
* **Paired difference B − A** (Koehn 2004, "Statistical significance tests for machine translation
  evaluation"; Dror et al. 2018, "The hitchhiker's guide to testing statistical significance in NLP"):
  both models are scored on the *same* resampled items in every replicate, so the item difficulty they
  share cancels out; an interval that excludes 0 says the gain is larger than the test-set noise.
* **Several demonstration seeds**: each seed's predictions are scored on the same draw and the seed scores
  averaged, as the bench averages them.

Determinism: every task draws from its own ``numpy.random.Generator`` seeded with ``(seed, crc32(task))``,
so a task's interval does not depend on which other tasks ran, and two models compared on a task see the
same draws. Replicates are drawn in fixed blocks of :data:`_BLOCK` to bound memory on large test sets.

Scores are fractions in [0, 1] (reports multiply by 100).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 42
_BLOCK = 250  # replicates drawn at a time: (250 x n) counts stay small even for a 25,000-item test set

CLASSIFICATION_METRICS = ("macro_f1", "accuracy")
RATIO_METRICS = ("micro_f1", "graph_f1")


# -- generic helpers (shared with finetune's seed-level statistics) --------------------------------------

def percentile_interval(replicates: Sequence[float] | np.ndarray, confidence: float = DEFAULT_CONFIDENCE
                        ) -> tuple[float, float]:
    """The percentile interval of bootstrap ``replicates`` (Efron & Tibshirani 1993, eq. 13.5).

    ``confidence`` in (0, 1); returns (low, high) at quantiles (1 − c)/2 and (1 + c)/2 (numpy's default
    linear interpolation). Raises ValueError on an empty array or a confidence outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    arr = np.asarray(replicates, dtype=float)
    if arr.size == 0:
        raise ValueError("no bootstrap replicates")
    alpha = (1 - confidence) / 2
    return float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha))


def bootstrap_mean_ci(values: Sequence[float], *, n_resamples: int = 10_000, confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. per-seed differences); seeded.

    Draws all ``(n_resamples, len(values))`` indices at once from ``default_rng(seed)``.
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n_resamples, len(arr)))].mean(axis=1)
    return percentile_interval(means, confidence)


def excludes_zero(low: float | None, high: float | None) -> bool:
    """True when an interval lies entirely above or entirely below 0 (None bounds: no interval, False)."""
    return low is not None and high is not None and (low > 0 or high < 0)


def task_rng(task: str, seed: int = DEFAULT_SEED) -> np.random.Generator:
    """The generator whose draws resample task ``task``: the same for every model and every run."""
    return np.random.default_rng([int(seed), zlib.crc32(task.encode("utf-8"))])


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Blocks of bootstrap draws as counts: row b, column i = how often item i is in replicate b.

    Yields float arrays of shape (≤ _BLOCK, n); each row sums to ``n``; ``n_resamples`` rows in total.
    """
    if n < 1:
        raise ValueError("cannot resample an empty test set")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    done = 0
    while done < n_resamples:
        b = min(_BLOCK, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b)[:, None] * n + idx).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)
        done += b


# -- per-item scoring data --------------------------------------------------------------------------

@dataclass
class ItemScores:
    """What a task's metric needs from each test item, so it can be recomputed on any resample.

    Classification (``macro_f1``/``accuracy``): ``pred`` and ``gold`` are label indices into ``labels``
    (−1: unparseable, matches no label), shape (n,). Macro-F1 is the mean over ``labels`` of
    2·TP / (#pred + #gold), 0 where both are 0 (scikit-learn, ``zero_division=0``).

    Tuple tasks (``micro_f1``/``graph_f1``): ``parts`` has shape (n, 4): per item the matched weight of its
    predicted tuples, their number, the matched weight of its gold tuples, their number (for exact tuples
    both weights are the true positives). Then P = Σ col0 / Σ col1, R = Σ col2 / Σ col3, F1 = 2PR/(P+R);
    summed over the items of a resample this is exactly the corpus-level micro/graph F1.
    """

    metric: str
    ids: list[str]
    labels: list[str] | None = None
    pred: np.ndarray | None = None
    gold: np.ndarray | None = None
    parts: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    def scores(self, counts: np.ndarray) -> np.ndarray:
        """The metric on each resample: ``counts`` (B, n) item multiplicities -> scores (B,) in [0, 1]."""
        w = np.atleast_2d(np.asarray(counts, dtype=float))
        if self.metric in CLASSIFICATION_METRICS:
            assert self.pred is not None and self.gold is not None and self.labels is not None
            if self.metric == "accuracy":
                return (w @ (self.pred == self.gold).astype(float)) / w.sum(axis=1)
            n_lab = len(self.labels)
            pred_1h = (self.pred[:, None] == np.arange(n_lab)[None, :]).astype(float)  # (n, L)
            gold_1h = (self.gold[:, None] == np.arange(n_lab)[None, :]).astype(float)
            tp = w @ (pred_1h * gold_1h)  # (B, L)
            denom = w @ pred_1h + w @ gold_1h
            f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
            return f1.mean(axis=1)
        if self.metric in RATIO_METRICS:
            assert self.parts is not None
            s = w @ self.parts  # (B, 4)
            p = np.divide(s[:, 0], s[:, 1], out=np.zeros(len(s)), where=s[:, 1] > 0)
            r = np.divide(s[:, 2], s[:, 3], out=np.zeros(len(s)), where=s[:, 3] > 0)
            return np.divide(2 * p * r, p + r, out=np.zeros(len(s)), where=(p + r) > 0)
        raise ValueError(f"no bootstrap for metric '{self.metric}'")

    def point(self) -> float:
        """The metric on all items (each once)."""
        return float(self.scores(np.ones((1, self.n)))[0])

    def reordered(self, ids: Sequence[str]) -> ItemScores:
        """The same items in the order of ``ids`` (which must be exactly this set; see :func:`align`)."""
        pos = {i: k for k, i in enumerate(self.ids)}
        order = np.array([pos[i] for i in ids], dtype=int)
        return ItemScores(
            metric=self.metric, ids=list(ids), labels=self.labels,
            pred=None if self.pred is None else self.pred[order],
            gold=None if self.gold is None else self.gold[order],
            parts=None if self.parts is None else self.parts[order],
        )


def item_parts(score: Mapping[str, Any]) -> list[float]:
    """The four per-item sums of a tuple task from the task's own score dict of ONE item.

    ``score`` is what ``Task.score([pred], [gold], [row])`` returns: precision, n_pred, recall, n_gold.
    """
    n_pred, n_gold = float(score["n_pred"]), float(score["n_gold"])
    return [float(score["precision"]) * n_pred, n_pred, float(score["recall"]) * n_gold, n_gold]


def classification_items(metric: str, labels: Sequence[str], ids: Sequence[Any], preds: Sequence[Any],
                         golds: Sequence[Any]) -> ItemScores:
    """ItemScores of a classification task; a prediction outside ``labels`` (e.g. None) is index −1.

    Raises ValueError when a gold label is not in ``labels`` or the lengths differ.
    """
    if not len(ids) == len(preds) == len(golds):
        raise ValueError(f"{len(ids)} ids, {len(preds)} predictions and {len(golds)} gold labels")
    index = {lab: k for k, lab in enumerate(labels)}
    missing = sorted({str(g) for g in golds if g not in index})
    if missing:
        raise ValueError(f"gold labels {missing} are not among the task's labels {list(labels)}")
    return ItemScores(
        metric=metric, ids=[str(i) for i in ids], labels=list(labels),
        pred=np.array([index.get(p, -1) if isinstance(p, str) else -1 for p in preds], dtype=int),
        gold=np.array([index[g] for g in golds], dtype=int),
    )


def ratio_items(metric: str, ids: Sequence[Any], parts: Sequence[Sequence[float]]) -> ItemScores:
    """ItemScores of a tuple task from per-item :func:`item_parts` rows."""
    arr = np.asarray(parts, dtype=float).reshape(len(parts), 4) if len(parts) else np.zeros((0, 4))
    if len(ids) != len(arr):
        raise ValueError(f"{len(ids)} ids for {len(arr)} rows of per-item scores")
    return ItemScores(metric=metric, ids=[str(i) for i in ids], parts=arr)


def task_items(task: Any, preds: Sequence[Any], golds: Sequence[Any], rows: Sequence[Mapping[str, Any]]
               ) -> ItemScores:
    """ItemScores of a bench :class:`~sentidistill.bench.task.Task` for parsed ``preds`` on ``rows``.

    Tuple tasks are scored one item at a time through ``task.score`` (the task's own scoring function), so
    the resampled F1 uses exactly the bench's matching rules.
    """
    ids = [r.get("id", k) for k, r in enumerate(rows)]
    if task.metric in CLASSIFICATION_METRICS:
        return classification_items(task.metric, task.labels, ids, preds, golds)
    parts = [item_parts(task.score([p], [g], [r])) for p, g, r in zip(preds, golds, rows, strict=True)]
    return ratio_items(task.metric, ids, parts)


# -- intervals --------------------------------------------------------------------------------------

def replicates(per_seed: Sequence[ItemScores], task: str, *, n_resamples: int = DEFAULT_RESAMPLES,
               seed: int = DEFAULT_SEED) -> np.ndarray:
    """Bootstrap replicates (n_resamples,) of a task's score: the mean over seeds of the metric on each draw.

    All entries of ``per_seed`` must hold the same items in the same order (the bench's seeds change the
    demonstrations, not the test items).
    """
    if not per_seed:
        raise ValueError(f"task '{task}': no predictions")
    first = per_seed[0]
    for other in per_seed[1:]:
        if other.ids != first.ids:
            raise ValueError(f"task '{task}': the seeds' predictions cover different items")
    out = [np.mean([s.scores(w) for s in per_seed], axis=0)
           for w in resample_counts(first.n, n_resamples, task_rng(task, seed))]
    return np.concatenate(out)


def align(a: Sequence[ItemScores], b: Sequence[ItemScores], task: str, *, where_a: str = "A",
          where_b: str = "B") -> list[ItemScores]:
    """``b``'s per-seed ItemScores reordered to ``a``'s item order; ValueError when the item sets differ."""
    ids_a, ids_b = a[0].ids, b[0].ids
    for ids, where in ((ids_a, where_a), (ids_b, where_b)):
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ValueError(f"task '{task}': duplicate item ids in {where} ({dup}); items cannot be paired")
    if set(ids_a) != set(ids_b):
        only_a = sorted(set(ids_a) - set(ids_b))
        only_b = sorted(set(ids_b) - set(ids_a))
        raise ValueError(
            f"task '{task}': {where_a} and {where_b} were scored on different items "
            f"({len(only_a)} only in {where_a}, e.g. {only_a[:3]}; {len(only_b)} only in {where_b}, e.g. "
            f"{only_b[:3]}); a paired comparison needs the same test items (same --limit and data)")
    return [s.reordered(ids_a) for s in b]


@dataclass
class Interval:
    """A point estimate with its bootstrap percentile interval (fractions; ×100 in reports)."""

    value: float
    low: float
    high: float
    n: int  # items (per task) or tasks (for the mean)

    @property
    def excludes_zero(self) -> bool:
        return excludes_zero(self.low, self.high)

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n,
                "excludes_zero": self.excludes_zero}


def interval(point: float, reps: np.ndarray, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    lo, hi = percentile_interval(reps, confidence)
    return Interval(float(point), lo, hi, n)


def mean_interval(per_task: Mapping[str, tuple[float, np.ndarray]], confidence: float = DEFAULT_CONFIDENCE
                  ) -> Interval:
    """Interval of the unweighted mean over tasks: ``per_task`` maps task -> (point, replicates)."""
    if not per_task:
        raise ValueError("no tasks")
    points = [p for p, _ in per_task.values()]
    reps = np.mean(np.stack([r for _, r in per_task.values()]), axis=0)
    return interval(float(np.mean(points)), reps, len(per_task), confidence)


def paired_difference(a: Mapping[str, Sequence[ItemScores]], b: Mapping[str, Sequence[ItemScores]], *,
                      n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE,
                      seed: int = DEFAULT_SEED, where_a: str = "A", where_b: str = "B"
                      ) -> tuple[dict[str, Interval], Interval | None]:
    """Paired bootstrap of B − A per task (tasks both have) and for the mean over those tasks.

    ``a`` / ``b`` map task -> per-seed ItemScores. Items are matched by id (ValueError when a task's item
    sets differ); both models are scored on the same draws of each task. Returns (per task, mean or None).
    """
    per_task: dict[str, Interval] = {}
    reps_by_task: dict[str, tuple[float, np.ndarray]] = {}
    for task in [t for t in a if t in b]:
        sa, sb = list(a[task]), align(a[task], b[task], task, where_a=where_a, where_b=where_b)
        ra = replicates(sa, task, n_resamples=n_resamples, seed=seed)
        rb = replicates(sb, task, n_resamples=n_resamples, seed=seed)
        point = float(np.mean([s.point() for s in sb]) - np.mean([s.point() for s in sa]))
        per_task[task] = interval(point, rb - ra, sa[0].n, confidence)
        reps_by_task[task] = (point, rb - ra)
    return per_task, (mean_interval(reps_by_task, confidence) if reps_by_task else None)


def items_from_predictions(rows: Sequence[Mapping[str, Any]], metric: str, labels: Sequence[str] | None,
                           where: str = "predictions") -> ItemScores:
    """ItemScores from the rows of a bench predictions file (``id``, ``parsed``, ``gold``, ``score_parts``).

    Classification needs the task's ``labels`` (stored in metrics.json); tuple tasks need ``score_parts``
    (written by the bench since it reports intervals). Raises ValueError naming ``where`` otherwise.
    """
    ids = [r.get("id") for r in rows]
    if any(i is None for i in ids):
        raise ValueError(f"{where}: rows without 'id'; items cannot be paired")
    if metric in CLASSIFICATION_METRICS:
        if not labels:
            raise ValueError(f"{where}: the task's labels are not in metrics.json (bench it again to add them)")
        return classification_items(metric, labels, ids, [r.get("parsed") for r in rows], [r.get("gold") for r in rows])
    if metric in RATIO_METRICS:
        missing = [k for k, r in enumerate(rows, start=1) if not isinstance(r.get("score_parts"), list)]
        if missing:
            raise ValueError(f"{where} line {missing[0]}: no 'score_parts' (bench it again to add them)")
        return ratio_items(metric, ids, [r["score_parts"] for r in rows])
    raise ValueError(f"{where}: no bootstrap for metric '{metric}'")
