"""Fast CPU inference: export a student to ONNX and decode with onnxruntime (optionally int8-quantized).

Layout of an export folder::

    encoder.onnx, decoder.onnx       seq2seq: (input_ids, attention_mask) -> hidden states;
                                     (decoder_input_ids, encoder_hidden_states, encoder_attention_mask) -> next-token logits
    model.onnx                       causal: (input_ids, attention_mask, position_ids) -> next-token logits
    *_int8.onnx                      the same graphs after dynamic int8 quantization (--int8)
    sentidistill_onnx.json           kind, special token ids, context limit, source model
    tokenizer files

The decoder graphs take the whole prefix at every step (no key/value cache): sentiment answers are a
few tokens long, so the quadratic cost is small, and a cache-free graph is simple to keep exactly
equivalent to PyTorch. :func:`agreement` measures that equivalence on real inputs.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentidistill.errors import InputError
from sentidistill.serve.engine import Generation, GenerationEngine, GenParams, _Job
from sentidistill.students import Student, load_student, student_class
from sentidistill.students.onnx_graphs import OPSET
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

META_FILE = "sentidistill_onnx.json"


def export_onnx(model: str | Path, out_dir: str | Path, *, int8: bool = False) -> Path:
    """Export ``model`` (any spec :func:`~sentidistill.students.load_student` takes) to ``out_dir``.

    The graphs are the student kind's (:meth:`~sentidistill.students.base.Student.export_onnx`). The folder
    is written beside and renamed into place, so a crash never leaves a half export.
    """
    out_dir = Path(out_dir)
    # Always trace a freshly loaded copy: tracing can leave cached state on the module it traced.
    student = load_student(str(model))
    student.model.float().eval()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pad = student.tokenizer.pad_token_id or 0
    files, extra = student.export_onnx(tmp)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for name in list(files.values()):
            q = name.replace(".onnx", "_int8.onnx")
            # Weights-only int8 (activations quantized on the fly): no calibration data needed.
            # (onnxruntime logs a "consider pre-processing" advice on the root logger each time; mute it.)
            logging.disable(logging.WARNING)
            try:
                quantize_dynamic(str(tmp / name), str(tmp / q), weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
    student.tokenizer.save_pretrained(tmp)
    student.model.config.save_pretrained(tmp)
    atomic_write_json(tmp / META_FILE, {
        "format": 1, "kind": student.kind, "source": str(model), "files": files, "int8": int8,
        "eos_token_ids": sorted(student.eos_token_ids()), "pad_token_id": pad,
        **extra, "context_limit": student.context_limit(), "opset": OPSET,
    })
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def serving_session_options(threads: int | None = None) -> Any:
    """onnxruntime session options for serving: ``threads`` intra-op threads (default: the cpus this process
    may run on, ``os.sched_getaffinity``, not the machine's), and worker threads that sleep when idle
    (``session.intra_op.allow_spinning`` 0). onnxruntime's default spins its idle pool threads for a while
    after every run; between the small batches of a server that busy wait takes the cpu from the event loop
    (measured: 2.3x the server's CPU per text at 64 clients on 1 cpu, benchmarks/serve_speed.py)."""
    import os

    import onnxruntime as ort

    opts = ort.SessionOptions()
    n = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> np.ndarray:
    """Nucleus sampling per row (temperature first, then the smallest set with mass >= top_p)."""
    probs = np.exp(_log_softmax(logits / temperature))
    out = np.empty(len(probs), dtype=np.int64)
    for i, p in enumerate(probs):
        order = np.argsort(-p)
        keep = np.cumsum(p[order]) - p[order] < top_p  # always keeps the first
        cand = order[keep]
        out[i] = rng.choice(cand, p=p[cand] / p[cand].sum())
    return out


class OnnxGenerationEngine(GenerationEngine):
    """The same dynamic batcher and results as :class:`GenerationEngine`, decoding with onnxruntime."""

    def __init__(self, onnx_dir: str | Path, *, int8: bool = False, threads: int | None = None,
                 max_batch_size: int = 16, batch_wait_ms: float = 0.0, max_queue: int = 1024,
                 on_batch: Any = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.onnx_dir = Path(onnx_dir)
        meta_path = self.onnx_dir / META_FILE
        if not meta_path.exists():
            raise InputError("not an ONNX export folder (run `sentidistill export-onnx` first)", path=meta_path)
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if int8 and not self.meta.get("int8"):
            raise InputError("this export has no int8 graphs (export with --int8)", path=meta_path, field="int8")
        opts = serving_session_options(threads)
        suffix = "_int8.onnx" if int8 else ".onnx"

        def session(role: str) -> Any:
            name = self.meta["files"][role].replace(".onnx", suffix)
            return ort.InferenceSession(str(self.onnx_dir / name), opts, providers=["CPUExecutionProvider"])

        self.sessions = {role: session(role) for role in self.meta["files"]}
        tok = AutoTokenizer.from_pretrained(self.onnx_dir)
        cls = student_class(self.meta["kind"])
        tok.padding_side = cls.onnx_padding_side()
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.loaded = None  # type: ignore[assignment]
        self.student = cls(None, tok, str(self.onnx_dir))  # type: ignore[arg-type]  # prompts and lengths only
        self.pad_id = int(self.meta["pad_token_id"])
        self._setup(tokenizer=tok, kind=self.meta["kind"], eos_ids=set(self.meta["eos_token_ids"]),
                    context_limit=self.meta.get("context_limit"), max_batch_size=max_batch_size,
                    batch_wait_ms=batch_wait_ms, max_queue=max_queue, on_batch=on_batch)

    @classmethod
    def from_dir(cls, onnx_dir: str | Path, **options: Any) -> OnnxGenerationEngine:
        return cls(onnx_dir, **options)

    def _generate_batch(self, jobs: list[_Job]) -> list[Generation]:
        from sentidistill.serve.engine import _RowStopper

        params = jobs[0].params
        enc = self.tokenizer.pad({"input_ids": [j.input_ids for j in jobs]}, return_tensors="np", padding=True)
        ids = enc["input_ids"].astype(np.int64)
        mask = enc["attention_mask"].astype(np.int64)
        n = len(jobs)
        max_new = max(j.params.max_tokens for j in jobs)
        rng = np.random.default_rng(params.seed)
        runner = type(self.student).onnx_runner(self.sessions, self.meta)
        start = runner.start(ids, mask)
        stopper = _RowStopper(self.tokenizer, start, jobs)
        done = np.zeros(n, dtype=bool)
        steps: list[np.ndarray] = []
        want_logprobs = any(j.params.logprobs for j in jobs)
        eos = np.array(sorted(self._eos_ids), dtype=np.int64)
        for _ in range(max_new):
            logits = runner.step()
            if want_logprobs:
                steps.append(_log_softmax(logits.astype(np.float32)))
            nxt = (logits.argmax(-1) if params.temperature <= 0
                   else _sample(logits, params.temperature, params.top_p, rng)).astype(np.int64)
            nxt[done] = self.pad_id
            runner.append(nxt)
            done |= np.isin(nxt, eos)
            done |= stopper(torch.from_numpy(runner.sequence)).numpy()
            if done.all():
                break
        gen = runner.sequence[:, start:]
        logp = torch.from_numpy(np.stack(steps, axis=1)) if want_logprobs else None
        return [self._finish(i, j, gen[i].tolist(), logp) for i, j in enumerate(jobs)]


def agreement(
    model: Student | str,
    onnx_dir: str | Path,
    prompts: Sequence[str | list[dict[str, str]]],
    *,
    int8: bool = False,
    max_tokens: int = 16,
    task: Any = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Greedy answers of PyTorch and ONNX on the same prompts: how often they agree.

    With ``task`` (a SentiBench task), answers agree when they parse to the same value; without, when
    the generated texts are identical. Returns n, agree, rate, both timings and up to 5 mismatches.
    """
    loaded = model if isinstance(model, Student) else load_student(str(model))
    params = GenParams(max_tokens=max_tokens)
    t0 = time.perf_counter()
    with GenerationEngine(loaded, max_batch_size=batch_size, batch_wait_ms=0) as pt:
        ref = pt.generate(prompts, params)
    t1 = time.perf_counter()
    with OnnxGenerationEngine(onnx_dir, int8=int8, max_batch_size=batch_size, batch_wait_ms=0) as ox:
        got = ox.generate(prompts, params)
    t2 = time.perf_counter()

    def key(text: str) -> Any:
        return task.parse(text) if task is not None else text

    same = [key(a.text) == key(b.text) for a, b in zip(ref, got, strict=True)]
    mismatches = [{"index": i, "torch": a.text, "onnx": b.text}
                  for i, (a, b, s) in enumerate(zip(ref, got, same, strict=True)) if not s][:5]
    return {"n": len(same), "agree": sum(same), "rate": sum(same) / max(1, len(same)), "int8": int8,
            "torch_s": t1 - t0, "onnx_s": t2 - t1, "mismatches": mismatches}
