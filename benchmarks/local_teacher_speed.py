"""What a local GGUF teacher costs per text on this machine, one by one and batched, against its peak.

Three tables, straight from the in-process llama.cpp backend (no teacher cache):

1. Prompt evaluation speed: ``n`` tokens evaluated from an empty KV cache, tokens/s (one sequence).
2. Restricted scoring per task, one by one (:meth:`LlamaCppInProcessBackend._score_labels`, the shared
   instruction prefix kept in the KV cache) and batched (:class:`MultiSequenceScorer`: ``--batch-size``
   texts and all their label continuations per ``llama_decode``): soft labels/s each way, the speed-up,
   the largest log-prob difference between the two (nats), and the batched path's tokens/s as a share
   "of peak": the tokens it evaluated (each text's new tokens + one per label-trie node) divided by its
   time, over the prompt-evaluation speed of the SAME number of tokens as one plain prompt (measured
   right after, in this run; the peak of the machine for that much work). On a quantised GGUF, llama.cpp's
   CPU kernels round differently for different batch shapes: one-by-one scoring itself moves by ~0.1 nats
   between a cold and a warm KV cache (Qwen2.5-Coder-0.5B Q5_0/Q4_K), so the differences printed here are
   that noise; on an f32 model the two agree within 1e-4 (tests/test_teacher_llamacpp_batch.py).
3. The overall row: all tasks' tokens and seconds summed.
4. Generation: greedy answers for ``--batch-size`` prompts, one by one vs batched (one token of every
   unfinished answer per ``llama_decode``), new tokens/s each way, overall and after the first token (the
   prompt phase, timed apart with ``max_tokens=1``, runs near the peak either way; the decoding steps are
   where batching pays on a CPU, so the overall ratio grows with the answers' length).

    python benchmarks/local_teacher_speed.py --model builtin:qwen2.5-coder-0.5b --data-dir ../shared/data

Quiet re-run by the lead (one command; ~2 min with the 0.5B on 2 cores; add ``--threads 2`` on a quiet
machine). Use it on a quiet machine: llama.cpp's threads wait on each other, so a busy core slows it
several-fold; the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from sentidistill.bench import get_task
from sentidistill.distill.soft_labels import unlabeled_texts, variant_prompt
from sentidistill.teacher.llamacpp_batch import LabelTrie, MultiSequenceScorer
from sentidistill.teacher.llamacpp_inprocess import LlamaCppInProcessBackend
from sentidistill.teacher.restricted import case_variants

TASKS = ["sst2", "imdb", "yelp2", "twitter", "irony18", "emotion", "pstance", "intimacy"]


def _peak(b: LlamaCppInProcessBackend, words: list[int], n: int) -> float:
    """Seconds to evaluate ``n`` tokens as one prompt from an empty KV cache (batches of ``n_batch``)."""
    b.llm.reset()
    t = time.perf_counter()
    b.llm.eval(words[:n])
    dt = time.perf_counter() - t
    b.llm.reset()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:qwen2.5-coder-0.5b")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--n", type=int, default=16, help="texts per task")
    ap.add_argument("--batch-size", type=int, default=16, help="texts per batch (the backend's batch_size)")
    ap.add_argument("--n-batch", type=int, default=512, help="llama.cpp n_batch: tokens per llama_decode")
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gen-tokens", type=int, default=64, help="new tokens per answer in the generation table (0: skip)")
    args = ap.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t0 = time.perf_counter()
    b = LlamaCppInProcessBackend(args.model, n_ctx=4096, n_threads=args.threads, n_batch=args.n_batch,
                                 batch_size=args.batch_size)
    threads = b.llm.context_params.n_threads
    print(f"{args.model}: loaded in {time.perf_counter() - t0:.1f} s, {threads} threads, n_batch {args.n_batch}, "
          f"batch size {args.batch_size}\n")

    words = b.llm.tokenize(("The service was slow but the food was worth the wait. " * 200).encode(), add_bos=False)
    print("| prompt tokens | seconds | tokens/s |\n| ---: | ---: | ---: |")
    for n in (16, 64, 128, 256, 512):
        dt = _peak(b, words, n)
        print(f"| {n} | {dt:.2f} | {n / dt:.1f} |")

    scorer = MultiSequenceScorer(b.llm._model, n_ctx=4096, n_batch=args.n_batch, n_threads=threads,
                                 n_seq_max=min(256, 1 + args.batch_size * 10), n_vocab=b.n_vocab,
                                 base_params=b.llm.context_params)
    print("\n| task | labels (trie nodes) | texts | prompt tokens | soft labels/s one-by-one | soft labels/s batched "
          "| speed-up | batched tokens/s | peak tokens/s (same tokens) | of peak | max abs diff (nats) | max abs diff p "
          "| same arg-max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    tot = {"texts": 0, "t_one": 0.0, "t_bat": 0.0, "tokens": 0, "t_peak": 0.0}
    worst = worst_p = 0.0
    agree = 0
    for name in args.tasks:
        task = get_task(name)
        rows = unlabeled_texts(task, args.n, data_dir=args.data_dir, seed=7, max_chars=args.max_chars)
        flat, _ = case_variants([task.verbalizers[lab] for lab in task.labels])
        seqs = [b.llm.tokenize(w.encode(), add_bos=False, special=False) for w in flat]
        prompts = [b.format_prompt(variant_prompt(task, r, 0)) for r in rows]

        b._score_labels(prompts[0], tuple(flat))  # warm the shared prefix, as a long run has it
        t = time.perf_counter()
        one = [b._score_labels(p, tuple(flat)).label_logprobs for p in prompts]
        t_one = time.perf_counter() - t

        scorer.score(prompts[:1], seqs)  # the same: the instruction prefix already in sequence 0
        tok0 = scorer.tokens
        t = time.perf_counter()
        bat = []
        for i in range(0, len(prompts), args.batch_size):
            bat += [s for s, _ in scorer.score(prompts[i : i + args.batch_size], seqs)]
        t_bat = time.perf_counter() - t
        n_tok = scorer.tokens - tok0
        t_peak = _peak(b, words * (1 + n_tok // len(words)), n_tok)
        one_a, bat_a = np.array(one), np.array(bat)
        diff = float(np.abs(one_a - bat_a).max())
        # The label distribution (over the case variants) each way: what a soft label is made of.
        p_one, p_bat = (np.exp(a - np.logaddexp.reduce(a, axis=1, keepdims=True)) for a in (one_a, bat_a))
        diff_p = float(np.abs(p_one - p_bat).max())
        same = int((p_one.argmax(1) == p_bat.argmax(1)).sum())
        worst, worst_p, agree = max(worst, diff), max(worst_p, diff_p), agree + same
        for k, v in (("texts", len(prompts)), ("t_one", t_one), ("t_bat", t_bat), ("tokens", n_tok),
                     ("t_peak", t_peak)):
            tot[k] += v
        print(f"| {name} | {len(flat)} ({len(LabelTrie(seqs).nodes) - 1}) | {len(prompts)} "
              f"| {statistics.mean(len(p) for p in prompts):.0f} | {len(prompts) / t_one:.2f} "
              f"| {len(prompts) / t_bat:.2f} | {t_one / t_bat:.1f}x | {n_tok / t_bat:.0f} | {n_tok / t_peak:.0f} "
              f"| {100 * t_peak / t_bat:.0f}% | {diff:.1e} | {diff_p:.3f} | {same}/{len(prompts)} |")
    print(f"| **overall** | | {tot['texts']} | | {tot['texts'] / tot['t_one']:.2f} | {tot['texts'] / tot['t_bat']:.2f} "
          f"| {tot['t_one'] / tot['t_bat']:.1f}x | {tot['tokens'] / tot['t_bat']:.0f} "
          f"| {tot['tokens'] / tot['t_peak']:.0f} | **{100 * tot['t_peak'] / tot['t_bat']:.0f}%** | {worst:.1e} "
          f"| {worst_p:.3f} | {agree}/{tot['texts']} |")
    scorer.close()

    if args.gen_tokens:
        # 4. Generation (tuples, analyses, ICL answers): greedy answers of --gen-tokens tokens for --batch-size
        # prompts, one by one (generate_one) vs together (generate_batch: one token of each answer per decode).
        from sentidistill.teacher.types import SamplingParams, TeacherRequest

        task = get_task(args.tasks[0])
        rows = unlabeled_texts(task, args.batch_size, data_dir=args.data_dir, seed=11, max_chars=args.max_chars)
        params = SamplingParams(max_tokens=args.gen_tokens, temperature=0.0)
        reqs = [TeacherRequest(messages=[{"role": "user", "content": "Explain in detail the sentiment of this text, "
                                          f"aspect by aspect:\n{r['text']}"}], params=params) for r in rows]
        first = [r.model_copy(update={"params": params.model_copy(update={"max_tokens": 1})}) for r in reqs]
        runs = {}
        for name, fn in (("one by one", lambda rs: [b.generate_one(r) for r in rs]), ("batched", b.generate_batch)):
            fn(reqs[:1])  # warm: the instruction prefix cached, the multi-sequence context made
            t = time.perf_counter()
            fn(first)  # the prompts and the first token only: the prompt phase
            t_prompt = time.perf_counter() - t
            t = time.perf_counter()
            out = fn(reqs)
            runs[name] = (out, time.perf_counter() - t, t_prompt)
        print(f"\n| generation ({len(reqs)} prompts, <= {args.gen_tokens} new tokens, greedy) | new tokens | seconds "
              "| new tokens/s | seconds after the first token | tokens/s after the first token |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        rate = {}
        for name, (out, dt, t_prompt) in runs.items():
            n = sum(r.usage.completion_tokens for r in out)
            rest = max(1e-9, dt - t_prompt)
            rate[name] = (n / dt, (n - len(out)) / rest)
            print(f"| {name} | {n} | {dt:.1f} | {n / dt:.1f} | {rest:.1f} | {(n - len(out)) / rest:.1f} |")
        r1, rb = rate["one by one"], rate["batched"]
        same = sum(a.text == c.text for a, c in zip(runs["one by one"][0], runs["batched"][0], strict=True))
        print(f"\nbatched / one by one: {rb[0] / r1[0]:.1f}x new tokens/s overall, {rb[1] / r1[1]:.1f}x after the "
              f"first token (the prompt phase runs near the peak either way); identical answers {same}/{len(reqs)} "
              "(a quantised model may break a near-tie the other way)")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    b.close()


if __name__ == "__main__":
    main()
