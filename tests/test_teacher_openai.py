"""The OpenAI backend + runner against a real HTTP server on loopback (and a fault-injecting proxy)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fault_proxy import running_proxy
from sentidistill.config import TeacherConfig
from sentidistill.errors import BudgetExceeded
from sentidistill.teacher import (
    AnswerFormat,
    CachedTeacher,
    ResponseCache,
    SamplingParams,
    TeacherRequest,
    build_teacher,
)
from sentidistill.teacher.openai_backend import OpenAIBackend
from teacher_server import prompt_id, running_server, server_stats


@pytest.fixture(scope="module")
def server() -> str:
    with running_server() as url:
        yield url


def _cfg(url: str, **kw) -> TeacherConfig:
    return TeacherConfig(kind="openai", base_url=url + "/v1", model="echo", **kw)


def _req(text: str, **kw) -> TeacherRequest:
    return TeacherRequest(messages=[{"role": "user", "content": text}], **kw)


def test_real_client_logprobs_are_stored(server: str, tmp_path: Path) -> None:
    cache_path = tmp_path / "c.sqlite"
    params = SamplingParams(max_tokens=32, logprobs=True, top_logprobs=3)
    reqs = [_req(f"hello world {i}", params=params) for i in range(3)]
    with build_teacher(_cfg(server), cache_path, progress=False) as teacher:
        out = teacher.generate(reqs)
        assert [r.text for r in out] == [f"echo: hello world {i}" for i in range(3)]
        for r in out:
            assert r.logprobs is not None and len(r.logprobs) == 4  # "echo:", " hello", " world", " i"
            assert [t.token for t in r.logprobs] == ["echo:", " hello", " world", f" {out.index(r)}"]
            assert all(len(t.top) == 3 and t.top[0][0] == t.token and t.logprob <= 0 for t in r.logprobs)
            assert r.usage.completion_tokens == 4 and not r.cached
        assert teacher.stats["sent"] == 3 and teacher.stats["unchecked"] == 3
        before = server_stats(server)["total"]
        again = teacher.generate(reqs)
        assert all(r.cached for r in again) and server_stats(server)["total"] == before
        assert teacher.stats["cache_hits"] == 3
    with ResponseCache(cache_path) as cache:
        assert len(cache) == 3
        stored = cache.get(reqs[1].cache_key("echo"))
        assert stored is not None and stored.logprobs == out[1].logprobs


def test_async_caller_with_running_loop(server: str) -> None:
    import asyncio

    async def main() -> list[str]:
        with build_teacher(_cfg(server), None, progress=False) as teacher:
            sync = teacher.generate([_req("from sync inside a loop")])  # the caller's loop is running
            asyncd = await teacher.agenerate([_req("from async")])
            return [sync[0].text, asyncd[0].text]

    assert asyncio.run(main()) == ["echo: from sync inside a loop", "echo: from async"]


def test_faults_every_prompt_answered_once(server: str, tmp_path: Path) -> None:
    n = 30
    reqs = [_req(f"prompt number {i}") for i in range(n)]
    cache_path = tmp_path / "faults.sqlite"
    with running_proxy(server, seed=7, fault_rate=0.5, slow_s=1.5) as proxy:
        cfg = _cfg(proxy, concurrency=8, max_retries=25, timeout_s=0.75)
        teacher = CachedTeacher(
            OpenAIBackend.from_config(cfg), cfg, ResponseCache(cache_path), progress=False,
            backoff_base_s=0.02, backoff_max_s=0.2, seed=0,
        )
        with teacher:
            out = teacher.generate(reqs)
            stats = teacher.stats
        faults = httpx.get(proxy + "/__faults", timeout=5).json()
    assert [r.text for r in out] == [f"echo: prompt number {i}" for i in range(n)]
    assert all(r.status == "unchecked" for r in out)
    injected = {k: v for k, v in faults.items() if k != "ok"}
    assert len(injected) >= 5, faults  # most fault kinds were exercised
    assert stats["retries"] == sum(injected.values()) and stats["errors"] == 0
    assert stats["sent"] == n + stats["retries"]
    with ResponseCache(cache_path) as cache:
        assert len(cache) == n
        assert set(cache.keys()) == {r.cache_key("echo") for r in reqs}
    # The server saw every prompt at least once (dropped-before-forwarding faults never reached it).
    by_prompt = server_stats(server)["by_prompt"]
    assert all(by_prompt.get(prompt_id(r.messages), 0) >= 1 for r in reqs)


def test_validation_and_repair_counts(server: str, tmp_path: Path) -> None:
    labels = AnswerFormat(kind="label", labels=("positive", "negative", "neutral"))
    reqs = [
        _req("<<reply:Positive!>>", answer_format=labels),
        _req("<<reply:I think it is great>> <<repair:Label: negative>>", answer_format=labels),
        _req("<<reply:dunno>> <<repair:still dunno>>", answer_format=labels),
        _req('<<reply:```json\n{"polarity": "neutral"}\n```>>', answer_format=AnswerFormat(kind="json")),
        _req("<<reply:[('pizza', 'positive'), ('staff', 'negative')]>>",
             answer_format=AnswerFormat(kind="tuples", tuple_arity=2)),
        _req("<<reply:[('pizza',)]>> <<repair:[]>>", answer_format=AnswerFormat(kind="tuples", tuple_arity=2)),
    ]
    with build_teacher(_cfg(server, repair_attempts=2), tmp_path / "v.sqlite", progress=False) as teacher:
        out = teacher.generate(reqs)
        s = teacher.stats
    assert [r.status for r in out] == ["valid", "repaired", "invalid", "valid", "valid", "repaired"]
    assert out[0].parsed == "positive" and out[1].parsed == "negative"
    assert out[2].text == "still dunno" and out[2].parsed is None and "not one of the labels" in out[2].error
    assert out[3].parsed == {"polarity": "neutral"}
    assert out[4].parsed == [["pizza", "positive"], ["staff", "negative"]]
    assert out[5].parsed == []
    assert [r.attempts for r in out] == [1, 2, 3, 1, 1, 2]
    assert (s["valid"], s["repaired"], s["invalid"]) == (3, 2, 1)
    assert s["sent"] == 1 + 2 + 3 + 1 + 1 + 2
    # The repair round carries the original prompt, the bad answer and the instruction.
    counts = server_stats(server)["by_prompt"]
    assert counts[prompt_id(reqs[2].messages)] == 3


def test_request_budget_stops_and_resumes(server: str, tmp_path: Path) -> None:
    cache_path = tmp_path / "b.sqlite"
    reqs = [_req(f"budget {i}") for i in range(6)]
    with build_teacher(_cfg(server, max_requests=3, concurrency=1), cache_path, progress=False) as teacher:
        with pytest.raises(BudgetExceeded, match="max_requests=3") as info:
            teacher.generate(reqs)
        partial = info.value.responses
        assert teacher.stats["sent"] == 3
    assert sum(r.status == "unchecked" for r in partial) == 3
    assert sum(r.status == "error" and "budget" in r.error for r in partial) == 3
    with build_teacher(_cfg(server, max_requests=3, concurrency=1), cache_path, progress=False) as teacher:
        out = teacher.generate(reqs)
        assert teacher.stats["cache_hits"] == 3 and teacher.stats["sent"] == 3
    assert [r.text for r in out] == [f"echo: budget {i}" for i in range(6)]


def test_token_budget_returns_partial(server: str) -> None:
    reqs = [_req(f"tokens {i}") for i in range(5)]  # each call: 2 prompt + 3 completion tokens
    with build_teacher(_cfg(server, max_total_tokens=9, concurrency=1), None, progress=False) as teacher:
        out = teacher.generate(reqs, on_budget="return")
        assert teacher.stats["sent"] == 2 and teacher.budget_exhausted.startswith("max_total_tokens=9")
        assert "budget exhausted" in teacher.summary()
    assert [r.status for r in out] == ["unchecked", "unchecked", "error", "error", "error"]


def test_fatal_http_error_stops_the_run(server: str) -> None:
    cfg = TeacherConfig(kind="openai", base_url=server + "/nope/v1", model="echo")
    with build_teacher(cfg, None, progress=False) as teacher, pytest.raises(Exception, match="HTTP 404"):
        teacher.generate([_req("a"), _req("b")])
