"""Train and evaluate one cell (model, dataset, train fraction, seed) of the fine-tuning table.

:func:`run_cell` is a top-level function of a picklable :class:`CellConfig`, so it runs the same in this
process or in a spawned worker. A finished cell has ``metrics.json`` (written atomically, last) and is
never recomputed; an interrupted cell restarts from scratch.

Protocol (paper 2's ``evaluation/atsa.py``): generation target ``term | polarity ; ...``; AdamW
(eps 1e-6), linear decay without warm-up; greedy decoding of at most 100 tokens; after every epoch the
dev set is decoded and the weights with the best dev micro-F1 are kept and tested on test + hard_test.
Encoder-decoder students read the bare sentence (as in the paper); causal students read an instruction
prompt and are trained with the loss on the answer tokens only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainingArguments

from sentidistill.finetune.data import FSAExample, Task, load_fsa_dataset, target_text, train_dev_split
from sentidistill.finetune.metrics import parse_pairs, score_predictions
from sentidistill.train.arguments import ConfigArguments
from sentidistill.utils.io import atomic_write_json, write_jsonl

log = logging.getLogger(__name__)

CAUSAL_INSTRUCTIONS: dict[str, str] = {
    "atsa": "List each aspect term of the sentence with its sentiment (positive, negative, neutral or "
            "conflict), as 'term | polarity ; term | polarity'.",
    "acsa": "List each aspect category of the sentence with its sentiment (positive, negative, neutral or "
            "conflict), as 'category | polarity ; category | polarity'.",
}


@dataclass
class CellConfig:
    """Everything one cell needs; plain data so that it pickles into a spawned worker."""

    model_name: str
    model_spec: str
    dataset: str
    cell_dir: str
    data_dir: str | None = None
    train_fraction: float = 1.0
    seed: int = 42
    epochs: float = 20.0
    learning_rate: float = 3e-4
    batch_size: int = 16
    eval_batch_size: int = 32
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6
    max_source_length: int = 256
    max_new_tokens: int = 100
    device: str | None = None  # None: cuda if available, else cpu
    num_threads: int | None = None  # torch intra-op threads (CPU); None leaves torch's default
    dev_fraction: float = 0.1  # carved from train when the dataset has no dev split
    limit_train: int | None = None  # for smoke tests: cap the (already subsampled) train set
    limit_eval: int | None = None  # cap dev and each test split
    limit_dev: int | None = None  # cap dev only (seeded sample): cheaper checkpoint selection, full test
    eval_every_epochs: int = 1
    precision: str = "fp32"  # fp32 | bf16 (GPU only)

    @property
    def metrics_path(self) -> Path:
        return Path(self.cell_dir) / "metrics.json"


def sample_dev(dev: list[FSAExample], limit: int | None, seed: int) -> list[FSAExample]:
    """At most ``limit`` dev sentences, a sample fixed by ``seed`` (all of them when ``limit`` is None)."""
    if not limit or len(dev) <= limit:
        return dev
    import random

    return random.Random(seed).sample(dev, limit)


def cell_is_done(cfg: CellConfig) -> bool:
    return cfg.metrics_path.is_file()


# -- features --------------------------------------------------------------------------------------

def causal_prompt(sentence: str, task: Task) -> str:
    return f"{CAUSAL_INSTRUCTIONS[task]}\nSentence: {sentence}\nAnswer:"


def build_features(lm, examples: Sequence[FSAExample], task: Task, max_source_length: int) -> list[dict]:
    """Token ids per example (:meth:`~sentidistill.students.base.Student.encode_pair`): students that need an
    instruction read :func:`causal_prompt`, the others the bare sentence; the loss is on the answer only."""
    return [lm.encode_pair(student_input(lm, ex.sentence, task), target_text(ex, task), max_source_length)
            for ex in examples]


def student_input(lm, sentence: str, task: Task) -> str:
    """What the student reads for ``sentence``: an instruction prompt, or the bare sentence (as in the paper)."""
    return causal_prompt(sentence, task) if lm.needs_instruction else sentence


def generate_answers(lm, examples: Sequence[FSAExample], task: Task, *, batch_size: int = 32,
                     max_new_tokens: int = 100, max_source_length: int = 256) -> list[str]:
    """Greedy answers for ``examples`` (batched; sorted by length so that padding stays small)."""
    texts = [student_input(lm, ex.sentence, task) for ex in examples]
    outs = lm.generate(texts, max_new_tokens, batch_size=batch_size, max_length=max_source_length,
                       truncation_side="right", eos_token_id=lm.first_eos(), sort_by_length=True)
    return [o.strip() for o in outs]


def dev_f1(lm, examples: Sequence[FSAExample], task: Task, cfg: CellConfig) -> float:
    """Micro-F1 of greedy answers on ``examples`` (the checkpoint-selection criterion)."""
    from sentidistill.finetune.metrics import gold_keys, micro_f1

    outs = generate_answers(lm, examples, task, batch_size=cfg.eval_batch_size,
                            max_new_tokens=cfg.max_new_tokens, max_source_length=cfg.max_source_length)
    preds = [parse_pairs(o, e.sentence, task).pairs for e, o in zip(examples, outs, strict=True)]
    return micro_f1([gold_keys(e, task) for e in examples], preds)["f1"]


# -- one cell --------------------------------------------------------------------------------------

class _LogLosses(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kw):
        if logs:
            log.info("step %s: %s", state.global_step, {k: v for k, v in logs.items() if k != "epoch"})


def _pick_device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class BestOnDev(TrainerCallback):
    """Decode dev every ``cfg.eval_every_epochs`` epochs (and after the last step); keep the weights with the best
    dev micro-F1 (a CPU copy) in ``self.best`` and each score in ``self.history``."""

    def __init__(self, lm: Any, dev: list[FSAExample], task: Task, cfg: CellConfig, dataset_name: str) -> None:
        self.lm, self.dev, self.task, self.cfg, self.dataset_name = lm, dev, task, cfg, dataset_name
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"f1": -1.0, "epoch": 0, "state": None}

    def on_epoch_end(self, args, state, control, model=None, **kw):
        epoch = round(state.epoch or 0)
        last = state.global_step >= state.max_steps
        if epoch % self.cfg.eval_every_epochs and not last:
            return control
        f1 = dev_f1(self.lm, self.dev, self.task, self.cfg)
        self.history.append({"epoch": epoch, "step": state.global_step, "dev_f1": f1})
        log.info("%s %s frac=%s seed=%s epoch %s: dev F1 %.4f", self.cfg.model_name, self.dataset_name,
                 self.cfg.train_fraction, self.cfg.seed, epoch, f1)
        if f1 > self.best["f1"]:
            self.best.update(f1=f1, epoch=epoch,
                             state={k: v.detach().to("cpu", copy=True) for k, v in self.lm.model.state_dict().items()})
        return control


@dataclass
class CellTrainingArguments(ConfigArguments, TrainingArguments):
    """Paper 2's fine-tuning protocol on top of the one config mapping: AdamW (eps ``adam_epsilon``), linear
    decay without warm-up, no checkpoints (the best-on-dev weights stay in memory), no loggers, random batches."""

    remove_unused_columns: bool = False

    @classmethod
    def adapt(cls, kwargs: dict[str, Any], training: Any) -> dict[str, Any]:
        return kwargs | {"optim": "adamw_torch", "lr_scheduler_type": "linear", "save_strategy": "no",
                         "logging_first_step": False, "disable_tqdm": True, "report_to": []}


def cell_training_arguments(cfg: CellConfig, n_train: int, use_cpu: bool) -> CellTrainingArguments:
    """The cell's ``TrainingArguments`` through :func:`sentidistill.train.arguments.trainer_arguments`."""
    from sentidistill.config import TrainingConfig

    training = TrainingConfig(epochs=cfg.epochs, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                              weight_decay=cfg.weight_decay, warmup_ratio=0.0, group_by_length=False,
                              logging_steps=max(1, n_train // cfg.batch_size // 4 or 1), precision="fp32")
    return CellTrainingArguments.from_config(training, cfg.cell_dir, seed=cfg.seed, adam_epsilon=cfg.adam_epsilon,
                                             output_dir=str(Path(cfg.cell_dir) / "trainer"), use_cpu=use_cpu,
                                             bf16=cfg.precision == "bf16" and not use_cpu)


def _cell_data(cfg: CellConfig) -> tuple[Any, list[FSAExample], list[FSAExample], list[FSAExample]]:
    """(dataset, train, dev, test) of a cell: the seeded train fraction, dev (capped, sampled), test + hard_test."""
    ds = load_fsa_dataset(cfg.dataset, cfg.data_dir)
    train, dev = train_dev_split(ds, cfg.seed, cfg.train_fraction, cfg.dev_fraction)
    test = [e for split in ("test", "hard_test") for e in ds.splits.get(split, [])[: cfg.limit_eval]]
    if cfg.limit_train:
        train = train[: cfg.limit_train]
    if cfg.limit_eval:
        dev = dev[: cfg.limit_eval]
    return ds, train, sample_dev(dev, cfg.limit_dev, cfg.seed), test


def _test_predictions(lm: Any, test: list[FSAExample], task: Task, cfg: CellConfig) -> tuple[dict, list[dict]]:
    """Greedy answers on ``test``: (scores of :func:`score_predictions`, one row per sentence)."""
    outputs = generate_answers(lm, test, task, batch_size=cfg.eval_batch_size,
                               max_new_tokens=cfg.max_new_tokens, max_source_length=cfg.max_source_length)
    rows = []
    for ex, out in zip(test, outputs, strict=True):
        parsed = parse_pairs(out, ex.sentence, task)
        rows.append({"id": ex.id, "split": ex.split, "sentence": ex.sentence,
                     "gold": target_text(ex, task), "output": out,
                     "pred_pairs": [list(p) for p in parsed.pairs], "valid": parsed.valid})
    return score_predictions(test, outputs, task), rows


def run_cell(cfg: CellConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.model_spec`` on one dataset/fraction/seed, test the best-on-dev weights, write results.

    Returns the metrics dict (also in ``<cell_dir>/metrics.json``); an already finished cell is read back.
    """
    import json

    if cell_is_done(cfg):
        return json.loads(cfg.metrics_path.read_text(encoding="utf-8"))

    import torch
    from transformers import Trainer, set_seed
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    from sentidistill.students import load_student

    t0, cpu0 = time.time(), time.process_time()
    hf_logging.disable_progress_bar()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = _pick_device(cfg.device)
    Path(cfg.cell_dir).mkdir(parents=True, exist_ok=True)
    ds, train, dev, test = _cell_data(cfg)

    set_seed(cfg.seed)
    lm = load_student(cfg.model_spec, device=device)
    lm.model.train()
    feats = build_features(lm, train, ds.task, cfg.max_source_length)
    best_on_dev = BestOnDev(lm, dev, ds.task, cfg, ds.name)
    args = cell_training_arguments(cfg, len(feats), use_cpu=not str(device).startswith("cuda"))
    trainer = Trainer(model=lm.model, args=args, train_dataset=feats,
                      data_collator=lm.collator(),  # pads the pre-encoded features (labels with -100)
                      callbacks=[best_on_dev, _LogLosses()])
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts to stdout; _LogLosses logs them
    train_out = trainer.train()
    train_s = time.time() - t0
    best = best_on_dev.best
    if best["state"] is not None:
        lm.model.load_state_dict(best["state"])
    best["state"] = None

    t1 = time.time()
    metrics, rows = _test_predictions(lm, test, ds.task, cfg)
    write_jsonl(Path(cfg.cell_dir) / "predictions.jsonl", rows)
    result = {
        "model": cfg.model_name, "model_spec": cfg.model_spec, "dataset": ds.name, "task": ds.task,
        "train_fraction": cfg.train_fraction, "seed": cfg.seed,
        "n_train": len(train), "n_dev": len(dev), "n_test": len(test),
        "best_epoch": best["epoch"], "best_dev_f1": best["f1"], "dev_history": best_on_dev.history,
        "train_loss": float(train_out.training_loss), "metrics": metrics,
        "f1": metrics["all"]["f1"],
        "device": str(device), "train_seconds": round(train_s, 2), "test_seconds": round(time.time() - t1, 2),
        "wall_seconds": round(time.time() - t0, 2), "cpu_seconds": round(time.process_time() - cpu0, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("cell_dir",)},
        "pid": os.getpid(),
    }
    atomic_write_json(cfg.metrics_path, result)  # last: its presence marks the cell as finished
    return result
