"""Kind ``causal``: decoder-only students (Qwen, Llama, GPT-2, ...).

One sequence ``prompt + answer + EOS``; batches are left-padded for generation (every row continues from
the right edge) and right-padded for training (loss on the answer only). Chat-template renderings carry
their own special tokens, so nothing is added to them.
"""

from __future__ import annotations

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
        seqs, n_cont = [], []
        for i, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
            ctx = self._encode(p, True)
            cont = self.continuation_ids(c)
            if n_tokens is not None:
                cont = cont[: n_tokens[i]]
            ctx = ctx[-max(1, max_length - len(cont)):]  # keep the end of the prompt (the query)
            seqs.append(ctx + cont)
            n_cont.append(len(cont))
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        dev = self.device
        # Left padding puts every continuation at the right edge, so only the last positions need logits.
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=dev)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=dev)
        pos = left_pad_positions(mask)
        keep = max(n_cont) + 1
        try:
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
        except TypeError:  # models without logits_to_keep
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        logits = logits[:, -keep:, :].float()
        logp = torch.log_softmax(logits[:, :-1, :], dim=-1)  # position j predicts token j+1
        scores = []
        for b, n in enumerate(n_cont):
            targets = ids[b, width - n:]
            rows = logp[b, keep - 1 - n:, :]
            scores.append(rows.gather(-1, targets.unsqueeze(-1)).sum())
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
