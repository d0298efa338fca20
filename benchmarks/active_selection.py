"""Student score against the number of teacher labels: active selection (uncertainty + diversity) vs random.

The teacher labels a large pool ONCE (``--build``: ``build_soft_label_corpus`` with ``--pool`` texts per
task, cached in ``--corpus``; or reuse any soft-label Parquet with ``--corpus``); selection is then
simulated by revealing the cached teacher distributions of the texts a strategy asks for, so the curve
costs student training only. For each fraction of the pool, each strategy and each seed: the chosen texts
are batch-calibrated and curated as ``build_soft_label_corpus`` does, the student is trained on them and
scored on the same SentiBench test items (``--limit`` stratified items per task, fixed seed 42).

Students: ``classifier`` (the quickstart's: MiniLM fine-tuned end to end, ``train_classifier``, benched by
``run_bench``; minutes per point on a CPU) or ``probe`` (a softmax regression on the frozen encoder's
embeddings, the selector's own stand-in; seconds per point, for a quick look).

    # the lead's run (pool labelled once by the 0.5B teacher with the batched scorer, then ~30 trainings):
    python benchmarks/active_selection.py --data-dir ../shared/data --build --pool 480 \\
        --corpus runs/active_pool/pool.parquet --student classifier --seeds 0 1 2
    # a quick check (no training of MiniLM):
    python benchmarks/active_selection.py --data-dir ../shared/data --build --pool 60 --tasks sst2 twitter \\
        --corpus /tmp/al/pool.parquet --student probe --fractions 0.2 0.4 1.0 --seeds 0 1 2

Prints one row per fraction (mean and standard deviation over the seeds, per strategy) and the smallest
fraction at which active selection reaches random's full-budget score (target: <= 40%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from sentidistill.bench import get_task
from sentidistill.config import ClassifierConfig, SelectionConfig, SoftLabelsConfig, TrainingConfig
from sentidistill.data.soft_label_corpus import read_soft_labels, write_soft_labels
from sentidistill.distill.active import embed_texts, fit_softmax_probe, select
from sentidistill.distill.calibration import batch_calibrate
from sentidistill.distill.curation import curate
from sentidistill.students.classifier import classifier_input

TASKS = ["sst2", "imdb", "yelp2", "twitter", "irony18", "emotion", "pstance", "intimacy"]


def build_pool(args: argparse.Namespace) -> None:
    """Label ``--pool`` texts per task once with the teacher (batched llama.cpp scoring, cached)."""
    from sentidistill.config import TeacherConfig
    from sentidistill.distill.soft_labels import build_soft_label_corpus
    from sentidistill.teacher import build_teacher

    corpus = Path(args.corpus)
    corpus.parent.mkdir(parents=True, exist_ok=True)
    cfg = SoftLabelsConfig(enabled=True, tasks=args.tasks, n_per_task=args.pool, max_chars=args.max_chars,
                           calibration="none", dev_fraction=0.0, balance="none")
    tcfg = TeacherConfig(kind="llamacpp", model=args.teacher, n_ctx=4096, n_threads=args.threads,
                         concurrency=args.batch_size, batch_size=args.batch_size)
    t0 = time.perf_counter()
    with build_teacher(tcfg, corpus.with_suffix(".cache.sqlite")) as teacher:
        stats = build_soft_label_corpus(cfg, teacher, corpus, data_dir=args.data_dir, seed=args.pool_seed)
    print(f"pool: {stats.rows} texts labelled by {args.teacher} in {time.perf_counter() - t0:.0f} s -> {corpus}")


def corpus_rows(pool: list[dict[str, Any]], idx: list[int], seed: int) -> list[dict[str, Any]]:
    """The soft-label rows the student trains on for the chosen texts of one task: the cached raw
    distributions, batch-calibrated over the chosen texts, curated (dev slice, class weights)."""
    chosen = [pool[i] for i in idx]
    raw = np.array([r["probs_raw"] for r in chosen])
    cal, _ = batch_calibrate(raw)
    rows = [{**r, "probs": [float(x) for x in cal[j]]} for j, r in enumerate(chosen)]
    curated, _ = curate(rows, seed=seed, dedupe=False, dev_fraction=0.2, balance="weight")
    return curated


def bench_items(task: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The test items every point is scored on (what run_bench uses for ``--limit``: seed 42)."""
    return task.load(task.spec.eval_split, data_dir=args.data_dir, limit=args.limit, seed=42)


def score_probe(rows: list[dict[str, Any]], emb: dict[str, np.ndarray], tests: dict[str, tuple], ) -> float:
    """Mean task score (x100) of a softmax probe per task trained on ``rows`` (calibrated targets)."""
    scores = []
    for name, (task, items, x_test) in tests.items():
        r = [row for row in rows if row["task"] == name and row["split"] == "train"]
        x = np.stack([emb[name][row["_i"]] for row in r])
        predict = fit_softmax_probe(x, np.array([row["probs"] for row in r]))
        pred = [task.labels[int(j)] for j in predict(x_test).argmax(1)]
        scores.append(task.score(pred, [it["gold"] for it in items])["score"])
    return 100.0 * float(np.mean(scores))


