"""The teacher layer against a real ``sentidistill serve`` (uvicorn on 127.0.0.1) over a tiny trained LM.

One model, three roads to its greedy answers: HTTP through the openai client (``kind="openai"``), the
serve engine called directly, and ``kind="transformers"`` in process. They must agree, and the teacher
cache must answer a second run without a single HTTP request (the server's own /metrics counter says so).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench_teacher_lm import sentiment_lm, sst2_rows
from sentidistill.bench import get_task
from sentidistill.config import TeacherConfig
from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer
from sentidistill.serve.engine import GenerationEngine, GenParams
from sentidistill.teacher import ResponseCache, SamplingParams, TeacherRequest, build_teacher

K = 5


@pytest.fixture(scope="module")
def lm_dir(tiny_causal_dir: Path) -> Path:
    return sentiment_lm(tiny_causal_dir)


@pytest.fixture(scope="module")
def server(lm_dir: Path):
    with BackgroundServer(create_app(str(lm_dir), served_model_name="tiny", device="cpu")) as srv:
        yield srv


def chat_requests() -> list[TeacherRequest]:
    task = get_task("sst2")
    params = SamplingParams(max_tokens=8, logprobs=True, top_logprobs=K)
    return [TeacherRequest(messages=task.prompt({"text": r["sentence"], "gold": r["label"]}, [], style="chat"),
                           params=params, prompt_id="e2e.sst2", prompt_version="1")
            for r in sst2_rows()[:8]]


def served_requests(base_url: str) -> float:
    """Chat completion requests the server has answered, from its Prometheus endpoint."""
    text = httpx.get(base_url + "/metrics").text
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "sentidistill_requests_total" and s.labels.get("endpoint") == "/v1/chat/completions":
                total += s.value
    return total


def test_openai_teacher_caches_answers_and_logprobs(server, lm_dir: Path, tmp_path: Path) -> None:
    cfg = TeacherConfig(kind="openai", model="tiny", base_url=server.base_url + "/v1", concurrency=4)
    cache_path = tmp_path / "teacher_cache.sqlite"
    reqs = chat_requests()
    before = served_requests(server.base_url)
    with build_teacher(cfg, cache_path, progress=False) as teacher:
        first = teacher.generate(reqs)
        stats = teacher.stats
    assert stats["sent"] == len(reqs) and stats["cache_hits"] == 0 and stats["errors"] == 0, stats
    assert served_requests(server.base_url) - before == len(reqs)
    texts = [r.text for r in first]
    assert all(t.strip() for t in texts) and any(t.startswith("The sentiment is") for t in texts), texts
    for r in first:
        assert r.status == "unchecked" and r.logprobs and len(r.logprobs) == r.usage.completion_tokens
        assert "".join(t.token for t in r.logprobs) == r.text  # token texts concatenate to the answer
        for t in r.logprobs:
            assert len(t.top) == K and [v for _, v in t.top] == sorted((v for _, v in t.top), reverse=True)
            assert t.token == t.top[0][0]  # greedy: the generated token is the top alternative

    # Stored as they arrived: text and the full top-k per token.
    cache = ResponseCache(cache_path)
    stored = cache.get_many([r.cache_key("tiny") for r in reqs])
    cache.close()
    assert len(stored) == len(reqs)
    for req, resp in zip(reqs, first, strict=True):
        s = stored[req.cache_key("tiny")]
        assert s.text == resp.text and s.logprobs == resp.logprobs

    # A second run is served from the cache: no request reaches the server.
    before = served_requests(server.base_url)
    with build_teacher(cfg, cache_path, progress=False) as teacher:
        second = teacher.generate(reqs)
        stats = teacher.stats
    assert stats["sent"] == 0 and stats["cache_hits"] == len(reqs), stats
    assert served_requests(server.base_url) == before
    assert [r.text for r in second] == texts and all(r.cached for r in second)
    assert [r.logprobs for r in second] == [r.logprobs for r in first]

    # The same model through the serve engine directly gives the same answers and alternatives.
    with GenerationEngine.from_spec(str(lm_dir), device="cpu") as engine:
        direct = engine.generate([r.messages for r in reqs], GenParams(max_tokens=8, logprobs=True, top_logprobs=K))
    assert [g.text for g in direct] == texts
    for g, r in zip(direct, first, strict=True):
        assert [t.token for t in g.logprobs] == [t.token for t in r.logprobs]
        for a, b in zip(g.logprobs, r.logprobs, strict=True):
            assert [x for x, _ in a.top] == [x for x, _ in b.top]
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_transformers_teacher_matches_http(server, lm_dir: Path) -> None:
    reqs = chat_requests()
    http_cfg = TeacherConfig(kind="openai", model="tiny", base_url=server.base_url + "/v1")
    with build_teacher(http_cfg, None, progress=False) as teacher:
        http = teacher.generate(reqs)
    local_cfg = TeacherConfig(kind="transformers", model=str(lm_dir), extra={"device": "cpu", "batch_size": 4})
    with build_teacher(local_cfg, None, progress=False) as teacher:
        local = teacher.generate(reqs)
    assert [r.text for r in local] == [r.text for r in http]
    assert [r.finish_reason for r in local] == [r.finish_reason for r in http]
    for a, b in zip(local, http, strict=True):
        assert [x for x, _ in a.logprobs[0].top] == [x for x, _ in b.logprobs[0].top]
        assert a.logprobs[0].logprob == pytest.approx(b.logprobs[0].logprob, abs=1e-4)


def test_transformers_teacher_renders_seq2seq_chats_like_serve(tiny_seq2seq_dir: Path) -> None:
    # The seq2seq teacher used to join the message contents with newlines while the serve engine (and the
    # training collator) render the chat template: the same model then answered differently.
    messages = [[{"role": "system", "content": "Classify the sentiment."}, {"role": "user", "content": t}]
                for t in ["The food was great.", "I love this phone.", "Terrible movie, boring plot and bad acting."]]
    with GenerationEngine.from_spec(str(tiny_seq2seq_dir), device="cpu") as engine:
        direct = engine.generate(messages, GenParams(max_tokens=8))
    cfg = TeacherConfig(kind="transformers", model=str(tiny_seq2seq_dir), repair_attempts=0, extra={"device": "cpu"})
    with build_teacher(cfg, None, progress=False) as teacher:
        local = teacher.generate([TeacherRequest(messages=m, params=SamplingParams(max_tokens=8)) for m in messages])
    assert [r.text for r in local] == [g.text for g in direct]
    assert [r.finish_reason for r in local] == [g.finish_reason for g in direct]
