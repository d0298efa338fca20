"""Batch calibration of a distilled student: its own label prior per task, measured on unlabeled texts.

The teacher's soft labels are batch-calibrated (:mod:`sentidistill.distill.calibration`), but a student
trained on them can still lean to one label of a task as a whole: restricted scoring compares summed
log-likelihoods of label words, and the label-distribution KL only fixes their differences on the training
rows. Here the student answers ``n`` unlabeled texts per task with exactly the benchmark's prompts (the
task's instruction, ``shots`` = 0, the bench's text cut), its label distributions are averaged into a prior
(Zhou et al. 2023, "Batch Calibration", ICLR 2024: ``prior[k] = mean_i p(k | x_i)``), and the prior is saved
with the model (:mod:`sentidistill.students.label_priors`). A benchmark of the calibrated folder then
answers ``argmax_k score_k - log prior_k``. No gold label is read; the texts come from the tasks' train
splits (:func:`sentidistill.distill.soft_labels.unlabeled_texts`), never from the test items.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sentidistill.distill.calibration import estimate_prior, log_prior, softmax_logprobs
from sentidistill.distill.soft_labels import unlabeled_texts
from sentidistill.errors import InputError
from sentidistill.students.label_priors import LABEL_PRIORS_FILE, write_label_priors

log = logging.getLogger(__name__)


def student_label_priors(adapter: Any, tasks: list[str], *, data_dir: str | Path | None, n: int, seed: int,
                         max_chars: int | None) -> dict[str, dict[str, Any]]:
    """The student's batch-calibration prior for each classification task in ``tasks``.

    ``adapter``: a benchmark adapter of the student (:class:`sentidistill.bench.models.HFModelAdapter`);
    its ``choose`` gives the label scores (natural-log likelihoods) the benchmark reads. ``n`` unlabeled texts
    per task (drawn with ``seed`` from the train split, cut at ``max_chars``). Returns task ->
    ``{labels, prior, log_prior, n, unusable}`` (see :mod:`sentidistill.students.label_priors`).

    Raises ``InputError`` for a task that is not a classification task, and when no text of a task gave usable
    scores (nothing to estimate from)."""
    from sentidistill.bench import get_task

    out: dict[str, dict[str, Any]] = {}
    for spec in tasks:
        task = get_task(spec)
        if task.kind != "classification":
            raise InputError(f"label priors need a classification task; '{task.name}' is {task.kind}",
                             field="generative.calibration", expected="classification tasks")
        words = [task.verbalizers[lab] for lab in task.labels]
        rows = unlabeled_texts(task, n, data_dir=data_dir, seed=seed, max_chars=max_chars or 1 << 30)
        prompts = [task.prompt(r, [], style=adapter.prompt_style) for r in rows]
        answers = adapter.choose(prompts, words, task=task.name, rows=rows)
        scores = np.array([[(-np.inf if s is None else float(s)) for s in (a.scores or [None] * len(words))]
                           for a in answers], dtype=np.float64).reshape(len(rows), len(words))
        probs = softmax_logprobs(scores)
        usable = ~np.isnan(probs).any(axis=1)
        if not usable.any():
            raise InputError(f"the student gave no usable label scores on task '{task.name}'",
                             field="generative.calibration", expected="finite label scores")
        prior = estimate_prior(probs[usable])
        out[task.name] = {"labels": words, "prior": [float(x) for x in prior], "log_prior": log_prior(prior),
                          "n": int(usable.sum()), "unusable": int((~usable).sum())}
        log.info("%s: the student's label prior on %d unlabeled texts: %s", task.name, int(usable.sum()),
                 ", ".join(f"{w} {p:.2f}" for w, p in zip(words, prior, strict=True)))
    return out


def link_model(src: str | Path, dst: str | Path) -> Path:
    """``dst`` (which must not exist) as a copy of the model folder ``src``: hard links where the file system
    allows (no second copy of the weights on disk), a plain copy otherwise; ``src``'s label priors and
    checkpoints are left out."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns(LABEL_PRIORS_FILE, "checkpoints"))
    return Path(dst)


def calibrate_student(model: str | Path, out: str | Path, tasks: list[str], *, data_dir: str | Path | None,
                      n: int, seed: int, max_chars: int | None, kind: str = "auto",
                      max_length: int | None = None) -> dict[str, Any]:
    """Write ``out``: the student ``model`` (a folder) with its label priors (:func:`student_label_priors`)
    saved beside its weights. Returns ``{"model": out, "tasks": {task: prior}}``."""
    from sentidistill.bench.models import HFModelAdapter

    adapter = HFModelAdapter(str(model), kind=kind, max_length=max_length)
    try:
        priors = student_label_priors(adapter, tasks, data_dir=data_dir, n=n, seed=seed, max_chars=max_chars)
    finally:
        adapter.close()
    # Built in a sibling folder and renamed into place: a killed call leaves no half-written model.
    folder = Path(out)
    tmp = folder.with_name(folder.name + ".build")
    shutil.rmtree(tmp, ignore_errors=True)
    link_model(model, tmp)
    write_label_priors(tmp, priors, method="batch", shots=0, prompt_style=adapter.prompt_style)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return {"model": str(folder), "tasks": {t: v["prior"] for t, v in priors.items()}}
