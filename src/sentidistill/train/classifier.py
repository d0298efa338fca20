"""Training the ``classifier`` student on a soft-label corpus (multi-task, label-free, early-stopped).

The corpus is the Parquet file of :mod:`sentidistill.distill.soft_labels`: per text the teacher's calibrated
distribution over the task's labels, a class-balancing weight and a ``train``/``dev`` split. Training is
transformers' ``Trainer`` (so ``accelerate launch`` gives DDP, checkpoints resume, and the data order is
seeded), with the loss ``kl_weight · T²·KL(teacher ‖ student) + ce_weight · CE(gold)``
(``label_kl`` and ``label_ce`` of :mod:`sentidistill.train.losses`); batches mix tasks. Every ``eval_steps`` the student is scored on
the dev slice by its agreement with the teacher (macro-F1 of the student's arg-max against the teacher's
calibrated label, averaged over tasks, so a minority class counts as much as the majority): the best
checkpoint is kept and training stops after ``patience`` evaluations without a gain. No gold label is
needed; a ``gold`` column (label names), where a user has one, adds the CE term.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

LABEL_NAMES = ["soft_labels", "task_ids", "teacher_label"]


def _task_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks of a corpus in first-appearance order, with label names and label words (the benchmark's
    verbalizers where the task is registered)."""
    tasks: dict[str, dict[str, Any]] = {}
    for r in rows:
        name = r["task"]
        if name not in tasks:
            labels = list(r["labels"])
            words = labels
            try:
                from sentidistill.bench import get_task

                t = get_task(name)
                if list(t.labels) == labels:
                    words = [t.verbalizers[lab] for lab in labels]
            except Exception:  # a user's task not in the registry: label names are the words
                pass
            tasks[name] = {"name": name, "labels": labels, "words": words}
        elif list(r["labels"]) != tasks[name]["labels"]:
            raise InputError(f"task '{name}' has two label sets in the corpus", field="labels",
                             expected=str(tasks[name]["labels"]), got=r["labels"])
    return list(tasks.values())


def encode_rows(rows: list[dict[str, Any]], tokenizer: Any, task_names: list[str], k_max: int,
                max_length: int) -> Any:
    """Tokenised rows as a ``datasets.Dataset`` with ``input_ids``, ``attention_mask`` (+ ``token_type_ids``),
    ``task_ids``, ``soft_labels`` ``[K_max]`` (zero-padded), ``teacher_label``, ``weights``, ``gold`` (-100
    when absent)."""
    from datasets import Dataset

    from sentidistill.students.classifier import classifier_input

    texts = [classifier_input(r) for r in rows]
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    cols: dict[str, list[Any]] = {k: list(v) for k, v in enc.items()}
    cols["task_ids"] = [task_names.index(r["task"]) for r in rows]
    soft, teacher_label, gold = [], [], []
    for r in rows:
        p = [float(x) for x in r["probs"]]
        soft.append(p + [0.0] * (k_max - len(p)))
        teacher_label.append(int(np.argmax(p)))
        g = r.get("gold")
        gold.append(list(r["labels"]).index(g) if g in r["labels"] else -100)
    cols["soft_labels"], cols["teacher_label"], cols["gold"] = soft, teacher_label, gold
    cols["weights"] = [float(r.get("weight") or 1.0) for r in rows]
    return Dataset.from_dict(cols)


