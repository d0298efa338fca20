"""A local Hugging Face model as teacher: batched ``generate`` in a worker thread.

Requests that arrive together (the runner keeps ``concurrency`` in flight) are grouped by sampling
parameters into batches of ``batch_size`` and generated in one call on a single worker thread (the model
is not thread-safe), so the event loop stays free. Top-k log-probs come from the raw logits of each step.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field

from sentidistill.core.records import SamplingParams, TeacherRequest, TeacherResponse, TokenLogprob, Usage
from sentidistill.teacher.batching import MicroBatcher
from sentidistill.teacher.config import TeacherConfig, TeacherOptions

log = logging.getLogger(__name__)


class TransformersOptions(TeacherOptions):
    """Options of the ``transformers`` backend (a local Hugging Face model, loaded as a student kind)."""

    batch_size: int = Field(8, ge=1, description="Requests generated together.")
    device: str | None = Field(None, description="cpu, cuda, cuda:1...; default: cuda when available.")
    dtype: str | None = Field(None, description="torch dtype name, e.g. bfloat16; default: the checkpoint's.")


class TransformersBackend:
    Options = TransformersOptions
    def __init__(
        self, model: str, *, batch_size: int = 8, device: str | None = None, dtype: str | None = None,
        batch_wait_s: float = 0.005,
    ) -> None:
        import torch

        from sentidistill.students import load_student

        torch_dtype = getattr(torch, dtype) if dtype else None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.lm = load_student(model, device=device, dtype=torch_dtype)
        self.model_id = model
        # Same-parameter requests share a batch; the model is not thread-safe, so one worker thread.
        self._batcher = MicroBatcher(lambda reqs: self._generate(reqs[0].params, reqs), wait_s=batch_wait_s,
                                     batch_size=batch_size, group_key=lambda r: r.params, name="local generation")

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> TransformersBackend:
        o: TransformersOptions = cfg.options  # type: ignore[assignment]
        return cls(cfg.model, batch_size=o.batch_size, device=o.device, dtype=o.dtype)

    async def agenerate_one(self, request: TeacherRequest) -> TeacherResponse:
        return await self._batcher.submit(request)

    def _generate(self, params: SamplingParams, requests: list[TeacherRequest]) -> list[TeacherResponse]:
        import torch

        tok = self.lm.tokenizer
        # Every kind renders the chat template (load_model gives template-less tokenizers a plain one), as the
        # serve engine and the training collator do, so this teacher and `sentidistill serve` on the same
        # model answer alike; causal templates write their own special tokens, encoder inputs get the tokenizer's.
        texts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests]
        enc = tok(texts, return_tensors="pt", padding=True,
                  add_special_tokens=self.lm.chat_adds_special_tokens).to(self.lm.device)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        sample = params.temperature > 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens, "do_sample": sample, "return_dict_in_generate": True,
            "output_logits": params.logprobs, "pad_token_id": tok.pad_token_id,
        }
        if sample:
            gen_kwargs.update(temperature=params.temperature, top_p=params.top_p)
        with torch.inference_mode():
            gen, out = self.lm.generate_new_tokens(enc["input_ids"], enc["attention_mask"], **gen_kwargs)
        eos = self.lm.eos_token_ids()  # not the pad id: a seq2seq decoder starts from it, and a model may emit it
        logprobs = None
        if params.logprobs:
            # [steps, batch, vocab] -> log-softmax over raw logits (what the model believes, pre-sampling).
            logprobs = torch.stack(out.logits, dim=0).float().log_softmax(-1)
        responses = []
        for b in range(len(requests)):
            ids = gen[b].tolist()
            n = next((i for i, t in enumerate(ids) if t in eos), len(ids))
            finish = "stop" if n < len(ids) else "length"
            text = tok.decode(ids[:n], skip_special_tokens=True)
            for s in params.stop:
                if s and s in text:
                    text, finish = text[: text.index(s)], "stop"
            lps = None
            if logprobs is not None:
                lps = []
                k = max(params.top_logprobs, 1)
                for t in range(n):
                    row = logprobs[t, b]
                    top_v, top_i = row.topk(k)
                    lps.append(TokenLogprob(
                        token=tok.decode([ids[t]]), logprob=float(row[ids[t]]),
                        top=[(tok.decode([i]), float(v)) for v, i in zip(top_v.tolist(), top_i.tolist(), strict=True)][
                            : params.top_logprobs
                        ],
                    ))
            responses.append(TeacherResponse(
                text=text, model=self.model_id, finish_reason=finish, logprobs=lps,
                usage=Usage(prompt_tokens=int(enc["attention_mask"][b].sum()), completion_tokens=n),
            ))
        return responses

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        self._batcher.close()
