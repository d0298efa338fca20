"""Soft labels from any teacher: its probability over a task's label set for each unlabeled text.

The label-free distillation recipe (issue "Distillation that works"), in the order this module runs it:

1. **Texts**: ``n_per_task`` texts drawn (seeded) from each task's train split; the gold labels are dropped
   the moment a row is read and never looked at. Texts longer than ``max_chars`` are cut (the teacher reads
   ~100-300 prompt tokens/s on 2 cores).
2. **Restricted scoring**: the task's zero-shot prompt (the same one the benchmark gives the teacher), and
   optionally more instruction variants (prompt ensembling: the variants' distributions are averaged),
   scored through :mod:`sentidistill.teacher.restricted` (exact label likelihoods from llama.cpp, top-k
   log-probs from endpoints, the generated label as a last resort). Every call is cached and resumable.
3. **Calibration** without gold labels (:mod:`sentidistill.distill.calibration`): batch calibration over the
   pool (default) or contextual calibration with content-free inputs.
4. **Curation** (:mod:`sentidistill.distill.curation`): dedupe, optional confidence filter, a teacher-labelled
   dev slice for early stopping, class balancing by the calibrated label.

The result is one Parquet file (:data:`sentidistill.data.soft_label_corpus.SOFT_LABEL_SCHEMA`) plus ``<name>.stats.json`` with the label
distributions, the calibration priors (what the benchmark's "teacher, calibrated" row applies to the test
items) and what each filter removed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sentidistill.data.soft_label_corpus import write_soft_labels
from sentidistill.distill.calibration import (
    CONTENT_FREE_INPUTS,
    batch_calibrate,
    contextual_calibrate,
    log_prior,
    softmax_logprobs,
)
from sentidistill.distill.curation import curate
from sentidistill.distill.icl import labels_text
from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)


# Instruction variants for prompt ensembling (variant 0 is the task's own instruction, i.e. the benchmark's
# zero-shot prompt). Versioned: the version is part of every cache key.
PROMPT_VERSION = "1"
VARIANTS: tuple[str, ...] = (
    "{instruction}",
    "Read the text and answer with exactly one of: {labels}. Give only the answer.",
    "You are an expert in sentiment analysis. {instruction} Answer with one word: {labels}.",
    "{instruction} Think about the author's attitude, then answer with one of: {labels}.",
)


@dataclass
class SoftLabelStats:
    """What a soft-labelling run did, per task: texts, teacher failures, how scores were read, priors."""

    path: str
    rows: int = 0  # rows written (after curation)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    priors: dict[str, list[float]] = field(default_factory=dict)  # task -> prior over its labels (sums to 1)
    calibration: str = "batch"
    prompt_variants: int = 1
    teacher: dict[str, float] = field(default_factory=dict)
    curation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def variant_prompt(task: Any, row: dict[str, Any], variant: int) -> list[dict[str, str]]:
    """The zero-shot chat prompt of ``row`` with instruction variant ``variant`` (0 = the benchmark's)."""
    from sentidistill.bench.prompting import build_prompt

    if variant == 0:
        return build_prompt(task, row, [], style="chat")  # type: ignore[return-value]
    words = [task.verbalizers[lab] for lab in task.labels]
    instruction = VARIANTS[variant].format(instruction=task.spec.instruction, labels=labels_text(words))
    return build_prompt(task, row, [], style="chat", instruction=instruction)  # type: ignore[return-value]


def unlabeled_texts(task: Any, n: int | None, *, data_dir: str | Path | None, seed: int, max_chars: int,
                    split: str = "train") -> list[dict[str, Any]]:
    """``n`` rows of ``split`` drawn with ``seed`` (all when ``n`` is None), gold labels removed, texts cut
    at ``max_chars``. Raises ``InputError`` when the split is missing or empty."""
    rows = task.load(split, data_dir=data_dir, labeled=False)  # labels are never read: a pool may have none
    if not rows:
        raise InputError(f"task '{task.name}' has no rows in split '{split}'", field="soft_labels.tasks")
    idx = list(range(len(rows)))
    if n is not None and n < len(rows):
        idx = sorted(random.Random(f"{seed}:{task.name}").sample(idx, n))
    out = []
    for i in idx:
        r = {k: v for k, v in rows[i].items() if k not in ("gold", "label", "label_score")}
        r["text"] = str(r["text"])[:max_chars]
        out.append(r)
    return out


def _average_variants(logprob_sets: list[np.ndarray]) -> np.ndarray:
    """Prompt ensembling: the mean of the variants' restricted distributions, as log-probs ``[N, K]``
    (a variant whose row is unusable - NaN, or every label ``-inf`` - is left out of that row's mean; a row
    no variant could read stays NaN)."""
    stack = np.stack([softmax_logprobs(lp) for lp in logprob_sets])  # [V, N, K]; unusable rows are NaN
    n_ok = (~np.isnan(stack).any(axis=2)).sum(axis=0)[:, None]  # [N, 1] variants that read each row
    mean = np.where(n_ok > 0, np.nansum(stack, axis=0) / np.maximum(n_ok, 1), np.nan)
    with np.errstate(divide="ignore"):
        return np.log(mean)


def build_soft_label_corpus(
    cfg: Any, teacher: Any, out: str | Path, *, data_dir: str | Path | None = None, seed: int = 42,
) -> SoftLabelStats:
    """Ask ``teacher`` for soft labels on the unlabeled texts of ``cfg.tasks`` and write the curated corpus.

    ``cfg`` is a :class:`sentidistill.config.SoftLabelsConfig`. Writes ``out`` (Parquet, atomically) and
    ``out`` with suffix ``.stats.json``. Raises ``InputError`` for a task that is not a classification task
    or has no train split, and what the teacher raises (budget, fatal backend errors)."""
    from sentidistill.bench import get_task

    out = Path(out)
    stats = SoftLabelStats(path=str(out), calibration=cfg.calibration, prompt_variants=cfg.prompt_variants)
    all_rows: list[dict[str, Any]] = []
    for spec in cfg.tasks:
        task = get_task(spec)
        name = task.name  # a user's YAML task is given by path; rows and priors are keyed by its name
        if task.kind != "classification":
            raise InputError(f"soft labels need a classification task; '{name}' is {task.kind}",
                             field="soft_labels.tasks", expected="classification tasks")
        words = [task.verbalizers[lab] for lab in task.labels]
        verbal_to_idx = {lab: j for j, lab in enumerate(task.labels)}

        def parse(text: str, task=task, verbal_to_idx=verbal_to_idx) -> int | None:
            lab = task.parse(text)
            return verbal_to_idx.get(lab) if lab is not None else None

        rows = unlabeled_texts(task, cfg.n_per_task, data_dir=data_dir, seed=seed, max_chars=cfg.max_chars)
        from sentidistill.teacher.restricted import score_labels

        pool = len(rows)
        selection = getattr(cfg, "selection", None)
        if selection is not None and selection.strategy != "all":
            # Active selection (distill/active.py): the teacher labels `budget` texts of the pool. The
            # selector's requests are those of variant 0 below, so the teacher's cache answers them again.
            from sentidistill.distill.active import select_rows

            def label(idx: list[int], task=task, rows=rows, words=words, parse=parse, name=name) -> np.ndarray:
                lp, _, _ = score_labels(teacher, [variant_prompt(task, rows[i], 0) for i in idx], words,
                                        prompt_id=f"soft_labels.{name}.v0", prompt_version=PROMPT_VERSION,
                                        parse=parse, top_logprobs=cfg.top_logprobs, metadata={"task": name})
                out = np.full(lp.shape, np.nan)
                ok = ~np.isnan(lp).any(axis=1) & np.isfinite(lp).any(axis=1)
                out[ok] = softmax_logprobs(lp[ok])
                return out

            rows = select_rows(selection, rows, label, seed=seed, task=name)

        variant_scores = []
        via: list[str] = ["none"] * len(rows)
        for v in range(cfg.prompt_variants):
            prompts = [variant_prompt(task, r, v) for r in rows]
            lp, how, _ = score_labels(teacher, prompts, words, prompt_id=f"soft_labels.{name}.v{v}",
                                      prompt_version=PROMPT_VERSION, parse=parse, top_logprobs=cfg.top_logprobs,
                                      metadata={"task": name})
            variant_scores.append(lp)
            via = [h if h != "none" else via[i] for i, h in enumerate(how)] if v else how
        logprobs = _average_variants(variant_scores)
        raw = softmax_logprobs(logprobs)
        ok = ~np.isnan(raw).any(axis=1)  # the one test (restricted.usable_scores, row by row)
        raw[~ok] = 0.0
        n_ok = int(ok.sum())
        if n_ok == 0:
            raise InputError(f"the teacher gave no usable answer for any text of task '{name}'",
                             field="teacher", expected="label scores or answers naming a label")
        if cfg.calibration == "contextual":
            cf_rows = [{**rows[0], "text": t} for t in CONTENT_FREE_INPUTS]
            cf_lp, _, _ = score_labels(teacher, [variant_prompt(task, r, 0) for r in cf_rows], words,
                                       prompt_id=f"soft_labels.{name}.content_free", prompt_version=PROMPT_VERSION,
                                       parse=parse, top_logprobs=cfg.top_logprobs, metadata={"task": name})
            cf_p = softmax_logprobs(cf_lp)
            cf_ok = ~np.isnan(cf_p).any(axis=1)
            if not cf_ok.any():
                raise InputError(f"contextual calibration: no usable teacher answer for the content-free inputs "
                                 f"of task '{name}'", field="soft_labels.calibration", expected="batch")
            cal, prior = contextual_calibrate(raw[ok], cf_p[cf_ok])
        elif cfg.calibration == "batch":
            cal, prior = batch_calibrate(raw[ok])
        else:
            cal, prior = raw[ok], np.full(len(words), 1.0 / len(words))
        stats.priors[name] = [float(x) for x in prior]
        stats.tasks[name] = {
            "texts": len(rows), "pool": pool, "scored": n_ok, "unusable": len(rows) - n_ok,
            "via": {h: via.count(h) for h in sorted(set(via))}, "labels": list(task.labels),
            "log_prior": log_prior(prior),
        }
        ok_idx = np.flatnonzero(ok)
        for j, i in enumerate(ok_idx):
            r = rows[i]
            all_rows.append({
                "task": name, "id": str(r.get("id", f"{name}-{i}")), "text": r["text"], "target": r.get("target"),
                "labels": list(task.labels), "teacher_logprobs": [float(x) for x in logprobs[i]],
                "probs_raw": [float(x) for x in raw[i]], "probs": [float(x) for x in cal[j]], "via": via[i],
            })
        log.info("soft labels %s: %d texts, %d usable, prior %s", name, len(rows), n_ok,
                 dict(zip(task.labels, np.round(prior, 3).tolist(), strict=True)))
    curated, cstats = curate(all_rows, seed=seed, dedupe=cfg.dedupe, min_confidence=cfg.min_confidence,
                             dev_fraction=cfg.dev_fraction, balance=cfg.balance)
    stats.curation = cstats.to_dict()
    stats.teacher = dict(getattr(teacher, "stats", {}) or {})
    stats.rows = len(curated)
    write_soft_labels(curated, out)
    atomic_write_json(out.with_suffix(".stats.json"), stats.to_dict())
    return stats