class SoftLabelCollator:
    """Pads token ids with the tokenizer; stacks the per-example label tensors."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tok_keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features[0]]
        batch = self.tokenizer.pad([{k: f[k] for k in tok_keys} for f in features], return_tensors="pt")
        batch["task_ids"] = torch.tensor([f["task_ids"] for f in features], dtype=torch.long)
        batch["soft_labels"] = torch.tensor([f["soft_labels"] for f in features], dtype=torch.float32)
        batch["teacher_label"] = torch.tensor([f["teacher_label"] for f in features], dtype=torch.long)
        batch["gold"] = torch.tensor([f["gold"] for f in features], dtype=torch.long)
        batch["weights"] = torch.tensor([f["weights"] for f in features], dtype=torch.float32)
        return dict(batch)


def agreement_metrics(logits: np.ndarray, task_ids: np.ndarray, teacher_label: np.ndarray,
                      tasks: list[dict[str, Any]]) -> dict[str, float]:
    """Agreement of the student's arg-max with the teacher's label on the dev slice: per task macro-F1 over
    the task's label set (scikit-learn, zero_division=0) and accuracy, and their means over tasks
    (``teacher_agreement`` = mean macro-F1, the early-stopping metric)."""
    from sklearn.metrics import f1_score

    out: dict[str, float] = {}
    f1s, accs = [], []
    for i, t in enumerate(tasks):
        idx = task_ids == i
        if not idx.any():
            continue
        k = len(t["labels"])
        pred = logits[idx, :k].argmax(-1)
        f1 = float(f1_score(teacher_label[idx], pred, labels=list(range(k)), average="macro", zero_division=0))
        acc = float((pred == teacher_label[idx]).mean())
        out[f"agreement_f1_{t['name']}"] = f1
        f1s.append(f1)
        accs.append(acc)
    out["teacher_agreement"] = float(np.mean(f1s)) if f1s else 0.0
    out["teacher_accuracy"] = float(np.mean(accs)) if accs else 0.0
    return out


def _trainer_class() -> type:
    """``Trainer`` with the label-set losses: ``kl_weight · label_kl + ce_weight · label_ce`` (both from the
    loss registry, :mod:`sentidistill.train.losses`), the weights and temperature set per run."""
    from transformers import Trainer

    from sentidistill.train.losses import LOSSES, LossInputs

    class SoftLabelTrainer(Trainer):
        loss_weights: dict[str, float] = {}  # noqa: RUF012 - set per instance in train_classifier
        temperature: float = 1.0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        task_ids=inputs["task_ids"], token_type_ids=inputs.get("token_type_ids"))
            batch = {**inputs, "label_mask": out.label_mask, "temperature": self.temperature}
            li = LossInputs(logits=out.logits, batch=batch)
            loss = out.logits.new_zeros(())
            for name, w in self.loss_weights.items():
                if w > 0:
                    value, n = LOSSES.get(name)(li)
                    if int(n) > 0:
                        loss = loss + w * value
            return (loss, out) if return_outputs else loss

    return SoftLabelTrainer


def split_corpus(rows: list[dict[str, Any]], corpus: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, dev rows) of a soft-label corpus. Raises InputError when either is empty."""
    train_rows = [r for r in rows if r.get("split", "train") == "train"]
    dev_rows = [r for r in rows if r.get("split") == "dev"]
    if not train_rows:
        raise InputError(f"{corpus}: no training rows", field="split", expected="rows with split 'train'")
    if not dev_rows:
        raise InputError(f"{corpus}: no dev rows for early stopping", field="split",
                         expected="rows with split 'dev' (soft_labels.dev_fraction > 0)")
    return train_rows, dev_rows


