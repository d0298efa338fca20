"""Serving the ``classifier`` student: class probabilities behind a dynamic batcher (no generation).

A classifier student (:mod:`sentidistill.students.classifier`) answers a classification task with a
probability per label; it has no decoder, so it cannot serve completions. This module is its serving seam:

* :func:`classifier_engine` decides, in one place, whether a model spec is a classifier (a checkpoint
  folder, or an ONNX export of one written by :func:`sentidistill.serve.classifier_onnx.export_classifier_onnx`)
  and opens a :class:`ClassifierEngine` for it; :func:`sentidistill.serve.predict.get_engine` and
  :func:`sentidistill.serve.app.create_app` both ask it first and fall back to the generation engine.
* :class:`ClassifierEngine` has the same dynamic batching as :class:`~sentidistill.serve.engine.GenerationEngine`
  (one worker thread owns the model; whatever arrives within ``batch_wait_ms``, up to ``max_batch_size``
  texts, runs as one padded forward pass). Texts of different tasks share a batch: the backend returns every
  head's logits ``[B, ΣK]`` (one encoder pass, all heads) and each text reads its own head's columns.
* :mod:`sentidistill.serve.routes.analyze` answers ``POST /v1/analyze`` with it.

Tasks are resolved like the generation path (``sentiment`` -> ``sst2`` ..., :mod:`sentidistill.serve.tasks`);
a task without its own head is answered by a head with the same label set
(:meth:`~sentidistill.students.classifier.ClassifierStudent.head_for`, e.g. ``mr`` through ``sst2``); an
extraction task (aspects, triplets...) is an :class:`~sentidistill.errors.InputError`.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from sentidistill.errors import InputError
from sentidistill.serve.batcher import BatchedEngine, DynamicBatcher
from sentidistill.serve.classifier_backends import (
    KIND,
    ClassifierBackend,
    head_offsets,
    is_classifier_onnx_dir,
    open_backend,
)


class HeadTable:
    """A classifier's tasks and label sets without its weights (the ONNX backend has no torch model).

    Head resolution is :class:`~sentidistill.students.classifier.ClassifierStudent`'s own methods, bound
    to this table, so both backends pick the same head for a task."""

    def __init__(self, tasks: Sequence[dict[str, Any]]) -> None:
        from sentidistill.students.classifier import ClassifierStudent

        self.config = SimpleNamespace(tasks=list(tasks))
        self.offsets = head_offsets(tasks)
        self._student = ClassifierStudent

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.config.tasks]

    def task_index(self, name: str) -> int:
        return self._student.task_index(self, name)  # type: ignore[arg-type]

    def head_for(self, task: str, labels: Sequence[str], *, head: str | None = None) -> tuple[int, list[int]]:
        """``(head index, index in that head of each of labels)``; ``InputError`` listing the heads if none fits."""
        return self._student.head_for(self, task, labels, head=head)  # type: ignore[arg-type]


def is_classifier_model(spec: str | Path) -> bool:
    """Whether ``spec`` names a classifier student: a checkpoint folder or its ONNX export."""
    from sentidistill.students.classifier import is_classifier_checkpoint

    return is_classifier_checkpoint(spec) or is_classifier_onnx_dir(spec)


def classifier_engine(model: str | Path, *, backend: str = "torch", int8: bool = False, device: str | None = None,
                      **options: Any) -> ClassifierEngine | None:
    """The seam: a :class:`ClassifierEngine` when ``model`` is a classifier student (checkpoint or ONNX
    export), else ``None`` (the caller opens a generation engine). ``options``: ``max_batch_size``,
    ``batch_wait_ms``, ``max_queue``, ``on_batch``, ``threads`` (onnxruntime intra-op threads)."""
    if not is_classifier_model(model):
        return None
    threads = options.pop("threads", None)
    return ClassifierEngine(open_backend(model, backend, int8=int8, device=device, threads=threads), **options)


# -- engine -----------------------------------------------------------------------------------------

@dataclass
class _Job:
    text: str
    head: int
    future: Future | asyncio.Future


@dataclass(frozen=True)
class Classified:
    """One text's answer: the task's label, the probability of every label of the task (task order), the
    head that answered, and the text's token count (after truncation)."""

    label: str
    probabilities: dict[str, float]
    head: str
    tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"prediction": self.label, "valid": True, "probabilities": self.probabilities, "head": self.head}


