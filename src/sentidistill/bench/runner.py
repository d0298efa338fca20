"""Run tasks against a model adapter: prompts, answers, parsing, metrics, and files a report can read.

Output folder::

    predictions/<task>.seed<s>.jsonl   one row per item: id, prompt, raw answer, parsed, gold, correct
    progress/<task>.seed<s>.json       a finished (task, seed): the key of what the model was asked, its time
    metrics.json                       per task per seed, mean/std over seeds, category means, score, and
                                       95% bootstrap intervals (``ci_low``/``ci_high``) per task and for the score

Resuming: a (task, seed) whose progress file carries the same key (model fingerprint, prompts, gold,
scoring, generation length) is not asked again; its raw answers are read back from the predictions file
and parsed and scored afresh, so a fixed parser or metric applies to old runs for free. Both files are
written atomically, the predictions first, so a killed run resumes at the first unfinished (task, seed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sentidistill.bench import stats as S
from sentidistill.bench.metrics import category_means, mean_std, sentibench_score, summarise_seeds
from sentidistill.bench.prompting import select_demos
from sentidistill.bench.registry import get_task
from sentidistill.bench.task import Task
from sentidistill.utils.io import atomic_write_json, read_jsonl, stable_hash, write_jsonl
from sentidistill.utils.progress import progress_bar, progress_default

log = logging.getLogger(__name__)

METRICS_SCHEMA = "sentidistill.bench.metrics/1"
PROGRESS_SCHEMA = "sentidistill.bench.progress/1"


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


def adapter_fingerprint(adapter: Any) -> dict[str, Any]:
    """What identifies the adapter's answers: its own ``fingerprint()`` when it has one, else its name and type."""
    fp = getattr(adapter, "fingerprint", None)
    if callable(fp):
        return dict(fp())
    return {"adapter": type(adapter).__name__, "name": getattr(adapter, "name", None),
            "prompt_style": getattr(adapter, "prompt_style", None)}


def _load_finished(state_path: Path, pred_path: Path, key: str, prompts: list[Any],
                   labels: list[str]) -> tuple[list[str], list[Any], list[dict[str, Any]], float] | None:
    """Raw answers, label scores, answer metadata and model seconds of a finished (task, seed) with ``key``."""
    import json

    if not (state_path.is_file() and pred_path.is_file()):
        return None
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        rows = list(read_jsonl(pred_path))
    except (ValueError, OSError) as exc:  # a damaged file only costs a recomputation
        log.warning("ignoring the saved progress of %s: %s", pred_path.name, exc)
        return None
    if state.get("schema") != PROGRESS_SCHEMA or state.get("key") != key:
        return None
    if len(rows) != len(prompts) or any(r.get("prompt") != _jsonable(p) for r, p in zip(rows, prompts, strict=True)):
        return None
    raws = [str(r.get("raw", "")) for r in rows]
    scores = [[r["label_scores"].get(lab) for lab in labels] if r.get("label_scores") else None for r in rows]
    metas = [{k: r[k] for k in _META_KEYS if k in r} for r in rows]
    return raws, scores, metas, float(state.get("wall_s", 0.0))


_META_KEYS = ("via", "response", "top")  # Answer.meta fields kept in the predictions file


def _ask_with_progress(adapter: Any, label: str, n: int, ask: Callable[[int, int], list[Any]]) -> list[Any]:
    """``ask(0, n)``, or, when progress is shown (a terminal, or ``$SENTIDISTILL_PROGRESS=1``), the same
    items asked in chunks of ``max(64, 4 x adapter.batch_size)`` under a rich bar with rate and ETA.

    Adapters whose teacher draws its own bar (``teacher.progress``, with calls, tokens and cache hits) are
    asked in one piece, so one bar shows per task. Chunks are contiguous and answered per item, so the
    answers are the same either way."""
    inner = getattr(adapter, "inner", adapter)
    if n == 0 or not progress_default() or getattr(getattr(inner, "teacher", None), "progress", False):
        return ask(0, n)
    step = max(64, 4 * int(getattr(inner, "batch_size", 16) or 16))
    out: list[Any] = []
    t0 = time.perf_counter()
    with progress_bar(f"[bold]{str(getattr(adapter, 'name', 'model'))[-32:]}[/] {label}") as bar:
        job = bar.add_task(label, total=n, rate="")
        for start in range(0, n, step):
            out.extend(ask(start, min(n, start + step)))
            bar.update(job, completed=len(out), rate=f"{len(out) / max(time.perf_counter() - t0, 1e-9):.1f} items/s")
    return out


