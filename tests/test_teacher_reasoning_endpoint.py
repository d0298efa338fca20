"""Issue 15, items 1-3: reasoning models behind a real OpenAI-compatible HTTP server on 127.0.0.1,
called with the real ``openai`` client (the teacher's OpenAI backend).

The server plays the bodies such endpoints send: a length stop with ``content: null`` and the reasoning in
``reasoning_content`` (vLLM/SGLang/DeepSeek with a reasoning parser), the same stop with the ``<think>``
block inline (no reasoning parser), and OpenAI's 400s for ``max_tokens``/``temperature`` on o-series and
gpt-5 models. ``GET /bodies`` returns every request body it got.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sentidistill.config import TeacherConfig
from sentidistill.errors import BudgetExceeded
from sentidistill.serve.background import BackgroundServer
from sentidistill.teacher import AnswerFormat, SamplingParams, TeacherRequest, build_teacher
from sentidistill.teacher.base import FatalBackendError
from sentidistill.teacher.openai_backend import is_reasoning_model

# The body: max_tokens spent on reasoning, no content.
LENGTH_BODY = {"choices": [{"message": {"role": "assistant", "content": None,
                                        "reasoning_content": "Okay, the user wants one label ..."},
                            "finish_reason": "length"}],
               "usage": {"prompt_tokens": 52, "completion_tokens": 256, "total_tokens": 308}}
# Constructed, same class: a server without a reasoning parser sends the unclosed block as content.
INLINE_LENGTH_BODY = {"choices": [{"message": {"role": "assistant", "content": "<think>\nOkay, the user wants one"},
                                   "finish_reason": "length"}],
                      "usage": {"prompt_tokens": 40, "completion_tokens": 64, "total_tokens": 104}}
OPENAI_REASONING = {"o3-mini", "gpt-5-mini", "my-proxy-alias"}  # the alias is an o-series model behind a proxy


def _openai_400(param: str, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}}, status_code=400)


def create_app() -> FastAPI:
    app = FastAPI()
    bodies: list[dict[str, Any]] = []

    @app.get("/bodies")
    async def get_bodies() -> list[dict[str, Any]]:
        return bodies

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        bodies.append(body)
        model = body["model"]
        base = {"id": f"c{len(bodies)}", "object": "chat.completion", "created": 0, "model": model}
        if model == "r1-distill":
            return JSONResponse({**base, **LENGTH_BODY})
        if model == "qwen3-inline":
            return JSONResponse({**base, **INLINE_LENGTH_BODY})
        if model == "qwen3-parser":  # a reasoning parser: thinking apart, the answer in content
            msg = {"role": "assistant", "content": "\n\nnegative", "reasoning_content": "cold soup, wrong bill"}
            return JSONResponse({**base, "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})
        if model == "sst5-teacher":  # the item 4: "very positive" with its top-5 log-probs
            top0 = [("very", -0.11), ("positive", -2.42), ("Very", -3.70), ("neutral", -4.90), ("negative", -6.30)]
            content = [{"token": "very", "logprob": -0.11, "bytes": None,
                        "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in top0]},
                       {"token": " positive", "logprob": -0.02, "bytes": None,
                        "top_logprobs": [{"token": " positive", "logprob": -0.02, "bytes": None}]}]
            msg = {"role": "assistant", "content": "very positive"}
            return JSONResponse({**base, "choices": [{"index": 0, "message": msg, "finish_reason": "stop",
                                                      "logprobs": {"content": content}}],
                                 "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
        if model in OPENAI_REASONING:
            if "max_tokens" in body:
                return _openai_400("max_tokens", "Unsupported parameter: 'max_tokens' is not supported with this "
                                   "model. Use 'max_completion_tokens' instead.", "unsupported_parameter")
            if body.get("temperature", 1) != 1:
                return _openai_400("temperature", "Unsupported value: 'temperature' does not support 0.0 with "
                                   "this model. Only the default (1) value is supported.", "unsupported_value")
            msg = {"role": "assistant", "content": "positive"}
            return JSONResponse({**base, "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 12, "completion_tokens": 90, "total_tokens": 102}})
        return JSONResponse({"error": {"message": "unknown model"}}, status_code=404)

    return app


@pytest.fixture(scope="module")
def server() -> str:
    with BackgroundServer(create_app()) as srv:
        yield srv.base_url


def _bodies(url: str) -> list[dict[str, Any]]:
    import httpx

    return httpx.get(url + "/bodies").json()


def _req(max_tokens: int = 256) -> TeacherRequest:
    return TeacherRequest(messages=[{"role": "user", "content": "Sentence: the soup was cold\nLabel:"}],
                          params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
                          answer_format=AnswerFormat(kind="label", labels=("negative", "positive")))


def _cfg(url: str, model: str, **kw: Any) -> TeacherConfig:
    return TeacherConfig(kind="openai", base_url=url + "/v1", model=model, **kw)


@pytest.mark.parametrize(("model", "usage"), [("r1-distill", (52, 256)), ("qwen3-inline", (40, 64))])
def test_length_stop_without_answer_is_one_call_truncated_and_billed(server: str, tmp_path: Path, model: str,
                                                                     usage: tuple[int, int]) -> None:
    before = len(_bodies(server))
    with build_teacher(_cfg(server, model, max_retries=6, repair_attempts=2), tmp_path / "c.sqlite",
                       progress=False) as teacher:
        (resp,) = teacher.generate([_req()])
        stats = teacher.stats
        assert len(_bodies(server)) - before == 1  # not retried, not repaired
        assert resp.status == "truncated" and resp.finish_reason == "length" and resp.attempts == 1
        assert "finish_reason=length" in resp.error and "max_tokens=256" in resp.error
        assert "reasoning_tokens" in resp.error and "enable_thinking" in resp.error  # what to do
        assert resp.reasoning.startswith("Okay, the user wants one")
        assert (stats["prompt_tokens"], stats["completion_tokens"]) == usage
        assert stats["truncated"] == 1 and stats["retries"] == 0 and stats["thinking"] == 1
        assert "truncated 1" in teacher.summary()
        # Stored: the same request costs nothing again.
        (again,) = teacher.generate([_req()])
        assert again.cached and again.status == "truncated" and len(_bodies(server)) - before == 1


def test_every_calls_usage_counts_against_the_token_budget(server: str, tmp_path: Path) -> None:
    # 308 tokens per call: a budget of 500 allows two calls, then stops (today: 0 tokens were counted).
    cfg = _cfg(server, "r1-distill", max_total_tokens=500, concurrency=1)
    with build_teacher(cfg, None, progress=False) as teacher:
        with pytest.raises(BudgetExceeded):
            teacher.generate([_req(100 + i) for i in range(5)])
        assert teacher.stats["sent"] == 2 and teacher.stats["prompt_tokens"] + teacher.stats["completion_tokens"] == 616


def test_reasoning_tokens_give_room_and_change_the_cache_key(server: str, tmp_path: Path) -> None:
    with build_teacher(_cfg(server, "r1-distill", reasoning_tokens=2048), None, progress=False) as teacher:
        teacher.generate([_req(16)])
    assert _bodies(server)[-1]["max_tokens"] == 16 + 2048


def test_reasoning_content_is_kept_and_counted(server: str) -> None:
    with build_teacher(_cfg(server, "qwen3-parser"), None, progress=False) as teacher:
        (resp,) = teacher.generate([_req()])
        assert resp.status == "valid" and resp.parsed == "negative" and resp.reasoning == "cold soup, wrong bill"
        assert teacher.stats["thinking"] == 1 and "1 with a thinking block" in teacher.summary()


def test_model_family_default_sends_max_completion_tokens(server: str) -> None:
    assert is_reasoning_model("o3-mini") and is_reasoning_model("openai/gpt-5") and is_reasoning_model("o1")
    assert not is_reasoning_model("gpt-4o-mini") and not is_reasoning_model("qwen3-8b")
    for model in ("o3-mini", "gpt-5-mini"):
        with build_teacher(_cfg(server, model), None, progress=False) as teacher:
            (resp,) = teacher.generate([_req(64)])
        assert resp.status == "valid" and resp.parsed == "positive"
        body = _bodies(server)[-1]
        assert body["max_completion_tokens"] == 64
        assert not {"max_tokens", "temperature", "top_p"} & set(body)


def test_unsupported_parameter_400_names_the_option_and_the_override_works(server: str) -> None:
    # An o-series model behind an alias the family rule cannot recognise: every request would be a 400.
    before = len(_bodies(server))
    with (build_teacher(_cfg(server, "my-proxy-alias", max_retries=6), None, progress=False) as teacher,
          pytest.raises(FatalBackendError, match=r"'max_tokens'.*teacher\.reasoning_params: true")):
        teacher.generate([_req(), _req(30)])
    assert len(_bodies(server)) - before <= 2  # not retried
    with build_teacher(_cfg(server, "my-proxy-alias", reasoning_params=True), None, progress=False) as teacher:
        (resp,) = teacher.generate([_req()])
    assert resp.status == "valid" and _bodies(server)[-1]["max_completion_tokens"] == 256
    # The user's false wins over the family default, and the 400 on temperature says what to set.
    with (build_teacher(_cfg(server, "o3-mini", reasoning_params=False), None, progress=False) as teacher,
          pytest.raises(FatalBackendError, match="reasoning_params: true")):
        teacher.generate([_req()])


def test_restricted_scoring_of_an_endpoint_reads_very_positive(server: str) -> None:
    from sentidistill.bench.models import TeacherAdapter

    words = ["very negative", "negative", "neutral", "positive", "very positive"]
    adapter = TeacherAdapter(build_teacher(_cfg(server, "sst5-teacher"), None, progress=False), top_logprobs=5)
    try:
        (answer,) = adapter.choose([[{"role": "user", "content": "Sentence: best meal of my life\nLabel:"}]], words)
    finally:
        adapter.close()
    assert answer.meta["via"] == "logprobs" and answer.text == "very positive"
    assert answer.scores == pytest.approx([None, -6.30, -4.90, -2.42, -0.13])
