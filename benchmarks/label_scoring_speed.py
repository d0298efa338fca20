"""Label scoring of a causal student, each prompt read once for all its label words (the KV cache copied to each
continuation) vs one full ``prompt + label`` sequence per label: SentiBench's restricted scoring (inference) and the
``label_kl`` loss of training (forward + backward), on SmolLM2-135M-Instruct, fp32, the CPU::

    python benchmarks/label_scoring_speed.py --data-dir ../shared/data            # 40 items per task

Prints per task the wall time of both paths, their ratio and whether the answers agree, then one training step's
label-KL forward+backward on 8 rows. Run it with nothing else on the machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from sentidistill.bench import run_bench
from sentidistill.bench.models import HFModelAdapter
from sentidistill.bench.registry import get_task
from sentidistill.students import load_student
from sentidistill.train.softlabel_lm import label_logits
from sentidistill.utils.cli import quiet_third_party


def _bench(adapter: HFModelAdapter, task: str, args: argparse.Namespace, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    m = run_bench(adapter, [task], shots=0, seeds=[42], limit=args.limit, out_dir=out, data_dir=args.data_dir,
                  model_name="smollm2", max_chars=300, resume=False, bootstrap=0)
    return time.perf_counter() - t0, m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--tasks", nargs="+", default=["sst2", "twitter", "emotion"])
    ap.add_argument("--limit", type=int, default=40, help="stratified test items per task")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/label-scoring-speed"))
    args = ap.parse_args()
    quiet_third_party()
    torch.set_num_threads(args.threads)
    student = load_student(args.student)
    adapter = HFModelAdapter(student, max_length=640)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; threads {args.threads}")
    print("| task | labels | items | one pass per prompt s | one sequence per label s | ratio | same answers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    prompts_seen: list[tuple[str, list[str]]] = []
    for task in args.tasks:
        student.share_prompts = True
        shared_s, shared = _bench(adapter, task, args, args.out / task / "shared")
        student.share_prompts = False
        full_s, _ = _bench(adapter, task, args, args.out / task / "full")
        student.share_prompts = True
        answers = [[json.loads(x)["parsed"] for x in (args.out / task / way / "predictions" / f"{task}.seed42.jsonl")
                    .read_text(encoding="utf-8").splitlines()] for way in ("shared", "full")]
        same = sum(a == b for a, b in zip(*answers, strict=True))
        labels = list(get_task(task).verbalizers.values())
        print(f"| {task} | {len(labels)} | {shared['tasks'][task]['n']} | {shared_s:.1f} | {full_s:.1f} | "
              f"{full_s / shared_s:.2f}x | {same}/{len(answers[0])} |")
        rows = get_task(task).load("test", data_dir=args.data_dir)[:8]
        prompts_seen += [(student.render(get_task(task).prompt({**r, "text": str(r["text"])[:300]}, [],
                                                                style=adapter.prompt_style)), labels) for r in rows]
    # One training step's label-distribution KL inputs: 8 rows, each with its task's label words.
    batch_rows = prompts_seen[:8]
    batch = {"prompts": [p for p, _ in batch_rows], "conts": [], "n_tokens": []}
    for _, labels in batch_rows:
        conts, n = student.label_continuations(labels, adapter.prompt_style)
        batch["conts"].append(conts)
        batch["n_tokens"].append(n)
    k = max(len(c) for c in batch["conts"])
    batch["label_mask"] = torch.tensor([[j < len(c) for j in range(k)] for c in batch["conts"]])
    student.model.train()
    times = {}
    for share in (True, False):
        student.share_prompts = share
        label_logits(student, batch, 640).logsumexp(-1).sum().backward()  # warm-up
        student.model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        for _ in range(3):
            label_logits(student, batch, 640).logsumexp(-1).sum().backward()
            student.model.zero_grad(set_to_none=True)
        times[share] = (time.perf_counter() - t0) / 3
    student.share_prompts = True
    print(f"\nlabel KL, forward+backward of 8 rows ({sum(len(c) for c in batch['conts'])} label words): one pass per "
          f"prompt {times[True]:.2f} s, one sequence per label {times[False]:.2f} s, {times[False] / times[True]:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
