"""Turning corpus rows into model batches: encoding (truncation, loss masks) and dynamic padding.

Two families (a student kind picks its own: :meth:`sentidistill.students.base.Student.collator`):

* :class:`Seq2SeqCollator`: ``source`` -> encoder ``input_ids``; ``target`` + EOS -> ``labels`` (padding = -100).
* :class:`CausalCollator`: ``prompt + response + EOS`` in one sequence; the prompt's positions are -100 in
  ``labels`` so the loss is on the response only. Long prompts are cut from the *left* by default: an ICL
  prompt ends with the query, and the query plus the answer are what the example is about.

Both accept raw rows (``{"source", "target"}``) or rows that :meth:`encode` already produced (so a
``datasets.Dataset`` can be tokenised once, with a ``length`` column for length-grouped batches).
Optional token-level KD fields (``kd_ids``/``kd_logprobs``, see :mod:`sentidistill.train.align`) are padded
into ``teacher_ids`` [B, T, K] and ``teacher_logprobs`` [B, T, K] aligned with ``labels`` (-inf = no entry).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

IGNORE_INDEX = -100
Truncation = Literal["left", "right"]


def parse_messages(source: str) -> list[dict[str, Any]] | None:
    """The chat messages in a corpus ``source`` (a JSON list of ``{"role", "content"}``), or None for plain text."""
    s = source.lstrip()
    if s.startswith("[{"):
        try:
            messages = json.loads(s)
        except ValueError:
            return None
        if isinstance(messages, list) and all(isinstance(m, dict) and "content" in m for m in messages):
            return messages
    return None


def source_text(tokenizer: Any, source: str) -> tuple[str, bool]:
    """The prompt as plain text, and whether it came from chat messages.

    A corpus ``source`` is either plain text or a JSON list of chat messages; messages go through the
    tokenizer's chat template (with the generation cue) so training sees what inference will send.
    """
    messages = parse_messages(source)
    if messages is None:
        return source, False
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True


def _cut(ids: list[int], limit: int, side: Truncation) -> list[int]:
    if len(ids) <= limit:
        return ids
    return ids[len(ids) - limit:] if side == "left" else ids[:limit]


def encode_prompt(tokenizer: Any, text: str, limit: int, side: Truncation, add_special_tokens: bool = True) -> list[int]:
    """Token ids of ``text`` with the tokenizer's special tokens, at most ``limit`` of them: the body is cut
    on ``side`` and the specials (BOS/CLS before, EOS/SEP after) are always kept."""
    body = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(text, add_special_tokens=True)["input_ids"]) if add_special_tokens else body
    prefix: list[int] = []
    suffix: list[int] = []
    for p in range(len(full) - len(body) + 1):
        if full[p:p + len(body)] == body:
            prefix, suffix = full[:p], full[p + len(body):]
            break
    return prefix + _cut(body, max(limit - len(prefix) - len(suffix), 1), side) + suffix


def _eos_id(tokenizer: Any, eos_token_id: int | None) -> int:
    if eos_token_id is not None:
        return int(eos_token_id)
    for cand in (tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)):
        if cand is not None:
            return int(cand)
    raise ValueError("the tokenizer has no EOS/SEP token; pass eos_token_id")


@dataclass
class _BaseCollator:
    tokenizer: Any
    max_source_length: int = 256
    max_target_length: int = 128
    source_truncation: Truncation = "left"
    eos_token_id: int | None = None
    pad_to_multiple_of: int | None = None

    def encode(self, source: str, target: str) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def target_ids(self, target: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Answer token ids (no specials, cut to leave room for EOS) and their char offsets in ``target``."""
        enc = self.tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
        keep = max(self.max_target_length - 1, 0)
        return list(enc["input_ids"][:keep]), [tuple(o) for o in enc["offset_mapping"][:keep]]

    # -- padding ------------------------------------------------------------------------------------
    def _pad_len(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return n if not m else ((n + m - 1) // m) * m

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        feats = [f if "input_ids" in f else {**f, **self.encode(f["source"], f["target"])} for f in features]
        return self.pad(feats)

    def pad(self, feats: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _pad_kd(feats: Sequence[dict[str, Any]], length: int, offsets: Sequence[int]) -> dict[str, torch.Tensor]:
        """``teacher_ids``/``teacher_logprobs`` [B, length, K]; row i's answer starts at ``offsets[i]``."""
        k = max((len(top) for f in feats for top in (f.get("kd_ids") or []) if top), default=0)
        if k == 0:
            return {}
        ids = torch.zeros(len(feats), length, k, dtype=torch.long)
        lps = torch.full((len(feats), length, k), float("-inf"))
        for i, f in enumerate(feats):
            for t, (top_ids, top_lps) in enumerate(zip(f.get("kd_ids") or [], f.get("kd_logprobs") or [],
                                                       strict=True)):
                pos = offsets[i] + t
                if not top_ids or pos >= length:
                    continue
                ids[i, pos, : len(top_ids)] = torch.tensor(top_ids, dtype=torch.long)
                lps[i, pos, : len(top_lps)] = torch.tensor(top_lps, dtype=torch.float)
        return {"teacher_ids": ids, "teacher_logprobs": lps}


@dataclass
class Seq2SeqCollator(_BaseCollator):
    """Encoder input = source (with the tokenizer's special tokens); labels = target + EOS, padded with -100."""

    source_truncation: Truncation = "right"

    def encode(self, source: str, target: str) -> dict[str, Any]:
        text, _ = source_text(self.tokenizer, source)
        src = encode_prompt(self.tokenizer, text, self.max_source_length, self.source_truncation)
        tgt, offsets = self.target_ids(target)
        labels = [*tgt, _eos_id(self.tokenizer, self.eos_token_id)]
        return {"input_ids": src, "labels": labels, "answer_start": 0, "answer_offsets": offsets,
                "length": len(src) + len(labels)}

    def pad(self, feats: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        s_len = self._pad_len(max(len(f["input_ids"]) for f in feats))
        t_len = self._pad_len(max(len(f["labels"]) for f in feats))
        input_ids = torch.full((len(feats), s_len), pad_id, dtype=torch.long)
        attention = torch.zeros((len(feats), s_len), dtype=torch.long)
        labels = torch.full((len(feats), t_len), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(feats):
            n, m = len(f["input_ids"]), len(f["labels"])
            input_ids[i, :n] = torch.tensor(f["input_ids"])
            attention[i, :n] = 1
            labels[i, :m] = torch.tensor(f["labels"])
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        out.update(self._pad_kd(feats, t_len, [0] * len(feats)))
        return out


@dataclass
class CausalCollator(_BaseCollator):
    """One sequence ``prompt + response + EOS``; labels are -100 on the prompt; right padding for training."""

    def encode(self, source: str, target: str) -> dict[str, Any]:
        text, chat = source_text(self.tokenizer, source)
        # A chat template writes BOS itself; plain text gets the tokenizer's usual specials (e.g. Llama's BOS).
        prompt = encode_prompt(self.tokenizer, text, self.max_source_length, self.source_truncation,
                               add_special_tokens=not chat)
        tgt, offsets = self.target_ids(target)
        response = [*tgt, _eos_id(self.tokenizer, self.eos_token_id)]
        return {"input_ids": prompt + response, "labels": [IGNORE_INDEX] * len(prompt) + response,
                "answer_start": len(prompt), "answer_offsets": offsets, "length": len(prompt) + len(response)}

    def pad(self, feats: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        length = self._pad_len(max(len(f["input_ids"]) for f in feats))
        input_ids = torch.full((len(feats), length), pad_id, dtype=torch.long)
        attention = torch.zeros((len(feats), length), dtype=torch.long)
        labels = torch.full((len(feats), length), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(feats):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.tensor(f["input_ids"])
            attention[i, :n] = 1
            labels[i, :n] = torch.tensor(f["labels"])
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        out.update(self._pad_kd(feats, length, [int(f.get("answer_start", 0)) for f in feats]))
        return out
