"""``predict``: structured sentiment answers from a student in one call.

>>> from sentidistill import predict
>>> predict(["The pasta was cold but the staff were lovely."], task="aspects")  # doctest: +SKIP
[{'text': '...', 'task': 'atsa_rest16', 'prediction': [['pasta', 'negative'], ['staff', 'positive']], ...}]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sentidistill.errors import InputError
from sentidistill.serve.classify import ClassifierEngine, classifier_engine
from sentidistill.serve.engine import GenerationEngine, GenParams
from sentidistill.serve.tasks import (
    build_prompts,
    default_max_tokens,
    jsonable_prediction,
    make_row,
    resolve_task,
)

_ENGINES: dict[tuple[str, str, bool], GenerationEngine | ClassifierEngine] = {}
_LOCK = threading.Lock()


def get_engine(model: str, backend: Literal["torch", "onnx"] = "torch", *, int8: bool = False,
               batch_size: int = 32) -> GenerationEngine | ClassifierEngine:
    """A cached engine per (model, backend): repeated ``predict`` calls do not reload the model.
    A classifier student (or its ONNX export) gets a :class:`ClassifierEngine`, anything else a
    generation engine."""
    from sentidistill.serve.onnx import META_FILE

    if backend == "torch" and (Path(model) / META_FILE).is_file():
        backend = "onnx"  # an export-onnx folder holds no PyTorch weights
    key = (str(model), backend, int8)
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = classifier_engine(model, backend=backend, int8=int8, max_batch_size=batch_size, batch_wait_ms=0)
            if eng is not None:
                _ENGINES[key] = eng
        if eng is None:
            if backend == "onnx":
                from sentidistill.serve.onnx import OnnxGenerationEngine

                eng = OnnxGenerationEngine(model, int8=int8, max_batch_size=batch_size, batch_wait_ms=0)
            elif backend == "torch":
                if int8:
                    raise InputError("int8 needs the onnx backend", field="int8", expected="backend='onnx'")
                eng = GenerationEngine.from_spec(str(model), max_batch_size=batch_size, batch_wait_ms=0)
            else:
                raise InputError(f"unknown backend '{backend}'", field="backend", expected="torch | onnx")
            _ENGINES[key] = eng
        eng.max_batch_size = batch_size
        return eng


DEFAULT_RUNS_DIR = "runs"


def newest_student(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The most recently trained distilled student under ``runs_dir``: ``<run>/models/classifier/final`` (a
    classifier checkpoint) with the newest weights file. Raises :class:`InputError` saying what to run when
    there is none (never falls back to an untrained model)."""
    from sentidistill.students.classifier import is_classifier_checkpoint

    root = Path(runs_dir)
    found = [p for p in root.glob("*/models/classifier/final") if is_classifier_checkpoint(p)] if root.is_dir() else []
    if not found:
        raise InputError(
            f"no distilled student under {root}/ (looked for {root}/*/models/classifier/final)", field="--model",
            expected="a model: distil one first with `sentidistill distill TEXTS.csv --text-column text --labels "
                     "negative,positive` (or `sentidistill quickstart`), or pass --model PATH")
    return max(found, key=lambda p: max((f.stat().st_mtime for f in p.iterdir()), default=0.0))


def predict(
    texts: Sequence[str | dict[str, Any]],
    task: str | None = None,
    model: str | None = None,
    batch_size: int = 32,
    backend: Literal["torch", "onnx"] = "torch",
    *,
    shots: Sequence[dict[str, Any]] = (),
    style: Literal["plain", "chat"] = "plain",
    max_tokens: int | None = None,
    int8: bool = False,
) -> list[dict[str, Any]]:
    """Analyse ``texts`` with a student; one dict per text, in order.

    ``texts``: strings, or dicts with ``text`` and the extra fields a task needs (``target`` for stance).
    ``model``: None = the newest distilled student under ``runs/`` (:func:`newest_student`; an InputError
    saying what to run when there is none). ``task``: None = a classifier's only head (``sentiment`` for a
    generative student); a classifier also answers its own heads by name (a user's task); else an alias (sentiment, polarity, emotion, irony, stance, intimacy, aspects, categories,
    triplets, quads, opinions) or any SentiBench task name. ``shots``: demonstrations ``{text, gold}``.
    ``backend="onnx"``: ``model`` is a folder written by :func:`sentidistill.serve.onnx.export_onnx`.

    Each result: ``text``, ``task`` (the registry name), ``prediction`` (a label, or a list of tuples as
    lists; ``None`` when the answer cannot be parsed), ``valid`` and ``raw`` (the model's text).

    A ``classifier`` student (:mod:`sentidistill.students.classifier`, or its ONNX export) answers
    classification tasks only, from class probabilities: each result has ``prediction`` (the most probable
    label), ``valid`` (True), ``probabilities`` {label: p} and ``head`` (the head that answered, e.g. ``sst2``
    for task ``mr``); ``shots``, ``style`` and ``max_tokens`` do not apply (shots are an error).
    """
    if isinstance(texts, (str, bytes)):
        raise InputError("texts must be a list of strings, not one string", field="texts",
                         expected="a list, e.g. ['I loved it']")
    if batch_size < 1:
        raise InputError("batch_size must be >= 1", field="batch_size", got=batch_size)
    rows = [make_row(x, i) for i, x in enumerate(texts)]
    if not rows:
        return []
    if model is None:
        model = str(newest_student())
    engine = get_engine(model, backend, int8=int8, batch_size=batch_size)
    if isinstance(engine, ClassifierEngine):
        return _classify(engine, engine.task_for(task), rows, shots)
    t = resolve_task(task or "sentiment")
    prompts = build_prompts(t, rows, list(shots), style=style)
    gens = engine.generate(prompts, GenParams(max_tokens=max_tokens or default_max_tokens(t)))
    out = []
    for row, g in zip(rows, gens, strict=True):
        pred = t.parse(g.text)
        extra = {k: v for k, v in row.items() if k != "text"}
        out.append({"text": row["text"], **extra, "task": t.name, "prediction": jsonable_prediction(pred),
                    "valid": pred is not None, "raw": g.text})
    return out


def _classify(engine: ClassifierEngine, task: Any, rows: list[dict[str, Any]],
              shots: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``predict`` for a classifier student (see :func:`predict`)."""
    if shots:
        raise InputError("the classifier student takes no shots (demonstrations)", field="shots",
                         expected="no shots")
    answers = engine.classify(task, rows)
    return [{"text": row["text"], **{k: v for k, v in row.items() if k != "text"}, "task": task.name,
             **a.as_dict()} for row, a in zip(rows, answers, strict=True)]
