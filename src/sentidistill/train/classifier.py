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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from sentidistill.config import TrainingConfig
from sentidistill.errors import InputError
from sentidistill.train.arguments import ConfigArguments
from sentidistill.train.losses import LOSSES, LossInputs

log = logging.getLogger(__name__)

LABEL_NAMES = ["soft_labels", "task_ids", "teacher_label"]


def task_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks of a soft-label corpus (rows of :func:`sentidistill.data.soft_label_corpus.read_soft_labels`)
    in first-appearance order: ``[{"name", "labels", "words"}]``, the label words being the benchmark's
    verbalizers where the task is registered with the same label set, else the label names. The classifier
    student builds one head per entry (:func:`sentidistill.students.classifier.build_classifier`).

    Raises:
        InputError: a task appears with two different label sets.
    """
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


def soft_label_eval_steps(training: TrainingConfig, n_train: int) -> int:
    """Evaluation (and checkpoint) cadence: ``training.eval_steps``, default twice per epoch (at least 10)."""
    steps_per_epoch = max(1, -(-n_train // (training.batch_size * training.gradient_accumulation_steps)))
    return training.eval_steps or max(10, steps_per_epoch // 2)


@dataclass
class SoftLabelTrainingArguments(ConfigArguments, TrainingArguments):
    """Arguments of both soft-label methods: the dev slice is evaluated every ``eval_steps`` and a checkpoint
    written at each evaluation (``save_steps`` = ``eval_steps``); the best checkpoint by dev
    ``teacher_agreement`` is kept and loaded at the end, and training stops after ``early_stopping_patience``
    evaluations without a gain. Batches are drawn at random (tasks mixed)."""

    early_stopping_patience: int = field(default=3, metadata={"help": "Evaluations without a gain before stopping."})
    temperature: float = field(default=1.0, metadata={"help": "Distillation temperature T of the soft-label KL."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "The collator picks the label columns."})

    @classmethod
    def adapt(cls, kwargs: dict[str, Any], training: TrainingConfig) -> dict[str, Any]:
        every = training.eval_steps or training.save_steps  # the wrappers pass soft_label_eval_steps(...)
        return kwargs | {"eval_strategy": "steps", "eval_steps": every, "save_steps": every,
                         "train_sampling_strategy": "random", "logging_first_step": False,
                         "save_total_limit": max(2, training.save_total_limit), "load_best_model_at_end": True,
                         "metric_for_best_model": "teacher_agreement", "greater_is_better": True,
                         "disable_tqdm": True, "report_to": list(training.report_to)}


@dataclass
class SoftLabelClassifierArguments(SoftLabelTrainingArguments):
    """The classifier student's loss: ``kl_weight · T²·KL(teacher ‖ student) + ce_weight · CE(gold)``."""

    kl_weight: float = field(default=1.0, metadata={"help": "Weight of the soft-label KL term."})
    ce_weight: float = field(default=0.0, metadata={"help": "Weight of CE on gold labels (a corpus gold column)."})

    @classmethod
    def adapt(cls, kwargs: dict[str, Any], training: TrainingConfig) -> dict[str, Any]:
        return super().adapt(kwargs, training) | {"label_names": list(LABEL_NAMES)}


class DevAgreementMixin:
    """Early stopping on the dev slice's agreement with the teacher, for the soft-label trainers: the dev slice is
    scored before training (not on a resumed run) and after it (the best checkpoint), and :meth:`summary` reports
    both with the best checkpoint. Subclasses define ``_label_arrays(eval_pred) -> (logits, task_ids,
    teacher_label)``."""

    tasks: list[dict[str, Any]]
    dev_before: dict[str, float]
    dev_after: dict[str, float]

    def _init_dev(self, tasks: list[dict[str, Any]]) -> None:
        from transformers import EarlyStoppingCallback

        self.tasks, self.dev_before, self.dev_after = tasks, {}, {}
        self.compute_metrics = self._agreement  # type: ignore[attr-defined]
        one_line_per_evaluation(self, Path(self.args.output_dir).parent.name)  # type: ignore[attr-defined]
        self.add_callback(EarlyStoppingCallback(early_stopping_patience=self.args.early_stopping_patience))  # type: ignore[attr-defined]

    def _agreement(self, ep: Any) -> dict[str, float]:
        logits, task_ids, teacher_label = self._label_arrays(ep)
        return agreement_metrics(np.asarray(logits), np.asarray(task_ids), np.asarray(teacher_label), self.tasks)

    def _label_arrays(self, ep: Any) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:
        self.dev_before = self.evaluate() if resume_from_checkpoint is None else {}  # type: ignore[attr-defined]
        out = super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)  # type: ignore[misc]
        self.dev_after = self._best_evaluation() or self.evaluate()  # type: ignore[attr-defined]
        return out

    def _best_evaluation(self) -> dict[str, float] | None:
        """The logged evaluation of the checkpoint training ended on (``load_best_model_at_end``: the best one),
        so that it is not evaluated a second time (a generative student's dev slice generates: minutes)."""
        state = self.state  # type: ignore[attr-defined]
        if not (self.args.load_best_model_at_end and state.best_global_step):  # type: ignore[attr-defined]
            return None
        return next((h for h in reversed(state.log_history)
                     if h.get("step") == state.best_global_step and "eval_teacher_agreement" in h), None)

    def summary(self) -> dict[str, Any]:
        """This method's part of ``training_summary.json``: best checkpoint and dev agreement before/after."""
        keep = lambda m: {k: v for k, v in m.items() if "agreement" in k or "accuracy" in k}  # noqa: E731
        state = self.state  # type: ignore[attr-defined]
        return {"best_checkpoint": state.best_model_checkpoint, "best_teacher_agreement": state.best_metric,
                "dev_before": keep(self.dev_before), "dev_after": keep(self.dev_after)}


