"""Issue 21's measurement: TweetEval offensive as a user's own data, through `sentidistill distill`.

Prepares, from the read-only data folder, what a user would have: ``pool.csv`` (``--n-pool`` train tweets,
drawn with a seed, one ``text`` column and no label) and ``test.csv`` (the whole test split, ``text`` and
``label`` with the label names of mapping.txt); then runs ONE command (printed first, so it can be copied)
and prints the table the issue asks for: the teacher raw and calibrated, the student before and after, on
the same test items with 95% intervals, items/s, the student's speed as a multiple of the teacher's, and the
wall time. Rerunning resumes (the teacher's answers are cached in the run folder).

    python benchmarks/own_data_offensive.py --data-dir ../shared/data            # the 1.5B teacher, ~15 min
    python benchmarks/own_data_offensive.py --teacher builtin:qwen2.5-coder-0.5b --test-limit 200   # quicker
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

INSTRUCTION = ("Is this tweet offensive (insults, threats, profanity or targeted abuse)? "
               "Answer with one of: not-offensive, offensive.")


def prepare(data_dir: Path, folder: Path, n_pool: int, seed: int) -> tuple[Path, Path]:
    """``pool.csv`` (unlabeled) and ``test.csv`` (labeled) from TweetEval offensive in ``data_dir``."""
    src = data_dir / "tweeteval" / "offensive"
    mapping = dict(line.split("\t") for line in (src / "mapping.txt").read_text(encoding="utf-8").split("\n") if line)
    train = (src / "train_text.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
    test = (src / "test_text.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
    test_labels = (src / "test_labels.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
    folder.mkdir(parents=True, exist_ok=True)
    pool = folder / "pool.csv"
    with pool.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        for i in sorted(random.Random(seed).sample(range(len(train)), n_pool)):
            w.writerow([train[i]])
    labeled = folder / "test.csv"
    with labeled.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for text, lab in zip(test, test_labels, strict=True):
            w.writerow([text, mapping[lab.strip()].strip()])
    return pool, labeled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/own_offensive"))
    ap.add_argument("--teacher", default="builtin:qwen2.5-coder-1.5b")
    ap.add_argument("--n-pool", type=int, default=300)
    ap.add_argument("--test-limit", type=int, default=500, help="stratified test items (>= 200; 860 = all)")
    ap.add_argument("--pooling", default="pooler", help="pooler (exportable) | mean")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX int8 export and its speed")
    args = ap.parse_args()
    pool, test = prepare(args.data_dir, args.out.with_name(args.out.name + "_data"), args.n_pool, args.seed)
    cmd = ["sentidistill", "distill", str(pool), "--text-column", "text", "--labels", "not-offensive,offensive",
           "--instruction", INSTRUCTION, "--test", str(test), "--label-column", "label", "--teacher", args.teacher,
           "--out", str(args.out), "--test-limit", str(args.test_limit), "--pooling", args.pooling,
           "--seed", str(args.seed)]
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from sentidistill.cli import run; run()", *cmd[1:]], check=True)
    wall = time.perf_counter() - t0
    report = json.loads((args.out / "distill_report.json").read_text(encoding="utf-8"))
    rows = {r["key"]: r for r in report["bench"]}
    print(f"\nTweetEval offensive as a user's data: {args.n_pool} unlabeled train tweets, teacher {args.teacher}")
    print(f"{'model':32s} {'macro-F1':>9s} {'95% interval':>15s} {'items':>6s} {'items/s':>9s}")
    for r in report["bench"]:
        speed = "cache" if r["from_cache"] else f"{r['items_per_s']:.1f}"
        print(f"{r['model']:32s} {100 * r['score']:9.1f}   [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}] "
              f"{r['n']:6d} {speed:>9s}")
    teacher, after = rows.get("teacher"), rows.get("classifier_after")
    if teacher and after and teacher.get("items_per_s") and after.get("items_per_s"):
        print(f"student after - raw teacher: {100 * (after['score'] - teacher['score']):+.1f} points; "
              f"student texts/s = {after['items_per_s'] / teacher['items_per_s']:.0f}x the teacher's")
    print(f"dev agreement with the teacher: {100 * (report['dev_agreement_after'] or 0):.1f}; "
          f"wall time of this call {wall:.0f}s (a resumed run counts only what was left)")
    if teacher and teacher.get("items_per_s") and not args.no_onnx:
        served_speed(args.out / "models" / "classifier" / "final", test, args.out / "onnx", teacher["items_per_s"])


def served_speed(model: Path, test: Path, onnx_out: Path, teacher_tps: float) -> None:
    """The student as a user calls it: ``sentidistill.predict`` over the test texts (one call, batches of 32,
    the classifier engine's length-sorted batching), PyTorch fp32 and the ONNX int8 export
    (``export_classifier_onnx``); texts/s as a multiple of the teacher's bench texts/s, and how often int8
    picks PyTorch's label. Each is timed on its second call (the first loads the model)."""
    import sentidistill
    from sentidistill.serve.classifier_onnx import export_classifier_onnx
    from sentidistill.utils.cli import quiet_third_party

    quiet_third_party()
    with test.open(encoding="utf-8", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    onnx_dir = export_classifier_onnx(model, onnx_out, int8=True)
    print(f"\nthe student as served: sentidistill.predict over {len(texts)} test tweets, batch size 32")
    labels = {}
    for name, kw in (("PyTorch fp32", {"model": str(model)}),
                     ("ONNX int8", {"model": str(onnx_dir), "backend": "onnx", "int8": True})):
        sentidistill.predict(texts[:64], batch_size=32, **kw)
        t0 = time.perf_counter()
        labels[name] = [r["prediction"] for r in sentidistill.predict(texts, batch_size=32, **kw)]
        tps = len(texts) / (time.perf_counter() - t0)
        print(f"  {name:13s} {tps:7.1f} texts/s = {tps / teacher_tps:5.0f}x the teacher's")
    same = sum(a == b for a, b in zip(labels["PyTorch fp32"], labels["ONNX int8"], strict=True))
    print(f"  ONNX int8 gives PyTorch's label for {same}/{len(texts)} texts")

if __name__ == "__main__":
    main()
