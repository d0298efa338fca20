"""A toy classification task file for tests: rows in ``train.jsonl`` (fields ``t`` and ``y``), used as both the
train and the test split, and its task YAML (``toy.yaml``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def write_toy_task(folder: Path, rows: Sequence[dict[str, str]], *, labels: Sequence[str] = ("negative", "positive"),
                   instruction: str = "Classify the sentiment as negative or positive.") -> Path:
    """``folder/toy.yaml`` over ``folder/train.jsonl`` (``rows``: ``{"t": text, "y": label}``); returns its path."""
    data = folder / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    task = folder / "toy.yaml"
    task.write_text(f"""
name: toy
category: basic
kind: classification
loader: {{format: jsonl, splits: {{train: {data}, test: {data}}},
         options: {{text_field: t, label_field: y}}}}
labels: [{', '.join('{name: ' + lab + '}' for lab in labels)}]
instruction: {instruction}
demos: {{split: train, k: 0}}
metric: macro_f1
""", encoding="utf-8")
    return task