class SoftLabelClassifierTrainer(DevAgreementMixin, Trainer):
    """``Trainer`` with the label-set losses ``kl_weight · label_kl + ce_weight · label_ce`` (loss registry,
    :mod:`sentidistill.train.losses`; weights and temperature from ``self.args``), early-stopped on dev agreement.
    ``tasks``: the corpus's task table (:func:`task_table`), in the order of the model's heads."""

    arguments_class: ClassVar[type] = SoftLabelClassifierArguments

    def __init__(self, model: Any = None, args: SoftLabelClassifierArguments | None = None, *,
                 tasks: list[dict[str, Any]], processing_class: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("data_collator", SoftLabelCollator(processing_class))
        super().__init__(model=model, args=args, processing_class=processing_class, **kwargs)
        self._init_dev(tasks)

    def _label_arrays(self, ep: Any) -> tuple[Any, Any, Any]:
        logits = ep.predictions[0] if isinstance(ep.predictions, tuple) else ep.predictions
        _, task_ids, teacher_label = ep.label_ids
        return logits, task_ids, teacher_label

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    task_ids=inputs["task_ids"], token_type_ids=inputs.get("token_type_ids"))
        args: SoftLabelClassifierArguments = self.args  # type: ignore[assignment]
        batch = {**inputs, "label_mask": out.label_mask, "temperature": args.temperature}
        li = LossInputs(logits=out.logits, batch=batch)
        loss = out.logits.new_zeros(())
        for name, w in {"label_kl": args.kl_weight, "label_ce": args.ce_weight}.items():
            if w > 0:
                value, n = LOSSES.get(name)(li)
                if int(n) > 0:
                    loss = loss + w * value
        return (loss, out) if return_outputs else loss


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


def train_classifier(
    corpus: str | Path, out_dir: str | Path, cfg: Any, *, seed: int = 42, init_from: str | None = None,
) -> Path:
    """Train a classifier student on a soft-label ``corpus``; returns ``out_dir/final``.

    ``cfg`` is a :class:`sentidistill.config.ClassifierConfig` (encoder, head init, loss weights, temperature,
    max length, patience, and ``training``: a :class:`~sentidistill.config.TrainingConfig`). ``init_from``
    continues from a saved classifier instead of building one on ``cfg.encoder``. Resumes from the last
    checkpoint in ``out_dir/checkpoints``. Writes ``out_dir/final`` (safetensors) with its
    ``training_summary.json`` (steps, best dev agreement before/after, wall seconds). Raises ``InputError`` when
    the corpus has no training or no dev rows, ConfigError for a training setting the method cannot honour."""
    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.students.classifier import ClassifierKind, build_classifier, load_classifier
    from sentidistill.train.methods import build_trainer, save_final, train_resumable

    t0 = time.perf_counter()
    corpus, out_dir = Path(corpus), Path(out_dir)
    rows = read_soft_labels(corpus)
    train_rows, dev_rows = split_corpus(rows, corpus)
    tasks = task_table(rows)
    if init_from:
        model, tok = load_classifier(init_from)
        missing = [t["name"] for t in tasks if t["name"] not in model.task_names]
        if missing:
            raise InputError(f"{init_from} has no head for tasks {missing}", field="init_from")
    else:
        model, tok = build_classifier(cfg.encoder, tasks, head_init=cfg.head_init, dropout=cfg.dropout,
                                      max_length=cfg.max_length, seed=seed, pooling=cfg.pooling)
    names = model.task_names
    # The model's length, not cfg.max_length: build_classifier cut it to the encoder's positions.
    train_ds = encode_rows(train_rows, tok, names, model.k_max, model.config.max_seq_length)
    dev_ds = encode_rows(dev_rows, tok, names, model.k_max, model.config.max_seq_length)
    every = soft_label_eval_steps(cfg.training, len(train_ds))
    trainer = build_trainer(
        "soft_label_classifier", cfg.training, out_dir, seed=seed, model=model, train_dataset=train_ds,
        eval_dataset=dev_ds, processing_class=tok, trainer_kwargs={"tasks": tasks},
        eval_steps=every, save_steps=every, per_device_eval_batch_size=128, kl_weight=cfg.kl_weight,
        ce_weight=cfg.ce_weight, temperature=cfg.temperature, early_stopping_patience=cfg.patience)
    run = train_resumable(trainer, out_dir)
    summary = {"method": "soft_label_classifier", "train_rows": len(train_ds), "dev_rows": len(dev_ds),
               "tasks": [t["name"] for t in tasks], **run, **trainer.summary(),
               "wall_s": round(time.perf_counter() - t0, 2), "training": cfg.training.model_dump(mode="json")}
    log.info("%s: %s", out_dir.name, json.dumps({k: summary[k] for k in ("global_step", "best_teacher_agreement")}))
    return save_final(trainer, out_dir, summary, tokenizer=tok, kind=ClassifierKind.kind)
