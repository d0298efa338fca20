"""Training students: one arguments class + one Trainer subclass per method, registered by name in
``TRAINING_METHODS`` (KnowDist; ICLDist with top-k KL; on-policy distillation from a local teacher on trl's
DistillationTrainer; the classifier and generative students on soft labels), and the shared steps
(``build_trainer`` -> ``train_resumable`` -> ``save_final``). See docs/architecture.md, "Training".

>>> from sentidistill.config import TrainingConfig
>>> from sentidistill.train import train_student
>>> final = train_student("builtin:minilm-encdec", "corpus.parquet", "runs/x/models/knowdist",
...                       TrainingConfig(max_steps=100), method="knowdist")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LOSSES",
    "TRAINING_METHODS",
    "BenchEvalCallback",
    "CausalCollator",
    "ICLDistTrainer",
    "ICLDistTrainingArguments",
    "KDStats",
    "KnowDistTrainer",
    "KnowDistTrainingArguments",
    "OnPolicyTrainer",
    "OnPolicyTrainingArguments",
    "Seq2SeqCollator",
    "answer_only_loss",
    "arguments_for",
    "build_trainer",
    "convert_gguf_to_hf",
    "last_complete_checkpoint",
    "load_corpus",
    "map_teacher_topk_to_ids",
    "read_training_summary",
    "save_final",
    "sentibench_eval_fn",
    "tokenizers_identical",
    "topk_kl",
    "train_resumable",
    "train_student",
    "trainer_arguments",
]

_WHERE = {
    "CausalCollator": "sentidistill.students.collate", "Seq2SeqCollator": "sentidistill.students.collate",
    "KDStats": "align", "topk_kl": "losses", "LOSSES": "losses",
    "ICLDistTrainer": "trainers", "ICLDistTrainingArguments": "trainers", "KnowDistTrainer": "trainers",
    "KnowDistTrainingArguments": "trainers", "OnPolicyTrainer": "onpolicy", "OnPolicyTrainingArguments": "onpolicy",
    "TRAINING_METHODS": "methods", "arguments_for": "methods", "build_trainer": "methods",
    "read_training_summary": "methods", "save_final": "methods", "train_resumable": "methods",
    "trainer_arguments": "arguments",
    "BenchEvalCallback": "engine", "last_complete_checkpoint": "methods", "load_corpus": "engine",
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
