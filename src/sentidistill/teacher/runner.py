"""``CachedTeacher``: cache first, bounded concurrency, retries, budget, validation and repair.

All backend I/O runs on one private event loop in a worker thread, so the synchronous ``generate``
works whether or not the caller's thread already runs a loop (a notebook, a FastAPI handler), and an
async HTTP client stays bound to the loop that created it.

Budget: ``max_requests`` counts every call sent (retries and repairs included) and is exact;
``max_total_tokens`` is checked before each call, so calls already in flight may overshoot it by at most
``concurrency`` answers. The usage of every call counts, also of calls that failed after the endpoint
billed them (a body without a usable answer).

Reasoning models: the answer is validated without its ``<think>`` block; the block's text goes to
``TeacherResponse.reasoning`` (answers that had one are counted in ``stats["thinking"]``). A reply that
stopped at ``max_tokens`` before writing any answer (``finish_reason=length``) is not retried nor repaired
(the same request stops the same way again): it gets status ``truncated`` and a message saying what to do,
and is cached, so a rerun with the same settings does not pay for it again (``reasoning_tokens`` and
``max_tokens`` are part of the cache key).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, Literal, TypeVar

from sentidistill.core.records import TeacherRequest, TeacherResponse, Usage
from sentidistill.errors import BudgetExceeded
from sentidistill.teacher.base import Backend, BackendError, FatalBackendError, MissingAnswer
from sentidistill.teacher.cache import ResponseCache
from sentidistill.teacher.config import TeacherConfig
from sentidistill.teacher.validate import repair_message, validate
from sentidistill.utils.answers import split_reasoning
from sentidistill.utils.progress import progress_bar, progress_default

log = logging.getLogger(__name__)
T = TypeVar("T")

STAT_KEYS = (
    "requested", "sent", "cache_hits", "valid", "repaired", "invalid", "unchecked", "errors", "missing",
    "retries", "prompt_tokens", "completion_tokens", "truncated", "thinking",
)


class _BudgetSpent(Exception):
    pass


class CachedTeacher:
    """A backend wrapped with the response cache and the run's policies (see module doc).

    ``generate(requests)`` returns one response per request, in order. Responses with status
    ``error`` (retries exhausted, rejected request) or ``missing`` (replay) are not cached, so a
    rerun asks again; everything else is committed as it arrives.
    """

    def __init__(
        self,
        backend: Backend,
        cfg: TeacherConfig,
        cache: ResponseCache | None = None,
        *,
        progress: bool | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seed: int | None = None,
    ) -> None:
        self.backend = backend
        self.cfg = cfg
        self.cache = cache
        self.model_id = backend.model_id
        self.progress = progress_default() if progress is None else progress
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._stats: dict[str, float] = dict.fromkeys(STAT_KEYS, 0)
        self._stats["cost"] = 0.0
        self.budget_exhausted: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- public API -------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, float]:
        s = dict(self._stats)
        s["cost"] = round(self._cost(), 6)
        return s

    def generate(
        self, requests: Sequence[TeacherRequest], *, on_budget: Literal["raise", "return"] = "raise"
    ) -> list[TeacherResponse]:
        """Answer ``requests`` (same order). When the budget runs out, the answers so far are cached;
        ``on_budget="raise"`` raises ``BudgetExceeded`` (with ``.responses``), ``"return"`` returns the
        unanswered ones with status ``error``."""
        return self._submit(self._agenerate(list(requests), on_budget)).result()

    async def agenerate(
        self, requests: Sequence[TeacherRequest], *, on_budget: Literal["raise", "return"] = "raise"
    ) -> list[TeacherResponse]:
        return await asyncio.wrap_future(self._submit(self._agenerate(list(requests), on_budget)))

    def close(self) -> None:
        """Close the backend (stopping any server it started), the loop thread and the cache."""
        if self._closed:
            return
        aclose = getattr(self.backend, "aclose", None)
        try:
            if aclose is not None:
                # On the private loop, which the backend's async clients are bound to.
                self._submit(aclose()).result(timeout=30)
        except Exception as exc:  # closing must not mask the caller's real error
            log.warning("closing the teacher backend failed: %s", exc)
        finally:
            self._closed = True
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(timeout=30)
                self._loop.close()
            close = getattr(self.backend, "close", None)
            if close is not None:
                close()
            if self.cache is not None:
                self.cache.close()

    def __enter__(self) -> CachedTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> str:
        s = self.stats
        line = (
            f"{int(s['requested'])} requests: {int(s['cache_hits'])} cached, {int(s['sent'])} sent "
            f"({int(s['retries'])} retries); valid {int(s['valid'])}, repaired {int(s['repaired'])}, "
            f"invalid {int(s['invalid'])}, unchecked {int(s['unchecked'])}, truncated {int(s['truncated'])}, "
            f"errors {int(s['errors'])}, missing {int(s['missing'])}; {int(s['thinking'])} with a thinking block; "
            f"tokens {int(s['prompt_tokens'])} prompt + {int(s['completion_tokens'])} completion; "
            f"cost ${s['cost']:.4f}"
        )
        if self.budget_exhausted:
            line += f"; budget exhausted ({self.budget_exhausted})"
        return line

    # -- the event loop thread ------------------------------------------------------------------
    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        if self._closed:
            coro.close()
            raise RuntimeError("this teacher is closed")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="teacher-loop", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # -- the work ---------------------------------------------------------------------------------
    def _cost(self) -> float:
        pp = self.cfg.price_per_1k_prompt_tokens or 0.0
        pc = self.cfg.price_per_1k_completion_tokens or 0.0
        return self._stats["prompt_tokens"] / 1000 * pp + self._stats["completion_tokens"] / 1000 * pc

    def _check_budget(self) -> None:
        if self.budget_exhausted:
            raise _BudgetSpent
        if self.cfg.max_requests is not None and self._stats["sent"] >= self.cfg.max_requests:
            self.budget_exhausted = f"max_requests={self.cfg.max_requests}"
        tokens = self._stats["prompt_tokens"] + self._stats["completion_tokens"]
        if self.cfg.max_total_tokens is not None and tokens >= self.cfg.max_total_tokens:
            self.budget_exhausted = f"max_total_tokens={self.cfg.max_total_tokens} (used {int(tokens)})"
        if self.budget_exhausted:
            raise _BudgetSpent

    async def _agenerate(self, requests: list[TeacherRequest], on_budget: str) -> list[TeacherResponse]:
        n = len(requests)
        if self.cfg.reasoning_tokens:
            # Room for the thinking, on top of each request's answer budget (so it is in the cache key too).
            requests = [r.model_copy(update={"params": r.params.model_copy(
                update={"max_tokens": r.params.max_tokens + self.cfg.reasoning_tokens})}) for r in requests]
        self._stats["requested"] += n
        keys = [r.cache_key(self.model_id) for r in requests]
        results: list[TeacherResponse | None] = [None] * n
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        # Identical requests in one batch are sent once.
        pending: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in hits:
                results[i] = hits[k]
                self._stats["cache_hits"] += 1
            else:
                pending.setdefault(k, []).append(i)

        sem = asyncio.Semaphore(self.cfg.concurrency)
        bar = (_Progress(len(pending), self, label=requests[0].prompt_id or "teacher", cached=n - len(pending))
               if self.progress and pending else None)
        fatal: list[BaseException] = []

        async def one(key: str, idxs: list[int]) -> None:
            req = requests[idxs[0]]
            async with sem:
                if fatal:
                    return
                try:
                    resp = await self._answer(req)
                except _BudgetSpent:
                    return
                except FatalBackendError as exc:
                    fatal.append(exc)
                    return
            if resp.status not in ("error", "missing") and self.cache is not None:
                self.cache.put(key, req, resp)
            for i in idxs:
                results[i] = resp
            if bar is not None:
                bar.advance()

        tasks = [asyncio.ensure_future(one(k, v)) for k, v in pending.items()]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # An unexpected failure (or cancellation) stops the whole batch: nothing keeps sending behind it.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        if fatal:
            raise fatal[0]
        unanswered = [i for i, r in enumerate(results) if r is None]
        if unanswered:
            msg = (
                f"teacher budget exhausted ({self.budget_exhausted}): {len(unanswered)} of {n} requests unanswered; "
                "the answers so far are cached, so a rerun with a larger budget continues from here"
            )
            for i in unanswered:
                results[i] = TeacherResponse(text="", model=self.model_id, status="error", error=msg, attempts=0)
            if on_budget == "raise":
                exc = BudgetExceeded(msg)
                exc.responses = results  # type: ignore[attr-defined]
                raise exc
            log.warning(msg)
        return results  # type: ignore[return-value]

    async def _call(self, request: TeacherRequest) -> TeacherResponse:
        """One logical call with retries (exponential backoff, full jitter, Retry-After honoured)."""
        attempt = 0
        while True:
            self._check_budget()
            self._stats["sent"] += 1
            try:
                resp = await self.backend.agenerate_one(request)
            except BackendError as exc:
                if exc.usage is not None:  # billed although unusable: it counts against budget and cost
                    self._stats["prompt_tokens"] += exc.usage.prompt_tokens
                    self._stats["completion_tokens"] += exc.usage.completion_tokens
                if not exc.retryable or attempt >= self.cfg.max_retries:
                    raise
                delay = self._rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.backoff_max_s * 4))
                attempt += 1
                self._stats["retries"] += 1
                log.debug("retry %d in %.2fs after: %s", attempt, delay, exc)
                await asyncio.sleep(delay)
                continue
            self._stats["prompt_tokens"] += resp.usage.prompt_tokens
            self._stats["completion_tokens"] += resp.usage.completion_tokens
            resp.attempts = attempt + 1
            return resp

    async def _answer(self, request: TeacherRequest) -> TeacherResponse:
        """Call, validate, and re-ask with a repair instruction while the answer does not parse."""
        try:
            resp = await self._call(request)
        except MissingAnswer as exc:
            self._stats["missing"] += 1
            return TeacherResponse(text="", model=self.model_id, status="missing", error=str(exc), attempts=0)
        except FatalBackendError:
            raise
        except BackendError as exc:
            self._stats["errors"] += 1
            log.warning("teacher request failed: %s", exc)
            return TeacherResponse(text="", model=self.model_id, status="error", error=str(exc))
        fmt = request.answer_format
        answer = self._split(resp)
        if self._truncated(resp, answer, request):
            return resp
        if fmt.kind == "free" and answer:
            self._stats["unchecked"] += 1
            resp.status = "unchecked"
            return resp
        check = validate(resp.text, fmt)
        attempts, usage = resp.attempts, resp.usage
        messages = list(request.messages)
        repairs = 0
        while not check.ok and repairs < self.cfg.repair_attempts:
            repairs += 1
            # The assistant turn carries the answer only: reasoning models are not shown their own thinking.
            messages = [*messages, {"role": "assistant", "content": answer}, repair_message(check.problem, fmt)]
            try:
                resp = await self._call(request.model_copy(update={"messages": messages}))
            except _BudgetSpent:
                break
            except FatalBackendError:
                raise
            except BackendError as exc:
                log.warning("repair request failed: %s", exc)
                break
            attempts += resp.attempts
            usage = Usage(
                prompt_tokens=usage.prompt_tokens + resp.usage.prompt_tokens,
                completion_tokens=usage.completion_tokens + resp.usage.completion_tokens,
            )
            answer = self._split(resp, count=False)
            if self._truncated(resp, answer, request):
                resp.attempts, resp.usage = attempts, usage
                return resp
            check = validate(resp.text, fmt)
        resp.attempts, resp.usage = attempts, usage
        if check.ok:
            resp.status = "repaired" if repairs else "valid"
            resp.parsed = check.parsed
        else:
            resp.status = "invalid"
            resp.error = check.problem
        self._stats[resp.status] += 1
        return resp

    def _split(self, resp: TeacherResponse, *, count: bool = True) -> str:
        """Split off the reply's thinking block into ``resp.reasoning``; returns the answer part."""
        reasoning, answer = split_reasoning(resp.text)
        if resp.reasoning is None:
            resp.reasoning = reasoning
        if count and resp.reasoning is not None:
            self._stats["thinking"] += 1
        return answer

    def _truncated(self, resp: TeacherResponse, answer: str, request: TeacherRequest) -> bool:
        """Mark a reply that hit max_tokens before any answer as ``truncated`` (no retry, no repair): no
        content at all, or only a thinking block. (Whitespace up to max_tokens is an invalid answer.)"""
        if resp.finish_reason != "length" or answer or (resp.reasoning is None and resp.text):
            return False
        thought = f" after {len(resp.reasoning)} characters of reasoning" if resp.reasoning else ""
        resp.status = "truncated"
        resp.error = (
            f"the model stopped at max_tokens={request.params.max_tokens} (finish_reason=length){thought} "
            "before writing any answer; give it room for its thinking (teacher.reasoning_tokens, e.g. 2048, "
            "is added to every request's max_tokens) or switch thinking off (Qwen3 on vLLM/SGLang: teacher.extra: "
            "{extra_body: {chat_template_kwargs: {enable_thinking: false}}}; OpenAI o-series/gpt-5: "
            "extra_body: {reasoning_effort: minimal|low})"
        )
        self._stats["truncated"] += 1
        if self._stats["truncated"] == 1:
            log.warning("teacher answer truncated: %s", resp.error)
        return True


