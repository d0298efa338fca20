"""The teacher's cache key and retry policy, measured at a real HTTP server that records what it received.

Cache: the same request is a hit (the server sees nothing); a change of model, of any sampling parameter
or of the prompt template's version is a miss (the server sees exactly one new request).

Retries: the server answers 429 with ``Retry-After`` or 503 without it, and records when each attempt
arrived. The client must wait at least ``Retry-After`` (lower bounds only: a slow machine waits longer,
never shorter), and its backoff must be jittered: the waits after a 503 spread over ``[0, base)`` instead of
all being ``base``. Upper bounds are generous multiples of the configured backoff, never a machine speed.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sentidistill.config import TeacherConfig
from sentidistill.serve.background import BackgroundServer
from sentidistill.teacher import CachedTeacher, ResponseCache, SamplingParams, TeacherRequest, build_teacher
from sentidistill.teacher.openai_backend import OpenAIBackend
from teacher_server import create_app as create_teacher_app


@pytest.fixture(scope="module")
def teacher_url() -> Iterator[str]:
    app = create_teacher_app()
    with BackgroundServer(app) as srv:
        yield srv.base_url


def _total(url: str) -> int:
    import httpx

    return int(httpx.get(url + "/stats", timeout=10).json()["total"])


def _req(text: str = "the pizza was great", **kw: Any) -> TeacherRequest:
    params = kw.pop("params", SamplingParams(max_tokens=16))
    return TeacherRequest(messages=[{"role": "user", "content": text}], params=params, prompt_id="t.overall",
                          prompt_version=kw.pop("prompt_version", "1"), **kw)


def test_cache_key_hit_and_misses(teacher_url: str, tmp_path: Path) -> None:
    cache = tmp_path / "c.sqlite"

    def ask(req: TeacherRequest, model: str = "echo") -> bool:
        """Ask through a fresh teacher over the same cache file; True if the server was asked."""
        cfg = TeacherConfig(kind="openai", base_url=teacher_url + "/v1", model=model, concurrency=1)
        before = _total(teacher_url)
        with build_teacher(cfg, cache, progress=False) as teacher:
            (resp,) = teacher.generate([req])
        sent = _total(teacher_url) - before
        assert sent in (0, 1) and resp.cached == (sent == 0)
        return sent == 1

    base = _req()
    assert ask(base), "first request must reach the server"
    assert not ask(_req()), "an identical request must be a cache hit"
    assert ask(base, model="echo-2"), "another model must miss"
    assert ask(_req(params=SamplingParams(max_tokens=16, temperature=0.7))), "temperature must be in the key"
    assert ask(_req(params=SamplingParams(max_tokens=17))), "max_tokens must be in the key"
    assert ask(_req(params=SamplingParams(max_tokens=16, top_p=0.9))), "top_p must be in the key"
    assert ask(_req(params=SamplingParams(max_tokens=16, logprobs=True, top_logprobs=3))), "logprobs in the key"
    assert ask(_req(params=SamplingParams(max_tokens=16, stop=("\n",)))), "stop strings must be in the key"
    assert ask(_req(prompt_version="2")), "a new prompt version must miss"
    assert ask(_req("the pizza was cold")), "other messages must miss"
    # Metadata is carried through, not part of the key.
    assert not ask(_req(metadata={"row": 7}))
    with ResponseCache(cache) as c:
        assert len(c) == 9


class _Recorder:
    """An OpenAI-compatible chat endpoint that fails each prompt a scripted number of times first."""

    def __init__(self, failures: dict[str, list[tuple[int, float | None]]]) -> None:
        self.failures = failures  # prompt -> [(status, Retry-After or None), ...] for its first attempts
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.arrivals[prompt].append(time.monotonic())
        plan = self.failures.get(prompt, [])
        n = len(self.arrivals[prompt])
        if n <= len(plan):
            status, retry_after = plan[n - 1]
            headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
            return JSONResponse({"error": {"message": "try later"}}, status_code=status, headers=headers)
        return JSONResponse({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " + prompt},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        })

    def gaps(self, prompt: str) -> list[float]:
        t = self.arrivals[prompt]
        return [b - a for a, b in itertools.pairwise(t)]


def _teacher(url: str, *, base: float, cap: float, concurrency: int = 16) -> CachedTeacher:
    cfg = TeacherConfig(kind="openai", base_url=url + "/v1", model="m", concurrency=concurrency, max_retries=5)
    return CachedTeacher(OpenAIBackend.from_config(cfg), cfg, None, progress=False, backoff_base_s=base,
                         backoff_max_s=cap, seed=None)


def test_retry_after_is_honoured() -> None:
    # Backoff alone would wait at most 0.05 s, then 0.1 s; Retry-After asks for 1.2 s, then 0.6 s. (The runner
    # caps a Retry-After at 4 x backoff_max_s, here 2 s, so that a server cannot park a run for hours.)
    rec = _Recorder({"p": [(429, 1.2), (503, 0.6)]})
    with BackgroundServer(rec.app) as srv, _teacher(srv.base_url, base=0.05, cap=0.5) as teacher:
        (resp,) = teacher.generate([_req("p")])
        assert teacher.stats["retries"] == 2
    assert resp.text == "ok p" and resp.attempts == 3
    first, second = rec.gaps("p")
    assert first >= 1.2 - 0.02, f"waited {first:.3f}s after 'Retry-After: 1.2'"
    assert second >= 0.6 - 0.02, f"waited {second:.3f}s after 'Retry-After: 0.6'"
    assert first < 1.2 + 5 and second < 0.6 + 5  # it did not wait for something else (e.g. a timeout)


def test_backoff_is_exponential_with_full_jitter() -> None:
    # 24 prompts, each failing twice with 503 (no Retry-After): waits are uniform in [0, base) then [0, 2 base).
    base = 1.0
    prompts = [f"q{i}" for i in range(24)]
    rec = _Recorder({p: [(503, None), (503, None)] for p in prompts})
    with BackgroundServer(rec.app) as srv, _teacher(srv.base_url, base=base, cap=10.0, concurrency=24) as teacher:
        out = teacher.generate([_req(p) for p in prompts])
        assert teacher.stats["retries"] == 48
    assert [r.text for r in out] == [f"ok {p}" for p in prompts]
    first = sorted(rec.gaps(p)[0] for p in prompts)
    second = sorted(rec.gaps(p)[1] for p in prompts)
    # Jitter: the waits spread out. Without jitter (always base * 2**attempt) every first wait would be
    # >= base, all alike; with full jitter about a quarter of them are under base / 4 (P(none of 24) =
    # 0.75**24 < 0.1%) and they spread over most of [0, base). The round trip on a loaded machine adds to
    # each wait (up to ~0.5 s measured when 24 retries fire at once on 2 busy cores): 0.35 s of slack.
    assert first[0] < base / 4 + 0.35, first
    assert first[-1] - first[0] > base / 2, first
    assert sorted(first)[12] < 3 * base and sorted(second)[12] < 3 * 2 * base
    assert sum(second) > sum(first), (first, second)
