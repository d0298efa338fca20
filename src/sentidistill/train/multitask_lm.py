"""One multi-task generative student on everything the teacher wrote.

The student (a causal or seq2seq LM, by default SmolLM2-135M-Instruct) learns, in one run and mixed in every
batch:

* **classification rows** (a soft-label corpus, :mod:`sentidistill.data.soft_label_corpus`): the label-
  distribution KL ``T²·KL(teacher ‖ softmax(s / T))`` over the label words' sequence log-likelihoods ``s``
  (``label_kl``; the same continuations the benchmark's restricted scoring reads, see
  :mod:`sentidistill.train.softlabel_lm`);
* **fine-grained rows** (a tuple corpus, :mod:`sentidistill.data.tuple_corpus`): the sequence-level
  cross-entropy on the teacher's answer (a Python-style list of tuples), per answer token (``answer_nll``;
  Kim & Rush 2016's sequence-level KD). Token-level KL on the teacher's top-k log-probs needs the teacher's
  tokenizer; the offline teacher (Qwen2.5) and student (SmolLM2) do not share one, so it is not used here;
* **ICL prompts**: an ``icl_fraction`` share of both kinds of rows is shown in a k-shot prompt (ICLDist,
  paper 1), whose demonstrations are *other corpus rows with the teacher's answers* (no gold label is read:
  the recipe stays label-free), so the student keeps SentiBench's 4-shot protocol as well as the 0-shot one.

Every prompt is the task's own (:meth:`sentidistill.bench.task.Task.prompt`) in the student's prompt style,
the loss is on answer tokens only. The dev slices (teacher-labelled) early-stop the run on **agreement with
the teacher**: per classification task the macro-F1 of the student's arg-max against the teacher's label,
per fine-grained task the tuple micro-F1 of the student's greedy answer against the teacher's tuples
(``dev_generate`` rows per task), averaged over tasks (``teacher_agreement``).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import Trainer

from sentidistill.errors import InputError
from sentidistill.train.classifier import DevAgreementMixin, SoftLabelTrainingArguments

log = logging.getLogger(__name__)


@dataclass
class MultiTaskSettings:
    """The method's own settings (what :class:`sentidistill.config.GenerativeConfig` holds besides the
    Trainer settings)."""

    icl_fraction: float = 0.5
    icl_shots: int = 4
    kl_weight: float = 1.0
    seq_weight: float = 1.0
    temperature: float = 1.0
    patience: int = 3
    dev_generate: int = 32
    max_length: int = 768


class TaskResolver:
    """Corpus task name -> :class:`sentidistill.bench.task.Task`, through ``specs`` (name -> the name or YAML
    path the config gave, for a user's task files) and the registry; cached. Raises InputError for a name
    that resolves to no task (a generative student needs the task's prompt)."""

    def __init__(self, specs: dict[str, str] | None = None) -> None:
        self.specs = dict(specs or {})
        self._cache: dict[str, Any] = {}

    def __call__(self, name: str) -> Any:
        from sentidistill.bench import get_task

        if name not in self._cache:
            try:
                self._cache[name] = get_task(self.specs.get(name, name))
            except InputError:
                raise InputError(f"task '{name}' of the corpus is not a registered task: a generative student "
                                 "needs its prompt", field="task",
                                 expected="a task from `sentidistill bench --list` or its YAML file") from None
        return self._cache[name]


def _demo_pools(rows: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    """Per task, the training rows as demonstrations with the *teacher's* answer as their ``gold``."""
    pools: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if kind == "label":
            demo = {"text": r["text"], "target": r.get("target"), "gold": r["labels"][int(np.argmax(r["probs"]))]}
        else:
            demo = {"text": r["text"], "gold": [tuple(t) for t in r["tuples"]]}
        pools.setdefault(r["task"], []).append(demo)
    return pools


def _demos(task: Any, row: dict[str, Any], pools: dict[str, list[dict[str, Any]]], k: int,
           rng: random.Random) -> list[dict[str, Any]]:
    pool = [d for d in pools.get(task.name, []) if d["text"] != row["text"]]
    return rng.sample(pool, min(k, len(pool)))


def build_examples(label_rows: list[dict[str, Any]], tuple_rows: list[dict[str, Any]], student: Any,
                   settings: MultiTaskSettings, task_names: list[str], *, seed: int,
                   demo_rows: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
                   resolve: TaskResolver | None = None) -> list[dict[str, Any]]:
    """Training (or dev) examples, one per corpus row: ``kind`` ``label`` (prompt, label continuations and
    their scored token counts, teacher distribution, weight) or ``seq`` (prompt, answer continuation, its
    token count). An ``icl_fraction`` share (seeded per row) gets ``icl_shots`` demonstrations drawn from
    ``demo_rows`` (default: the rows themselves). Raises InputError for a corpus task missing from the
    registry or whose labels differ from the task's. ``task_names`` fixes each task's ``task_id``."""
    resolve = resolve or TaskResolver()
    style = student.default_prompt_style
    sep, end = student.label_separator(style), student.answer_end(style)
    dl, dt = demo_rows or (label_rows, tuple_rows)
    pools = {**_demo_pools(dl, "label"), **_demo_pools(dt, "seq")}
    rng = random.Random(f"{seed}:multitask")
    out: list[dict[str, Any]] = []
    for r in label_rows:
        t = resolve(r["task"])
        if list(t.labels) != list(r["labels"]):
            raise InputError(f"task '{t.name}': the corpus's labels {r['labels']} differ from the task's {t.labels}",
                             field="labels")
        demos = _demos(t, r, pools, settings.icl_shots, rng) if rng.random() < settings.icl_fraction else []
        words = [t.verbalizers[lab] for lab in t.labels]
        conts, n_tokens = student.label_continuations(words, style)
        out.append({
            "kind": "label", "task_id": task_names.index(r["task"]), "shots": len(demos),
            "prompt": student.render(t.prompt({"text": r["text"], "target": r.get("target")}, demos, style=style)),
            "conts": conts, "n_tokens": n_tokens, "probs": [float(x) for x in r["probs"]],
            "weight": float(r.get("weight") or 1.0), "teacher_label": int(np.argmax(r["probs"])),
        })
    for r in tuple_rows:
        t = resolve(r["task"])
        if t.kind != "extraction":
            raise InputError(f"task '{t.name}' of the tuple corpus is not an extraction task", field="task")
        demos = _demos(t, r, pools, settings.icl_shots, rng) if rng.random() < settings.icl_fraction else []
        cont = sep + r["target"] + end
        out.append({
            "kind": "seq", "task_id": task_names.index(r["task"]), "shots": len(demos),
            "prompt": student.render(t.prompt({"text": r["text"]}, demos, style=style)),
            "conts": [cont], "n_tokens": [len(student.continuation_ids(cont))], "probs": [],
            "weight": 1.0, "teacher_label": -1, "tuples": [list(x) for x in r["tuples"]],
        })
    return out


class ListDataset(torch.utils.data.Dataset):
    """A list of example dicts as a map-style dataset (rows of two kinds do not fit one Arrow schema)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


class MixedCollator:
    """A batch of both kinds: ``label`` (prompts, continuations, ``soft_labels`` ``[B_l, K_max]``,
    ``label_mask``, ``weights``) and ``seq`` (prompts, answer continuations, ``answer_tokens`` ``[B_s]``);
    text stays text (the student tokenises inside the loss)."""

    def __call__(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        from sentidistill.train.softlabel_lm import pad_label_sets

        lab = [f for f in feats if f["kind"] == "label"]
        seq = [f for f in feats if f["kind"] == "seq"]
        soft, mask = pad_label_sets([f["probs"] for f in lab])
        return {
            "prompts": [f["prompt"] for f in lab], "conts": [list(f["conts"]) for f in lab],
            "n_tokens": [list(f["n_tokens"]) for f in lab], "soft_labels": soft, "label_mask": mask,
            "weights": torch.tensor([f["weight"] for f in lab]),
            "seq_prompts": [f["prompt"] for f in seq], "seq_conts": [f["conts"][0] for f in seq],
            "answer_tokens": torch.tensor([f["n_tokens"][0] for f in seq], dtype=torch.long),
        }


def multitask_loss(student: Any, batch: dict[str, Any], settings: MultiTaskSettings) -> torch.Tensor:
    """``(B_l · kl_weight · label_kl + B_s · seq_weight · answer_nll) / B`` for one mixed batch (each term a
    mean over its rows, so a term's weight in the batch follows its share of rows)."""
    from sentidistill.train.losses import LOSSES, LossInputs
    from sentidistill.train.softlabel_lm import label_logits

    n_l, n_s = len(batch["prompts"]), len(batch["seq_prompts"])
    total: torch.Tensor | None = None
    if n_l and settings.kl_weight > 0:
        logits = label_logits(student, batch, settings.max_length)
        kl, _ = LOSSES.get("label_kl")(LossInputs(logits=logits, batch={**batch, "temperature": settings.temperature}))
        total = settings.kl_weight * n_l * kl
    if n_s and settings.seq_weight > 0:
        lp = student.sequence_logprobs(batch["seq_prompts"], batch["seq_conts"], max_length=settings.max_length)
        nll, _ = LOSSES.get("answer_nll")(LossInputs(batch={"answer_logprob": lp,
                                                            "answer_tokens": batch["answer_tokens"].to(lp.device)}))
        term = settings.seq_weight * n_s * nll
        total = term if total is None else total + term
    if total is None:
        p = next(student.model.parameters())
        return p.sum() * 0.0
    return total / (n_l + n_s)


def dev_agreement(student: Any, examples: list[dict[str, Any]], tasks: list[dict[str, Any]],
                  settings: MultiTaskSettings, *, batch_size: int = 8,
                  resolve: TaskResolver | None = None) -> dict[str, float]:
    """Agreement with the teacher on dev examples: per classification task the macro-F1 of the student's
    arg-max label against the teacher's (``agreement_f1_<task>``), per fine-grained task the tuple micro-F1
    of the student's greedy answer against the teacher's tuples on its first ``dev_generate`` rows
    (``agreement_f1_<task>``), and ``teacher_agreement`` = their mean over tasks."""
    from sentidistill.bench.metrics import tuple_metrics
    from sentidistill.train.classifier import agreement_metrics
    from sentidistill.train.softlabel_lm import label_logits

    out: dict[str, float] = {}
    lab = [e for e in examples if e["kind"] == "label"]
    if lab:
        collate = MixedCollator()
        rows = []
        with torch.no_grad():
            for i in range(0, len(lab), batch_size):
                rows.append(label_logits(student, collate(lab[i: i + batch_size]), settings.max_length).float().cpu())
        width = max(r.shape[1] for r in rows)
        logits = torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=-1e4) for r in rows]).numpy()
        ids = np.array([e["task_id"] for e in lab])
        teacher = np.array([e["teacher_label"] for e in lab])
        m = agreement_metrics(logits, ids, teacher, tasks)
        out.update({k: v for k, v in m.items() if k.startswith("agreement_f1_")})
    for i, t in enumerate(tasks):
        if t.get("kind") != "extraction" or settings.dev_generate <= 0:
            continue
        rows_t = [e for e in examples if e["kind"] == "seq" and e["task_id"] == i][: settings.dev_generate]
        if not rows_t:
            continue
        task = (resolve or TaskResolver())(t["name"])
        answers = student.generate([e["prompt"] for e in rows_t], task.spec.max_new_tokens, batch_size=batch_size,
                                   max_length=settings.max_length)
        preds = [task.parse(a) for a in answers]
        golds = [[task.normalise_tuple(x) for x in e["tuples"]] for e in rows_t]
        out[f"agreement_f1_{t['name']}"] = float(tuple_metrics(preds, golds)["micro_f1"])
    per_task = [v for k, v in out.items() if k.startswith("agreement_f1_")]
    out["teacher_agreement"] = float(np.mean(per_task)) if per_task else 0.0
    return out


@dataclass
class MultiTaskLMArguments(SoftLabelTrainingArguments):
    """The multi-task generative student's loss and evaluation: ``kl_weight · label_kl + seq_weight ·
    answer_nll`` (T = ``temperature``), sequences cut at ``max_length`` tokens, ``dev_generate`` fine-grained dev
    rows per task answered greedily at each evaluation."""

    kl_weight: float = field(default=1.0, metadata={"help": "Weight of the label-distribution KL."})
    seq_weight: float = field(default=1.0, metadata={"help": "Weight of the answer NLL on the teacher's tuples."})
    max_length: int = field(default=768, metadata={"help": "Prompt + answer tokens kept."})
    dev_generate: int = field(default=32, metadata={"help": "Fine-grained dev rows per task answered greedily."})

    def settings(self) -> MultiTaskSettings:
        return MultiTaskSettings(kl_weight=self.kl_weight, seq_weight=self.seq_weight, temperature=self.temperature,
                                 dev_generate=self.dev_generate, max_length=self.max_length)


class MultiTaskLMTrainer(DevAgreementMixin, Trainer):
    """``multitask_loss`` for training; evaluation = :func:`dev_agreement` on the dev examples (greedy answers
    for the fine-grained rows, which the Trainer's logits-gathering loop cannot produce); early-stopped on it.
    ``student`` wraps ``model``; ``tasks``: the corpora's tasks in ``task_id`` order; ``dev_examples``: from
    :func:`build_examples`; ``resolve``: the corpus task names' :class:`TaskResolver`."""

    arguments_class: ClassVar[type] = MultiTaskLMArguments

    def __init__(self, model: Any = None, args: MultiTaskLMArguments | None = None, *, student: Any,
                 tasks: list[dict[str, Any]], dev_examples: list[dict[str, Any]], resolve: TaskResolver,
                 **kwargs: Any) -> None:
        kwargs.setdefault("data_collator", MixedCollator())
        super().__init__(model=model, args=args, **kwargs)
        self.student, self.dev_examples, self.resolve = student, dev_examples, resolve
        self._init_dev(tasks)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.student.model = model  # the Trainer's (possibly wrapped) model computes the scores
        loss = multitask_loss(self.student, inputs, self.args.settings())  # type: ignore[attr-defined]
        return (loss, {}) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        t0 = time.perf_counter()
        model = self.model
        was_training = model.training
        model.eval()
        self.student.model = model
        try:
            m = dev_agreement(self.student, self.dev_examples, self.tasks, self.args.settings(),  # type: ignore[attr-defined]
                              batch_size=self.args.per_device_eval_batch_size, resolve=self.resolve)
        finally:
            model.train(was_training)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in m.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - t0, 3)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def train_multitask_generative(
    student_spec: str, out_dir: str | Path, training: Any, settings: MultiTaskSettings, *,
    soft_corpus: str | Path | None = None, tuple_corpus: str | Path | None = None, kind: str = "auto",
    seed: int = 42, task_specs: dict[str, str] | None = None,
) -> Path:
    """Train a generative student on a soft-label corpus and/or a tuple corpus (see the module doc); returns
    ``out_dir/final`` (the student's weights (safetensors), tokenizer, kind marker and
    ``training_summary.json``). ``training`` is a :class:`sentidistill.config.TrainingConfig`. Resumes from
    ``out_dir/checkpoints``; early-stops on dev agreement with the teacher (``settings.patience`` evaluations).
    ``task_specs`` maps a corpus task name to the name or YAML file the config gave (a user's task files).
    Raises InputError for a student that cannot generate, no corpus, or a corpus without training/dev rows;
    ConfigError for a ``training`` value the method cannot honour."""
    from sentidistill.config import check_training_settings
    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.data.tuple_corpus import read_tuple_corpus
    from sentidistill.students import load_student
    from sentidistill.train.classifier import soft_label_eval_steps
    from sentidistill.train.methods import build_trainer, save_final, train_resumable

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    check_training_settings(training, "multitask_lm", where="generative.training")
    if soft_corpus is None and tuple_corpus is None:
        raise InputError("the multi-task generative student needs a soft-label corpus and/or a tuple corpus",
                         field="generative", expected="soft_labels.enabled and/or finegrained.enabled")
    soft = read_soft_labels(soft_corpus) if soft_corpus is not None else []
    tup = read_tuple_corpus(tuple_corpus) if tuple_corpus is not None else []
    train_l = [r for r in soft if r.get("split", "train") == "train"]
    train_t = [r for r in tup if r.get("split", "train") == "train"]
    dev_l = [r for r in soft if r.get("split") == "dev"]
    dev_t = [r for r in tup if r.get("split") == "dev"]
    if not (train_l or train_t):
        raise InputError("no training rows in the corpora", field="split", expected="rows with split 'train'")
    if not (dev_l or dev_t):
        raise InputError("no dev rows for early stopping", field="split",
                         expected="rows with split 'dev' (soft_labels.dev_fraction / finegrained.dev_fraction > 0)")
    student = load_student(student_spec, kind)
    if not student.can_generate:
        raise InputError(f"a {student.kind} student cannot learn the fine-grained tasks (it does not generate)",
                         field="student.model", expected="a causal or seq2seq student")
    student.model.train()
    names = list(dict.fromkeys([r["task"] for r in soft] + [r["task"] for r in tup]))
    kinds = {r["task"]: "classification" for r in soft} | {r["task"]: "extraction" for r in tup}
    tasks = [{"name": n, "kind": kinds[n],
              "labels": next((r["labels"] for r in soft if r["task"] == n), [])} for n in names]
    resolve = TaskResolver(task_specs)
    train_ex = build_examples(train_l, train_t, student, settings, names, seed=seed, resolve=resolve)
    # Dev prompts are 0-shot, like the benchmark's default; demonstrations (if any) come from training rows.
    dev_settings = MultiTaskSettings(**{**settings.__dict__, "icl_fraction": 0.0})
    dev_ex = build_examples(dev_l, dev_t, student, dev_settings, names, seed=seed, demo_rows=(train_l, train_t),
                            resolve=resolve)
    every = soft_label_eval_steps(training, len(train_ex))
    trainer = build_trainer(
        "multitask_lm", training, out_dir, seed=seed, model=student.model, train_dataset=ListDataset(train_ex),
        eval_dataset=ListDataset(dev_ex),
        trainer_kwargs={"student": student, "tasks": tasks, "dev_examples": dev_ex, "resolve": resolve},
        eval_steps=every, save_steps=every, per_device_eval_batch_size=training.batch_size,
        temperature=settings.temperature, kl_weight=settings.kl_weight, seq_weight=settings.seq_weight,
        max_length=settings.max_length, dev_generate=settings.dev_generate,
        early_stopping_patience=settings.patience)
    run = train_resumable(trainer, out_dir)
    summary = {"method": "multitask_lm", "student": student_spec, "kind": student.kind,
               "train_rows": len(train_ex), "dev_rows": len(dev_ex), "label_rows": len(train_l),
               "tuple_rows": len(train_t), "icl_rows": sum(e["shots"] > 0 for e in train_ex), **run,
               **trainer.summary(), "wall_s": round(time.perf_counter() - t0, 2),
               "training": training.model_dump(mode="json")}
    return save_final(trainer, out_dir, summary, tokenizer=student.tokenizer, kind=student.kind)
