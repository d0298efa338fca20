"""Kind ``seq2seq``: encoder-decoder students (t5, flan-t5, bart, BERT2BERT ``EncoderDecoderModel``).

The encoder reads the prompt with the tokenizer's special tokens; the decoder starts from
``decoder_start_token_id`` and is trained on ``target + EOS``. Label words are scored as decoder labels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentidistill.errors import InputError
from sentidistill.students.collate import Seq2SeqCollator
from sentidistill.students.hf import HFGenerativeStudent

# EncoderDecoderModel warns on every forward with labels that pre-4.12 checkpoints trained differently;
# ours are built with today's loss, so the warning is noise in every training and benchmark log.
warnings.filterwarnings("ignore", message="Version v4.12.0 introduces a better way", category=FutureWarning)


def set_seq2seq_special_tokens(model: Any, tok: Any) -> None:
    """BERT tokenizers have no BOS/EOS: [CLS] starts the decoder, [SEP] ends it."""
    start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = start
        cfg.pad_token_id = tok.pad_token_id
        cfg.eos_token_id = eos
    if hasattr(model.config, "decoder") and hasattr(model.config.decoder, "is_decoder"):
        model.config.decoder.is_decoder = True


class Seq2SeqStudent(HFGenerativeStudent):
    """An encoder-decoder LM."""

    kind = "seq2seq"
    lora_task_type = "SEQ_2_SEQ_LM"

    @classmethod
    def _load_model(cls, path: str, kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

        tok = AutoTokenizer.from_pretrained(path)
        if AutoConfig.from_pretrained(path).model_type == "encoder-decoder":
            model = EncoderDecoderModel.from_pretrained(path, **kwargs)
            set_seq2seq_special_tokens(model, tok)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
        return model, tok

    # -- training ------------------------------------------------------------------------------------
    def require_method(self, method: str, role: str = "student") -> None:
        if method == "onpolicy":
            raise InputError(f"on-policy distillation needs a causal (decoder-only) {role}, got an encoder-decoder "
                             f"({self.model.config.model_type})", field=role,
                             expected="a causal LM such as Qwen, Llama or GPT-2 (seq2seq students: --method "
                                      "knowdist or icldist)")
        super().require_method(method, role)

    def collator(self, **limits: Any) -> Seq2SeqCollator:
        return Seq2SeqCollator(self.tokenizer, **{k: v for k, v in limits.items() if v is not None})

    def encode_pair(self, source: str, target: str, max_source_length: int) -> dict[str, list[int]]:
        tok = self.tokenizer
        src = tok(source, truncation=True, max_length=max_source_length)["input_ids"]
        # No tokenizer specials on the target: BERT would add [CLS] (the decoder start) to the labels.
        return {"input_ids": src, "labels": tok(target, add_special_tokens=False)["input_ids"] + [self.first_eos()]}

    # -- context / generation ------------------------------------------------------------------------
    def position_limit(self) -> int | None:
        cfg = self.model.config
        limit = getattr(getattr(cfg, "encoder", None) or cfg, "max_position_embeddings", None)  # the encoder reads
        return int(limit) if limit else None

    def tokens_needed(self, n_prompt: int, max_tokens: int) -> int:
        return max(n_prompt, max_tokens)  # the encoder reads the prompt, the decoder writes the answer

    def generation_offset(self, prompt_width: int) -> int:
        return 1  # the decoder start token

    # -- label scoring -------------------------------------------------------------------------------
    def continuation_ids(self, continuation: str) -> list[int]:
        return self._encode(continuation.strip(), False)

    def sequence_logprobs(self, prompts: list[str], continuations: list[str], *,
                          n_tokens: list[int] | None = None, max_length: int = 1024) -> torch.Tensor:
        tok = self.tokenizer
        old_side = tok.truncation_side
        tok.truncation_side = "left"  # keep the query, drop the oldest demonstrations
        enc = tok(list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        tok.truncation_side = old_side
        labels_list = []
        for i, c in enumerate(continuations):
            ids = self.continuation_ids(c)
            labels_list.append(ids[: n_tokens[i]] if n_tokens is not None else ids)
        width = max(len(x) for x in labels_list)
        labels = torch.tensor([x + [-100] * (width - len(x)) for x in labels_list])
        dev = self.device
        out = self.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev),
                         labels=labels.to(dev))
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        safe = labels.clamp(min=0).to(dev)
        tok_lp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * (labels != -100).to(dev)
        return tok_lp.sum(-1)

    # -- export --------------------------------------------------------------------------------------
    def decoder_start(self) -> int:
        for src in (getattr(self.model, "generation_config", None), self.model.config):
            v = getattr(src, "decoder_start_token_id", None) if src is not None else None
            if v is not None:
                return int(v)
        return int(self.tokenizer.pad_token_id or 0)

    def export_onnx(self, folder: Path) -> tuple[dict[str, str], dict[str, Any]]:
        """``encoder.onnx`` (input_ids, attention_mask) -> hidden states; ``decoder.onnx`` (decoder_input_ids,
        encoder_hidden_states, encoder_attention_mask) -> last position's logits."""
        from sentidistill.students.onnx_graphs import export_graph, seq2seq_modules

        pad = self.tokenizer.pad_token_id or 0
        # Two rows of different real lengths so that padding/mask paths are traced, not constant-folded.
        ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, pad]], dtype=torch.long)
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.long)
        enc, dec = seq2seq_modules(self.model)
        export_graph(enc, (ids, mask), folder / "encoder.onnx", ["input_ids", "attention_mask"],
                     {"input_ids": {0: "batch", 1: "src"}, "attention_mask": {0: "batch", 1: "src"},
                      "logits": {0: "batch", 1: "src"}})
        with torch.no_grad():
            hidden = enc(ids, mask)
        start = self.decoder_start()
        dec_ids = torch.tensor([[start, 5, 6], [start, 7, 8]], dtype=torch.long)
        export_graph(dec, (dec_ids, hidden, mask), folder / "decoder.onnx",
                     ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask"],
                     {"decoder_input_ids": {0: "batch", 1: "tgt"}, "encoder_hidden_states": {0: "batch", 1: "src"},
                      "encoder_attention_mask": {0: "batch", 1: "src"}, "logits": {0: "batch"}})
        return {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}, {"decoder_start_token_id": start}

    @classmethod
    def onnx_runner(cls, sessions: dict[str, Any], meta: dict[str, Any]) -> _Seq2SeqOnnxRunner:
        return _Seq2SeqOnnxRunner(sessions, int(meta["decoder_start_token_id"]))


class _Seq2SeqOnnxRunner:
    """Encode once, then feed the whole decoder prefix at every step (no key/value cache)."""

    def __init__(self, sessions: dict[str, Any], decoder_start: int) -> None:
        self.sessions = sessions
        self.decoder_start = decoder_start

    def start(self, ids: np.ndarray, mask: np.ndarray) -> int:
        self.mask = mask
        self.hidden = self.sessions["encoder"].run(None, {"input_ids": ids, "attention_mask": mask})[0]
        self.sequence = np.full((len(ids), 1), self.decoder_start, dtype=np.int64)
        return 1

    def step(self) -> np.ndarray:
        return self.sessions["decoder"].run(None, {"decoder_input_ids": self.sequence,
                                                   "encoder_hidden_states": self.hidden,
                                                   "encoder_attention_mask": self.mask})[0]

    def append(self, next_ids: np.ndarray) -> None:
        self.sequence = np.concatenate([self.sequence, next_ids[:, None]], axis=1)
