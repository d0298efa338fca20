"""One entry point over all readers, the default data folder, seeded splits and stratified subsamples."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Literal

from sentidistill.data import readers
from sentidistill.errors import InputError

Format = Literal[
    "sentibench_json", "fsa_json", "tweeteval", "label_lines", "aste", "teacher_sample",
    "jsonl", "json", "csv", "tsv", "parquet", "table", "hf", "text",
]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]


def default_data_dir() -> Path | None:
    """``$SENTIDISTILL_DATA_DIR``, else ``../shared/data`` relative to the working directory or the repo, else None."""
    env = os.environ.get("SENTIDISTILL_DATA_DIR")
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise InputError("SENTIDISTILL_DATA_DIR is not a directory", path=p)
        return p
    repo = Path(__file__).resolve().parents[3]  # src/sentidistill/data/loading.py -> repository root
    for base in (Path.cwd(), repo):
        cand = (base / ".." / "shared" / "data").resolve()
        if cand.is_dir():
            return cand
    return None


def resolve_path(path: str | Path, data_dir: str | Path | None) -> Path:
    """Absolute paths stay; relative ones resolve against ``data_dir`` (else the default data folder)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    base = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if base is None:
        raise InputError(
            f"'{path}' is relative but no data folder is known",
            expected="--data-dir DIR, $SENTIDISTILL_DATA_DIR, or ../shared/data beside the repository",
        )
    return base / p


#: Format -> the reader that reads it (each declares the ``loader.options`` it takes: ``reader.options``).
FORMAT_READERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "sentibench_json": readers.read_sentibench_json, "fsa_json": readers.read_sentibench_json,
    "tweeteval": readers.read_tweeteval, "label_lines": readers.read_label_lines, "aste": readers.read_aste,
    "teacher_sample": readers.read_teacher_sample, "hf": readers.read_hf, "text": readers.read_text_lines,
    **{f: readers.read_table for f in ("jsonl", "json", "csv", "tsv", "parquet", "table")},
}


def reader_options(fmt: str) -> tuple[str, ...]:
    """The ``loader.options`` names the reader of format ``fmt`` takes."""
    return tuple(getattr(FORMAT_READERS[fmt], "options", ()))


def check_options(fmt: str, options: dict[str, Any]) -> None:
    """Refuse an option the reader of ``fmt`` does not take, or one of the wrong type: ``InputError`` naming
    the option, the format, its reader and the options it takes (at task load, before any data is read)."""
    if fmt not in FORMAT_READERS:
        raise InputError(f"unknown data format '{fmt}'", field="loader.format", expected=" | ".join(FORMATS))
    takes = reader_options(fmt)
    reader = FORMAT_READERS[fmt].__name__
    for name, value in options.items():
        if name not in takes:
            others = sorted(f for f in FORMAT_READERS if name in reader_options(f))
            hint = f"; formats that take it: {', '.join(others)}" if others else ""
            raise InputError(f"option '{name}' is not taken by format '{fmt}' (reader {reader}){hint}",
                             field=f"loader.options.{name}",
                             expected=f"one of: {', '.join(takes)}" if takes else "no options for this format")
        types_, what = readers.OPTION_TYPES[name]
        if not isinstance(value, types_) or isinstance(value, bool):
            raise InputError(f"option '{name}' of format '{fmt}' has the wrong type", field=f"loader.options.{name}",
                             expected=what, got=value)


def load_records(
    fmt: str,
    path: str | Path,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    skip_bad: bool = False,
    stats: dict[str, int] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Read ``path`` (relative to ``data_dir``) in format ``fmt``; ``split`` matters for tweeteval and hf.

    Options: ``label_names`` (label_lines), ``text_field``/``label_field`` (tables, hf), ``mapping_path``
    (tweeteval), ``encoding`` (tables: a Python codec name; default UTF-8 or what a byte-order mark says),
    ``quoting`` (csv/tsv: ``none`` = quotes are text, the .tsv default; ``csv`` = RFC 4180 quoting, the
    .csv default). Format ``text``: a plain text file, one text per line (no labels).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown data format '{fmt}'", field="format", expected=" | ".join(FORMATS))
    check_options(fmt, options)
    kw: dict[str, Any] = {"skip_bad": skip_bad, "stats": stats}
    if fmt == "hf":
        return readers.read_hf(str(path), split, text_field=options.get("text_field", "text"),
                               label_field=options.get("label_field"), **kw)
    p = resolve_path(path, data_dir)
    if fmt in ("sentibench_json", "fsa_json"):
        return readers.read_sentibench_json(p, **kw)
    if fmt == "tweeteval":
        mapping = options.get("mapping_path")
        return readers.read_tweeteval(p, split, mapping_path=resolve_path(mapping, data_dir) if mapping else None, **kw)
    if fmt == "label_lines":
        return readers.read_label_lines(p, label_names=options.get("label_names"), **kw)
    if fmt == "aste":
        return readers.read_aste(p, **kw)
    if fmt == "teacher_sample":
        return readers.read_teacher_sample(p, **kw)
    if fmt == "text":
        return readers.read_text_lines(p, encoding=options.get("encoding"), **kw)
    return readers.read_table(p, text_field=options.get("text_field", "text"),
                              label_field=options.get("label_field"), encoding=options.get("encoding"),
                              quoting=options.get("quoting"), **kw)


def seeded_split(
    records: list[dict[str, Any]], fractions: dict[str, float], seed: int = 42
) -> dict[str, list[dict[str, Any]]]:
    """Shuffle once with ``random.Random(seed)`` and cut consecutive slices in the order of ``fractions``.

    The last split takes the rounding remainder, so no record is lost. E.g. MR's 80/10/10:
    ``{"train": .8, "val": .1, "test": .1}`` on 10,662 sentences gives 8530/1066/1066.
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise InputError("split fractions must sum to 1", field="derive_splits.fractions", got=fractions)
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    out: dict[str, list[dict[str, Any]]] = {}
    start = 0
    names = list(fractions)
    for i, name in enumerate(names):
        end = len(order) if i == len(names) - 1 else start + round(fractions[name] * len(order))
        out[name] = [records[j] for j in sorted(order[start:end])]
        start = end
    return out


def stratified_sample(
    rows: list[Any], n: int, key: Callable[[Any], Hashable] | None = None, seed: int = 42
) -> list[Any]:
    """``n`` rows keeping the proportions of ``key`` (largest-remainder allocation), in their original order.

    Every stratum present keeps at least one row when ``n`` allows, so rare labels are not dropped.
    """
    if n >= len(rows):
        return list(rows)
    if n <= 0:
        return []
    key = key or (lambda r: 0)
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[key(r)].append(i)
    ordered = sorted(groups, key=lambda g: str(g))
    quotas = {g: n * len(groups[g]) / len(rows) for g in ordered}
    alloc = {g: int(quotas[g]) for g in ordered}
    if n >= len(ordered):
        for g in ordered:
            alloc[g] = max(alloc[g], 1)
    while sum(alloc.values()) > n:  # the minimum-one rule can overshoot; take back from the largest
        g = max(ordered, key=lambda g: alloc[g])
        alloc[g] -= 1
    rest = sorted(ordered, key=lambda g: (quotas[g] - int(quotas[g])), reverse=True)
    i = 0
    while sum(alloc.values()) < n:
        g = rest[i % len(rest)]
        if alloc[g] < len(groups[g]):
            alloc[g] += 1
        i += 1
    rng = random.Random(seed)
    chosen = [j for g in ordered for j in rng.sample(groups[g], alloc[g])]
    return [rows[j] for j in sorted(chosen)]
