"""Kind ``causal``: decoder-only students (Qwen, Llama, GPT-2, ...).

One sequence ``prompt + answer + EOS``; batches are left-padded for generation (every row continues from
the right edge) and right-padded for training (loss on the answer only). Chat-template renderings carry
their own special tokens, so nothing is added to them.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentidistill.students.base import PLAIN_CHAT_TEMPLATE, PromptStyle
from sentidistill.students.collate import CausalCollator
from sentidistill.students.hf import HFGenerativeStudent


def left_pad_positions(mask: Any) -> Any:
    """Position ids for left-padded rows: 0 at each row's first real token (torch or numpy)."""
    if isinstance(mask, torch.Tensor):
        return (mask.cumsum(-1) - 1).clamp(min=0)
    return np.clip(mask.cumsum(-1) - 1, 0, None)


class CausalStudent(HFGenerativeStudent):
    """A decoder-only LM."""

    kind = "causal"
    methods = ("knowdist", "icldist", "onpolicy")
    needs_instruction = True
    answer_only_logits = True
    chat_adds_special_tokens = False  # chat templates of causal LMs write their own special tokens
    lora_task_type = "CAUSAL_LM"
    #: Score the pairs that share a prompt on one pass over it (False: one full sequence per pair, the
    #: reference path; ``benchmarks/label_scoring_speed.py`` times both).
    share_prompts: bool = True

    @classmethod
    def _load_model(cls, path: str, kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tok.padding_side = "left"  # decoder-only batches generate from the right edge
        return model, tok

    @property
    def default_prompt_style(self) -> PromptStyle:
        """``chat`` when the model has a chat template of its own (SmolLM2's ChatML, Qwen's), else ``plain``
        (a base model such as Gemma-3-270M: the stand-in :data:`PLAIN_CHAT_TEMPLATE` that loading gives a
        tokenizer without one, and that a saved student keeps, is not the model's own).

        The ICL corpus is rendered with the chat template for training (collate.source_text), so a distilled
        causal student is scored on the prompts it learned."""
        template = getattr(self.tokenizer, "chat_template", None)
        return "chat" if template and template != PLAIN_CHAT_TEMPLATE else "plain"

    # -- training ------------------------------------------------------------------------------------
    def collator(self, **limits: Any) -> CausalCollator:
        return CausalCollator(self.tokenizer, **{k: v for k, v in limits.items() if v is not None})

    def align_next_token(self, logits: torch.Tensor, *targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # logits at t predict token t+1
        return (logits[:, :-1], *(t[:, 1:] for t in targets))

    def encode_pair(self, source: str, target: str, max_source_length: int) -> dict[str, list[int]]:
        tok = self.tokenizer
        prompt = tok(source, truncation=True, max_length=max_source_length)["input_ids"]
        ans = (tok(" " + target, add_special_tokens=False)["input_ids"] if target else []) + [self.first_eos()]
        return {"input_ids": prompt + ans, "labels": [-100] * len(prompt) + ans}

    # -- generation ----------------------------------------------------------------------------------
    def prompt_room(self, max_length: int, max_new_tokens: int) -> int:
        return max_length - max_new_tokens  # the answer shares the context with the prompt

    # -- label scoring -------------------------------------------------------------------------------
    def label_separator(self, prompt_style: str) -> str:
        return " " if prompt_style == "plain" else ""

    def answer_end(self, prompt_style: str) -> str:
        return "\n" if prompt_style == "plain" else (self.tokenizer.eos_token or "")

    def sequence_logprobs(self, prompts: list[str], continuations: list[str], *,
                          n_tokens: list[int] | None = None, max_length: int = 1024) -> torch.Tensor:
        """``[N]`` log P(continuation | prompt) (see the base class). Pairs that share a prompt (restricted
        scoring's K label words after one prompt, the ``label_kl`` loss's label sets) are scored on one pass over
        that prompt: its KV cache is copied to each of its continuations, which then feed only their own tokens
        (K label words of ~2 tokens after a ~250-token prompt: ~K times fewer tokens than K full sequences; the
        same numbers up to float rounding, and differentiable through the cache; a prompt cut at ``max_length``
        keeps room for its longest continuation). Pairs whose prompts all differ take one pass over
        ``prompt + continuation``."""
        conts = [self.continuation_ids(c) for c in continuations]
        if n_tokens is not None:
            conts = [c[:n] for c, n in zip(conts, n_tokens, strict=True)]
        if self.share_prompts and len(set(prompts)) < len(prompts):
            return self._shared_prompt_logprobs(list(prompts), conts, max_length)
        return self._full_sequence_logprobs(list(prompts), conts, max_length)

    @property
    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @functools.cached_property
    def _cache_keyword(self) -> str:
        """The forward argument that takes a KV cache: ``cache`` (transformers 5.x) or ``past_key_values``."""
        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self._pad_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return ids, mask

    def _forward(self, keep: int, **inputs: Any) -> Any:
        try:
            return self.model(**inputs, logits_to_keep=keep)
        except TypeError:  # models without logits_to_keep
            return self.model(**inputs)

    def _full_sequence_logprobs(self, prompts: list[str], conts: list[list[int]], max_length: int) -> torch.Tensor:
        seqs = []
        for p, cont in zip(prompts, conts, strict=True):
            ctx = self._encode(p, True)[-max(1, max_length - len(cont)):]  # keep the end of the prompt (the query)
            seqs.append(ctx + cont)
        ids, mask = self._left_padded(seqs)
        width = ids.shape[1]
        # Left padding puts every continuation at the right edge, so only the last positions need logits.
        keep = max(len(c) for c in conts) + 1
        out = self._forward(keep, input_ids=ids, attention_mask=mask, position_ids=left_pad_positions(mask),
                            use_cache=False)
        logp = torch.log_softmax(out.logits[:, -keep:, :].float()[:, :-1, :], dim=-1)  # j predicts token j+1
        scores = []
        for b, cont in enumerate(conts):
            n = len(cont)
            scores.append(logp[b, keep - 1 - n:, :].gather(-1, ids[b, width - n:].unsqueeze(-1)).sum())
        return torch.stack(scores)

    def _shared_prompt_logprobs(self, prompts: list[str], conts: list[list[int]], max_length: int) -> torch.Tensor:
        unique = list(dict.fromkeys(prompts))
        group = {p: g for g, p in enumerate(unique)}
        row_group = torch.tensor([group[p] for p in prompts], device=self.device)
        longest = [0] * len(unique)
        for p, cont in zip(prompts, conts, strict=True):
            longest[group[p]] = max(longest[group[p]], len(cont))
        ctx = [self._encode(p, True)[-max(1, max_length - longest[g]):] for g, p in enumerate(unique)]
        ctx_ids, ctx_mask = self._left_padded(ctx)
        out = self._forward(1, input_ids=ctx_ids, attention_mask=ctx_mask, position_ids=left_pad_positions(ctx_mask),
                            use_cache=True)
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)[row_group]  # [N, V]: each first token
        zero = first.new_zeros(())
        scores = [first[i, c[0]] if c else zero for i, c in enumerate(conts)]
        rest = max(len(c) for c in conts) - 1
        if rest <= 0:
            return torch.stack(scores)
        # Each continuation feeds its tokens but the last after a copy of its prompt's cache (right-padded).
        cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")  # 5.x / 4.x
        cache.batch_select_indices(row_group)
        fed = [c[:-1] for c in conts]
        feed = torch.tensor([f + [self._pad_id] * (rest - len(f)) for f in fed], device=self.device)
        feed_mask = torch.tensor([[1] * len(f) + [0] * (rest - len(f)) for f in fed], device=self.device)
        lengths = ctx_mask.sum(-1)[row_group]
        positions = lengths.unsqueeze(-1) + torch.arange(rest, device=self.device)
        out = self._forward(0, input_ids=feed, attention_mask=torch.cat([ctx_mask[row_group], feed_mask], dim=-1),
                            position_ids=positions, use_cache=True, **{self._cache_keyword: cache})
        logp = torch.log_softmax(out.logits.float(), dim=-1)  # [N, rest, V]: position j predicts token j+1
        for i, cont in enumerate(conts):
            if len(cont) > 1:
                targets = torch.tensor(cont[1:], device=self.device)
                scores[i] = scores[i] + logp[i, : len(cont) - 1].gather(-1, targets.unsqueeze(-1)).sum()
        return torch.stack(scores)

    # -- export --------------------------------------------------------------------------------------
    def export_onnx(self, folder: Path) -> tuple[dict[str, str], dict[str, Any]]:
        """``model.onnx``: (input_ids, attention_mask, position_ids) -> last position's logits."""
        from sentidistill.students.onnx_graphs import CausalLastLogits, export_graph

        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([[5, 6, 7, 8], [pad, 5, 6, 7]], dtype=torch.long)
        mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.long)
        export_graph(CausalLastLogits(self.model), (ids, mask, left_pad_positions(mask)), folder / "model.onnx",
                     ["input_ids", "attention_mask", "position_ids"],
                     {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                      "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch"}})
        return {"model": "model.onnx"}, {"decoder_start_token_id": None}

    @classmethod
    def onnx_runner(cls, sessions: dict[str, Any], meta: dict[str, Any]) -> _CausalOnnxRunner:
        return _CausalOnnxRunner(sessions)

    @classmethod
    def onnx_padding_side(cls) -> str:
        return "left"


class _CausalOnnxRunner:
    """The whole (left-padded) sequence at every step (no key/value cache)."""

    def __init__(self, sessions: dict[str, Any]) -> None:
        self.sessions = sessions

    def start(self, ids: np.ndarray, mask: np.ndarray) -> int:
        self.sequence, self.mask = ids, mask
        return ids.shape[1]

    def step(self) -> np.ndarray:
        return self.sessions["model"].run(None, {"input_ids": self.sequence, "attention_mask": self.mask,
                                                 "position_ids": left_pad_positions(self.mask)})[0]

    def append(self, next_ids: np.ndarray) -> None:
        self.sequence = np.concatenate([self.sequence, next_ids[:, None]], axis=1)
        self.mask = np.concatenate([self.mask, np.ones((len(next_ids), 1), dtype=np.int64)], axis=1)
