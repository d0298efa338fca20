"""Training-engine speed on a GPU: model FLOPs utilisation (MFU) of transformers' Trainer, plain vs flags.

Random-init models at paper shapes (no hub needed), synthetic token batches, bf16:
  * t5-base (the paper-2 student shape): plain Trainer vs `torch_compile=True`
  * a 1B Llama shape (paper-1 student size): plain Trainer vs `use_liger_kernel=True` (Liger kernels)
  * one paper-2 fine-tuning cell (t5-base, batch 16, short ATSA-like pairs): steps/s, and the projected
    wall time of 10 seeds x 4 datasets x 20 epochs.
Everything goes through Trainer flags, none of our own kernels: that is the point of building on it.

    python benchmarks/gpu_train_engine.py               # on a GPU machine
    python benchmarks/gpu_train_engine.py --smoke       # tiny shapes on CPU, to check the script runs

MFU = achieved model FLOPs / peak bf16 dense FLOPs, model FLOPs = 6 x (parameters touched per token) x tokens
(encoder params x source tokens + decoder params x target tokens for T5; attention FLOPs ignored, as usual).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import tempfile
import time

import torch
from torch.utils.data import Dataset

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops() -> float:
    if not torch.cuda.is_available():
        return float("nan")
    name = torch.cuda.get_device_name()
    for key, val in PEAK_BF16.items():
        if key in name:
            return val
    return float("nan")


class SyntheticPairs(Dataset):
    def __init__(self, n: int, vocab: int, src: int, tgt: int | None, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randint(5, vocab, (n, src), generator=g)
        self.y = torch.randint(5, vocab, (n, tgt), generator=g) if tgt else None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        if self.y is None:
            return {"input_ids": self.x[i], "attention_mask": torch.ones_like(self.x[i]), "labels": self.x[i]}
        return {"input_ids": self.x[i], "attention_mask": torch.ones_like(self.x[i]), "labels": self.y[i]}


class StepTimer:
    """A TrainerCallback that times steps after a warm-up (compile and allocator warm-up excluded)."""

    def __init__(self, warmup: int) -> None:
        from transformers import TrainerCallback

        self.warmup, self.times, self._t = warmup, [], None
        outer = self

        class _CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                outer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                if state.global_step > outer.warmup:
                    outer.times.append(time.perf_counter() - outer._t)

        self.callback = _CB()


def run_trainer(model_fn, data, *, batch: int, steps: int, warmup: int, flags: dict, bf16: bool) -> dict:
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = model_fn()
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=1e-4,
            bf16=bf16, logging_steps=10_000, save_strategy="no", report_to=[], dataloader_num_workers=2,
            disable_tqdm=True, **flags,
        )
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[timer.callback])
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    step_s = sorted(timer.times)[len(timer.times) // 2] if timer.times else float("nan")
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"median_step_s": step_s, "wall_s": wall, "peak_gib": peak_gib}


def t5_base(smoke: bool):
    from transformers import T5Config, T5ForConditionalGeneration

    if smoke:
        cfg = T5Config(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    else:  # t5-base
        cfg = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return cfg, (lambda: T5ForConditionalGeneration(cfg))


def llama_1b(smoke: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    if smoke:
        cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
    else:  # Llama-3.2-1B shape
        cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                          tie_word_embeddings=True)
    return cfg, (lambda: LlamaForCausalLM(cfg).to(torch.bfloat16) if torch.cuda.is_available() else LlamaForCausalLM(cfg))


def t5_flops_per_step(model_fn, batch: int, src: int, tgt: int) -> float:
    m = model_fn()
    enc = sum(p.numel() for p in m.encoder.parameters())
    dec = sum(p.numel() for p in m.decoder.parameters()) + m.lm_head.weight.numel()
    del m
    return 6 * batch * (enc * src + dec * tgt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, few steps (CPU check)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: t5,llama,finetune")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    smoke = args.smoke
    gpu = torch.cuda.is_available()
    bf16 = gpu and torch.cuda.is_bf16_supported()
    steps, warmup = (6, 2) if smoke else (args.steps, 10)
    peak = peak_flops()
    skip = set(filter(None, args.skip.split(",")))
    device = torch.cuda.get_device_name() if gpu else "cpu"
    print(f"device: {device}; torch {torch.__version__}; bf16={bf16}; peak {peak / 1e12:.0f} TFLOP/s")
    rows: list[dict] = []

    if "t5" not in skip:
        cfg, fn = t5_base(smoke)
        batch, src, tgt = (4, 32, 8) if smoke else (64, 512, 128)
        data = SyntheticPairs(batch * (steps + 2), cfg.vocab_size, src, tgt)
        flops = t5_flops_per_step(fn, batch, src, tgt)
        for label, flags in [("plain", {}), ("torch_compile", {"torch_compile": True})]:
            r = run_trainer(fn, data, batch=batch, steps=steps, warmup=warmup, flags=flags, bf16=bf16)
            r.update(model=f"t5-base b{batch} {src}/{tgt}", variant=label,
                     mfu=flops / r["median_step_s"] / peak, tokens_per_s=batch * (src + tgt) / r["median_step_s"])
            rows.append(r)
            print(json.dumps(r), flush=True)

    if "llama" not in skip:
        cfg, fn = llama_1b(smoke)
        batch, seq = (2, 32) if smoke else (8, 2048)
        data = SyntheticPairs(batch * (steps + 2), cfg.vocab_size, seq, None)
        m = fn()
        n_params = sum(p.numel() for p in m.parameters())
        del m
        flops = 6 * n_params * batch * seq
        variants = [("plain", {})]
        try:
            import liger_kernel  # noqa: F401

            variants.append(("liger", {"use_liger_kernel": True}))
        except ImportError:
            print("liger-kernel not installed: skipping the Liger variant")
        for label, flags in variants:
            try:
                r = run_trainer(fn, data, batch=batch, steps=steps, warmup=warmup, flags=flags, bf16=bf16)
            except torch.OutOfMemoryError as exc:  # report, keep going
                r = {"error": f"OOM: {exc}"[:200], "median_step_s": float("nan"), "peak_gib": float("nan")}
            r.update(model=f"llama-1b-shape b{batch}x{seq} ({n_params / 1e9:.2f}B)", variant=label,
                     mfu=flops / r["median_step_s"] / peak, tokens_per_s=batch * seq / r["median_step_s"])
            rows.append(r)
            print(json.dumps(r), flush=True)

    if "finetune" not in skip:
        # Paper 2's fine-tuning cell: t5-base, batch 16, ATSA sentences (~40 source / ~16 target tokens).
        cfg, fn = t5_base(smoke)
        batch, src, tgt = 16, 48, 16
        data = SyntheticPairs(batch * (steps + 2), cfg.vocab_size, src, tgt)
        r = run_trainer(fn, data, batch=batch, steps=steps, warmup=warmup, flags={}, bf16=bf16)
        # Training sentences in ../shared/data/fsa (counted from the files; that folder does not travel).
        n_train = {"rest14": 2432, "laptop14": 2436, "acsa-rest16": 1600, "acsa-laptop16": 2000}
        steps_per_seed = {k: math.ceil(v / batch) * 20 for k, v in n_train.items()}
        total_steps = 10 * sum(steps_per_seed.values())
        r.update(model="t5-base fine-tune cell b16 48/16", variant="plain",
                 steps_per_s=1 / r["median_step_s"],
                 one_seed_rest14_min=steps_per_seed["rest14"] * r["median_step_s"] / 60,
                 projected_10seeds_4datasets_h=total_steps * r["median_step_s"] / 3600,
                 mfu=t5_flops_per_step(fn, batch, src, tgt) / r["median_step_s"] / peak)
        rows.append(r)
        print(json.dumps(r), flush=True)

    print()
    print(f"{'model':44} {'variant':14} {'step s':>8} {'tok/s':>10} {'MFU %':>6} {'peak GiB':>8}")
    for r in rows:
        print(f"{r['model']:44} {r['variant']:14} {r['median_step_s']:8.4f} {r.get('tokens_per_s', float('nan')):10.0f} "
              f"{100 * r.get('mfu', float('nan')):6.1f} {r['peak_gib']:8.1f}")
    for r in rows:
        if "projected_10seeds_4datasets_h" in r:
            print(f"paper-2 fine-tuning: one seed of rest14 (20 epochs) {r['one_seed_rest14_min']:.1f} min; "
                  f"10 seeds x 4 datasets projected {r['projected_10seeds_4datasets_h']:.2f} h (eval not included)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
