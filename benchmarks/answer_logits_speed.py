"""Step time and peak memory of a training step: full ``[B, T, V]`` logits vs answer-only logits.

A random-init Qwen2-shaped causal LM with Qwen2.5's 151,936-token vocabulary (untied head) and a small
hidden size, so that it runs on a CPU; ICL-like batches: ~300-token prompts, 3-token answers.
Each mode runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own.

    nice python benchmarks/answer_logits_speed.py [--hidden 128] [--layers 2] [--batch 4] [--steps 3]

Wall time on a shared machine is noisy; the CPU time (all threads of the process) is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VOCAB = 151_936


# Qwen2.5-0.5B's shape (random init): what the GGUF student de-quantises to (630M parameters, untied head).
PRESETS = {"qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864)}


def build(hidden: int, layers: int, heads: int | None = None, kv_heads: int | None = None,
          intermediate: int | None = None):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=intermediate or hidden * 4,
                      num_hidden_layers=layers, num_attention_heads=heads or max(hidden // 64, 2),
                      num_key_value_heads=kv_heads or max(hidden // 128, 1), max_position_embeddings=2048,
                      tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg)


def batch(b: int, prompt: int, answer: int):
    import torch

    g = torch.Generator().manual_seed(0)
    rows, labels = [], []
    for i in range(b):
        p = prompt - 13 * i  # ragged prompts, right-padded like the collator's batches
        ids = torch.randint(10, VOCAB, (p + answer,), generator=g)
        lab = torch.full_like(ids, -100)
        lab[p:] = ids[p:]
        rows.append(ids)
        labels.append(lab)
    t = max(len(r) for r in rows)
    input_ids = torch.zeros(b, t, dtype=torch.long)
    attn = torch.zeros(b, t, dtype=torch.long)
    lab = torch.full((b, t), -100, dtype=torch.long)
    for i, (r, la) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(r)] = r
        attn[i, : len(r)] = 1
        lab[i, : len(r)] = la
    return input_ids, attn, lab


def run_mode(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from sentidistill.train.answer_logits import answer_only_loss

    torch.set_num_threads(args.threads)
    shape = PRESETS.get(args.preset or "", {"hidden": args.hidden, "layers": args.layers})
    cuda = args.device.startswith("cuda")
    model = build(**shape).to(args.device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids, attn, labels = (t.to(args.device) for t in batch(args.batch, args.prompt, args.answer))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        base_rss = torch.cuda.memory_allocated() / 2**20

    def step() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        if args.mode == "full":
            loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        else:
            loss, _ = answer_only_loss(model, input_ids, attn, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0

    step()  # warm-up: allocator, optimizer state
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = [step() for _ in range(args.steps)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {"step_s": statistics.median(t for t, _ in times), "cpu_s": statistics.median(c for _, c in times),
            "peak_rss_mb": peak, "base_rss_mb": base_rss,
            "tokens": int(attn.sum()), "answer_tokens": int((labels[:, 1:] != -100).sum()),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=300)
    ap.add_argument("--answer", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a real model's shape instead of --hidden/--layers")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (then memory is torch.cuda.max_memory_allocated)")
    ap.add_argument("--mode", choices=["full", "answer"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    results = {}
    for mode in ("full", "answer"):
        cmd = [sys.executable, __file__, "--mode", mode] + [
            f"--{k}={v}" for k, v in vars(args).items() if k != "mode" and v is not None]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results[mode] = json.loads(out)
    f, a = results["full"], results["answer"]
    logits_mb = args.batch * (args.prompt + args.answer) * VOCAB * 4 / 2**20
    shape = args.preset or f"hidden {args.hidden}, {args.layers} layers"
    mem = "peak CUDA memory" if args.device.startswith("cuda") else "peak RSS"
    print(f"Qwen2-shaped, vocab {VOCAB:,}, {shape} ({f['params_m']:.1f}M params) on {args.device}; "
          f"batch {args.batch} x ~{args.prompt} prompt + {args.answer} answer tokens "
          f"({f['tokens']} tokens, {f['answer_tokens']} predicted answer tokens); {args.threads} threads; "
          f"median of {args.steps} AdamW steps.")
    print(f"(one fp32 [B, T, V] logits tensor alone is {logits_mb:,.0f} MiB)\n")
    print(f"| loss path | step wall time (s) | step CPU time (s) | {mem} (MiB) | {mem} above the built model (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in (("full logits", f), ("answer-only logits", a)):
        print(f"| {name} | {r['step_s']:.3f} | {r['cpu_s']:.3f} | {r['peak_rss_mb']:,.0f} | "
              f"{r['peak_rss_mb'] - r['base_rss_mb']:,.0f} |")
    print(f"\nwall-time speed-up x{f['step_s'] / a['step_s']:.2f}, CPU-time x{f['cpu_s'] / a['cpu_s']:.2f}; "
          f"{mem} saved {f['peak_rss_mb'] - a['peak_rss_mb']:,.0f} MiB")


if __name__ == "__main__":
    main()
