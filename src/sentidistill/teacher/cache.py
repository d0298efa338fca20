"""A SQLite response cache: every teacher answer is committed the moment it arrives.

WAL mode lets readers proceed while one writer commits, and ``busy_timeout`` makes concurrent
writers (several processes sharing one run directory) wait for the lock instead of failing.
Each ``put`` is one short transaction, so a killed process loses at most the answers in flight.

Only the request (messages, parameters, prompt id/version, metadata) and the response are stored;
API keys and HTTP headers never reach this layer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sentidistill.core.records import TeacherRequest, TeacherResponse
from sentidistill.errors import InputError
from sentidistill.utils.io import atomic_write_bytes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key            TEXT PRIMARY KEY,
    model          TEXT NOT NULL,
    prompt_id      TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    created        REAL NOT NULL,
    request        TEXT NOT NULL,
    response       TEXT NOT NULL
)
"""
# SQLite's default limit on host parameters is 999 in old builds; stay well below it.
_CHUNK = 900


class ResponseCache:
    """Teacher responses keyed by ``TeacherRequest.cache_key(model_id)``.

    Thread-safe (one connection guarded by a lock); several processes may open the same file.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: autocommit, so each statement is its own short transaction.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives a process crash (the WAL is in the OS); only power loss can
            # drop the last commits, and it avoids one fsync per answer.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"not a usable teacher cache ({exc})", path=self.path, expected="a SQLite file") from None

    # -- reads ------------------------------------------------------------------------------------
    def get(self, key: str) -> TeacherResponse | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, TeacherResponse]:
        """The cached responses among ``keys`` (one query per 900 keys), marked ``cached=True``."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, TeacherResponse] = {}
        with self._lock:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, blob in rows:
                    resp = TeacherResponse.model_validate_json(blob)
                    resp.cached = True
                    out[key] = resp
        return out

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._lock:
            return self._conn.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def keys(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT key FROM responses ORDER BY created, key")]

    # -- writes -----------------------------------------------------------------------------------
    def put(self, key: str, request: TeacherRequest, response: TeacherResponse) -> None:
        """Commit one response (replacing an older answer for the same key)."""
        stored = response.model_copy(update={"cached": False})
        req = request.model_dump(mode="json")
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses (key, model, prompt_id, prompt_version, created, request, response)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    response.model,
                    request.prompt_id,
                    request.prompt_version,
                    time.time(),
                    json.dumps(req, ensure_ascii=False, separators=(",", ":")),
                    stored.model_dump_json(),
                ),
            )

    # -- export -----------------------------------------------------------------------------------
    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Every entry as a flat dict (request fields, response fields), oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, model, prompt_id, prompt_version, created, request, response FROM responses"
                " ORDER BY created, key"
            ).fetchall()
        for key, model, pid, pver, created, req, resp in rows:
            r = json.loads(req)
            s = json.loads(resp)
            yield {
                "key": key,
                "model": model,
                "prompt_id": pid,
                "prompt_version": pver,
                "created": created,
                "messages": r.get("messages"),
                "params": r.get("params"),
                "answer_format": r.get("answer_format"),
                "metadata": r.get("metadata"),
                "text": s.get("text"),
                "status": s.get("status"),
                "parsed": s.get("parsed"),
                "finish_reason": s.get("finish_reason"),
                "usage": s.get("usage"),
                "logprobs": s.get("logprobs"),
                "attempts": s.get("attempts"),
                "response": s,
            }

    def export(self, path: str | Path) -> int:
        """Write every entry to ``.jsonl`` or ``.parquet`` (atomically); returns the row count.

        In Parquet, nested fields (messages, params, usage, logprobs, parsed, metadata) are JSON strings.
        """
        path = Path(path)
        rows = list(self.iter_rows())
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            blob = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
            atomic_write_bytes(path, blob.encode("utf-8"))
        elif suffix == ".parquet":
            import io

            import pyarrow as pa
            import pyarrow.parquet as pq

            nested = ("messages", "params", "answer_format", "metadata", "parsed", "usage", "logprobs", "response")
            cols: dict[str, list[Any]] = {k: [] for k in (rows[0].keys() if rows else ["key"])}
            for r in rows:
                for k in cols:
                    v = r.get(k)
                    cols[k].append(json.dumps(v, ensure_ascii=False) if k in nested and v is not None else v)
            table = pa.table(cols)
            buf = io.BytesIO()
            pq.write_table(table, buf)
            atomic_write_bytes(path, buf.getvalue())
        else:
            raise InputError("unknown export format", path=path, expected="a .jsonl or .parquet file name")
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
