"""The classifier student's inference backends: PyTorch and onnxruntime, same tokenisation, same output.

Both return every head's logits for a batch of texts, ``[B, ΣK]`` (head ``t`` at columns
``offsets[t]:offsets[t+1]``, :func:`head_offsets`), so a batch may mix tasks. Used by the serving engine
(:mod:`sentidistill.serve.classify`), the ONNX agreement check (:mod:`sentidistill.serve.classifier_onnx`)
and ``benchmarks/classifier_speed.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sentidistill.errors import InputError
from sentidistill.serve.onnx import META_FILE, serving_session_options

KIND = "classifier"


class ClassifierBackend(Protocol):
    """What the engine needs from a loaded classifier (PyTorch or onnxruntime)."""

    tasks: list[dict[str, Any]]  # config.tasks of the student: [{name, labels, words}], head order

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Every head's logits ``[len(texts), ΣK]`` (float32; head ``t`` at columns
        ``offsets[t]:offsets[t+1]``, in the order of :attr:`tasks`) and each text's token count."""
        ...


def head_offsets(tasks: Sequence[dict[str, Any]]) -> list[int]:
    """Column offsets of each head in the all-heads logits: ``[0, K_0, K_0 + K_1, ..., ΣK]``."""
    out = [0]
    for t in tasks:
        out.append(out[-1] + len(t["labels"]))
    return out


class TorchClassifierBackend:
    """A classifier checkpoint in PyTorch: tokenise (padding, truncation at the student's
    ``max_seq_length``), pool, apply every head."""

    def __init__(self, path: str | Path, *, device: str | None = None) -> None:
        from sentidistill.students.classifier import load_classifier

        self.model, self.tokenizer = load_classifier(path, device=device)
        self.tasks: list[dict[str, Any]] = list(self.model.config.tasks)
        self.max_length = int(self.model.config.max_seq_length)

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        import torch

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            pooled = self.model.pooled(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
            out = torch.cat([h(pooled) for h in self.model.heads], dim=-1).float().cpu().numpy()
        return out, enc["attention_mask"].sum(1).tolist()


def open_backend(model: str | Path, backend: str = "torch", *, int8: bool = False, device: str | None = None,
                 threads: int | None = None) -> ClassifierBackend:
    """A backend for a classifier checkpoint (``torch``) or its ONNX export (``onnx``; ``int8`` picks the
    quantised graph). Raises ``InputError`` for a wrong combination."""
    if backend == "onnx" or is_classifier_onnx_dir(model):
        if not is_classifier_onnx_dir(model):
            raise InputError(f"{model} is a classifier checkpoint, not an ONNX export", field="backend",
                             expected="backend 'torch', or an export-onnx folder (sentidistill export-onnx MODEL "
                                      "--out DIR [--int8])")
        return OnnxClassifierBackend(model, int8=int8, threads=threads)
    if backend != "torch":
        raise InputError(f"unknown backend '{backend}'", field="backend", expected="torch | onnx")
    if int8:
        raise InputError("int8 needs the onnx backend", field="int8", expected="an export-onnx folder made with --int8")
    return TorchClassifierBackend(model, device=device)


def is_classifier_onnx_dir(path: str | Path) -> bool:
    """Whether ``path`` is an export-onnx folder of a classifier student (its meta file says so)."""
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError):
        return False


class OnnxClassifierBackend:
    """An exported classifier in onnxruntime (CPU): the same tokenisation as PyTorch, one session run per
    batch. ``int8`` loads ``model_int8.onnx``; ``threads`` sets onnxruntime's intra-op threads."""

    def __init__(self, onnx_dir: str | Path, *, int8: bool = False, threads: int | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.onnx_dir = Path(onnx_dir)
        meta_path = self.onnx_dir / META_FILE
        if not meta_path.is_file():
            raise InputError("not an ONNX export folder (run `sentidistill export-onnx` first)", path=meta_path)
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("kind") != KIND:
            raise InputError("not a classifier export", path=meta_path, field="kind", expected=KIND,
                             got=self.meta.get("kind"))
        if int8 and not self.meta.get("int8"):
            raise InputError("this export has no int8 graph (export with --int8)", path=meta_path, field="int8")
        opts = serving_session_options(threads)
        name = self.meta["files"]["model"].replace(".onnx", "_int8.onnx" if int8 else ".onnx")
        self.session = ort.InferenceSession(str(self.onnx_dir / name), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.onnx_dir)
        self.tasks: list[dict[str, Any]] = list(self.meta["tasks"])
        self.inputs: list[str] = list(self.meta["inputs"])
        self.max_length = int(self.meta["max_seq_length"])
        self.int8 = int8

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="np")
        feed = {n: enc[n].astype(np.int64) for n in self.inputs}
        out = self.session.run(["logits"], feed)[0].astype(np.float32)
        return out, enc["attention_mask"].sum(1).tolist()
