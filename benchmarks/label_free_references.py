"""Supervised references for a label-free run: what the same texts would give WITH their gold labels.

A label-free run (``soft_labels`` + ``classifier``) trains on the teacher's soft labels for N unlabeled
texts per task. This script reads that run's corpus, looks the same texts up in the tasks' train splits to
get their gold labels (which the run itself never read), trains two supervised references on them, and
benches both with the run's own bench settings (the same test items), into ``<run>/bench/``:

* ``ref_tfidf_lr``: TF-IDF (word 1-2 grams, sublinear tf) + logistic regression per task (scikit-learn).
* ``ref_minilm_gold``: the classifier student (same encoder, heads, trainer, early stopping) trained with
  cross-entropy on the gold labels instead of KL to the teacher (dev slice: the run's own, gold-labelled).

Then ``sentidistill report <run>/bench/*`` puts them beside the teacher and the students, with intervals.

    python benchmarks/label_free_references.py runs/cpu-label-free --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class TfidfLRAdapter:
    """A bench adapter over per-task TF-IDF + logistic-regression models (answers from the raw rows)."""

    prompt_style = "plain"

    def __init__(self, models: dict[str, Any], name: str = "TF-IDF + LR (gold labels)") -> None:
        self.models = models  # task -> (vectorizer, classifier, label names)
        self.name = name
        self.kind = "tfidf-lr"
        self.n_params = sum(int(clf.coef_.size + clf.intercept_.size) for _, clf, _ in models.values())

    def fingerprint(self) -> dict[str, Any]:
        return {"adapter": "tfidf-lr", "tasks": sorted(self.models), "n_params": self.n_params,
                "coef_sum": round(sum(float(np.abs(clf.coef_).sum()) for _, clf, _ in self.models.values()), 6)}

    def generate(self, prompts: list, max_new_tokens: int, *, task: str = "", stop: list | None = None) -> list[str]:
        raise RuntimeError("TF-IDF + LR does not generate")

    def choose(self, prompts: list, words: list[str], *, task: str = "", rows: list[dict] | None = None) -> list:
        from sentidistill.bench.models import Answer
        from sentidistill.students.classifier import classifier_input

        vec, clf, labels = self.models[task]
        proba = clf.predict_proba(vec.transform([classifier_input(r) for r in rows or []]))
        cols = [list(clf.classes_).index(lab) if lab in clf.classes_ else None for lab in labels]
        out = []
        for p in proba:
            scores = [float(np.log(max(p[c], 1e-12))) if c is not None else float("-inf") for c in cols]
            out.append(Answer(text=words[int(np.argmax(scores))], scores=scores))
        return out

    def close(self) -> None:
        pass


def gold_rows(run: Path, data_dir: Path | None) -> list[dict[str, Any]]:
    """The run's soft-label corpus rows with their gold labels looked up by id in the train splits."""
    from sentidistill.bench import get_task
    from sentidistill.data.soft_label_corpus import read_soft_labels

    rows = read_soft_labels(run / "corpus" / "soft_labels.parquet")
    by_task: dict[str, dict[str, str]] = {}
    out = []
    for r in rows:
        if r["task"] not in by_task:
            by_task[r["task"]] = {str(x["id"]): x["gold"] for x in get_task(r["task"]).load("train", data_dir=data_dir)}
        gold = by_task[r["task"]].get(str(r["id"]))
        if gold is None:
            raise SystemExit(f"{r['task']} item {r['id']} is not in the train split: is --data-dir the run's?")
        out.append({**r, "gold": gold})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="Run directory of a label-free run (runs/<name>).")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--skip-minilm", action="store_true", help="Only the TF-IDF + LR reference.")
    args = ap.parse_args()

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from sentidistill.bench import list_tasks, run_bench
    from sentidistill.bench.models import HFModelAdapter
    from sentidistill.config import load_config
    from sentidistill.data.soft_label_corpus import write_soft_labels
    from sentidistill.students.classifier import classifier_input
    from sentidistill.train.classifier import train_classifier

    cfg = load_config(args.run / "config.yaml")
    data_dir = args.data_dir or cfg.data_dir
    rows = gold_rows(args.run, data_dir)
    tasks = cfg.bench.tasks or list_tasks(cfg.bench.suite)
    bench_kw = dict(shots=cfg.bench.shots, seeds=cfg.bench.seeds, limit=cfg.bench.limit, scoring=cfg.bench.scoring,
                    data_dir=data_dir, max_chars=cfg.bench.max_chars, bootstrap=cfg.bench.bootstrap)
    table = []

    t0 = time.perf_counter()
    models = {}
    for task in sorted({r["task"] for r in rows}):
        tr = [r for r in rows if r["task"] == task]
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        x = vec.fit_transform([classifier_input(r) for r in tr])
        clf = LogisticRegression(max_iter=2000, C=10.0).fit(x, [r["gold"] for r in tr])
        models[task] = (vec, clf, list(tr[0]["labels"]))
    fit_s = time.perf_counter() - t0
    m = run_bench(TfidfLRAdapter(models), [t for t in tasks if t in models], out_dir=args.run / "bench" / "ref_tfidf_lr",
                  model_name="TF-IDF + LR (gold labels)", **bench_kw)
    table.append(("TF-IDF + LR (gold labels)", m["sentibench_score"], fit_s))

    if not args.skip_minilm:
        corpus = args.run / "corpus" / "gold_labels.parquet"
        one_hot = [{**r, "probs": [1.0 if lab == r["gold"] else 0.0 for lab in r["labels"]], "weight": 1.0}
                   for r in rows]
        write_soft_labels(one_hot, corpus)
        ccfg = cfg.classifier.model_copy(update={"kl_weight": 0.0, "ce_weight": 1.0})
        t0 = time.perf_counter()
        final = train_classifier(corpus, args.run / "models" / "ref_minilm_gold", ccfg, seed=cfg.seed)
        train_s = time.perf_counter() - t0
        m = run_bench(HFModelAdapter(str(final), kind="classifier", batch_size=64), tasks,
                      out_dir=args.run / "bench" / "ref_minilm_gold", model_name="MiniLM fine-tuned on gold labels",
                      **bench_kw)
        table.append(("MiniLM fine-tuned on gold labels", m["sentibench_score"], train_s))

    print(f"\nsupervised references on the run's {len(rows)} texts ({args.run}):")
    print("| reference | mean macro-F1 x100 | train s |\n| --- | ---: | ---: |")
    for name, score, secs in table:
        print(f"| {name} | {100 * score:.1f} | {secs:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
