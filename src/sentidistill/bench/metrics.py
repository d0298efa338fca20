"""SentiBench metrics: macro-F1/accuracy, exact-tuple micro-F1, structured-sentiment graph F1, aggregates.

All scores are fractions in [0, 1]; reports multiply by 100. An unparseable prediction (``None``) is
always wrong: for classification it matches no label, for tuple tasks it predicts no tuple.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, NamedTuple

INVALID = "__unparseable__"


def classification_metrics(preds: Sequence[str | None], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the task's label set (scikit-learn, zero_division=0).

    Unparseable predictions become a label outside ``labels``: they cost recall of the gold class and
    add no false positive to any real class.
    """
    from sklearn.metrics import accuracy_score, f1_score

    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold labels")
    if not golds:
        return {"accuracy": 0.0, "macro_f1": 0.0, "unparseable_rate": 0.0, "n": 0}
    y_pred = [p if p is not None else INVALID for p in preds]
    return {
        "accuracy": float(accuracy_score(golds, y_pred)),
        "macro_f1": float(f1_score(golds, y_pred, labels=list(labels), average="macro", zero_division=0)),
        "unparseable_rate": sum(p is None for p in preds) / len(preds),
        "n": len(golds),
    }


def tuple_metrics(
    preds: Sequence[Iterable[Hashable] | None], golds: Sequence[Iterable[Hashable]]
) -> dict[str, float]:
    """Micro precision/recall/F1 over exact tuples, matched per sentence as multisets.

    A tuple predicted twice counts twice, and matches only as many gold copies as exist.
    """
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold lists")
    tp = n_pred = n_gold = 0
    for p, g in zip(preds, golds, strict=True):
        pc, gc = Counter(p or []), Counter(g)
        tp += sum((pc & gc).values())
        n_pred += sum(pc.values())
        n_gold += sum(gc.values())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "micro_f1": f1, "precision": precision, "recall": recall,
        "tp": tp, "n_pred": n_pred, "n_gold": n_gold,
        "unparseable_rate": (sum(p is None for p in preds) / len(preds)) if preds else 0.0,
        "n": len(golds),
    }


# -- structured sentiment (OpeNER) ------------------------------------------------------------------

class SentTuple(NamedTuple):
    """One opinion as token-index sets: (holder, target, expression, polarity)."""

    holder: frozenset[int]
    target: frozenset[int]
    expression: frozenset[int]
    polarity: str


_EMPTY = frozenset([-1])  # stands for "no holder / no target" (the scorer's "_"): two empties match


