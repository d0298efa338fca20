"""vLLM's offline engine as teacher (GPU machines). Imported only when ``kind: vllm`` is asked for.

Requests that arrive together are handed to ``LLM.generate`` as one list (vLLM batches them
continuously); the call runs on a worker thread so the event loop stays free.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sentidistill.core.records import TeacherRequest, TeacherResponse, TokenLogprob, Usage
from sentidistill.teacher.base import FatalBackendError
from sentidistill.teacher.batching import MicroBatcher
from sentidistill.teacher.config import TeacherConfig, TeacherOptions


class VLLMOptions(TeacherOptions):
    """Options of the ``vllm`` backend (the offline engine, GPU)."""

    engine_args: dict[str, Any] | None = Field(None, description="Keyword arguments for vllm.LLM (e.g. tensor_parallel_size).")


class VLLMBackend:
    Options = VLLMOptions

    def __init__(self, model: str, *, engine_args: dict[str, Any] | None = None, batch_wait_s: float = 0.01) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise FatalBackendError(
                f"the vllm teacher needs vLLM ({exc}): pip install 'sentidistill[vllm]' on a machine with a GPU"
            ) from None
        self.model_id = model
        self.llm = LLM(model=model, **(engine_args or {}))
        # No batch cap: vLLM batches continuously; one worker thread keeps the event loop free.
        self._batcher = MicroBatcher(self._generate, wait_s=batch_wait_s, name="vLLM generation")

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> VLLMBackend:
        return cls(cfg.model, engine_args=cfg.options.engine_args)  # type: ignore[attr-defined]

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        return await self._batcher.submit(request)

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
        self._batcher.close()
