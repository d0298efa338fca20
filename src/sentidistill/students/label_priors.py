"""A student's own label priors, saved with its weights (``label_priors.json`` in the model folder).

A distilled generative student can lean to one label of a task as a whole (the 12-task SmolLM2 run answered
"Highly Intimate" for 187 of 200 tweets). Batch calibration (Zhou et al. 2023, ICLR 2024; what
:mod:`sentidistill.distill.calibration` does for the teacher) measures that lean as the student's mean label
distribution over unlabeled texts of the task and divides it out: ``score_k - log prior_k``, arg-max.
:func:`sentidistill.distill.student_calibration.calibrate_student` estimates the priors and writes this file;
a benchmark of the folder applies them (:func:`sentidistill.bench.models.student_adapter`). No gold label
is read anywhere.

File layout (JSON)::

    {"schema": 1, "method": "batch", "shots": 0, "prompt_style": "chat",
     "tasks": {"intimacy": {"labels": ["Not Intimate", ...], "prior": [0.24, ...],
                            "log_prior": [-1.43, ...], "n": 128, "unusable": 0}, ...}}

``labels`` are the label words in the task's order; ``prior`` sums to 1; ``log_prior`` is its natural log;
``n`` the texts it was estimated on (``unusable``: texts whose scores said nothing, left out); ``shots``
the demonstrations in the prompts it was estimated with.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_json

#: The file in a student's model folder that holds its label priors.
LABEL_PRIORS_FILE = "label_priors.json"
SCHEMA = 1


def write_label_priors(model_dir: str | Path, tasks: dict[str, dict[str, Any]], *, method: str = "batch",
                       shots: int = 0, prompt_style: str = "chat") -> Path:
    """Write ``tasks`` (task -> ``{labels, prior, log_prior, n, unusable}``) to ``model_dir/label_priors.json``
    atomically; returns the path. Raises ``InputError`` for an entry whose lengths disagree."""
    path = Path(model_dir) / LABEL_PRIORS_FILE
    for name, entry in tasks.items():
        _check_entry(name, entry, path)
    atomic_write_json(path, {"schema": SCHEMA, "method": method, "shots": shots, "prompt_style": prompt_style,
                             "tasks": tasks})
    return path


def read_label_priors(model_dir: str | Path) -> dict[str, Any] | None:
    """The label priors saved in ``model_dir`` (the whole file, validated), or None when it has none.

    Raises ``InputError`` (file, field, what was expected) for a file that is not valid JSON or whose entries
    are malformed: a broken calibration is never applied silently, nor silently dropped."""
    path = Path(model_dir) / LABEL_PRIORS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the label priors: {exc}", path=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise InputError("the label priors file has no 'tasks' mapping", path=path, field="tasks",
                         expected="{task: {labels, log_prior, ...}}")
    if data.get("schema") != SCHEMA:
        raise InputError("unknown label priors schema", path=path, field="schema", expected=str(SCHEMA),
                         got=data.get("schema"))
    for name, entry in data["tasks"].items():
        _check_entry(name, entry, path)
    return data


def log_priors_by_task(data: dict[str, Any]) -> dict[str, list[float]]:
    """task -> log prior (natural log, one value per label in the task's order) of a :func:`read_label_priors`
    result."""
    return {name: [float(x) for x in entry["log_prior"]] for name, entry in data["tasks"].items()}


def _check_entry(name: str, entry: Any, path: Path) -> None:
    if not isinstance(entry, dict):
        raise InputError(f"label priors of task '{name}' are not a mapping", path=path, field=f"tasks.{name}")
    labels, log_prior = entry.get("labels"), entry.get("log_prior")
    if not isinstance(labels, list) or not isinstance(log_prior, list) or len(labels) != len(log_prior) or not labels:
        raise InputError(f"label priors of task '{name}' need one log_prior per label", path=path,
                         field=f"tasks.{name}.log_prior", expected=f"{len(labels or [])} numbers",
                         got=log_prior)
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in log_prior):
        raise InputError(f"label priors of task '{name}' hold a non-finite value", path=path,
                         field=f"tasks.{name}.log_prior", expected="finite log-probabilities", got=log_prior)
