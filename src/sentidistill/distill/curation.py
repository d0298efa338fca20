"""Corpus curation for soft-label distillation: deduplicate, filter by teacher confidence, hold out a
teacher-labelled dev slice, and balance by the teacher's (calibrated) label.

Every step is deterministic given the seed and reports how many texts it removed, so a user sees what the
corpus is made of (:class:`CurationStats`). No gold label is read anywhere.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

BalanceMode = Literal["none", "weight", "downsample"]


@dataclass
class TaskCuration:
    """What curation did to one task's texts."""

    n_in: int = 0
    removed_duplicates: int = 0
    removed_low_confidence: int = 0
    removed_balance: int = 0
    n_train: int = 0
    n_dev: int = 0
    teacher_raw_counts: dict[str, int] = field(default_factory=dict)  # arg-max of the raw distribution
    teacher_calibrated_counts: dict[str, int] = field(default_factory=dict)  # after calibration, before balancing
    train_counts: dict[str, int] = field(default_factory=dict)  # calibrated labels of the rows kept for training


@dataclass
class CurationStats:
    by_task: dict[str, TaskCuration] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: asdict(v) for k, v in self.by_task.items()}


def normalise_text(text: str) -> str:
    """The dedup key: lower-cased, whitespace collapsed, stripped."""
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def _stable_order(ids: list[str], seed: int) -> list[int]:
    """A seeded permutation that does not depend on the input order (hash of seed and id)."""
    keys = [hashlib.sha256(f"{seed}\x1f{i}".encode()).hexdigest() for i in ids]
    return sorted(range(len(ids)), key=lambda j: keys[j])


def _by_label(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["teacher_label"], []).append(r)
    return out


def _dev_ids(rows: list[dict[str, Any]], dev_fraction: float, min_dev: int, seed: int) -> set[str]:
    """The dev slice's row ids: ``dev_fraction`` of ``rows`` (at least ``min_dev``, at most half), per teacher
    label the first rows of a seeded order (stratified by teacher label)."""
    n_dev_target = max(min_dev, round(dev_fraction * len(rows))) if dev_fraction > 0 else 0
    n_dev_target = min(n_dev_target, len(rows) // 2)
    dev_ids: set[str] = set()
    if n_dev_target:
        frac = n_dev_target / len(rows)
        for lab_rows in _by_label(rows).values():
            order = _stable_order([str(r["id"]) for r in lab_rows], seed)
            dev_ids.update(str(lab_rows[j]["id"]) for j in order[: round(frac * len(lab_rows))])
    return dev_ids


def _downsample(rows: list[dict[str, Any]], cap: int, seed: int, removed: int) -> tuple[list[dict[str, Any]], int]:
    """At most ``cap`` rows per teacher label (the first of a seeded order); returns them and ``removed`` plus
    the number dropped."""
    out: list[dict[str, Any]] = []
    for lab_rows in _by_label(rows).values():
        order = _stable_order([str(r["id"]) for r in lab_rows], seed)
        keep_ids = {str(lab_rows[j]["id"]) for j in order[:cap]}
        out.extend(r for r in lab_rows if str(r["id"]) in keep_ids)
        removed += len(lab_rows) - len(keep_ids)
    return out, removed


def curate(
    rows: list[dict[str, Any]],
    *,
    seed: int = 42,
    dedupe: bool = True,
    min_confidence: float = 0.0,
    dev_fraction: float = 0.15,
    min_dev: int = 8,
    balance: BalanceMode = "weight",
) -> tuple[list[dict[str, Any]], CurationStats]:
    """Curate soft-labelled rows of one or more tasks.

    Each row needs ``task``, ``id``, ``text``, ``labels`` (the task's label names), ``probs_raw`` and
    ``probs`` (the calibrated distribution, both length ``K``). Returns the kept rows, each with
    ``split`` (``train`` | ``dev``), ``teacher_label`` (arg-max of ``probs``) and ``weight`` (a per-row
    training weight; the mean weight of a task's training rows is 1), and the statistics.

    Order of steps per task: dedupe (first occurrence kept) -> confidence filter (``max(probs) >=
    min_confidence``) -> dev slice (``dev_fraction`` of the rows, stratified by teacher label, at least
    ``min_dev`` when there are enough rows) -> balancing of the training rows: ``weight`` gives each label the
    same total weight (weights ∝ 1 / count), ``downsample`` keeps at most the smallest label's count per
    label, ``none`` keeps all at weight 1.
    """
    stats = CurationStats()
    out: list[dict[str, Any]] = []
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    for task, task_rows in by_task.items():
        st = stats.by_task.setdefault(task, TaskCuration())
        st.n_in = len(task_rows)
        labels = list(task_rows[0]["labels"])
        st.teacher_raw_counts = dict(Counter(labels[int(np.argmax(r["probs_raw"]))] for r in task_rows))
        kept = []
        seen: set[str] = set()
        for r in task_rows:
            key = normalise_text(r["text"]) + "\x1f" + normalise_text(r.get("target") or "")
            if dedupe and key in seen:
                st.removed_duplicates += 1
                continue
            seen.add(key)
            kept.append(r)
        conf_kept = []
        for r in kept:
            if float(np.max(r["probs"])) < min_confidence:
                st.removed_low_confidence += 1
                continue
            conf_kept.append({**r, "teacher_label": labels[int(np.argmax(r["probs"]))]})
        st.teacher_calibrated_counts = dict(Counter(r["teacher_label"] for r in conf_kept))
        dev_ids = _dev_ids(conf_kept, dev_fraction, min_dev, seed)
        train = [r for r in conf_kept if str(r["id"]) not in dev_ids]
        dev = [r for r in conf_kept if str(r["id"]) in dev_ids]
        counts = Counter(r["teacher_label"] for r in train)
        if balance == "downsample" and counts:
            train, st.removed_balance = _downsample(train, min(counts.values()), seed + 1, st.removed_balance)
            counts = Counter(r["teacher_label"] for r in train)
        if balance == "weight" and counts:
            n, k = len(train), len(counts)
            weights = {lab: n / (k * c) for lab, c in counts.items()}
        else:
            weights = dict.fromkeys(counts, 1.0)
        st.train_counts = dict(counts)
        st.n_train, st.n_dev = len(train), len(dev)
        out.extend({**r, "split": "train", "weight": float(weights[r["teacher_label"]])} for r in train)
        out.extend({**r, "split": "dev", "weight": 1.0} for r in dev)
    return out, stats
