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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentidistill.errors import InputError
from sentidistill.finetune.cell import CellConfig, cell_is_done, run_cell
from sentidistill.finetune.data import FSA_DATASETS
from sentidistill.finetune.results import FinetuneResults
from sentidistill.utils.io import atomic_write_json

if TYPE_CHECKING:
    from sentidistill.config import FinetuneEvalConfig

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


@dataclass
class FinetuneSettings:
    """Every setting of a fine-tuning evaluation (paper 2's protocol by default), typed.

    The pipeline's :class:`~sentidistill.config.FinetuneEvalConfig` gives the first fields
    (:meth:`from_config`); the rest are command-line knobs (``sentidistill finetune-eval``).
    ``eval_every_epochs``: decode dev for checkpoint selection every N epochs (paper: 1; on CPU, dev decoding can
    cost as much as training). ``max_parallel``: cells at once (default one per GPU, or half the cores on CPU;
    above the GPU count, GPUs are shared). ``baseline``: the model the others are compared with (default: the
    first). ``limit_*`` cap the data (smoke runs); ``limit_dev`` samples dev only (seeded)."""

    datasets: Sequence[str] = ("rest14", "laptop14")
    seeds: Sequence[int] = DEFAULT_SEEDS
    train_fractions: Sequence[float] = (1.0,)
    epochs: float = 20.0
    learning_rate: float = 3e-4
    batch_size: int = 16
    weight_decay: float = 0.01
    max_parallel: int | None = None
    data_dir: str | Path | None = None
    eval_batch_size: int = 32
    max_new_tokens: int = 100
    limit_train: int | None = None
    limit_eval: int | None = None
    limit_dev: int | None = None
    precision: str = "fp32"
    eval_every_epochs: int = 1
    baseline: str | None = None
    write_report: bool = True

    @classmethod
    def from_config(cls, cfg: FinetuneEvalConfig, **extra: Any) -> FinetuneSettings:
        """The settings of a pipeline's ``finetune`` section (``extra``: the other fields, e.g. ``data_dir``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.model_dump().items() if k in names}, **extra)


def run_finetune_eval(
    models: dict[str, str],
    datasets: Sequence[str] = ("rest14", "laptop14"),
    seeds: Sequence[int] = DEFAULT_SEEDS,
    train_fractions: Sequence[float] = (1.0,),
    out_dir: str | Path = "finetune_eval",
    settings: FinetuneSettings | None = None,
    **options: Any,
) -> FinetuneResults:
    """Fine-tune every model on every dataset/fraction/seed and score it; finished cells are skipped.

    ``models``: display name -> model spec (``builtin:minilm-encdec``, an HF id/path, a checkpoint dir).
    ``datasets``: FSA names (rest14, laptop14, rest16, laptop16) or ``atsa:/folder`` / ``acsa:/folder``.
    The other settings are ``settings`` (a :class:`FinetuneSettings`) or its fields as keywords (``options``).
    Cells that fail are reported in ``FinetuneResults.failed`` and the run goes on; rerunning retries them.
    Raises InputError for bad model names, no seeds, or a dataset or model that cannot be found.
    """
    if settings is None:
        settings = FinetuneSettings(datasets=datasets, seeds=seeds, train_fractions=train_fractions, **options)
    elif options:
        settings = replace(settings, **options)
    return run_finetune(models, settings, out_dir)


def _cell_configs(models: dict[str, str], s: FinetuneSettings, out_dir: Path,
                  ds_names: list[str]) -> list[CellConfig]:
    """One :class:`CellConfig` per model x dataset x train fraction x seed."""
    return [
        CellConfig(model_name=mname, model_spec=str(spec), dataset=dref,
                   data_dir=str(s.data_dir) if s.data_dir is not None else None,
                   cell_dir=str(cell_dir(out_dir, mname, dname, frac, seed)), train_fraction=float(frac),
                   seed=int(seed), epochs=s.epochs, learning_rate=s.learning_rate, batch_size=s.batch_size,
                   weight_decay=s.weight_decay, eval_batch_size=s.eval_batch_size, max_new_tokens=s.max_new_tokens,
                   limit_train=s.limit_train, limit_eval=s.limit_eval, limit_dev=s.limit_dev,
                   precision=s.precision, eval_every_epochs=s.eval_every_epochs)
        for mname, spec in models.items()
        for dname, dref in zip(ds_names, s.datasets, strict=True)
        for frac in s.train_fractions
        for seed in s.seeds
    ]


def _run_cells(todo: list[CellConfig], max_parallel: int | None) -> list[dict[str, Any]]:
    """Run the unfinished cells (in this process, or in spawned workers); returns the failed ones."""
    failed: list[dict[str, Any]] = []
    if not todo:
        return failed
    workers, devices, threads = plan_parallelism(max_parallel, len(todo))
    if workers == 1:
        # In-process: no spawn cost, and tracebacks stay readable.
        for c in todo:
            if devices:
                c.device = devices[0]
            if threads and c.num_threads is None:
                c.num_threads = threads
            _run_one(c, failed, lambda c=c: run_cell(c))
        return failed
    ctx = mp.get_context("spawn")
    queue = None
    if devices:
        queue = ctx.Manager().Queue()
        for d in devices:
            queue.put(d)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(queue, threads)) as pool:
        pending: dict[Future, CellConfig] = {pool.submit(_run_in_worker, c): c for c in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                _run_one(pending.pop(fut), failed, fut.result)
    return failed


def run_finetune(models: dict[str, str], settings: FinetuneSettings, out_dir: str | Path) -> FinetuneResults:
    """:func:`run_finetune_eval` with its settings object: plan the cells, run the unfinished ones, collect
    ``results.json`` (and the report unless ``settings.write_report`` is false)."""
    from sentidistill.data import default_data_dir

    if not models:
        raise InputError("no models given", field="models", expected="name=SPEC pairs")
    for name in models:
        if not _NAME.match(name):
            raise InputError(f"bad model name '{name}'", field="models",
                             expected="letters, digits, '_', '-', '.' (it names a folder)")
    if not settings.seeds:
        raise InputError("no seeds given", field="seeds")
    s = replace(settings, data_dir=settings.data_dir if settings.data_dir is not None else default_data_dir())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds_names = [d.split("/")[-1] if ":" not in d else Path(d.split(":", 1)[1]).name for d in s.datasets]
    configs = _cell_configs(models, s, out_dir, ds_names)
    todo = [c for c in configs if not cell_is_done(c)]
    _check_inputs({c.model_name: c.model_spec for c in todo}, {c.dataset for c in todo}, s.data_dir)
    summary = {
        "models": list(models), "model_specs": dict(models), "datasets": ds_names, "seeds": list(s.seeds),
        "train_fractions": [float(f) for f in s.train_fractions], "epochs": s.epochs,
        "learning_rate": s.learning_rate, "batch_size": s.batch_size, "weight_decay": s.weight_decay,
        "max_new_tokens": s.max_new_tokens, "limit_train": s.limit_train, "limit_eval": s.limit_eval,
        "limit_dev": s.limit_dev, "eval_batch_size": s.eval_batch_size, "eval_every_epochs": s.eval_every_epochs,
        "baseline": s.baseline or next(iter(models)),
    }
    log.info("fine-tuning eval: %d cells, %d already finished", len(configs), len(configs) - len(todo))
    t0 = time.time()
    failed = _run_cells(todo, s.max_parallel)
    log.info("fine-tuning eval: %d cells run in %.0f s (%d failed)", len(todo), time.time() - t0, len(failed))

    wanted = {c.cell_dir for c in configs}
    cells = [c for c in _load_cells(out_dir)
             if str(cell_dir(out_dir, c["model"], c["dataset"], c["train_fraction"], c["seed"])) in wanted]
    results = FinetuneResults(out_dir=out_dir, cells=cells, models=list(models), datasets=ds_names,
                              seeds=[int(x) for x in s.seeds], train_fractions=[float(f) for f in s.train_fractions],
                              settings=summary, failed=failed)
    atomic_write_json(out_dir / "results.json", {"settings": summary, "cells": cells, "failed": failed})
    if s.write_report:
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
