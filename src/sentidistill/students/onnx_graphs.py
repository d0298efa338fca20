"""Tracing helpers for the ONNX exports of generative students (no key/value cache: answers are short)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

OPSET = 17


class _Encoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _Decoder(torch.nn.Module):
    """The full seq2seq forward given encoder states (so projections such as EncoderDecoderModel's
    ``enc_to_dec_proj`` are included); returns the last position's logits only."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                         decoder_input_ids=decoder_input_ids, use_cache=False)
        return out.logits[:, -1, :]


def seq2seq_modules(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The encoder graph (ids, mask -> hidden [B, S, H]) and decoder graph (-> logits [B, V]) of a seq2seq LM."""
    return _Encoder(model), _Decoder(model)


class CausalLastLogits(torch.nn.Module):
    """(input_ids, attention_mask, position_ids) -> the last position's logits [B, V]."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.logits[:, -1, :]


def export_graph(module: torch.nn.Module, args: tuple, path: Path, names: list[str],
                 dyn: dict[str, dict[int, str]]) -> None:
    """Trace ``module`` on ``args`` into ``path`` (output ``logits``; ``dyn``: dynamic axes by input name)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        # The TorchScript exporter: it needs no onnxscript, and handles these HF graphs with dynamic axes.
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True)
