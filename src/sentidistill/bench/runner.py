"""Run tasks against a model adapter: prompts, answers, parsing, metrics, and files a report can read.

Output folder::

    predictions/<task>.seed<s>.jsonl   one row per item: id, prompt, raw answer, parsed, gold, correct
    metrics.json                       per task per seed, mean/std over seeds, category means, score
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sentidistill.bench.metrics import category_means, mean_std, sentibench_score, summarise_seeds
from sentidistill.bench.prompting import select_demos
from sentidistill.bench.registry import get_task
from sentidistill.bench.task import Task
from sentidistill.utils.io import atomic_write_json, write_jsonl

log = logging.getLogger(__name__)

METRICS_SCHEMA = "sentidistill.bench.metrics/1"


def _cut_continuation(text: str, task: Task) -> str:
    """Base LMs keep writing the pattern: drop everything from the next demonstration on."""
    marker = task.spec.prompt.input_template.split("{", 1)[0].strip()
    if marker:
        idx = text.find("\n" + marker)
        if idx >= 0:
            text = text[:idx]
    return text.strip()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def run_task(
    adapter: Any,
    task: Task,
    *,
    shots: int | None = 4,
    seeds: list[int] | tuple[int, ...] = (42,),
    limit: int | None = None,
    scoring: Literal["restricted", "generate"] = "restricted",
    data_dir: str | Path | None = None,
    demo_selection: Literal["random", "similar"] | None = None,
    limit_seed: int = 42,
    out_dir: Path | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """One task over all seeds; returns its metrics entry (and writes predictions when ``out_dir``)."""
    rows = task.load(task.spec.eval_split, data_dir=data_dir, limit=limit, seed=limit_seed)
    k = task.spec.demos.k if shots is None else shots
    selection = demo_selection or task.spec.demos.selection
    pool = task.load(task.spec.demos.split, data_dir=data_dir) if k > 0 else []
    # Demonstrations that do not depend on the seed make extra seeds pointless.
    run_seeds = list(seeds) if (k > 0 and selection == "random") else list(seeds)[:1]
    per_seed: dict[str, dict[str, Any]] = {}
    golds = [r["gold"] for r in rows]
    restricted = task.kind == "classification" and scoring == "restricted"
    for seed in run_seeds:
        demos = select_demos(task, rows, pool, k, seed, selection, pool_key=task.spec.demos.split)
        prompts = [task.prompt(r, d, style=adapter.prompt_style) for r, d in zip(rows, demos, strict=True)]
        t0 = time.perf_counter()
        if restricted:
            words = [task.verbalizers[lab] for lab in task.labels]
            answers = adapter.choose(prompts, words, task=task.name)
            raws = [a.text for a in answers]
            scores = [a.scores for a in answers]
        else:
            marker = task.spec.prompt.input_template.split("{", 1)[0].strip()
            raws = adapter.generate(prompts, max_new_tokens or task.spec.max_new_tokens, task=task.name,
                                    stop=[f"\n{marker}"] if marker and adapter.prompt_style == "plain" else None)
            if adapter.prompt_style == "plain":
                raws = [_cut_continuation(r, task) for r in raws]
            scores = [None] * len(raws)
        wall = time.perf_counter() - t0
        preds = [task.parse(r) for r in raws]
        m = task.score(preds, golds, rows)
        m.update({"wall_s": round(wall, 3), "items_per_s": round(len(rows) / wall, 3) if wall > 0 else None,
                  "shots": k})
        per_seed[str(seed)] = m
        log.info("%s seed %s: %s=%.4f (n=%d, unparseable %.1f%%, %.1fs)", task.name, seed, task.metric, m["score"],
                 len(rows), 100 * m["unparseable_rate"], wall)
        if out_dir is not None:
            norm_golds = [task.normalise_gold(g) for g in golds]
            write_jsonl(
                out_dir / "predictions" / f"{task.name}.seed{seed}.jsonl",
                (
                    {
                        "task": task.name, "seed": seed, "id": r.get("id"), "text": r["text"], "prompt": p,
                        "raw": raw, "parsed": _jsonable(pred), "gold": _jsonable(g),
                        "correct": (pred == g) if task.kind == "classification" else
                        (pred is not None and sorted(pred) == sorted(ng)),
                        **({"label_scores": dict(zip(task.labels, sc, strict=True))} if sc else {}),
                    }
                    for r, p, raw, pred, g, ng, sc in zip(rows, prompts, raws, preds, golds, norm_golds, scores,
                                                         strict=True)
                ),
            )
    mean, std = summarise_seeds(per_seed)
    return {
        "category": task.category, "kind": task.kind, "metric": task.metric, "n": len(rows),
        "shots": k, "demo_selection": selection, "scoring": "restricted" if restricted else "generate",
        "seeds": per_seed, "mean": mean, "std": std,
        "score": mean["score"], "score_std": std["score"],
        "unparseable_rate": mean["unparseable_rate"],
        "wall_s": round(sum(m["wall_s"] for m in per_seed.values()), 3),
    }


def run_bench(
    adapter: Any,
    tasks: list[str | Task],
    *,
    shots: int | None = 4,
    seeds: list[int] | tuple[int, ...] = (42,),
    limit: int | None = None,
    scoring: Literal["restricted", "generate"] = "restricted",
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    model_name: str | None = None,
    demo_selection: Literal["random", "similar"] | None = None,
    suite: str | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``adapter`` on ``tasks``; write ``predictions/`` and ``metrics.json`` under ``out_dir``.

    ``shots=None`` uses each task's own k. ``limit`` scores a stratified subsample (fixed seed 42) of
    each evaluation split; ``max_new_tokens`` overrides the tasks' generation length (smoke tests).
    The SentiBench score is the unweighted mean of the task scores that ran.
    """
    task_objs = [t if isinstance(t, Task) else get_task(t) for t in tasks]
    out = Path(out_dir) if out_dir is not None else None
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    for task in task_objs:
        results[task.name] = run_task(
            adapter, task, shots=shots, seeds=seeds, limit=limit, scoring=scoring, data_dir=data_dir,
            demo_selection=demo_selection, out_dir=out, max_new_tokens=max_new_tokens,
        )
    scores = {n: r["score"] for n, r in results.items()}
    cats = {n: r["category"] for n, r in results.items()}
    # Per-seed SentiBench scores give the spread of the overall score, not just of each task.
    seed_scores = []
    for s in map(str, seeds):
        vals = {n: r["seeds"][s]["score"] if s in r["seeds"] else r["score"] for n, r in results.items()}
        seed_scores.append(sentibench_score(vals))
    _, overall_std = mean_std(seed_scores)
    total_items = sum(r["n"] * len(r["seeds"]) for r in results.values())
    model_time = sum(r["wall_s"] for r in results.values())
    metrics = {
        "schema": METRICS_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "name": model_name or getattr(adapter, "name", "model"),
            "params": getattr(adapter, "n_params", None),
            "kind": getattr(adapter, "kind", None) or type(adapter).__name__,
        },
        "config": {
            "suite": suite, "tasks": [t.name for t in task_objs], "shots": shots, "seeds": list(seeds),
            "limit": limit, "scoring": scoring, "demo_selection": demo_selection or "task default",
            "data_dir": str(data_dir) if data_dir else None,
        },
        "tasks": results,
        "categories": category_means(scores, cats),
        "sentibench_score": sentibench_score(scores),
        "sentibench_score_std": overall_std,
        "unparseable_rate": (sum(r["unparseable_rate"] * r["n"] for r in results.values())
                             / max(1, sum(r["n"] for r in results.values()))),
        "wall_s": round(time.perf_counter() - t_start, 3),
        "model_wall_s": round(model_time, 3),
        "items": total_items,
        "items_per_s": round(total_items / model_time, 3) if model_time > 0 else None,
        "s_per_item": round(model_time / total_items, 5) if total_items else None,
    }
    if out is not None:
        atomic_write_json(out / "metrics.json", _finite(metrics))
    return metrics


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