class _Progress:
    """A rich progress bar of one ``generate`` batch: what it is (the requests' prompt id, e.g.
    ``soft_labels.sst2.v0`` or a bench task), done/total calls to send, rate, elapsed, ETA, and the teacher's
    cost so far: calls sent, tokens, dollars, cache hits (this batch's answers that cost nothing)."""

    def __init__(self, total: int, teacher: CachedTeacher, *, label: str = "teacher", cached: int = 0) -> None:
        self.teacher = teacher
        self.t0 = time.perf_counter()
        self.done = 0
        self.cached = cached
        self.p = progress_bar(f"[bold]teacher[/] {label[:40]}", info=True)
        self.p.start()
        self.task = self.p.add_task("teacher", total=total, rate="", info=f"cache hits {cached}")

    def advance(self) -> None:
        self.done += 1
        s = self.teacher.stats
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        tokens = int(s["prompt_tokens"] + s["completion_tokens"])
        self.p.update(
            self.task, advance=1, rate=f"{self.done / elapsed:.1f} req/s",
            info=f"calls {int(s['sent'])} tokens {tokens} ${s['cost']:.4f} cache hits {self.cached} "
                 f"invalid {int(s['invalid'])} err {int(s['errors'])}",
        )

    def close(self) -> None:
        self.p.stop()
