"""The multi-task generative student at a small size: SmolLM2-135M-Instruct before and after one multi-task run on
corpora a teacher wrote (a soft-label corpus and a tuple corpus, e.g. from `sentidistill run
examples/cpu_generative.yaml`), benched 0-shot on the same stratified items before and after.

    python benchmarks/generative_small.py --soft runs/cpu-generative/corpus/soft_labels.parquet \
        --tuples runs/cpu-generative/corpus/tuples.parquet --data-dir ../shared/data --limit 60

Prints per task and the mean with 95% bootstrap intervals, the dev agreement with the teacher and the wall times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sentidistill.bench import run_bench
from sentidistill.bench.models import HFModelAdapter
from sentidistill.config import TrainingConfig
from sentidistill.data.soft_label_corpus import read_soft_labels, write_soft_labels
from sentidistill.data.tuple_corpus import read_tuple_corpus, write_tuple_corpus
from sentidistill.train.multitask_lm import MultiTaskSettings, train_multitask_generative


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soft", type=Path, required=True, help="soft-label corpus (Parquet)")
    ap.add_argument("--tuples", type=Path, required=True, help="tuple corpus (Parquet)")
    ap.add_argument("--cls-tasks", nargs="+", default=["sst2", "twitter"])
    ap.add_argument("--fg-tasks", nargs="+", default=["atsa_rest16", "acsa_rest16"])
    ap.add_argument("--student", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/generative-small"))
    ap.add_argument("--limit", type=int, default=60, help="stratified test items per task")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    soft = [r for r in read_soft_labels(args.soft) if r["task"] in args.cls_tasks]
    tup = [r for r in read_tuple_corpus(args.tuples) if r["task"] in args.fg_tasks]
    write_soft_labels(soft, out / "soft.parquet")
    write_tuple_corpus(tup, out / "tuples.parquet")
    tasks = args.cls_tasks + args.fg_tasks

    def bench(model: str, name: str) -> dict:
        t0 = time.time()
        m = run_bench(HFModelAdapter(model, max_length=640), tasks, shots=0, seeds=[42], limit=args.limit,
                      out_dir=out / "bench" / name, data_dir=args.data_dir, model_name=name, max_chars=300)
        m["_wall"] = time.time() - t0
        return m

    before = bench(args.student, "before")
    settings = MultiTaskSettings(icl_fraction=0.3, icl_shots=2, patience=3, dev_generate=12, max_length=512)
    training = TrainingConfig(epochs=args.epochs, learning_rate=1e-4, batch_size=8, warmup_ratio=0.06, eval_steps=15,
                              save_steps=15, logging_steps=5)
    t0 = time.time()
    final = train_multitask_generative(args.student, out / "gen", training, settings, soft_corpus=out / "soft.parquet",
                                       tuple_corpus=out / "tuples.parquet", seed=42)
    train_s = time.time() - t0
    summary = json.loads((final / "training_summary.json").read_text(encoding="utf-8"))
    after = bench(str(final), "after")
    print(f"| model | {' | '.join(tasks)} | mean [95%] | wall s |")
    print("| --- |" + " ---: |" * (len(tasks) + 2))
    for name, m in (("before", before), ("after", after)):
        cells = [f"{100 * m['tasks'][t]['score']:.1f}" for t in tasks]
        mean = (f"{100 * m['sentibench_score']:.1f} [{100 * m['sentibench_score_ci_low']:.1f}, "
                f"{100 * m['sentibench_score_ci_high']:.1f}]")
        print(f"| {name} | {' | '.join(cells)} | {mean} | {m['_wall']:.0f} |")
    print(f"training: {summary['global_step']} steps, {train_s:.0f} s, dev agreement with the teacher "
          f"{summary['dev_before'].get('eval_teacher_agreement', float('nan')):.3f} -> "
          f"{summary['dev_after'].get('eval_teacher_agreement', float('nan')):.3f}")


if __name__ == "__main__":
    main()
