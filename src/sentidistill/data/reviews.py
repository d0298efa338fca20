"""Unlabeled reviews for KnowDist: from a SentiBench task's split, a file, or an HF dataset."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sentidistill.data.loading import load_records
from sentidistill.errors import InputError

_TABLE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                   ".parquet": "parquet"}


@dataclass
class Reviews:
    """The kept texts (in source order) and how many were dropped, and why."""

    texts: list[str]
    source: str
    read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)


def normalise_text(text: str) -> str:
    """The key used for de-duplication: NFKC, lower case, whitespace collapsed."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().lower()


def load_reviews(
    source: str,
    text_field: str = "text",
    limit: int | None = None,
    min_chars: int = 0,
    max_chars: int | None = None,
    split: str = "train",
    data_dir: str | Path | None = None,
    task_texts: Callable[[str, str, str | Path | None], list[str]] | None = None,
) -> Reviews:
    """Read, de-duplicate (on :func:`normalise_text`) and length-filter review texts.

    ``source``: ``sentibench:<task>`` (that task's ``split`` texts, labels dropped), ``hf:NAME[:CONFIG]``,
    or a JSONL/JSON/CSV/TSV/Parquet file whose ``text_field`` column holds the text. ``limit`` applies
    after filtering; what it cuts is counted as ``dropped["over_limit"]``.

    ``task_texts(task, split, data_dir)`` reads a task's texts for ``sentibench:`` sources (the data layer
    does not import the bench; :func:`sentidistill.bench.registry.task_texts` is the one to pass).
    """
    if source.startswith("sentibench:"):
        if task_texts is None:
            raise InputError("a sentibench:<task> review source needs the bench's task reader", field="task_texts",
                             expected="task_texts=sentidistill.bench.registry.task_texts")
        texts = task_texts(source.split(":", 1)[1], split, data_dir)
    elif source.startswith("hf:"):
        texts = [r["text"] for r in load_records("hf", source, split=split, text_field=text_field)]
    else:
        fmt = _TABLE_SUFFIXES.get(Path(source).suffix.lower())
        if fmt is None:
            raise InputError("unsupported review source", path=source,
                             expected="sentibench:<task>, hf:NAME[:CONFIG], or a .jsonl/.json/.csv/.tsv/.parquet file")
        path = Path(source).expanduser()
        texts = [r["text"] for r in load_records(fmt, path if path.is_absolute() else path.resolve(),
                                                  text_field=text_field)]
    dropped = {"duplicates": 0, "too_short": 0, "too_long": 0, "over_limit": 0}
    seen: set[str] = set()
    kept: list[str] = []
    for text in texts:
        text = text.strip()
        key = normalise_text(text)
        if key in seen:
            dropped["duplicates"] += 1
            continue
        seen.add(key)
        if len(text) < min_chars:
            dropped["too_short"] += 1
        elif max_chars is not None and len(text) > max_chars:
            dropped["too_long"] += 1
        elif limit is not None and len(kept) >= limit:
            dropped["over_limit"] += 1
        else:
            kept.append(text)
    return Reviews(texts=kept, source=source, read=len(texts), dropped=dropped)
