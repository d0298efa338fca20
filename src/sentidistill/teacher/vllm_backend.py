"""vLLM's offline engine as teacher (GPU machines). Imported only when ``kind: vllm`` is asked for.

Requests that arrive together are handed to ``LLM.generate`` as one list (vLLM batches them
continuously); the call runs on a worker thread so the event loop stays free.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sentidistill.config import TeacherConfig
from sentidistill.teacher.base import FatalBackendError, RequestRejected
from sentidistill.teacher.types import TeacherRequest, TeacherResponse, TokenLogprob, Usage


class VLLMBackend:
    def __init__(self, model: str, *, engine_args: dict[str, Any] | None = None, batch_wait_s: float = 0.01) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise FatalBackendError(
                f"the vllm teacher needs vLLM ({exc}): pip install 'sentidistill[vllm]' on a machine with a GPU"
            ) from None
        self.model_id = model
        self.llm = LLM(model=model, **(engine_args or {}))
        self.batch_wait_s = batch_wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm")
        self._pending: list[tuple[TeacherRequest, asyncio.Future[TeacherResponse]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop only keeps weak ones

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> VLLMBackend:
        return cls(cfg.model, engine_args=cfg.extra.get("engine_args"))

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TeacherResponse] = loop.create_future()
        self._pending.append((request, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_later(self.batch_wait_s, self._start_flush)
        return await fut

    def _start_flush(self) -> None:
        task = asyncio.ensure_future(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        self._scheduled = False
        items, self._pending = self._pending, []
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._generate, [r for r, _ in items]
            )
        except Exception as exc:
            for _, f in items:
                if not f.done():
                    f.set_exception(RequestRejected(f"vLLM generation failed: {exc}"))
            return
        for (_, f), res in zip(items, results, strict=True):
            if not f.done():
                f.set_result(res)

    def _generate(self, requests: list[TeacherRequest]) -> list[TeacherResponse]:
        from vllm import SamplingParams as VSP

        sps = [
            VSP(
                max_tokens=r.params.max_tokens, temperature=r.params.temperature, top_p=r.params.top_p,
                seed=r.params.seed, stop=list(r.params.stop) or None,
                logprobs=r.params.top_logprobs if r.params.logprobs else None,
            )
            for r in requests
        ]
        outs = self.llm.chat([r.messages for r in requests], sps, use_tqdm=False)
        responses = []
        for r, o in zip(requests, outs, strict=True):
            c = o.outputs[0]
            lps = None
            if r.params.logprobs and c.logprobs is not None:
                lps = []
                for tid, pos in zip(c.token_ids, c.logprobs, strict=False):
                    ranked = sorted(pos.values(), key=lambda lp: lp.rank or 0)
                    chosen = pos[tid]
                    lps.append(TokenLogprob(
                        token=chosen.decoded_token or "", logprob=float(chosen.logprob),
                        top=[(lp.decoded_token or "", float(lp.logprob)) for lp in ranked][: r.params.top_logprobs],
                    ))
            responses.append(TeacherResponse(
                text=c.text, model=self.model_id, finish_reason=c.finish_reason, logprobs=lps,
                usage=Usage(prompt_tokens=len(o.prompt_token_ids or []), completion_tokens=len(c.token_ids)),
            ))
        return responses

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        self._executor.shutdown(wait=True)
