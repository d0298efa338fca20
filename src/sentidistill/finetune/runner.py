"""Run the fine-tuning table: models x datasets x train fractions x seeds, in parallel, resumable.

Layout of ``out_dir``::

    cells/<model>/<dataset>/frac<f>/seed<s>/metrics.json       one finished cell (never recomputed)
    cells/<model>/<dataset>/frac<f>/seed<s>/predictions.jsonl  test-set generations, parsed pairs
    results.json                                               every finished cell + the run settings
    finetune_report.md / finetune_report.html                  tables, paired statistics, curves

Workers are spawned processes (CUDA and tokenizers do not survive ``fork``): one per GPU, each pinned
to its own device, or on CPU as many as the cores allow with torch's threads split between them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from sentidistill.errors import InputError
from sentidistill.finetune.cell import CellConfig, cell_is_done, run_cell
from sentidistill.finetune.data import FSA_DATASETS
from sentidistill.finetune.results import FinetuneResults
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

PAPER_SEEDS = (42, 52, 62, 72, 82, 142, 152, 162, 172, 182)
DEFAULT_SEEDS = PAPER_SEEDS[:5]
SUITES: dict[str, tuple[str, ...]] = {
    "fsa": tuple(FSA_DATASETS),
    "atsa": ("rest14", "laptop14"),
    "acsa": ("rest16", "laptop16"),
}
CURVE_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # the data-efficiency curve
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def fraction_dir(f: float) -> str:
    return f"frac{f:g}"


def cell_dir(out_dir: str | Path, model: str, dataset: str, fraction: float, seed: int) -> Path:
    return Path(out_dir) / "cells" / model / dataset / fraction_dir(fraction) / f"seed{seed}"


def _init_worker(device_queue: Any, threads: int | None) -> None:
    """Runs once in each spawned worker: take a device for the worker's lifetime, split CPU threads."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = device_queue.get() if device_queue is not None else None
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


_WORKER_DEVICE: str | None = None


def _run_in_worker(cfg: CellConfig) -> dict[str, Any]:
    if _WORKER_DEVICE is not None and cfg.device is None:
        cfg.device = _WORKER_DEVICE
    return run_cell(cfg)


