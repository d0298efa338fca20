"""The soft-label corpus file: one Parquet schema shared by its writer (``distill.soft_labels``) and its
readers (``train.classifier``, the benchmarks); atomic writes, clear errors for a file that is not one."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_bytes

SOFT_LABEL_SCHEMA = pa.schema([
    ("task", pa.string()),
    ("id", pa.string()),
    ("text", pa.string()),  # the text as the teacher saw it (cut at max_chars)
    ("target", pa.string()),  # stance target etc.; null when the task has none
    ("labels", pa.list_(pa.string())),  # the task's label names, the order of every distribution
    ("teacher_logprobs", pa.list_(pa.float64())),  # log P(label | prompt), nats, averaged over prompt variants
    ("probs_raw", pa.list_(pa.float64())),  # restricted-scoring distribution (softmax over the label set)
    ("probs", pa.list_(pa.float64())),  # calibrated distribution: the soft label the student learns
    ("teacher_label", pa.string()),  # arg-max of probs
    ("split", pa.string()),  # train | dev (dev: early stopping on agreement with the teacher)
    ("weight", pa.float64()),  # class-balancing weight (mean 1 over a task's training rows)
    ("via", pa.string()),  # exact | logprobs | text: how the teacher's scores were read
    ("gold", pa.string()),  # a gold label name where a user has one (adds the CE term); null when label-free
])


def write_rows(rows: list[dict[str, Any]], path: str | Path, schema: pa.Schema) -> Path:
    """Write dict rows as Parquet with ``schema`` (a column a row lacks is null; zstd), atomically: a killed
    write leaves the previous file or none. The one writer of the corpus files in this package."""
    path = Path(path)
    cols = {name: [r.get(name) for r in rows] for name in schema.names}
    buf = io.BytesIO()
    pq.write_table(pa.table(cols, schema=schema), buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_soft_labels(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write soft-labelled rows as Parquet (:data:`SOFT_LABEL_SCHEMA`), atomically."""
    return write_rows(rows, path, SOFT_LABEL_SCHEMA)


def read_soft_labels(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a soft-label corpus. Raises ``InputError`` naming the file and the missing column when
    it is not one."""
    path = Path(path)
    table = pq.read_table(path)
    missing = [c for c in ("task", "text", "labels", "probs") if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: not a soft-label corpus", field=",".join(missing),
                         expected=f"columns {SOFT_LABEL_SCHEMA.names}")
    return table.to_pylist()


def read_soft_label_stats(path: str | Path) -> dict[str, Any]:
    """The ``.stats.json`` beside a soft-label corpus."""
    return json.loads(Path(path).with_suffix(".stats.json").read_text(encoding="utf-8"))
