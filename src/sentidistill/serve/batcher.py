"""Dynamic batching for the serving engines: one worker thread owns the model and runs what arrives together.

Callers submit one job each (a dataclass with a ``future``); the worker takes the first job waiting, then
whatever else arrives within ``batch_wait_ms`` (up to ``max_batch_size`` jobs), splits the lot into groups
that can share one forward pass (``group_key``; one group when ``None``) and calls ``process(group)``, which
returns one result per job. Each job's future gets its result, or the exception of its group's failed batch
(one bad batch never kills the worker). Jobs whose callers cancelled (timed out) are skipped. After
:meth:`DynamicBatcher.close` every job still queued fails with ``RuntimeError("engine closed")``, so no
caller waits forever.

The generation engine (:class:`sentidistill.serve.engine.GenerationEngine`, groups = equal sampling
settings) and the classifier engine (:class:`sentidistill.serve.classify.ClassifierEngine`, one group: every
head's logits come from one encoder pass) are both built on it. This is the serving counterpart of the
teacher's asyncio micro-batcher (:mod:`sentidistill.teacher.batching`); it is thread-based because torch and
onnxruntime calls block.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, Protocol, Self, TypeVar

from sentidistill.errors import InputError

log = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    """The request queue is full; the server answers 503."""


class _HasFuture(Protocol):
    future: Future


J = TypeVar("J", bound=_HasFuture)


class DynamicBatcher(Generic[J]):
    """A queue of jobs and the worker thread that runs them in batches (see the module doc).

    ``process(jobs) -> results`` (same length and order) runs on the worker thread only.
    ``on_batch(size, seconds)`` is called after every successful batch (the server's metrics).
    Raises ``InputError`` for ``max_batch_size < 1``; :meth:`put` raises :class:`OverloadedError` when
    ``max_queue`` jobs are waiting and ``RuntimeError`` after :meth:`close`.
    """

    def __init__(
        self, process: Callable[[list[J]], Sequence[Any]], *, group_key: Callable[[J], Hashable] | None = None,
        max_batch_size: int = 16, batch_wait_ms: float = 5.0, max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None, name: str = "sentidistill-batcher",
    ) -> None:
        self.process = process
        self.group_key = group_key
        self.max_batch_size = max_batch_size  # validated by the setter
        self.batch_wait_s = max(0.0, batch_wait_ms) / 1000.0
        self.on_batch = on_batch
        self._queue: queue.Queue[J | None] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, n: int) -> None:
        if n < 1:
            raise InputError("max_batch_size must be >= 1", field="max_batch_size", got=n)
        self._max_batch_size = n

    def put(self, job: J) -> None:
        """Queue ``job`` without blocking."""
        if self._closed:
            raise RuntimeError("engine is closed")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise OverloadedError(f"the request queue is full ({self._queue.maxsize} waiting)") from None

    def queued(self) -> int:
        """Jobs waiting for the worker."""
        return self._queue.qsize()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking jobs, let the worker finish the batch in progress, fail what is still queued."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=timeout_s)

    # -- worker -----------------------------------------------------------------------------------
    def _collect(self, first: J) -> tuple[list[J], bool]:
        """Gather jobs for up to ``batch_wait_s`` after the first one; returns (jobs, stop_requested)."""
        jobs, deadline = [first], time.perf_counter() + self.batch_wait_s
        while len(jobs) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._collect(first)
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # skip timed-out callers
            groups: dict[Hashable, list[J]] = {}
            for j in live:
                groups.setdefault(self.group_key(j) if self.group_key else None, []).append(j)
            for group in groups.values():
                t0 = time.perf_counter()
                try:
                    results = self.process(group)
                except Exception as exc:  # one bad batch must not kill the worker
                    log.exception("a batch of %d failed", len(group))
                    for j in group:
                        j.future.set_exception(exc)
                    continue
                dt = time.perf_counter() - t0
                for j, r in zip(group, results, strict=True):
                    j.future.set_result(r)
                if self.on_batch is not None:
                    self.on_batch(len(group), dt)
        while True:  # fail anything still queued after close() so no caller waits forever
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("engine closed"))


class BatchedEngine:
    """What the serving engines share on top of their :class:`DynamicBatcher` (``self._batcher``): the
    batching knobs (settable after construction: ``predict`` sets ``max_batch_size``, the server sets
    ``on_batch``), the queue length, ``close`` and the context-manager protocol."""

    _batcher: DynamicBatcher

    @property
    def max_batch_size(self) -> int:
        return self._batcher.max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, n: int) -> None:
        self._batcher.max_batch_size = n  # raises InputError below 1

    @property
    def on_batch(self) -> Callable[[int, float], None] | None:
        return self._batcher.on_batch

    @on_batch.setter
    def on_batch(self, fn: Callable[[int, float], None] | None) -> None:
        self._batcher.on_batch = fn

    def queued(self) -> int:
        """Requests waiting for the worker."""
        return self._batcher.queued()

    def close(self) -> None:
        """Finish the batch in progress; fail the requests still queued; idempotent."""
        self._batcher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