class _HeadTask:
    """A classification task made of a classifier head (a user's own task that is not in the registry):
    name, kind and labels, as :meth:`ClassifierEngine.plan` reads them; inputs are plain texts."""

    kind = "classification"

    def __init__(self, name: str, labels: Sequence[str]) -> None:
        self.name, self.labels = name, [str(x) for x in labels]


@dataclass(frozen=True)
class TaskPlan:
    """A task request resolved against the classifier: its texts, the head and the head's label order."""

    task: Any
    texts: list[str]
    head: int
    order: list[int]  # for each task label (task order), its index in the head


class ClassifierEngine(BatchedEngine):
    """A classifier backend behind a dynamic batcher. Thread-safe; a context manager (or call :meth:`close`).

    ``submit(text, head)`` queues one text for one head and returns a future of ``(probabilities over the
    head's labels, in head order, float64 [K]; token count)``; :meth:`classify` does a whole task request.
    ``on_batch(size, seconds)`` is called after every batch (the server's metrics)."""

    kind = KIND

    def __init__(self, backend: ClassifierBackend, *, max_batch_size: int = 32, batch_wait_ms: float = 0.0,
                 max_queue: int = 1024, on_batch: Callable[[int, float], None] | None = None) -> None:
        self.backend = backend
        self.heads = HeadTable(backend.tasks)
        self._batcher = DynamicBatcher(self._classify_batch, max_batch_size=max_batch_size,
                                       batch_wait_ms=batch_wait_ms, max_queue=max_queue, on_batch=on_batch,
                                       name="sentidistill-classifier")

    # -- requests ---------------------------------------------------------------------------------
    def task_for(self, name: str | None) -> Any:
        """The task this classifier answers for ``name``: a SentiBench task or alias
        (:func:`~sentidistill.serve.tasks.resolve_task`); else one of its own heads by name (a user's task,
        e.g. what ``sentidistill distill`` trained, answered with that head's labels on plain texts); with
        ``None``, its only head. Raises ``InputError`` (field ``task``): several heads and no name (the message
        lists them), or a name that is neither (the expected values list the heads and the aliases)."""
        from sentidistill.serve.tasks import TASK_ALIASES, builtin_task_names, resolve_task

        heads = self.heads.task_names
        if name is None:
            if len(heads) != 1:
                raise InputError("this classifier has several heads: say which", field="task",
                                 expected=" | ".join(heads))
            name = heads[0]
        if name in heads and name not in TASK_ALIASES and name not in builtin_task_names():
            return _HeadTask(name, self.backend.tasks[heads.index(name)]["labels"])
        try:
            return resolve_task(name)
        except InputError as exc:
            raise InputError(f"unknown task '{name}'", field="task",
                             expected=f"a head of this classifier ({', '.join(heads)}), an alias "
                                      f"({', '.join(TASK_ALIASES)}) or a SentiBench task name") from exc

    def plan(self, task: Any, rows: Sequence[dict[str, Any]]) -> TaskPlan:
        """Resolve a SentiBench ``task`` and its rows: the head, the label order, the input texts
        (:func:`~sentidistill.students.classifier.classifier_input`: the stance target first).

        Raises ``InputError``: an extraction task; a row missing a field the task's input needs
        (``texts.<i>``, e.g. ``target`` for stance); no head whose label set is the task's."""
        from sentidistill.students.classifier import classifier_input

        if task.kind != "classification":
            raise InputError(
                f"task '{task.name}' is an {task.kind} task; the classifier student answers classification "
                "tasks only", field="task",
                expected="a classification task (sentiment, polarity, emotion, irony, stance, intimacy, or "
                         f"one with the label set of a head: {', '.join(self.heads.task_names)})")
        needed = _input_fields(task)
        for i, row in enumerate(rows):
            missing = [f for f in needed if not row.get(f)]
            if missing:
                raise InputError(f"task '{task.name}' needs {missing} with each text", field=f"texts.{i}",
                                 expected="an object {\"text\": ..., " + ", ".join(f'"{f}": ...' for f in missing) + "}")
        head, order = self.heads.head_for(task.name, list(task.labels))
        return TaskPlan(task=task, texts=[classifier_input(r) for r in rows], head=head, order=order)

    def submit(self, text: str, head: int) -> Future:
        """Queue one text for head ``head``; raises :class:`OverloadedError` when the queue is full."""
        fut: Future = Future()
        self._batcher.put(_Job(text, head, fut))
        return fut

    def submit_plan(self, plan: TaskPlan, loop: asyncio.AbstractEventLoop | None = None) -> list[Any]:
        """Queue every text of a plan at once (one hand-off; they batch together, and with other requests'
        texts), shortest first. With ``loop``: ``asyncio`` futures of that loop (the server), else blocking futures.
        Raises :class:`OverloadedError` when they do not fit in the queue."""
        jobs = [_Job(t, plan.head, loop.create_future() if loop is not None else Future()) for t in plan.texts]
        # Queued shortest first, so the batches cut from a many-text request pad to similar lengths (the
        # length sort of sentence-transformers' ``encode``): 1.5x texts/s on 860 tweets, ONNX int8, batch 32.
        # The futures come back in the request's order.
        self._batcher.put_many(sorted(jobs, key=lambda j: len(j.text)))
        return [j.future for j in jobs]

    def finish(self, plan: TaskPlan, outputs: Sequence[tuple[np.ndarray, int]]) -> list[Classified]:
        """The answers of a plan from its futures' results: probabilities re-ordered to the task's labels."""
        labels = [str(x) for x in plan.task.labels]
        head_name = self.heads.task_names[plan.head]
        out = []
        for probs, n_tok in outputs:
            p = probs[plan.order]
            out.append(Classified(label=labels[int(np.argmax(p))], head=head_name, tokens=int(n_tok),
                                  probabilities={lab: float(x) for lab, x in zip(labels, p, strict=True)}))
        return out

    def classify(self, task: Any, rows: Sequence[dict[str, Any]], timeout: float | None = None) -> list[Classified]:
        """Blocking: the answer for every row of ``task``, in order."""
        plan = self.plan(task, rows)
        return self.finish(plan, [f.result(timeout=timeout) for f in self.submit_plan(plan)])

    # -- worker -----------------------------------------------------------------------------------
    def _classify_batch(self, jobs: list[_Job]) -> list[tuple[np.ndarray, int]]:
        """One padded forward pass for texts of any heads: each gets the softmax over its head's columns."""
        offsets = self.heads.offsets
        logits, n_tokens = self.backend.logits([j.text for j in jobs])
        out = []
        for row, j in enumerate(jobs):
            z = logits[row, offsets[j.head]: offsets[j.head + 1]].astype(np.float64)
            p = np.exp(z - z.max())
            out.append((p / p.sum(), n_tokens[row]))
        return out


def _input_fields(task: Any) -> list[str]:
    """Fields besides ``text`` that the task's input template names (``target`` for stance)."""
    spec = getattr(task, "spec", None)
    tpl = getattr(getattr(spec, "prompt", None), "input_template", "") or ""
    fields = [f for _, f, _, _ in string.Formatter().parse(tpl) if f]
    return [f for f in dict.fromkeys(fields) if f != "text"]


def generation_refused(model_name: str) -> str:
    """The message of the 400 that /v1/completions and /v1/chat/completions answer for a classifier."""
    return (f"'{model_name}' is a classifier student: it returns class probabilities and does not generate "
            "text, so /v1/completions and /v1/chat/completions are not available. Use POST /v1/analyze, "
            'e.g. {"task": "sentiment", "texts": ["Great food, rude staff."]}')
