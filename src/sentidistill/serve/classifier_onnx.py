"""ONNX export of the ``classifier`` student, its onnxruntime backend, and agreement with PyTorch.

Layout of an export folder::

    model.onnx               (input_ids, attention_mask[, token_type_ids]) -> logits [batch, ΣK]:
                             encoder, masked mean pooling, L2 normalisation, then every head at once
                             (the heads' weights stacked into one linear layer; head t's labels are
                             columns offsets[t]:offsets[t+1], in the order of meta["tasks"])
    model_int8.onnx          the same graph after dynamic int8 quantisation (--int8): the encoder's MatMul
                             weights int8 per output channel, activations quantised on the fly
                             (onnxruntime ``quantize_dynamic``, :data:`INT8_OPTIONS`)
    sentidistill_onnx.json   kind "classifier", tasks (name, labels, words), head_offsets, inputs,
                             max_seq_length, source checkpoint
    tokenizer files

One output of all heads (rather than a ``task_ids`` input) keeps the graph free of data-dependent control
flow; a batch may still mix tasks, each row reading its own head's columns. The heads cost ``H x ΣK``
multiply-adds per text, nothing next to the encoder.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sentidistill.errors import InputError
from sentidistill.serve.classifier_backends import (
    KIND,
    OnnxClassifierBackend,
    TorchClassifierBackend,
    head_offsets,
)
from sentidistill.serve.onnx import META_FILE
from sentidistill.students.onnx_graphs import OPSET
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
# Dynamic int8: the encoder's MatMul weights, one scale per output channel. Measured on the untrained MiniLM
# classifier (label-embedding sst2 head) over 200 SST-2 test sentences, arg-max agreement with PyTorch:
# per-tensor, MatMul + Gather (onnxruntime's default) 0.88; per-channel, MatMul + Gather 0.96; per-channel,
# MatMul only 0.975 (the word embeddings stay fp32: 58 MB instead of 23 MB, no measurable speed cost).
# The heads (a Gemm) stay fp32 in every setting.
INT8_OPTIONS: dict[str, Any] = {"per_channel": True, "op_types_to_quantize": ["MatMul"]}


class _AllHeads(nn.Module):
    """The classifier's inference path with every head applied: ``pooled @ W.T + b`` with the heads'
    weights stacked (``W`` ``[ΣK, H]``), i.e. the same numbers as each head on its own. Dropout is off
    (``eval``)."""

    def __init__(self, model: Any, with_token_types: bool) -> None:
        super().__init__()
        self.model = model
        self.with_token_types = with_token_types
        w = torch.cat([h.weight.detach() for h in model.heads], dim=0)
        b = torch.cat([h.bias.detach() for h in model.heads], dim=0)
        self.heads = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.heads.weight.copy_(w)
            self.heads.bias.copy_(b)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.model.pooled(input_ids, attention_mask, token_type_ids if self.with_token_types else None)
        return self.heads(pooled)


def export_classifier_onnx(model: str | Path, out_dir: str | Path, *, int8: bool = False) -> Path:
    """Export a classifier checkpoint to ``out_dir`` (layout in the module doc); with ``int8`` also the
    dynamically quantised graph. Written beside and renamed into place (a crash leaves no half export).
    Raises ``InputError`` when ``model`` is not a classifier checkpoint."""
    from sentidistill.students.classifier import load_classifier

    out_dir = Path(out_dir)
    student, tok = load_classifier(model)
    student.float().eval()
    probe = tok(["a b c d e f", "a b"], padding=True, return_tensors="pt")
    names = [n for n in INPUT_ORDER if n in probe]
    graph = _AllHeads(student, "token_type_ids" in names).eval()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dyn = {n: {0: "batch", 1: "seq"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        # Two rows of different real lengths, so the padding/mask path is traced rather than constant-folded.
        torch.onnx.export(graph, tuple(probe[n] for n in names), str(tmp / "model.onnx"), dynamo=False,
                          input_names=names, output_names=["logits"], dynamic_axes=dyn, opset_version=OPSET,
                          do_constant_folding=True)
    files = {"model": "model.onnx"}
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.disable(logging.WARNING)  # onnxruntime's "consider pre-processing" advice on the root logger
        try:
            quantize_dynamic(str(tmp / "model.onnx"), str(tmp / "model_int8.onnx"), weight_type=QuantType.QInt8,
                             **INT8_OPTIONS)
        finally:
            logging.disable(logging.NOTSET)
    tok.save_pretrained(tmp)
    tasks = [dict(t) for t in student.config.tasks]
    atomic_write_json(tmp / META_FILE, {
        "format": 1, "kind": KIND, "source": str(model), "files": files, "int8": int8, "inputs": names,
        "output": "logits [batch, sum of the heads' label counts]", "tasks": tasks,
        "head_offsets": head_offsets(tasks), "max_seq_length": int(student.config.max_seq_length),
        "encoder_source": student.config.encoder_source, "opset": OPSET,
    })
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def classifier_agreement(model: str | Path, onnx_dir: str | Path, texts: Sequence[str], *, int8: bool = False,
                         batch_size: int = 32) -> dict[str, Any]:
    """How often ONNX and PyTorch pick the same label, over every text and every head.

    Returns ``n`` (texts x heads), ``agree``, ``rate``, ``per_head`` {head: rate}, ``max_abs_prob_diff``
    (largest difference of a class probability) and up to 5 ``mismatches`` {index, head, torch, onnx}."""
    pt = TorchClassifierBackend(model)
    ox = OnnxClassifierBackend(onnx_dir, int8=int8)
    if [t["name"] for t in pt.tasks] != [t["name"] for t in ox.tasks]:
        raise InputError(f"{onnx_dir} was not exported from {model} (other heads)", field="onnx_dir")
    offsets = head_offsets(pt.tasks)
    a = np.concatenate([pt.logits(texts[s: s + batch_size])[0] for s in range(0, len(texts), batch_size)])
    b = np.concatenate([ox.logits(texts[s: s + batch_size])[0] for s in range(0, len(texts), batch_size)])
    agree, n, per_head, worst, mismatches = 0, 0, {}, 0.0, []
    for h, t in enumerate(pt.tasks):
        za, zb = a[:, offsets[h]: offsets[h + 1]], b[:, offsets[h]: offsets[h + 1]]
        pa, pb = _softmax(za), _softmax(zb)
        same = pa.argmax(1) == pb.argmax(1)
        per_head[t["name"]] = float(same.mean()) if len(same) else 1.0
        agree, n = agree + int(same.sum()), n + len(same)
        worst = max(worst, float(np.abs(pa - pb).max()) if len(pa) else 0.0)
        for i in np.flatnonzero(~same)[: 5 - len(mismatches)]:
            mismatches.append({"index": int(i), "head": t["name"], "torch": t["labels"][int(pa[i].argmax())],
                               "onnx": t["labels"][int(pb[i].argmax())]})
    return {"n": n, "agree": agree, "rate": agree / max(1, n), "per_head": per_head, "int8": int8,
            "max_abs_prob_diff": worst, "mismatches": mismatches}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