def _seed_files(out_dir: Path, task: str, seed: int) -> tuple[Path, Path]:
    """The predictions file and the progress file of one (task, seed)."""
    return out_dir / "predictions" / f"{task}.seed{seed}.jsonl", out_dir / "progress" / f"{task}.seed{seed}.json"


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
    resume: bool = True,
    fingerprint: dict[str, Any] | None = None,
    max_chars: int | None = None,
    bootstrap: int = S.DEFAULT_RESAMPLES,
    bootstrap_seed: int = S.DEFAULT_SEED,
    replicates_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One task over all seeds; returns its metrics entry (and writes predictions when ``out_dir``).

    With ``out_dir`` and ``resume``, seeds finished by an earlier call with the same key are read back
    instead of asked again (see the module doc); ``fingerprint`` is the adapter's (computed when None).
    ``bootstrap`` replicates (0: none) give the entry's 95% interval ``ci_low``/``ci_high`` (see
    :mod:`sentidistill.bench.stats`); ``replicates_out[task]`` receives (score, replicates) when given.
    """
    rows = task.load(task.spec.eval_split, data_dir=data_dir, limit=limit, seed=limit_seed)
    if max_chars:  # long reviews cut for every model alike (the same items and the same text)
        rows = [{**r, "text": str(r["text"])[:max_chars]} for r in rows]
    k = task.spec.demos.k if shots is None else shots
    selection = demo_selection or task.spec.demos.selection
    pool = task.load(task.spec.demos.split, data_dir=data_dir) if k > 0 else []
    cut_demos = bool(max_chars) and task.kind == "classification"
    if cut_demos:  # a 4-shot prompt of long reviews would be mostly demonstrations; tuples name spans: not cut
        pool = [{**r, "text": str(r["text"])[:max_chars]} for r in pool]
    # Demonstrations that do not depend on the seed make extra seeds pointless.
    run_seeds = list(seeds) if (k > 0 and selection == "random") else list(seeds)[:1]
    per_seed: dict[str, dict[str, Any]] = {}
    golds = [r["gold"] for r in rows]
    restricted = task.kind == "classification" and scoring == "restricted"
    words = [task.verbalizers[lab] for lab in task.labels] if restricted else []
    n_new = max_new_tokens or task.spec.max_new_tokens
    marker = task.spec.prompt.input_template.split("{", 1)[0].strip()
    stop = [f"\n{marker}"] if marker and adapter.prompt_style == "plain" and not restricted else None
    resumable = out_dir is not None and resume
    if resumable and fingerprint is None:
        fingerprint = adapter_fingerprint(adapter)
    reused: list[int] = []
    seed_items: list[S.ItemScores] = []
    for seed in run_seeds:
        demos = select_demos(task, rows, pool, k, seed, selection,
                             pool_key=task.spec.demos.split + (f":cut{max_chars}" if cut_demos else ""))
        prompts = [task.prompt(r, d, style=adapter.prompt_style) for r, d in zip(rows, demos, strict=True)]
        # Everything that decides the model's answers, and nothing that only parses or scores them.
        key = stable_hash({
            "schema": PROGRESS_SCHEMA, "model": fingerprint, "task": task.name, "seed": seed,
            "scoring": "restricted" if restricted else "generate", "words": words,
            "max_new_tokens": None if restricted else n_new, "stop": stop,
            "prompts": stable_hash([_jsonable(p) for p in prompts]), "gold": stable_hash([_jsonable(g) for g in golds]),
        }) if resumable else ""
        pred_path, state_path = _seed_files(out_dir or Path("."), task.name, seed)
        done = _load_finished(state_path, pred_path, key, prompts, task.labels) if resumable else None
        errors_before = int(getattr(adapter, "errors", 0) or 0)
        if done is not None:
            raws, scores, metas, wall = done
            reused.append(seed)
            log.info("%s seed %s: finished earlier, answers read from %s", task.name, seed, pred_path)
        else:
            t0 = time.perf_counter()
            if restricted:
                answers = _ask_with_progress(adapter, task.name, len(prompts), lambda a, b, ps=prompts: adapter.choose(
                    ps[a:b], words, task=task.name, rows=rows[a:b]))
                raws = [a.text for a in answers]
                scores = [a.scores for a in answers]
                metas = [{k_: v for k_, v in (a.meta or {}).items() if k_ in _META_KEYS} for a in answers]
            else:
                raws = _ask_with_progress(adapter, task.name, len(prompts), lambda a, b, ps=prompts: adapter.generate(
                    ps[a:b], n_new, task=task.name, stop=stop))
                if adapter.prompt_style == "plain":
                    raws = [_cut_continuation(r, task) for r in raws]
                scores = [None] * len(raws)
                metas = [{} for _ in raws]
            wall = time.perf_counter() - t0
        preds = [task.parse(r) for r in raws]
        m = task.score(preds, golds, rows)
        items = S.task_items(task, preds, golds, rows) if bootstrap else None
        if items is not None:
            seed_items.append(items)
        m.update({"wall_s": round(wall, 3), "items_per_s": round(len(rows) / wall, 3) if wall > 0 else None,
                  "shots": k})
        per_seed[str(seed)] = m
        log.info("%s seed %s: %s=%.4f (n=%d, unparseable %.1f%%, %.1fs)", task.name, seed, task.metric, m["score"],
                 len(rows), 100 * m["unparseable_rate"], wall)
        if out_dir is not None:
            norm_golds = [task.normalise_gold(g) for g in golds]
            write_jsonl(
                pred_path,
                (
                    {
                        "task": task.name, "seed": seed, "id": r.get("id"), "text": r["text"], "prompt": p,
                        "raw": raw, "parsed": _jsonable(pred), "gold": _jsonable(g),
                        "correct": (pred == g) if task.kind == "classification" else
                        (pred is not None and sorted(pred) == sorted(ng)),
                        **({"label_scores": dict(zip(task.labels, sc, strict=True))} if sc else {}),
                        **({"score_parts": parts.tolist()} if parts is not None else {}),
                        **meta,
                    }
                    for r, p, raw, pred, g, ng, sc, meta, parts in zip(
                        rows, prompts, raws, preds, golds, norm_golds, scores, metas,
                        items.parts if items is not None and items.parts is not None else [None] * len(rows),
                        strict=True)
                ),
            )
            failed = int(getattr(adapter, "errors", 0) or 0) - errors_before
            if resumable and done is None:
                if failed:
                    # Failed calls are not final answers: leave this seed unfinished so a rerun asks again.
                    log.warning("%s seed %s: %d model calls failed; it will be recomputed on the next run",
                                task.name, seed, failed)
                else:
                    atomic_write_json(state_path, {
                        "schema": PROGRESS_SCHEMA, "key": key, "task": task.name, "seed": seed, "n": len(rows),
                        "wall_s": wall, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                    })
    mean, std = summarise_seeds(per_seed)
    ci: dict[str, float] = {}
    if seed_items and rows:
        reps = S.replicates(seed_items, task.name, n_resamples=bootstrap, seed=bootstrap_seed)
        lo, hi = S.percentile_interval(reps)
        ci = {"ci_low": lo, "ci_high": hi}
        if replicates_out is not None:
            replicates_out[task.name] = (mean["score"], reps)
    return {
        "category": task.category, "kind": task.kind, "metric": task.metric, "n": len(rows),
        **({"labels": task.labels} if task.kind == "classification" else {}),
        "shots": k, "demo_selection": selection, "scoring": "restricted" if restricted else "generate",
        "seeds": per_seed, "mean": mean, "std": std,
        "score": mean["score"], "score_std": std["score"], **ci,
        "unparseable_rate": mean["unparseable_rate"],
        "wall_s": round(sum(m["wall_s"] for m in per_seed.values()), 3),
        "resumed_seeds": reused,
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
    resume: bool = True,
    max_chars: int | None = None,
    bootstrap: int = S.DEFAULT_RESAMPLES,
    bootstrap_seed: int = S.DEFAULT_SEED,
) -> dict[str, Any]:
    """Evaluate ``adapter`` on ``tasks``; write ``predictions/`` and ``metrics.json`` under ``out_dir``.

    ``shots=None`` uses each task's own k. ``limit`` scores a stratified subsample (fixed seed 42) of
    each evaluation split; ``max_new_tokens`` overrides the tasks' generation length (smoke tests);
    ``max_chars`` cuts every test text at that many characters (the same cut for every model), and the
    demonstrations of classification tasks (a fine-grained demonstration's tuples name spans of its text).
    The SentiBench score is the unweighted mean of the task scores that ran. With ``out_dir`` and
    ``resume`` (the default), every (task, seed) finished by an earlier call with the same model and
    settings is read back instead of recomputed (see the module doc); ``resume=False`` recomputes all.
    ``bootstrap`` resamples of each task's items (0: none; seeded with ``bootstrap_seed``) give 95%
    percentile intervals per task (``ci_low``/``ci_high``) and for the mean over tasks
    (``sentibench_score_ci_low``/``_high``) and per category (``categories_ci``: category -> [low, high]);
    see :mod:`sentidistill.bench.stats`.
    """
    task_objs = [t if isinstance(t, Task) else get_task(t) for t in tasks]
    out = Path(out_dir) if out_dir is not None else None
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    fingerprint = adapter_fingerprint(adapter) if out is not None and resume else None
    reps: dict[str, Any] = {}
    for task in task_objs:
        results[task.name] = run_task(
            adapter, task, shots=shots, seeds=seeds, limit=limit, scoring=scoring, data_dir=data_dir,
            demo_selection=demo_selection, out_dir=out, max_new_tokens=max_new_tokens, resume=resume,
            fingerprint=fingerprint, max_chars=max_chars, bootstrap=bootstrap, bootstrap_seed=bootstrap_seed,
            replicates_out=reps,
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
    overall_ci: dict[str, Any] = {}
    if bootstrap and reps and len(reps) == len(results):
        mean_ci = S.mean_interval(reps)
        overall_ci = {"sentibench_score_ci_low": mean_ci.low, "sentibench_score_ci_high": mean_ci.high}
        by_cat = {c: S.mean_interval({n: reps[n] for n in reps if cats[n] == c}) for c in dict.fromkeys(cats.values())}
        overall_ci["categories_ci"] = {c: [iv.low, iv.high] for c, iv in by_cat.items()}
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
        **overall_ci,
        "bootstrap": {"method": "percentile bootstrap over test items (mean over tasks: items resampled "
                                "within each task)", "confidence": S.DEFAULT_CONFIDENCE,
                      "n_resamples": bootstrap, "seed": bootstrap_seed} if bootstrap else None,
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