def token_offsets(text: str) -> list[tuple[int, int]]:
    """Character spans of whitespace-separated tokens (OpeNER sentences are pre-tokenised)."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def spans_to_tokens(spans: Iterable[tuple[int, int]], offsets: Sequence[tuple[int, int]]) -> frozenset[int]:
    """Indices of the tokens that overlap any character span ``[b, e)``."""
    idx = set()
    for b, e in spans:
        for i, (tb, te) in enumerate(offsets):
            if tb < e and te > b:
                idx.add(i)
    return frozenset(idx)


def locate_tokens(phrase: str, text: str, offsets: Sequence[tuple[int, int]] | None = None) -> frozenset[int]:
    """Token indices of a predicted phrase in ``text``: case-insensitive, token-aligned, first occurrence.

    Several discontinuous parts may be joined with ``" ... "`` or ``";"``. ``NULL``, ``None`` or an empty
    string mean "no span". A phrase absent from the sentence gets no tokens (it can then never match).
    """
    offsets = offsets if offsets is not None else token_offsets(text)
    words = [text[b:e].lower() for b, e in offsets]
    found: set[int] = set()
    for part in re.split(r"\s*(?:\.\.\.|…|;)\s*", phrase or ""):
        toks = part.lower().split()
        if not toks or part.strip().lower() in {"null", "none", "_"}:
            continue
        for i in range(len(words) - len(toks) + 1):
            if words[i : i + len(toks)] == toks:
                found.update(range(i, i + len(toks)))
                break
    return frozenset(found)


def _norm(t: SentTuple) -> SentTuple:
    return SentTuple(t.holder or _EMPTY, t.target or _EMPTY, t.expression, t.polarity.lower())


def _matches(a: SentTuple, b: SentTuple, keep_polarity: bool) -> bool:
    return bool(a.holder & b.holder and a.target & b.target and a.expression & b.expression) and (
        not keep_polarity or a.polarity == b.polarity
    )


def _weighted(t: SentTuple, others: Sequence[SentTuple]) -> float:
    """Best mean token overlap of ``t`` with any tuple of ``others`` that overlaps it in all three roles,
    each role's overlap divided by ``t``'s own size (so precision normalises by the prediction,
    recall by the gold). As in the official scorer, polarity is not checked here."""
    best = 0.0
    for o in others:
        if t.holder & o.holder and t.target & o.target and t.expression & o.expression:
            score = (
                len(t.holder & o.holder) / len(t.holder)
                + len(t.target & o.target) / len(t.target)
                + len(t.expression & o.expression) / len(t.expression)
            ) / 3
            best = max(best, score)
    return best


def sentiment_graph_f1(
    preds: Sequence[Sequence[SentTuple] | None], golds: Sequence[Sequence[SentTuple]], keep_polarity: bool = True
) -> dict[str, float]:
    """Sentiment graph F1 (Barnes et al. 2021; SemEval-2022 Task 10 ``evaluate.py``: ``tuple_f1``).

    Definition, per sentence with predicted tuples P and gold tuples G (token-index sets; an empty holder
    or target is a placeholder that matches only another empty one):

    * a predicted tuple p is a true positive if some g in G overlaps it in holder, target and expression
      (at least one shared token each) with the same polarity; its weight is
      max over overlapping g of mean(|p.h∩g.h|/|p.h|, |p.t∩g.t|/|p.t|, |p.e∩g.e|/|p.e|);
    * precision = Σ weights of true-positive p / |all p|;
    * recall is the mirror image: Σ over matched g of the overlap normalised by g's sizes / |all g|;
    * F1 = 2PR/(P+R).
    """
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold lists")
    p_w = p_n = r_w = r_n = 0.0
    for p_list, g_list in zip(preds, golds, strict=True):
        ps = [_norm(t) for t in (p_list or [])]
        gs = [_norm(t) for t in g_list]
        for p in ps:
            p_n += 1
            if any(_matches(p, g, keep_polarity) for g in gs):
                p_w += _weighted(p, gs)
        for g in gs:
            r_n += 1
            if any(_matches(g, p, keep_polarity) for p in ps):
                r_w += _weighted(g, ps)
    precision = p_w / p_n if p_n else 0.0
    recall = r_w / r_n if r_n else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "graph_f1": f1, "precision": precision, "recall": recall,
        "n_pred": int(p_n), "n_gold": int(r_n),
        "unparseable_rate": (sum(p is None for p in preds) / len(preds)) if preds else 0.0,
        "n": len(golds),
    }


# -- aggregates -------------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def category_means(scores: dict[str, float], categories: dict[str, str]) -> dict[str, float]:
    """Unweighted mean task score per category (over the tasks that were run)."""
    groups: dict[str, list[float]] = {}
    for task, s in scores.items():
        groups.setdefault(categories.get(task, "other"), []).append(s)
    return {c: sum(v) / len(v) for c, v in groups.items()}


def sentibench_score(scores: dict[str, float]) -> float:
    """The SentiBench score: the unweighted mean of the task scores that were run."""
    vals = list(scores.values())
    return sum(vals) / len(vals) if vals else math.nan


def summarise_seeds(per_seed: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and std over seeds of every numeric metric."""
    keys = sorted({k for m in per_seed.values() for k, v in m.items() if isinstance(v, int | float)})
    mean, std = {}, {}
    for k in keys:
        m, s = mean_std([m[k] for m in per_seed.values() if isinstance(m.get(k), int | float)])
        mean[k], std[k] = m, s
    return mean, std
