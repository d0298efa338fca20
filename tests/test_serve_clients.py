"""Issue 15, item 7: the student server against what common clients send (real uvicorn on 127.0.0.1).

``null`` means "not set" for every optional field; every field the OpenAI API documents for
/v1/chat/completions and /v1/completions is honoured, accepted without effect (bookkeeping fields), or
answered with a 400 that names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer

MODEL = "tiny"
MSG = [{"role": "user", "content": "The soup was cold."}]


@pytest.fixture(scope="module")
def server(tiny_causal_dir: Path):
    app = create_app(str(tiny_causal_dir), served_model_name=MODEL, max_batch_size=4, batch_wait_ms=0,
                     max_texts=4, max_chars=300, max_tokens=16)
    with BackgroundServer(app) as srv:
        yield srv


def _chat(server: BackgroundServer, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)


def test_issue_nulls_are_defaults(server: BackgroundServer) -> None:
    base = {"model": MODEL, "messages": MSG, "max_tokens": 6}
    nulls = {"temperature": None, "top_p": None, "n": None, "stream": None, "stop": None, "seed": None}
    r = _chat(server, {**base, **nulls})
    assert r.status_code == 200, r.text
    plain = _chat(server, base).json()
    got = r.json()
    assert got["object"] == "chat.completion" and len(got["choices"]) == 1  # n defaults to 1
    assert got["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]  # greedy default


def test_constructed_nulls_everywhere_else(server: BackgroundServer) -> None:
    # Same class: every other optional field as null, on both routes and inside a message.
    chat_nulls = dict.fromkeys([
        "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty",
        "logit_bias", "user", "response_format", "tools", "tool_choice", "functions", "function_call",
        "parallel_tool_calls", "stream_options", "modalities", "audio", "reasoning_effort", "verbosity",
        "web_search_options", "prediction", "metadata", "store", "service_tier", "safety_identifier",
        "prompt_cache_key"])
    msg = [{"role": "user", "content": "The soup was cold.", "name": None, "tool_calls": None}]
    r = _chat(server, {"model": MODEL, "messages": msg, **chat_nulls})
    assert r.status_code == 200, r.text
    comp_nulls = dict.fromkeys(["max_tokens", "temperature", "top_p", "n", "stream", "stop", "seed", "logprobs",
                                "echo", "best_of", "suffix", "frequency_penalty", "presence_penalty",
                                "logit_bias", "user", "stream_options"])
    r = httpx.post(server.base_url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", **comp_nulls},
                   timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 16
    # A required field sent as null is reported missing, by name.
    r = _chat(server, {"model": MODEL, "messages": None})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_openai_sdk_passing_none(server: BackgroundServer) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    r = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=4, temperature=None, top_p=None,
                                       n=None, stop=None, seed=None, presence_penalty=None, user=None)
    assert r.choices[0].message.content is not None
    c = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, temperature=None, logprobs=None,
                                  best_of=None, suffix=None, echo=None)
    assert c.choices[0].text is not None


def test_what_langchain_and_litellm_send(server: BackgroundServer) -> None:
    # LangChain's ChatOpenAI (defaults, some versions send unset options as null) and its legacy OpenAI
    # completions LLM (penalties 0, logit_bias {}, best_of 1); LiteLLM streaming asks for a usage chunk.
    langchain_chat = {"model": MODEL, "messages": MSG, "stream": False, "n": 1, "temperature": 0.7,
                      "max_tokens": None, "stop": None}
    assert _chat(server, langchain_chat).status_code == 200
    langchain_llm = {"model": MODEL, "prompt": ["Hi"], "temperature": 0.7, "max_tokens": 4, "top_p": 1,
                     "frequency_penalty": 0, "presence_penalty": 0, "n": 1, "logit_bias": {}, "best_of": 1}
    r = httpx.post(server.base_url + "/v1/completions", json=langchain_llm, timeout=60)
    assert r.status_code == 200, r.text
    litellm = {"model": MODEL, "messages": MSG, "max_tokens": 4, "stream": True,
               "stream_options": {"include_usage": True}, "user": "u-1"}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=litellm, timeout=60) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["total_tokens"] > 0
    # Streaming completions are served too (they were a 400).
    with httpx.stream("POST", server.base_url + "/v1/completions",
                      json={"model": MODEL, "prompt": "Hi", "max_tokens": 3, "stream": True}, timeout=60) as s:
        lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["object"] == "text_completion"


@pytest.mark.parametrize(("route", "field", "value"), [
    ("chat", "frequency_penalty", 0.5), ("chat", "presence_penalty", -1), ("chat", "logit_bias", {"42": 5}),
    ("chat", "response_format", {"type": "json_object"}),
    ("chat", "tools", [{"type": "function", "function": {"name": "f"}}]),
    ("chat", "tool_choice", "required"), ("chat", "functions", [{"name": "f"}]), ("chat", "function_call", "f"),
    ("chat", "modalities", ["text", "audio"]), ("chat", "audio", {"voice": "alloy", "format": "wav"}),
    ("chat", "reasoning_effort", "low"), ("chat", "verbosity", "low"), ("chat", "web_search_options", {}),
    ("completions", "best_of", 3), ("completions", "suffix", "end"), ("completions", "echo", True),
    ("completions", "frequency_penalty", 1.0),
])
def test_unsupported_values_are_a_400_naming_the_field(server: BackgroundServer, route: str, field: str,
                                                       value: object) -> None:
    if route == "chat":
        r = _chat(server, {"model": MODEL, "messages": MSG, field: value})
    else:
        r = httpx.post(server.base_url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", field: value},
                       timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"]


def test_accepted_bookkeeping_and_neutral_values(server: BackgroundServer) -> None:
    body = {"model": MODEL, "messages": MSG, "max_completion_tokens": 3, "frequency_penalty": 0,
            "presence_penalty": 0.0, "logit_bias": {}, "response_format": {"type": "text"}, "tools": [],
            "tool_choice": "none", "parallel_tool_calls": False, "modalities": ["text"], "metadata": {"k": "v"},
            "store": False, "service_tier": "auto", "user": "u", "safety_identifier": "s", "prompt_cache_key": "p",
            "prediction": {"type": "content", "content": "x"}}
    r = _chat(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 3