def score_classifier(rows: list[dict[str, Any]], work: Path, args: argparse.Namespace, seed: int) -> float:
    """SentiBench score (x100) of the quickstart's classifier student trained on ``rows``."""
    from sentidistill.bench import run_bench
    from sentidistill.bench.models import HFModelAdapter
    from sentidistill.train.classifier import train_classifier

    corpus = write_soft_labels([{k: v for k, v in r.items() if k != "_i"} for r in rows], work / "soft.parquet")
    ccfg = ClassifierConfig(enabled=True, patience=4, training=TrainingConfig(
        epochs=6, learning_rate=1e-4, batch_size=32, warmup_ratio=0.06, eval_steps=20, save_steps=20, logging_steps=20))
    final = train_classifier(corpus, work / "model", ccfg, seed=seed)
    m = run_bench(HFModelAdapter(str(final), kind="classifier"), args.tasks, shots=0, seeds=[42], limit=args.limit,
                  scoring="restricted", out_dir=work / "bench", data_dir=args.data_dir, max_chars=args.max_chars,
                  bootstrap=0)
    return 100.0 * float(m["sentibench_score"])


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--corpus", default="runs/active_pool/pool.parquet", help="the labelled pool (Parquet)")
    ap.add_argument("--build", action="store_true", help="label the pool with the teacher first (cached)")
    ap.add_argument("--teacher", default="builtin:qwen2.5-coder-0.5b")
    ap.add_argument("--pool", type=int, default=480, help="texts per task in the pool (--build)")
    ap.add_argument("--pool-seed", type=int, default=42)
    ap.add_argument("--batch-size", type=int, default=16, help="teacher texts per batch (--build)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4, 0.6, 1.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--student", choices=["classifier", "probe"], default="classifier")
    ap.add_argument("--limit", type=int, default=60, help="test items per task (the quickstart's bench)")
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--work", default=None, help="folder for the trained students (default: next to --corpus)")
    args = ap.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.build and not Path(args.corpus).exists():
        build_pool(args)
    sel = SelectionConfig(strategy="uncertainty_diversity", budget=2)  # the selector's defaults
    pool_rows = [r for r in read_soft_labels(args.corpus) if r["task"] in args.tasks]
    pools: dict[str, list[dict[str, Any]]] = {}
    for r in pool_rows:
        pools.setdefault(r["task"], []).append(r)
    args.tasks = [t for t in args.tasks if t in pools]
    t0 = time.perf_counter()
    emb = {name: embed_texts(sel.encoder, [classifier_input(r) for r in rows], max_length=sel.max_length)
           for name, rows in pools.items()}
    for rows in pools.values():
        for i, r in enumerate(rows):
            r["_i"] = i
    tests = {}
    if args.student == "probe":
        for name in args.tasks:
            task = get_task(name)
            items = bench_items(task, args)
            x_test = embed_texts(sel.encoder, [classifier_input({**it, "text": str(it["text"])[: args.max_chars]})
                                               for it in items], max_length=sel.max_length)
            tests[name] = (task, items, x_test)
    print(f"pool: {sum(len(v) for v in pools.values())} texts over {len(pools)} tasks; embedded in "
          f"{time.perf_counter() - t0:.0f} s; student: {args.student}\n")
    work = Path(args.work or Path(args.corpus).parent / "active_curve")
    results: dict[tuple[str, float], list[float]] = {}
    for frac in sorted(args.fractions):
        for strategy in ("random", "uncertainty_diversity"):
            if frac >= 1.0 and strategy != "random":
                results[(strategy, frac)] = results[("random", frac)]  # the whole pool: the same texts
                continue
            for seed in args.seeds:
                rows: list[dict[str, Any]] = []
                for name, pool in pools.items():
                    budget = max(2 * len(pool[0]["labels"]), round(frac * len(pool)))

                    def label(idx: list[int], pool: list[dict[str, Any]] = pool) -> np.ndarray:
                        return np.array([pool[i]["probs_raw"] for i in idx])

                    idx = select(emb[name], label, strategy=strategy, budget=budget, rounds=sel.rounds,
                                 seed_fraction=sel.seed_fraction, candidates=sel.candidates, seed=seed)
                    rows += corpus_rows(pool, idx, seed)
                if args.student == "probe":
                    s = score_probe(rows, emb, tests)
                else:
                    s = score_classifier(rows, work / f"{strategy}-{frac:.2f}-s{seed}", args, seed)
                results.setdefault((strategy, frac), []).append(s)
                print(f"  {strategy:>21} {frac:.2f} seed {seed}: {s:.1f}", flush=True)
    n_pool = sum(len(v) for v in pools.values())
    print("\n| teacher labels | share of pool | random (mean ± sd) | active (mean ± sd) |\n| ---: | ---: | ---: | ---: |")
    full = statistics.mean(results[("random", max(args.fractions))])
    reach = None
    for frac in sorted(args.fractions):
        r, a = results[("random", frac)], results[("uncertainty_diversity", frac)]
        print(f"| {round(frac * n_pool)} | {100 * frac:.0f}% | {statistics.mean(r):.1f} ± {_sd(r):.1f} "
              f"| {statistics.mean(a):.1f} ± {_sd(a):.1f} |")
        if reach is None and statistics.mean(a) >= full:
            reach = frac
    msg = f"{100 * reach:.0f}% of the labels" if reach is not None else "not within the fractions tried"
    print(f"\nrandom's full-budget score {full:.1f}; active selection reaches it with {msg} (target <= 40%)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