def plan_parallelism(max_parallel: int | None, n_cells: int) -> tuple[int, list[str] | None, int | None]:
    """(workers, devices or None, torch threads per worker) for this machine."""
    import torch

    if torch.cuda.is_available():
        # Default one worker per GPU; a larger max_parallel shares GPUs round-robin (small students
        # leave most of a GPU idle, so 2-4 cells per GPU finish the table sooner).
        n_gpu = torch.cuda.device_count()
        workers = max(1, min(max_parallel or n_gpu, n_cells))
        return workers, [f"cuda:{i % n_gpu}" for i in range(workers)], None
    cores = os.cpu_count() or 1
    workers = max(1, min(max_parallel or max(1, cores // 2), n_cells, cores))
    return workers, None, max(1, cores // workers)


def _load_cells(out_dir: Path) -> list[dict[str, Any]]:
    import json

    cells = []
    for p in sorted((out_dir / "cells").glob("*/*/*/*/metrics.json")):
        try:
            cells.append(json.loads(p.read_text(encoding="utf-8")))
        except ValueError as exc:  # atomic writes make this unlikely; say where if it happens
            raise InputError(f"unreadable cell metrics ({exc})", path=p) from None
    return cells


def load_results(out_dir: str | Path) -> FinetuneResults:
    """Read back the finished cells of a run directory (e.g. for a report)."""
    import json

    out_dir = Path(out_dir)
    cells = _load_cells(out_dir)
    settings: dict[str, Any] = {}
    if (out_dir / "results.json").is_file():
        settings = json.loads((out_dir / "results.json").read_text(encoding="utf-8")).get("settings", {})
    return FinetuneResults(
        out_dir=out_dir, cells=cells,
        models=settings.get("models") or sorted({c["model"] for c in cells}),
        datasets=settings.get("datasets") or sorted({c["dataset"] for c in cells}),
        seeds=settings.get("seeds") or sorted({c["seed"] for c in cells}),
        train_fractions=settings.get("train_fractions") or sorted({c["train_fraction"] for c in cells}),
        settings=settings,
    )


def run_finetune_eval(
    models: dict[str, str],
    datasets: Sequence[str] = ("rest14", "laptop14"),
    seeds: Sequence[int] = DEFAULT_SEEDS,
    train_fractions: Sequence[float] = (1.0,),
    out_dir: str | Path = "finetune_eval",
    *,
    epochs: float = 20.0,
    lr: float = 3e-4,
    batch_size: int = 16,
    weight_decay: float = 0.01,
    max_parallel: int | None = None,
    data_dir: str | Path | None = None,
    eval_batch_size: int = 32,
    max_new_tokens: int = 100,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    limit_dev: int | None = None,
    precision: str = "fp32",
    eval_every_epochs: int = 1,
    baseline: str | None = None,
    write_report: bool = True,
) -> FinetuneResults:
    """Fine-tune every model on every dataset/fraction/seed and score it; finished cells are skipped.

    ``models``: display name -> model spec (``builtin:minilm-encdec``, an HF id/path, a checkpoint dir).
    ``datasets``: FSA names (rest14, laptop14, rest16, laptop16) or ``atsa:/folder`` / ``acsa:/folder``.
    ``eval_every_epochs``: decode dev for checkpoint selection every N epochs (paper: 1; on CPU, dev
    decoding can cost as much as training). ``max_parallel``: cells at once (default one per GPU, or
    half the cores on CPU; above the GPU count, GPUs are shared).
    ``baseline``: the model the others are compared with (default: the first). Cells that fail are
    reported in ``FinetuneResults.failed`` and the run goes on; rerunning retries them.
    """
    from sentidistill.data import default_data_dir

    if not models:
        raise InputError("no models given", field="models", expected="name=SPEC pairs")
    for name in models:
        if not _NAME.match(name):
            raise InputError(f"bad model name '{name}'", field="models",
                             expected="letters, digits, '_', '-', '.' (it names a folder)")
    if not seeds:
        raise InputError("no seeds given", field="seeds")
    data_dir = data_dir if data_dir is not None else default_data_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds_names = [d.split("/")[-1] if ":" not in d else Path(d.split(":", 1)[1]).name for d in datasets]

    configs: list[CellConfig] = []
    for mname, spec in models.items():
        for dname, dref in zip(ds_names, datasets, strict=True):
            for frac in train_fractions:
                for seed in seeds:
                    configs.append(CellConfig(
                        model_name=mname, model_spec=str(spec), dataset=dref,
                        data_dir=str(data_dir) if data_dir is not None else None,
                        cell_dir=str(cell_dir(out_dir, mname, dname, frac, seed)), train_fraction=float(frac),
                        seed=int(seed), epochs=epochs, learning_rate=lr, batch_size=batch_size,
                        weight_decay=weight_decay, eval_batch_size=eval_batch_size,
                        max_new_tokens=max_new_tokens, limit_train=limit_train, limit_eval=limit_eval,
                        limit_dev=limit_dev,
                        precision=precision, eval_every_epochs=eval_every_epochs))
    todo = [c for c in configs if not cell_is_done(c)]
    _check_inputs({c.model_name: c.model_spec for c in todo}, {c.dataset for c in todo}, data_dir)
    settings = {
        "models": list(models), "model_specs": dict(models), "datasets": ds_names, "seeds": list(seeds),
        "train_fractions": [float(f) for f in train_fractions], "epochs": epochs, "learning_rate": lr,
        "batch_size": batch_size, "weight_decay": weight_decay, "max_new_tokens": max_new_tokens,
        "limit_train": limit_train, "limit_eval": limit_eval, "limit_dev": limit_dev,
        "eval_batch_size": eval_batch_size, "eval_every_epochs": eval_every_epochs, "baseline": baseline or next(iter(models)),
    }
    log.info("fine-tuning eval: %d cells, %d already finished", len(configs), len(configs) - len(todo))

    failed: list[dict[str, Any]] = []
    t0 = time.time()
    if todo:
        workers, devices, threads = plan_parallelism(max_parallel, len(todo))
        if workers == 1:
            # In-process: no spawn cost, and tracebacks stay readable.
            for c in todo:
                if devices:
                    c.device = devices[0]
                if threads and c.num_threads is None:
                    c.num_threads = threads
                _run_one(c, failed, lambda c=c: run_cell(c))
        else:
            ctx = mp.get_context("spawn")
            queue = None
            if devices:
                queue = ctx.Manager().Queue()
                for d in devices:
                    queue.put(d)
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(queue, threads)) as pool:
                pending: dict[Future, CellConfig] = {pool.submit(_run_in_worker, c): c for c in todo}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        c = pending.pop(fut)
                        _run_one(c, failed, fut.result)
    log.info("fine-tuning eval: %d cells run in %.0f s (%d failed)", len(todo), time.time() - t0, len(failed))

    wanted = {c.cell_dir for c in configs}
    cells = [c for c in _load_cells(out_dir)
             if str(cell_dir(out_dir, c["model"], c["dataset"], c["train_fraction"], c["seed"])) in wanted]
    results = FinetuneResults(out_dir=out_dir, cells=cells, models=list(models), datasets=ds_names,
                              seeds=[int(s) for s in seeds], train_fractions=[float(f) for f in train_fractions],
                              settings=settings, failed=failed)
    atomic_write_json(out_dir / "results.json", {"settings": settings, "cells": cells, "failed": failed})
    if write_report:
        from sentidistill.finetune.report import write_finetune_report

        write_finetune_report(results, out_dir)
    return results


def _check_inputs(models: dict[str, str], datasets: set[str], data_dir: str | Path | None) -> None:
    """Fail before any training when a dataset or a model cannot be found (not once per cell)."""
    from sentidistill.finetune.data import resolve_dataset

    for d in sorted(datasets):
        _, _, folder = resolve_dataset(d, data_dir)
        if not (folder / "train.json").is_file() or not (folder / "test.json").is_file():
            raise InputError("dataset folder lacks train.json/test.json", path=folder,
                             expected="train.json, test.json (dev.json, hard_test.json optional)")
    from transformers import AutoConfig

    from sentidistill.students import resolve_model_path

    for name, spec in models.items():
        try:
            AutoConfig.from_pretrained(resolve_model_path(spec))
        except InputError:
            raise
        except Exception as exc:  # transformers raises OSError/ValueError with long hub messages
            raise InputError(f"cannot load model '{name}' ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                             field="models", expected="builtin:minilm-encdec, a local model folder or an HF id",
                             got=spec) from None


def _run_one(cfg: CellConfig, failed: list[dict[str, Any]], call) -> None:
    label = f"{cfg.model_name}/{Path(cfg.cell_dir).parent.parent.name}/frac{cfg.train_fraction:g}/seed{cfg.seed}"
    try:
        r = call()
        log.info("cell %s done: F1 %.2f (%.0f s)", label, 100 * r["f1"], r["wall_seconds"])
    except InputError:
        raise  # bad data or model spec: every cell would fail the same way
    except Exception as exc:
        log.error("cell %s failed: %s: %s", label, type(exc).__name__, exc)
        failed.append({"cell": label, "error": f"{type(exc).__name__}: {exc}"})