def early_stopping_args(out_dir: Path, tc: Any, n_train: int, *, seed: int, eval_batch_size: int,
                        label_names: list[str] | None = None) -> Any:
    """``TrainingArguments`` for soft-label training: evaluation and checkpoints every ``tc.eval_steps``
    (default: twice per epoch), the best checkpoint by dev ``teacher_agreement`` kept and loaded at the end."""
    from transformers import TrainingArguments

    from sentidistill.train.engine import resolve_precision

    precision = resolve_precision(tc.precision)
    steps_per_epoch = max(1, -(-n_train // (tc.batch_size * tc.gradient_accumulation_steps)))
    eval_steps = tc.eval_steps or max(10, steps_per_epoch // 2)
    return TrainingArguments(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=eval_batch_size, gradient_accumulation_steps=tc.gradient_accumulation_steps,
        learning_rate=tc.learning_rate, num_train_epochs=tc.epochs, max_steps=tc.max_steps,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of total steps
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        save_total_limit=max(2, tc.save_total_limit), load_best_model_at_end=True,
        metric_for_best_model="teacher_agreement", greater_is_better=True, logging_steps=tc.logging_steps,
        remove_unused_columns=False, label_names=label_names, report_to=tc.report_to or [], seed=seed,
        data_seed=seed, dataloader_num_workers=tc.dataloader_num_workers,
        use_cpu=not torch.cuda.is_available(), bf16=precision == "bf16", fp16=precision == "fp16",
        disable_tqdm=True,
    )


def one_line_per_evaluation(trainer: Any, name: str) -> None:
    """Replace the Trainer's console output (its raw log dicts, printed by ``PrinterCallback`` when tqdm is
    off) by one INFO line per evaluation: step, dev agreement with the teacher, the best so far. With the root
    logger at DEBUG (``sentidistill -v`` / ``--verbose``) the Trainer's own output stays as well."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)

    class _EvalLine(TrainerCallback):
        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                        **_: Any) -> None:
            agree = (metrics or {}).get("eval_teacher_agreement")
            best = max((x for x in (state.best_metric, agree) if x is not None), default=None)
            total = state.max_steps or "?"
            log.info("%s: step %s/%s, dev agreement with the teacher %s (best %s)", name, state.global_step, total,
                     f"{agree:.3f}" if agree is not None else "-", f"{best:.3f}" if best is not None else "-")

    trainer.add_callback(_EvalLine())


def fit_early_stopped(trainer: Any, out_dir: Path, t0: float, **info: Any) -> dict[str, Any]:
    """Evaluate on dev, train (resuming from the last checkpoint in ``out_dir/checkpoints``), evaluate the
    best checkpoint; returns the summary (steps, dev agreement before/after, wall seconds) after writing it to
    ``out_dir/training_summary.json``. The console gets one line per evaluation
    (:func:`one_line_per_evaluation`)."""
    from transformers.trainer_utils import get_last_checkpoint

    one_line_per_evaluation(trainer, out_dir.name)
    ckpt = out_dir / "checkpoints"
    last = get_last_checkpoint(str(ckpt)) if ckpt.is_dir() else None
    before = trainer.evaluate() if last is None else {}
    trainer.train(resume_from_checkpoint=last)
    after = trainer.evaluate()
    keep = lambda m: {k: v for k, v in m.items() if "agreement" in k or "accuracy" in k}  # noqa: E731
    summary = {
        **info, "global_step": trainer.state.global_step, "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_teacher_agreement": trainer.state.best_metric, "dev_before": keep(before), "dev_after": keep(after),
        "resumed_from": last, "wall_s": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(out_dir / "training_summary.json", summary)
    log.info("%s: %s", out_dir.name, json.dumps({k: summary[k] for k in ("global_step", "best_teacher_agreement")}))
    return summary


def train_classifier(
    corpus: str | Path, out_dir: str | Path, cfg: Any, *, seed: int = 42, init_from: str | None = None,
) -> Path:
    """Train a classifier student on a soft-label ``corpus``; returns ``out_dir/final``.

    ``cfg`` is a :class:`sentidistill.config.ClassifierConfig` (encoder, head init, loss weights, temperature,
    max length, patience, and ``training``: a :class:`~sentidistill.config.TrainingConfig`). ``init_from``
    continues from a saved classifier instead of building one on ``cfg.encoder``. Resumes from the last
    checkpoint in ``out_dir/checkpoints``. Writes ``out_dir/final`` (safetensors) and
    ``out_dir/training_summary.json`` (steps, best dev agreement before/after, wall seconds). Raises
    ``InputError`` when the corpus has no training or no dev rows."""
    from transformers import EarlyStoppingCallback

    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.students.classifier import build_classifier, load_classifier, save_classifier

    t0 = time.perf_counter()
    corpus, out_dir = Path(corpus), Path(out_dir)
    rows = read_soft_labels(corpus)
    train_rows, dev_rows = split_corpus(rows, corpus)
    tasks = _task_table(rows)
    if init_from:
        model, tok = load_classifier(init_from)
        missing = [t["name"] for t in tasks if t["name"] not in model.task_names]
        if missing:
            raise InputError(f"{init_from} has no head for tasks {missing}", field="init_from")
    else:
        model, tok = build_classifier(cfg.encoder, tasks, head_init=cfg.head_init, dropout=cfg.dropout,
                                      max_length=cfg.max_length, seed=seed, pooling=cfg.pooling)
    names = model.task_names
    train_ds = encode_rows(train_rows, tok, names, model.k_max, cfg.max_length)
    dev_ds = encode_rows(dev_rows, tok, names, model.k_max, cfg.max_length)
    args = early_stopping_args(out_dir, cfg.training, len(train_ds), seed=seed, eval_batch_size=128,
                               label_names=LABEL_NAMES)

    def compute_metrics(ep: Any) -> dict[str, float]:
        logits = ep.predictions[0] if isinstance(ep.predictions, tuple) else ep.predictions
        _, task_ids, teacher_label = ep.label_ids
        return agreement_metrics(np.asarray(logits), np.asarray(task_ids), np.asarray(teacher_label), tasks)

    trainer = _trainer_class()(
        model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds, data_collator=SoftLabelCollator(tok),
        compute_metrics=compute_metrics, callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience)],
    )
    trainer.loss_weights = {"label_kl": cfg.kl_weight, "label_ce": cfg.ce_weight}
    trainer.temperature = cfg.temperature
    fit_early_stopped(trainer, out_dir, t0, train_rows=len(train_ds), dev_rows=len(dev_ds),
                      tasks=[t["name"] for t in tasks])
    final = save_classifier(trainer.model, tok, out_dir / "final")
    return final
