"""ResponseCache: batched lookups, export, concurrent writers in separate processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sentidistill.errors import InputError
from sentidistill.teacher import ResponseCache, TeacherRequest, TeacherResponse, TokenLogprob


def _pair(i: int) -> tuple[TeacherRequest, TeacherResponse]:
    req = TeacherRequest(messages=[{"role": "user", "content": f"review {i}"}], prompt_id="knowdist.overall",
                         prompt_version="1", metadata={"text": f"review {i}"})
    resp = TeacherResponse(text=f"answer {i}", model="m", status="valid", parsed=i,
                           logprobs=[TokenLogprob(token="a", logprob=-0.5, top=[("a", -0.5), ("b", -1.5)])])
    return req, resp


def test_put_get_many_and_export(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        keys = []
        for i in range(1000):  # more than one IN (...) chunk
            req, resp = _pair(i)
            key = req.cache_key("m")
            cache.put(key, req, resp)
            keys.append(key)
        assert len(cache) == 1000
        got = cache.get_many([*keys, "absent"])
        assert len(got) == 1000 and all(r.cached for r in got.values())
        assert got[keys[7]].text == "answer 7" and got[keys[7]].logprobs[0].top[1] == ("b", -1.5)
        assert keys[3] in cache and "absent" not in cache
        assert cache.export(tmp_path / "out.jsonl") == 1000
        assert cache.export(tmp_path / "out.parquet") == 1000
        with pytest.raises(InputError, match=r"\.jsonl or \.parquet"):
            cache.export(tmp_path / "out.csv")
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0]["prompt_id"] == "knowdist.overall" and rows[0]["messages"][0]["content"] == "review 0"
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(table) == 1000 and json.loads(table[5]["logprobs"])[0]["token"] == "a"
    # Reopening sees the same data (it was committed, not buffered).
    with ResponseCache(path) as cache:
        assert cache.get(keys[999]).parsed == 999


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="not a usable teacher cache"):
        ResponseCache(bad).get_many(["x"])


_WRITER = textwrap.dedent(
    """
    import sys
    from sentidistill.teacher import ResponseCache, TeacherRequest, TeacherResponse
    path, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = ResponseCache(path)
    for i in range(start, start + n):
        req = TeacherRequest(messages=[{"role": "user", "content": f"p{i}"}])
        cache.put(req.cache_key("m"), req, TeacherResponse(text=f"a{i}", model="m"))
    cache.close()
    """
)


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    ResponseCache(path).close()  # create the schema first, as a run directory does
    # Overlapping ranges: both processes write keys 150..199.
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(s), "200"]) for s in (0, 150)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with ResponseCache(path) as cache:
        assert len(cache) == 350
        want = {TeacherRequest(messages=[{"role": "user", "content": f"p{i}"}]).cache_key("m"): f"a{i}" for i in range(350)}
        got = cache.get_many(want)
        assert {k: r.text for k, r in got.items()} == want
