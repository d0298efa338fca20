"""The corpus file shared by ``distill/`` (writer) and ``train/`` (reader): one Parquet schema, atomic writes."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sentidistill.utils.io import atomic_write_bytes

# docs/architecture.md, "Corpora". teacher_logprobs: JSON list of {"token", "logprob", "top": [[text, lp], ...]}.
CORPUS_SCHEMA = pa.schema([
    ("source", pa.string()),  # the student's input: text, or chat messages as JSON
    ("target", pa.string()),  # the teacher's answer (or the gold answer, status "gold")
    ("task", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt_version", pa.string()),
    ("status", pa.string()),  # valid | repaired | unchecked | invalid | gold
    ("teacher_logprobs", pa.string()),
    ("gold", pa.string()),
    ("example_id", pa.string()),
    # A reasoning teacher's thinking (its <think> block or reasoning_content), kept apart: never a target.
    ("reasoning", pa.string()),
])


@dataclass
class CorpusStats:
    """What a corpus build did: rows written and every row not written, by reason."""

    path: str
    rows: int = 0
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    by_task: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # e.g. reviews read / dropped by the loader
    # Rows kept with a canonical label instead of the teacher's prose: their log-probs no longer describe
    # the target, so they train at sequence level only.
    logprobs_dropped: int = 0
    # Teacher answers that came with a thinking block (split off; kept in the ``reasoning`` column).
    with_reasoning: int = 0
    teacher: dict[str, float] = field(default_factory=dict)

    def count(self, bucket: dict[str, int], key: str, n: int = 1) -> None:
        bucket[key] = bucket.get(key, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_corpus(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows (dicts with the schema's columns; missing ones are null) as Parquet, atomically."""
    path = Path(path)
    cols = {name: [r.get(name) for r in rows] for name in CORPUS_SCHEMA.names}
    table = pa.table(cols, schema=CORPUS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_corpus(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a corpus file as dicts."""
    return pq.read_table(path).to_pylist()
