"""Small shared helpers: atomic writes, line-numbered readers, hashing."""

from sentidistill.utils.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    stable_hash,
    write_jsonl,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_jsonl",
    "stable_hash",
    "write_jsonl",
]
