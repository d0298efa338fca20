"""Generative students (seq2seq, causal) learning a teacher's soft labels: the label-distribution KL.

For each text of a soft-label corpus (:mod:`sentidistill.data.soft_label_corpus`) the student reads the
task's zero-shot prompt (the one the benchmark gives it, in the student's own prompt style) and scores
every label word as the answer (its sequence log-likelihood, summed over the label's tokens:
:meth:`sentidistill.students.hf.HFStudent.sequence_logprobs`, the same continuations as restricted scoring
uses, so what is trained is what the benchmark reads). Those K log-likelihoods, as logits, make the student's
distribution over the label set; the loss is ``T²·KL(teacher ‖ softmax(s / T))`` (``label_kl`` in
:mod:`sentidistill.train.losses`), weighted per row by the corpus's class-balancing weights. The dev slice
selects and early-stops the student on its agreement with the teacher (macro-F1 against the teacher's
calibrated label, averaged over tasks), as for the classifier student.

This is the sequence-level analogue of the classifier's soft-label KL (cf. the sequence-level KD of Kim &
Rush 2016, restricted to the task's label set as in SentiBench's restricted scoring).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import Trainer

from sentidistill.config import check_training_settings
from sentidistill.errors import InputError
from sentidistill.train.classifier import (
    DevAgreementMixin,
    SoftLabelTrainingArguments,
    soft_label_eval_steps,
    split_corpus,
)
from sentidistill.train.losses import LOSSES, LossInputs

log = logging.getLogger(__name__)

MASKED = -1.0e4


def build_rows(rows: list[dict[str, Any]], student: Any, task_names: list[str]) -> list[dict[str, Any]]:
    """Per corpus row: the rendered zero-shot prompt, the label continuations and how many of their tokens
    count, the teacher distribution and the bookkeeping fields. Raises InputError for a task that is not in
    the registry (the prompt comes from the task definition)."""
    from sentidistill.bench import get_task

    style = student.default_prompt_style
    tasks = {}
    out = []
    for r in rows:
        name = r["task"]
        if name not in tasks:
            try:
                tasks[name] = get_task(name)
            except InputError:
                raise InputError(f"task '{name}' of the corpus is not a registered task: a generative student "
                                 "needs its prompt", field="task", expected="a task from `sentidistill bench --list`") from None
            t = tasks[name]
            if list(t.labels) != list(r["labels"]):
                raise InputError(f"task '{name}': the corpus's labels {r['labels']} differ from the task's {t.labels}",
                                 field="labels")
        t = tasks[name]
        words = [t.verbalizers[lab] for lab in t.labels]
        conts, n_tokens = student.label_continuations(words, style)
        out.append({
            "prompt": student.render(t.prompt(r, [], style=style)), "conts": conts, "n_tokens": n_tokens,
            "probs": [float(x) for x in r["probs"]], "weight": float(r.get("weight") or 1.0),
            "task_id": task_names.index(name), "teacher_label": int(np.argmax(r["probs"])),
        })
    return out


def pad_label_sets(probs: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(soft [B, K_max], mask [B, K_max])``: each row's distribution over its label set, zero-padded to the
    widest set, and True where a label exists."""
    k = max((len(p) for p in probs), default=1)
    soft = torch.zeros(len(probs), k)
    mask = torch.zeros(len(probs), k, dtype=torch.bool)
    for i, p in enumerate(probs):
        soft[i, : len(p)] = torch.tensor(p)
        mask[i, : len(p)] = True
    return soft, mask


class LabelSetCollator:
    """Keeps prompts and continuations as text (the student tokenises them in the loss); pads the label
    tensors to the widest label set of the batch."""

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        soft, mask = pad_label_sets([f["probs"] for f in feats])
        return {
            "prompts": [f["prompt"] for f in feats], "conts": [list(f["conts"]) for f in feats],
            "n_tokens": [list(f["n_tokens"]) for f in feats], "soft_labels": soft, "label_mask": mask,
            "weights": torch.tensor([f["weight"] for f in feats]),
            "task_ids": torch.tensor([f["task_id"] for f in feats]),
            "teacher_label": torch.tensor([f["teacher_label"] for f in feats]),
        }


def label_logits(student: Any, batch: dict[str, Any], max_length: int) -> torch.Tensor:
    """``[B, K_max]``: each row's label-word log-likelihoods (nats), :data:`MASKED` past its label count."""
    flat_p, flat_c, flat_n = [], [], []
    for p, cs, ns in zip(batch["prompts"], batch["conts"], batch["n_tokens"], strict=True):
        flat_p += [p] * len(cs)
        flat_c += cs
        flat_n += ns
    scores = student.sequence_logprobs(flat_p, flat_c, n_tokens=flat_n, max_length=max_length)
    mask = batch["label_mask"]
    out = torch.full(mask.shape, MASKED, dtype=scores.dtype, device=scores.device)
    out[mask.to(scores.device)] = scores
    return out


