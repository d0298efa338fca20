"""The teacher-tuple corpus file: fine-grained answers (aspect/category/opinion tuples) that a teacher wrote
for unlabeled sentences. One Parquet schema shared by its writer (``distill.tuples``) and its readers
(``train.multitask_lm``, the benchmarks); atomic writes, clear errors for a file that is not one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sentidistill.data.soft_label_corpus import write_rows
from sentidistill.errors import InputError

TUPLE_CORPUS_SCHEMA = pa.schema([
    ("task", pa.string()),  # a registered extraction task (atsa_rest16, acsa_rest16, asqp_rest16, opener, ...)
    ("id", pa.string()),
    ("text", pa.string()),  # the sentence as the teacher saw it (cut at max_chars)
    ("target", pa.string()),  # the answer the student learns: a Python-style list of tuples, e.g. "[('pizza', 'positive')]"
    ("tuples", pa.list_(pa.list_(pa.string()))),  # the same tuples, one list of fields each (the task's field order)
    ("n_samples", pa.int32()),  # teacher answers asked (self-consistency n; 1 = greedy)
    ("n_parsed", pa.int32()),  # of those, answers the task's parser could read
    ("agreement", pa.float64()),  # mean share of samples that agree with each kept tuple (1.0 for n = 1)
    ("split", pa.string()),  # train | dev (dev: early stopping on agreement with the teacher)
    ("status", pa.string()),  # valid | repaired | voted (self-consistency)
    ("teacher_logprobs", pa.string()),  # JSON per-token top-k of the greedy answer, when it is exactly the target
])

#: Columns a reader needs.
REQUIRED = ("task", "text", "target", "tuples", "split")


def write_tuple_corpus(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows (dicts with :data:`TUPLE_CORPUS_SCHEMA`'s columns; missing ones null) as Parquet,
    atomically (a killed write leaves the previous file or none)."""
    return write_rows(rows, path, TUPLE_CORPUS_SCHEMA)


def read_tuple_corpus(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a tuple corpus. Raises ``InputError`` naming the file and the missing columns when it is
    not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such tuple corpus", path=path, expected="a Parquet file written by teach_tuples")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: not a tuple corpus", field=",".join(missing),
                         expected=f"columns {TUPLE_CORPUS_SCHEMA.names}")
    return table.to_pylist()


def read_tuple_corpus_stats(path: str | Path) -> dict[str, Any]:
    """The ``.stats.json`` beside a tuple corpus (per task: texts, answers parsed/invalid/dropped, tuples)."""
    return json.loads(Path(path).with_suffix(".stats.json").read_text(encoding="utf-8"))


def format_tuples(tuples: list[tuple[str, ...]] | list[list[str]]) -> str:
    """The answer text of a tuple list, as the tasks' demonstrations write it (``Task.answer_text``):
    ``[('pizza', 'positive'), ('service', 'negative')]``; ``[]`` for none."""
    return "[" + ", ".join("(" + ", ".join(repr(str(x)) for x in t) + ")" for t in tuples) + "]"
