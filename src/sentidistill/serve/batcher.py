"""Dynamic batching for the serving engines: one worker thread owns the model and runs what is queued together.

Callers submit jobs (a dataclass with a ``future``), one at a time (:meth:`DynamicBatcher.put`) or all the
texts of one request at once (:meth:`DynamicBatcher.put_many`: one lock, one wake-up, and they stay
together). The worker takes what is queued, up to ``max_batch_size`` jobs: while it runs a batch, the next
one queues up behind it, so the batch size follows the load with no added wait (continuous batching;
``batch_wait_ms > 0`` additionally holds a batch that is not full for up to that long after its first job,
on a condition variable, never a busy wait). It splits the lot into groups that can share one forward pass
(``group_key``; one group when ``None``) and calls ``process(group)``, which returns one result per job.

A job's ``future`` is either a :class:`concurrent.futures.Future` (blocking callers: ``predict``) or an
:class:`asyncio.Future` (the HTTP server). Results for asyncio futures go back in **one** hand-off per event
loop per batch (``loop.call_soon_threadsafe`` once, not once per job), which matters when 64 one-text
requests share a batch.

When a group fails, each of its jobs is run again on its own, so one job the model cannot take (a text the
tokenizer refuses) fails alone and the requests batched with it are answered (the worker never dies).
Jobs whose callers cancelled (timed out) are skipped. After :meth:`DynamicBatcher.close` the jobs already
queued still run; anything left fails with ``RuntimeError("engine closed")``, so no caller waits forever.

The generation engine (:class:`sentidistill.serve.engine.GenerationEngine`, groups = equal sampling
settings) and the classifier engine (:class:`sentidistill.serve.classify.ClassifierEngine`, one group: every
head's logits come from one encoder pass) are both built on it. This is the serving counterpart of the
teacher's asyncio micro-batcher (:mod:`sentidistill.teacher.batching`); it is thread-based because torch and
onnxruntime calls block (and release the GIL while they compute, so the event loop keeps parsing requests).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, Protocol, Self, TypeVar

from sentidistill.errors import InputError

log = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    """The request queue is full; the server answers 503."""


class _HasFuture(Protocol):
    future: Future | asyncio.Future


J = TypeVar("J", bound=_HasFuture)


def _claim(fut: Future | asyncio.Future) -> bool:
    """Whether the job should run: False when its caller cancelled it (a timed-out request)."""
    if isinstance(fut, Future):
        return fut.set_running_or_notify_cancel()
    return not fut.done()


class DynamicBatcher(Generic[J]):
    """A queue of jobs and the worker thread that runs them in batches (see the module doc).

    ``process(jobs) -> results`` (same length and order) runs on the worker thread only.
    ``on_batch(size, seconds)`` is called after every successful batch (the server's metrics).
    Raises ``InputError`` for ``max_batch_size < 1``; :meth:`put` raises :class:`OverloadedError` when
    ``max_queue`` jobs are waiting and ``RuntimeError`` after :meth:`close`.
    """

    def __init__(
        self, process: Callable[[list[J]], Sequence[Any]], *, group_key: Callable[[J], Hashable] | None = None,
        max_batch_size: int = 16, batch_wait_ms: float = 0.0, max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None, name: str = "sentidistill-batcher",
    ) -> None:
        self.process = process
        self.group_key = group_key
        self.max_batch_size = max_batch_size  # validated by the setter
        self.batch_wait_s = max(0.0, batch_wait_ms) / 1000.0
        self.on_batch = on_batch
        self.max_queue = max_queue
        self._queue: collections.deque[J] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
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
        self.put_many((job,))

    def put_many(self, jobs: Iterable[J]) -> None:
        """Queue ``jobs`` (one request's texts) together, without blocking: all of them or none
        (:class:`OverloadedError` when they do not fit in ``max_queue``)."""
        jobs = list(jobs)
        with self._cond:
            if self._closed:
                raise RuntimeError("engine is closed")
            if len(self._queue) + len(jobs) > self.max_queue:
                raise OverloadedError(f"the request queue is full ({len(self._queue)} waiting)")
            self._queue.extend(jobs)
            self._cond.notify()

    def queued(self) -> int:
        """Jobs waiting for the worker."""
        return len(self._queue)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking jobs, let the worker finish what is queued, fail what it could not take."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=timeout_s)

    # -- worker -----------------------------------------------------------------------------------
    def _take(self) -> list[J] | None:
        """The next batch (blocks while the queue is empty); None once closed and drained."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            if self.batch_wait_s > 0 and len(self._queue) < self.max_batch_size and not self._closed:
                deadline = time.monotonic() + self.batch_wait_s
                while len(self._queue) < self.max_batch_size and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            n = min(self.max_batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        try:
            while (jobs := self._take()) is not None:
                live = [j for j in jobs if _claim(j.future)]  # skip timed-out callers
                groups: dict[Hashable, list[J]] = {}
                for j in live:
                    groups.setdefault(self.group_key(j) if self.group_key else None, []).append(j)
                for group in groups.values():
                    self._run_group(group)
        finally:
            with self._cond:
                self._closed = True
                left, self._queue = list(self._queue), collections.deque()
            _deliver([(j.future, None, RuntimeError("engine closed")) for j in left if _claim(j.future)])

    def _run_group(self, group: list[J]) -> None:
        """One forward pass for ``group``; when it fails, each job again on its own (the failure stays
        with the job that caused it)."""
        t0 = time.perf_counter()
        try:
            results = self.process(group)
        except Exception as exc:  # one bad job must not fail its batch-mates, nor kill the worker
            if len(group) > 1:
                log.warning("a batch of %d failed (%s: %s); running its jobs one by one", len(group),
                            type(exc).__name__, exc)
                for j in group:
                    self._run_group([j])
                return
            log.warning("a job failed: %s: %s", type(exc).__name__, exc)
            _deliver([(group[0].future, None, exc)])
            return
        dt = time.perf_counter() - t0
        _deliver([(j.future, r, None) for j, r in zip(group, results, strict=True)])
        if self.on_batch is not None:
            self.on_batch(len(group), dt)


def _deliver(outcomes: list[tuple[Future | asyncio.Future, Any, BaseException | None]]) -> None:
    """Set each future's result or exception: blocking futures at once, asyncio futures in one
    ``call_soon_threadsafe`` per event loop (one wake-up of the loop per batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any, BaseException | None]]] = {}
    for fut, result, exc in outcomes:
        if isinstance(fut, Future):
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        else:
            by_loop.setdefault(fut.get_loop(), []).append((fut, result, exc))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_set_async, items)


def _set_async(items: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """On the event loop: resolve the futures still waiting (a timed-out caller's is already cancelled)."""
    for fut, result, exc in items:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


async def gather_within(futures: Sequence[asyncio.Future], timeout_s: float) -> list[Any] | None:
    """Await every future of one request; ``None`` past ``timeout_s`` (the futures are then cancelled, so
    the worker skips the ones still queued). The first failure is raised."""
    if len(futures) == 1:
        try:
            return [await asyncio.wait_for(futures[0], timeout_s)]
        except TimeoutError:
            return None
    done, pending = await asyncio.wait(futures, timeout=timeout_s, return_when=asyncio.FIRST_EXCEPTION)
    for f in done:
        if f.exception() is not None:
            for p in pending:
                p.cancel()
            raise f.exception()  # type: ignore[misc]
    if pending:
        for p in pending:
            p.cancel()
        return None
    return [f.result() for f in futures]


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