@dataclass
class SoftLabelLMArguments(SoftLabelTrainingArguments):
    """The generative student's label-distribution KL: ``T²·KL(teacher ‖ softmax(s / T))`` over the label words'
    sequence log-likelihoods ``s``, prompts cut at ``max_length`` tokens."""

    max_length: int = field(default=256, metadata={"help": "Prompt tokens kept when scoring the label words."})


class SoftLabelLMTrainer(DevAgreementMixin, Trainer):
    """``label_kl`` between the teacher's soft labels and the student's label-set distribution, early-stopped on
    dev agreement. ``student``: the :class:`~sentidistill.students.base.Student` wrapping ``model`` (it renders
    and scores the label continuations); ``tasks``: the corpus's tasks in ``task_id`` order."""

    arguments_class: ClassVar[type] = SoftLabelLMArguments

    def __init__(self, model: Any = None, args: SoftLabelLMArguments | None = None, *, student: Any,
                 tasks: list[dict[str, Any]], **kwargs: Any) -> None:
        kwargs.setdefault("data_collator", LabelSetCollator())
        super().__init__(model=model, args=args, **kwargs)
        self.student = student
        self._init_dev(tasks)

    def _label_arrays(self, ep: Any) -> tuple[Any, Any, Any]:
        teacher_label, task_ids = ep.label_ids
        return ep.predictions, task_ids, teacher_label

    def _loss(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        args: SoftLabelLMArguments = self.args  # type: ignore[assignment]
        self.student.model = model  # the Trainer's (possibly wrapped) model computes the scores
        logits = label_logits(self.student, inputs, args.max_length)
        batch = {**inputs, "temperature": args.temperature}
        value, _ = LOSSES.get("label_kl")(LossInputs(logits=logits, batch=batch))
        return value, logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, logits = self._loss(model, inputs)
        return (loss, {"logits": logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss, logits = self._loss(model, inputs)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), logits.detach(), (inputs["teacher_label"], inputs["task_ids"])


def train_generative_on_soft_labels(
    student_spec: str, corpus: str | Path, out_dir: str | Path, training: Any, *, kind: str = "auto",
    temperature: float = 1.0, patience: int = 3, max_length: int = 256, seed: int = 42,
) -> Path:
    """Train a seq2seq or causal student on a soft-label corpus with the label-distribution KL; returns
    ``out_dir/final`` (the student's weights (safetensors), tokenizer and kind marker, with its
    ``training_summary.json``). Resumes from ``out_dir/checkpoints``; early-stops on dev agreement with the
    teacher (``patience`` evaluations). Raises InputError for a student kind that cannot generate, a corpus
    without training or dev rows, or tasks missing from the registry; ConfigError for a ``training`` value the
    method cannot honour."""
    from datasets import Dataset

    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.students import load_student
    from sentidistill.train.methods import build_trainer, save_final, train_resumable

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    check_training_settings(training, "soft_label_lm", where="soft_labels.generative_training")
    rows = read_soft_labels(corpus)
    train_rows, dev_rows = split_corpus(rows, Path(corpus))
    student = load_student(student_spec, kind)
    if not student.can_generate:
        raise InputError(f"a {student.kind} student learns soft labels with the classifier trainer",
                         field="student", expected="a seq2seq or causal student")
    student.model.train()
    task_names = list(dict.fromkeys(r["task"] for r in rows))
    tasks = [{"name": n, "labels": next(r["labels"] for r in rows if r["task"] == n)} for n in task_names]
    train_ds = Dataset.from_list(build_rows(train_rows, student, task_names))
    dev_ds = Dataset.from_list(build_rows(dev_rows, student, task_names))
    every = soft_label_eval_steps(training, len(train_ds))
    trainer = build_trainer(
        "soft_label_lm", training, out_dir, seed=seed, model=student.model, train_dataset=train_ds,
        eval_dataset=dev_ds, trainer_kwargs={"student": student, "tasks": tasks}, eval_steps=every,
        save_steps=every, per_device_eval_batch_size=training.batch_size, temperature=temperature,
        max_length=max_length, early_stopping_patience=patience)
    run = train_resumable(trainer, out_dir)
    summary = {"method": "soft_label_lm", "student": student_spec, "kind": student.kind,
               "train_rows": len(train_ds), "dev_rows": len(dev_ds), **run, **trainer.summary(),
               "wall_s": round(time.perf_counter() - t0, 2), "training": training.model_dump(mode="json")}
    return save_final(trainer, out_dir, summary, tokenizer=student.tokenizer, kind=student.kind)
