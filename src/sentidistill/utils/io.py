"""Atomic file writes, JSON-lines reading with file/line errors, and stable hashing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sentidistill.errors import InputError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write rows as JSON lines; returns the number of rows."""
    lines = [json.dumps(r, ensure_ascii=False, default=str) for r in rows]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)


def read_jsonl(path: str | Path, *, skip_bad: bool = False, stats: dict[str, int] | None = None) -> Iterator[dict]:
    """Yield objects from a JSON-lines file (UTF-8, BOM tolerated).

    A line that is not a JSON object raises :class:`InputError` naming the file and line, or, with
    ``skip_bad``, is skipped and counted in ``stats["skipped"]``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path)
    with path.open("rb") as fh:
        # Bytes split on b"\n" only (a text-mode file would also split on a lone "\r"); each line decoded
        # strictly, so a stray byte is an error naming its line, not a replaced or dropped character.
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 text: byte(s) {raw[exc.start:exc.end].hex(' ')} at column "
                                 f"{exc.start + 1} do not decode", path=path, line=lineno,
                                 expected="UTF-8 JSON lines") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"a JSON {type(obj).__name__}")
            except ValueError as exc:
                if skip_bad:
                    if stats is not None:
                        stats["skipped"] = stats.get("skipped", 0) + 1
                    continue
                raise InputError(
                    f"not a JSON object ({exc})", path=path, line=lineno, expected="one JSON object per line"
                ) from None
            yield obj


def stable_hash(obj: Any, length: int = 64) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys), as hex."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
