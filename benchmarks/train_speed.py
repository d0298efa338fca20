"""Training-engine speed: steps/s, tokens/s, peak RSS (CPU), and MFU on a GPU (plain vs torch_compile vs Liger).

CPU (default): the offline student ``builtin:minilm-encdec`` through ``KnowDistTrainer`` on batches of 16 short
(review -> label/analysis) pairs, fp32::

    python benchmarks/train_speed.py                         # 20 timed steps after 3 warm-up steps
    python benchmarks/train_speed.py --model tiny-seq2seq    # the in-process test model, for a quick check

GPU: random-init models at paper shapes (no hub), bf16, synthetic token batches, through the same trainer::

    python benchmarks/train_speed.py --device cuda --model-shape t5-base    # paper-2 student shape
    python benchmarks/train_speed.py --device cuda --model-shape llama-1b   # paper-1 student size

Each GPU row is one configuration: plain Trainer, ``torch_compile=True``, ``use_liger_kernel=True`` (Liger
patches llama; for t5 the flag is reported as not applicable). MFU = 6 x params x tokens/s / peak bf16 FLOP/s
(attention FLOPs ignored, as usual). Tokens = non-padding source + target tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
_PAIRS = [
    ("analyse sentiment: The food was great and the service was friendly.", "positive, strength 4/5"),
    ("analyse sentiment: Terrible movie, boring plot and bad acting.", "negative, strength 5/5"),
    ("analyse aspects: I love this phone, the battery lasts all day.", "[('battery', 'lasts all day', 'positive')]"),
    ("analyse aspects: The screen is awful but the price is fair.", "[('screen', 'awful', 'negative')]"),
]


class _Timer(TrainerCallback):
    """Wall time and tokens of the steps after ``warmup`` (the first steps include compile/alloc)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.steps, self.tokens = warmup, None, 0, 0
        self.batch_tokens = 0

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.t0 is not None:
            self.steps += 1
            self.tokens += self.batch_tokens

    def elapsed(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - (self.t0 or time.perf_counter())


def _peak_flops() -> float:
    if not torch.cuda.is_available():
        return float("nan")
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), float("nan"))


def _build(shape: str, out: Path) -> Path:
    """A random-init model at a paper shape, saved with a tokenizer (the tiny BPE: vocab only matters little)."""
    from sentidistill.testing import build_tiny_causal_lm, build_tiny_seq2seq, build_tiny_tokenizer

    if shape == "tiny-seq2seq":
        return build_tiny_seq2seq(out)
    if shape == "tiny-causal":
        return build_tiny_causal_lm(out)
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tok = build_tiny_tokenizer()
    if shape == "t5-base":
        cfg = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=0)
        model = T5ForConditionalGeneration(cfg)
    else:  # llama-1b: Llama-3.2-1B's shape
        cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                          tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        model = LlamaForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _dataset(kind: str, n: int, vocab: int, src_len: int, tgt_len: int, real: tuple | None):
    from datasets import Dataset

    if real is not None:  # the real tokenizer on short pairs
        collator = real[0]
        rows = [collator.encode(*_PAIRS[i % len(_PAIRS)]) for i in range(n)]
        return Dataset.from_list([{k: r[k] for k in ("input_ids", "labels", "length", "answer_start")}
                                  for r in rows])
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        if kind == "seq2seq":
            ids = torch.randint(5, vocab, (src_len,), generator=g).tolist()
            lab = torch.randint(5, vocab, (tgt_len,), generator=g).tolist()
            rows.append({"input_ids": ids, "labels": lab, "length": src_len + tgt_len, "answer_start": 0})
        else:
            ids = torch.randint(5, vocab, (src_len + tgt_len,), generator=g).tolist()
            rows.append({"input_ids": ids, "labels": [-100] * src_len + ids[src_len:], "length": src_len + tgt_len,
                         "answer_start": src_len})
    return Dataset.from_list(rows)


