"""Speed of the classifier student on this machine: PyTorch fp32, ONNX fp32, ONNX int8, batch 1 and 32.

    python benchmarks/classifier_speed.py                          # untrained MiniLM classifier, sst2 head
    python benchmarks/classifier_speed.py --model runs/x/models/classifier/final --teacher-texts-per-s 2.5

Texts are SST-2 test sentences (``<data>/sst_mr/stsa.binary.test``, ``--data`` or $SENTIDISTILL_SHARED_DATA,
default ``../shared/data`` beside the repository) when present, else built-in review sentences. Each row
times the backend's whole path for a batch: tokenisation (padding to the batch's longest text, truncation at
the student's ``max_seq_length``), the encoder, pooling and every head (what the serving engine runs per
batch, without its queue). texts/s = texts / summed batch time; p50/p95 are per batch, in ms. Two warm-up
batches are not timed. ``--threads`` sets both torch's and onnxruntime's intra-op threads.

With ``--teacher-texts-per-s`` (the teacher's measured texts/s, about 0.6 for the 1.5B GGUF teacher on
2 cores) the table has the speed-up over the teacher. The int8 row's label agreement with PyTorch on the
same texts is printed below the table. ``--json`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BUILTIN = [
    "The food was great and the service was friendly.", "Terrible movie, boring plot and wooden acting.",
    "It was fine, nothing special.", "I love this phone but the screen is awful.", "What a waste of two hours.",
    "Best concert I have been to in years!", "The hotel room was dirty and the staff did not care.",
    "Simple, honest cooking; we will be back.", "Great food, rude staff.", "The sequel is even worse than the original.",
]


def load_texts(data: Path | None, n: int) -> tuple[list[str], str]:
    """The first ``n`` SST-2 test sentences, or the built-in sentences cycled to ``n``; and where they came from."""
    path = data / "sst_mr" / "stsa.binary.test" if data else None
    if path is not None and path.is_file():
        lines = [ln.split(" ", 1)[1].strip() for ln in path.read_text(encoding="utf-8").splitlines() if " " in ln]
        return lines[:n], f"SST-2 test sentences ({path})"
    return [BUILTIN[i % len(BUILTIN)] for i in range(n)], "built-in sentences (no SST-2 file found)"


def default_model(tmp: Path) -> Path:
    """An untrained MiniLM classifier with an sst2 head (label-embedding init), saved to ``tmp``."""
    from sentidistill.students.classifier import build_classifier, save_classifier

    model, tok = build_classifier("builtin:minilm", [{"name": "sst2", "labels": ["negative", "positive"]}])
    return save_classifier(model, tok, tmp / "minilm-sst2")


def time_backend(backend: Any, texts: list[str], batch: int) -> dict[str, float]:
    """texts/s and per-batch p50/p95 ms of ``backend.logits`` over ``texts`` in batches of ``batch``."""
    batches = [texts[i: i + batch] for i in range(0, len(texts), batch)]
    for b in batches[:2]:
        backend.logits(b)  # warm-up: first-call allocations, lazy inits
    times = []
    for b in batches:
        t0 = time.perf_counter()
        backend.logits(b)
        times.append(time.perf_counter() - t0)
    return {"texts_per_s": len(texts) / sum(times), "p50_ms": float(np.percentile(times, 50)) * 1000,
            "p95_ms": float(np.percentile(times, 95)) * 1000, "n_texts": len(texts), "n_batches": len(batches)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="classifier checkpoint (default: untrained MiniLM, sst2 head)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "SENTIDISTILL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--n", type=int, default=256, help="texts for batch 32")
    ap.add_argument("--n-single", type=int, default=64, help="texts for batch 1")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's default)")
    ap.add_argument("--teacher-texts-per-s", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = ap.parse_args(argv)

    import torch

    from sentidistill.serve.classifier_backends import TorchClassifierBackend
    from sentidistill.serve.classifier_onnx import (
        OnnxClassifierBackend,
        classifier_agreement,
        export_classifier_onnx,
    )
    from sentidistill.utils.cli import quiet_third_party

    quiet_third_party()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    texts, source = load_texts(args.data, max(args.n, args.n_single))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model = args.model or default_model(tmp)
        print(f"model: {model if args.model else 'untrained MiniLM classifier (builtin:minilm, sst2 head)'}",
              file=sys.stderr)
        t0 = time.perf_counter()
        onnx_dir = export_classifier_onnx(model, tmp / "onnx", int8=True)
        print(f"export (fp32 + int8): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        backends = {"PyTorch fp32": lambda: TorchClassifierBackend(model),
                    "ONNX fp32": lambda: OnnxClassifierBackend(onnx_dir, threads=threads),
                    "ONNX int8": lambda: OnnxClassifierBackend(onnx_dir, int8=True, threads=threads)}
        rows = []
        for name, make in backends.items():
            backend = make()
            for batch, n in ((1, args.n_single), (32, args.n)):
                r = time_backend(backend, texts[:n], batch)
                rows.append({"backend": name, "batch": batch, **r})
                print(f"  {name} batch {batch}: {r['texts_per_s']:.1f} texts/s", file=sys.stderr)
        agree = classifier_agreement(model, onnx_dir, texts[: args.n], int8=True)

    tps = args.teacher_texts_per_s
    head = "| backend | batch | texts/s | p50 ms/batch | p95 ms/batch |" + (" x teacher |" if tps else "")
    print(f"\nclassifier student, {len(texts[: args.n])} texts: {source}; {threads} threads, {os.cpu_count()} cores\n")
    print(head)
    print("| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if tps else ""))
    for r in rows:
        line = (f"| {r['backend']} | {r['batch']} | {r['texts_per_s']:.1f} | {r['p50_ms']:.1f} | "
                f"{r['p95_ms']:.1f} |")
        if tps:
            line += f" {r['texts_per_s'] / tps:.1f}x |"
            r["x_teacher"] = r["texts_per_s"] / tps
        print(line)
    if tps:
        print(f"\nteacher: {tps} texts/s (given with --teacher-texts-per-s)")
    print(f"ONNX int8 vs PyTorch: same label on {agree['agree']}/{agree['n']} texts ({agree['rate']:.1%}), "
          f"largest probability difference {agree['max_abs_prob_diff']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "threads": threads, "rows": rows,
                                         "int8_agreement": {k: agree[k] for k in ("n", "agree", "rate")}},
                                        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
