"""The serving engines' dynamic batcher on its own: grouping, failures, cancellation, overload, close."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import pytest

from sentidistill.errors import InputError
from sentidistill.serve.batcher import DynamicBatcher, OverloadedError


@dataclass
class Job:
    x: int
    key: str = "a"
    future: Future = field(default_factory=Future)


def test_jobs_that_arrive_together_run_as_groups_of_one_key() -> None:
    seen: list[list[int]] = []
    sizes: list[int] = []
    gate = threading.Event()

    def process(jobs: list[Job]) -> list[int]:
        gate.wait(10)  # the first batch waits so that the rest queue up behind it
        seen.append([j.x for j in jobs])
        return [j.x * 10 for j in jobs]

    b = DynamicBatcher(process, group_key=lambda j: j.key, max_batch_size=4, batch_wait_ms=0,
                       on_batch=lambda n, s: sizes.append(n))
    jobs = [Job(0)] + [Job(i, "a" if i % 2 else "b") for i in range(1, 7)]
    b.put(jobs[0])
    while b.queued():  # the worker has taken the first job
        pass
    for j in jobs[1:]:
        b.put(j)
    gate.set()
    assert [j.future.result(10) for j in jobs] == [0, 10, 20, 30, 40, 50, 60]
    b.close()
    # [0] alone; then the next 4 (1..4) split by key, then the last 2 (5, 6) split by key.
    assert seen == [[0], [1, 3], [2, 4], [5], [6]]
    assert sizes == [1, 2, 2, 1, 1]


def test_a_failed_batch_fails_its_jobs_only_and_the_worker_lives_on() -> None:
    def process(jobs: list[Job]) -> list[int]:
        if any(j.x < 0 for j in jobs):
            raise ValueError("bad input")
        return [j.x for j in jobs]

    with pytest.raises(InputError, match="max_batch_size"):
        DynamicBatcher(process, max_batch_size=0)
    b = DynamicBatcher(process, max_batch_size=1)
    bad, good = Job(-1), Job(5)
    b.put(bad)
    b.put(good)
    with pytest.raises(ValueError, match="bad input"):
        bad.future.result(10)
    assert good.future.result(10) == 5
    b.close()


def test_cancelled_jobs_are_skipped_overload_and_close_finishes_the_queue() -> None:
    gate, ran = threading.Event(), []

    def process(jobs: list[Job]) -> list[int]:
        gate.wait(10)
        ran.extend(j.x for j in jobs)
        return [j.x for j in jobs]

    b = DynamicBatcher(process, max_batch_size=1, max_queue=2)
    first = Job(1)
    b.put(first)
    while b.queued():
        pass
    cancelled, queued = Job(2), Job(3)
    b.put(cancelled)
    b.put(queued)
    with pytest.raises(OverloadedError, match="2 waiting"):
        b.put(Job(4))
    assert cancelled.future.cancel()
    closer = threading.Thread(target=b.close)
    closer.start()  # close() while the first batch runs: the jobs queued before it still run
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    assert (first.future.result(10), queued.future.result(10)) == (1, 3)
    assert ran == [1, 3]  # the cancelled job never reached process()
    with pytest.raises(RuntimeError, match="closed"):
        b.put(Job(5))


def test_one_bad_job_fails_alone_and_its_batch_mates_are_answered() -> None:
    """Issue 24.2: a job the model cannot take (a text the tokenizer refuses) used to fail every job batched
    with it. A failed batch now runs its jobs again one by one: only the bad one fails."""
    gate, seen = threading.Event(), []

    def process(jobs: list[Job]) -> list[int]:
        gate.wait(10)
        seen.append([j.x for j in jobs])
        if any(j.x < 0 for j in jobs):
            raise UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates not allowed")
        return [j.x * 10 for j in jobs]

    b = DynamicBatcher(process, max_batch_size=8)
    first = Job(0)
    b.put(first)
    while b.queued():
        pass
    mates = [Job(1), Job(-1), Job(2), Job(3)]
    b.put_many(mates)  # queued together while the first batch runs: one batch
    gate.set()
    assert first.future.result(10) == 0
    with pytest.raises(UnicodeEncodeError):
        mates[1].future.result(10)
    assert [mates[i].future.result(10) for i in (0, 2, 3)] == [10, 20, 30]
    assert seen == [[0], [1, -1, 2, 3], [1], [-1], [2], [3]]
    b.close()


def test_put_many_is_all_or_nothing_and_asyncio_futures_are_resolved_on_their_loop() -> None:
    import asyncio

    b = DynamicBatcher(lambda jobs: [j.x + 1 for j in jobs], max_batch_size=64, max_queue=4)
    with pytest.raises(OverloadedError):
        b.put_many([Job(i) for i in range(5)])
    assert b.queued() == 0

    async def burst() -> list[int]:
        loop = asyncio.get_running_loop()
        jobs = [Job(i, future=loop.create_future()) for i in range(4)]  # type: ignore[arg-type]
        b.put_many(jobs)
        return list(await asyncio.gather(*(j.future for j in jobs)))

    assert asyncio.run(burst()) == [1, 2, 3, 4]
    b.close()
