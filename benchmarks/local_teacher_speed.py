"""What a local GGUF teacher costs per text on this machine: prompt tokens/s, and seconds per soft label.

Two tables, straight from the in-process llama.cpp backend (no cache):

1. Prompt evaluation speed: ``n`` tokens evaluated from an empty KV cache, tokens/s. On a CPU this is the
   teacher's bottleneck: restricted scoring reads the prompt once and decodes one token per label-token.
2. Restricted scoring per task: mean prompt tokens, tokens evaluated anew (after the shared instruction
   prefix, which the backend keeps in its KV cache), seconds per text for exact scoring of every label and
   case variant (what ``soft_labels`` and the bench do), and for the first token's distribution alone (the
   lower bound of any restricted scoring).

    python benchmarks/local_teacher_speed.py --model builtin:qwen2.5-coder-1.5b --data-dir ../shared/data

Use it on a quiet machine: llama.cpp's threads wait on each other, so a busy core slows it several-fold.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sentidistill.bench import get_task
from sentidistill.distill.soft_labels import unlabeled_texts, variant_prompt
from sentidistill.teacher.llamacpp_inprocess import LlamaCppInProcessBackend
from sentidistill.teacher.restricted import case_variants

TASKS = ["sst2", "imdb", "yelp2", "twitter", "irony18", "emotion", "pstance", "intimacy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:qwen2.5-coder-1.5b")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--n", type=int, default=10, help="texts per task")
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    b = LlamaCppInProcessBackend(args.model, n_ctx=2048, n_threads=args.threads)
    print(f"{args.model}: loaded in {time.perf_counter() - t0:.1f} s, {b.llm.context_params.n_threads} threads\n")

    words = b.llm.tokenize(("The service was slow but the food was worth the wait. " * 60).encode(), add_bos=False)
    print("| prompt tokens | seconds | tokens/s |\n| ---: | ---: | ---: |")
    for n in (16, 32, 64, 128, 256):
        b.llm.reset()
        t = time.perf_counter()
        b.llm.eval(words[:n])
        dt = time.perf_counter() - t
        print(f"| {n} | {dt:.2f} | {n / dt:.1f} |")
    b.llm.reset()

    print("\n| task | labels (variants: tokens) | prompt tokens | evaluated anew | s/text exact | s/text first token |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    exact_all, first_all = [], []
    for name in args.tasks:
        task = get_task(name)
        rows = unlabeled_texts(task, args.n, data_dir=args.data_dir, seed=7, max_chars=args.max_chars)
        flat, _ = case_variants([task.verbalizers[lab] for lab in task.labels])
        n_tok = [len(b.llm.tokenize(w.encode(), add_bos=False, special=False)) for w in flat]
        prompts = [b.format_prompt(variant_prompt(task, r, 0)) for r in rows]
        b._eval_prompt(prompts[0])  # warm the shared prefix, as a long run has it
        exact, first, fresh = [], [], []
        for p in prompts:
            cached = b.llm.input_ids[: b.llm.n_tokens].tolist()
            shared = next((i for i, (x, y) in enumerate(zip(cached, p, strict=False)) if x != y), min(len(cached), len(p)))
            fresh.append(len(p) - shared)
            t = time.perf_counter()
            b._score_labels(p, tuple(flat))
            exact.append(time.perf_counter() - t)
        for p in prompts:
            t = time.perf_counter()
            b._eval_prompt(p)
            b._last_logprobs()
            first.append(time.perf_counter() - t)
        exact_all += exact
        first_all += first
        labels = ", ".join(f"{w}: {k}" for w, k in zip(flat, n_tok, strict=True))
        print(f"| {name} | {labels} | {statistics.mean(len(p) for p in prompts):.0f} | {statistics.mean(fresh):.0f} "
              f"| {statistics.mean(exact):.2f} | {statistics.mean(first):.2f} |")
    print(f"| **mean** | | | | **{statistics.mean(exact_all):.2f}** | **{statistics.mean(first_all):.2f}** |")
    b.close()


if __name__ == "__main__":
    main()
