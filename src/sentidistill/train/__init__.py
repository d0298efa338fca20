"""Training the student: Trainer subclasses per method (KnowDist; ICLDist with top-k KL; on-policy
distillation from a local teacher on trl's DistillationTrainer), engine.

>>> from sentidistill.config import TrainingConfig
>>> from sentidistill.train import train_student
>>> final = train_student("builtin:minilm-encdec", "corpus.parquet", "runs/x/models/knowdist",
...                       TrainingConfig(max_steps=100), method="knowdist")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LOSSES",
    "BenchEvalCallback",
    "CausalCollator",
    "ICLDistTrainer",
    "ICLDistTrainingArguments",
    "KDStats",
    "KnowDistTrainer",
    "KnowDistTrainingArguments",
    "OnPolicyTrainer",
    "Seq2SeqCollator",
    "answer_only_loss",
    "convert_gguf_to_hf",
    "last_complete_checkpoint",
    "load_corpus",
    "map_teacher_topk_to_ids",
    "sentibench_eval_fn",
    "tokenizers_identical",
    "topk_kl",
    "train_student",
]

_WHERE = {
    "CausalCollator": "sentidistill.students.collate", "Seq2SeqCollator": "sentidistill.students.collate",
    "KDStats": "align", "topk_kl": "losses", "LOSSES": "losses",
    "ICLDistTrainer": "trainers", "ICLDistTrainingArguments": "trainers", "KnowDistTrainer": "trainers",
    "KnowDistTrainingArguments": "trainers", "OnPolicyTrainer": "onpolicy",
    "BenchEvalCallback": "engine", "last_complete_checkpoint": "engine", "load_corpus": "engine",
    "sentibench_eval_fn": "engine", "train_student": "engine",
    "answer_only_loss": "answer_logits", "convert_gguf_to_hf": "sentidistill.students.gguf",
    "map_teacher_topk_to_ids": "align", "tokenizers_identical": "align",
}


def __getattr__(name: str) -> Any:
    # transformers is heavy: import it when a training name is first used, not on `import sentidistill.train`.
    if name in _WHERE:
        import importlib

        where = _WHERE[name]
        return getattr(importlib.import_module(where if "." in where else f"sentidistill.train.{where}"), name)
    raise AttributeError(name)
