"""Micro-batching for local teachers: requests that arrive together run as one batch on one worker thread.

The runner keeps ``concurrency`` requests in flight; a local engine (transformers, vLLM) is fastest, and
only thread-safe, when it sees them as one batch on a single thread, with the event loop left free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

from sentidistill.core.records import TeacherRequest, TeacherResponse
from sentidistill.teacher.base import RequestRejected

_Item = tuple[TeacherRequest, "asyncio.Future[TeacherResponse]"]


class MicroBatcher:
    """Collect requests for ``wait_s`` (or until ``batch_size``), group them by ``group_key`` and run each
    group through ``run_batch(requests) -> responses`` on one worker thread.

    ``batch_size=None`` means no cap (the engine batches continuously, as vLLM does).
    """

    def __init__(
        self, run_batch: Callable[[list[TeacherRequest]], list[TeacherResponse]], *, wait_s: float,
        batch_size: int | None = None, group_key: Callable[[TeacherRequest], Hashable] = lambda r: None,
        name: str = "local generation",
    ) -> None:
        self._run_batch_fn = run_batch
        self.wait_s = wait_s
        self.batch_size = batch_size
        self._group_key = group_key
        self._name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name.replace(" ", "-"))
        self._pending: list[_Item] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop only keeps weak ones

    async def submit(self, request: TeacherRequest) -> TeacherResponse:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TeacherResponse] = loop.create_future()
        self._pending.append((request, fut))
        if self.batch_size is not None and len(self._pending) >= self.batch_size:
            self._flush()
        elif not self._flush_scheduled:
            # Wait a moment so the requests the runner releases together land in one batch.
            self._flush_scheduled = True
            loop.call_later(self.wait_s, self._flush)
        return await fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        groups: dict[Hashable, list[_Item]] = {}
        for item in pending:
            groups.setdefault(self._group_key(item[0]), []).append(item)
        step = self.batch_size or max(1, len(pending))
        for items in groups.values():
            for i in range(0, len(items), step):
                task = asyncio.ensure_future(self._run(items[i : i + step]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._run_batch_fn, [r for r, _ in items])
        except Exception as exc:  # one bad batch must not hang its callers
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(RequestRejected(f"{self._name} failed: {exc}"))
            return
        for (_, fut), res in zip(items, results, strict=True):
            if not fut.done():
                fut.set_result(res)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