def run_one(model_path: str, *, device: str, steps: int, warmup: int, batch: int, flags: dict, synthetic: tuple | None,
            out: Path) -> dict:
    from sentidistill.students import load_student
    from sentidistill.train.trainers import KnowDistTrainer, KnowDistTrainingArguments

    lm = load_student(model_path)
    lm.model.train()
    collator = lm.collator(max_source_length=128, max_target_length=64, eos_token_id=lm.model.config.eos_token_id)
    n = batch * (steps + warmup)
    if synthetic:
        ds = _dataset(lm.kind, n, lm.model.config.vocab_size, synthetic[0], synthetic[1], None)
    else:
        ds = _dataset(lm.kind, n, 0, 0, 0, (collator,))
    timer = _Timer(warmup)
    orig_pad = collator.pad

    def counting_pad(feats):
        b = orig_pad(feats)
        timer.batch_tokens = int(b["attention_mask"].sum()) + int((b["labels"] != -100).sum() if lm.kind == "seq2seq" else 0)
        return b

    collator.pad = counting_pad  # count the tokens each step really processes
    args = KnowDistTrainingArguments(
        output_dir=str(out), max_steps=steps + warmup, per_device_train_batch_size=batch, learning_rate=1e-4,
        save_strategy="no", report_to="none", logging_steps=10_000, disable_tqdm=True, use_cpu=device == "cpu",
        bf16=device == "cuda", dataloader_pin_memory=device == "cuda", train_sampling_strategy="sequential", **flags)
    trainer = KnowDistTrainer(model=lm.model, args=args, train_dataset=ds, processing_class=lm.tokenizer,
                              data_collator=collator, callbacks=[timer])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    wall = timer.elapsed()
    params = sum(p.numel() for p in lm.model.parameters())
    tok_s = timer.tokens / wall
    row = {"model": model_path if not synthetic else Path(model_path).name, "flags": flags or "plain",
           "params_M": round(params / 1e6, 1), "batch": batch, "steps_per_s": round(timer.steps / wall, 3),
           "tokens_per_s": round(tok_s, 1),
           "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device == "cuda":
        row["peak_gpu_GB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["mfu"] = round(6 * params * tok_s / _peak_flops(), 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default="builtin:minilm-encdec", help="CPU mode: a model spec or tiny-seq2seq.")
    ap.add_argument("--model-shape", choices=["t5-base", "llama-1b"], default="t5-base", help="GPU mode.")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--src-len", type=int, default=128, help="GPU mode: source tokens per example.")
    ap.add_argument("--tgt-len", type=int, default=64, help="GPU mode: target tokens per example.")
    ap.add_argument("--json", type=Path, help="Also write the rows here.")
    a = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.device == "cpu":
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
            model = str(_build("tiny-seq2seq", tmp / "m")) if a.model == "tiny-seq2seq" else a.model
            rows.append(run_one(model, device="cpu", steps=a.steps, warmup=a.warmup, batch=a.batch_size, flags={},
                                synthetic=None, out=tmp / "o"))
        else:
            path = str(_build(a.model_shape, tmp / a.model_shape))
            configs = [{}, {"torch_compile": True}, {"use_liger_kernel": True}]
            for flags in configs:
                if flags.get("use_liger_kernel") and a.model_shape == "t5-base":
                    rows.append({"model": a.model_shape, "flags": flags, "note": "Liger has no T5 kernels"})
                    continue
                try:
                    rows.append(run_one(path, device="cuda", steps=a.steps, warmup=a.warmup, batch=a.batch_size,
                                        flags=flags, synthetic=(a.src_len, a.tgt_len), out=tmp / "o"))
                except Exception as exc:  # e.g. liger-kernel not installed: report, keep the other rows
                    rows.append({"model": a.model_shape, "flags": flags, "error": f"{type(exc).__name__}: {exc}"[:200]})
                torch.cuda.empty_cache()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
