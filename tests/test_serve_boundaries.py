"""Every size limit of the student server, at exactly the limit (accepted) and one past it (refused).

The other serve tests send ``limit + 1`` only, so a ``>=`` written for ``>`` (refusing exactly ``max_texts``
texts) passed them all (issue 24). Limits: ``max_texts`` (texts per /v1/analyze on the generative and the
classifier server, prompts x n per /v1/completions), ``max_chars`` (a text, a message), ``max_tokens``,
``max_body_bytes``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer

MODEL = "tiny"
MAX_TEXTS, MAX_CHARS, MAX_BODY, MAX_TOKENS = 3, 120, 4096, 8


@pytest.fixture(scope="module")
def server(copy_causal_dir: Path):
    app = create_app(str(copy_causal_dir), served_model_name=MODEL, max_batch_size=8, batch_wait_ms=5,
                     max_texts=MAX_TEXTS, max_chars=MAX_CHARS, max_body_bytes=MAX_BODY, max_tokens=MAX_TOKENS)
    with BackgroundServer(app) as srv:
        yield srv


def _post(server: BackgroundServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=120)


@pytest.mark.parametrize("n", [MAX_TEXTS, MAX_TEXTS + 1])
def test_analyze_max_texts_boundary(server, n):
    r = _post(server, "/v1/analyze", {"task": "sentiment", "texts": [f"good {i}" for i in range(n)], "max_tokens": 1})
    assert r.status_code == (200 if n <= MAX_TEXTS else 400), r.text
    if n <= MAX_TEXTS:
        assert len(r.json()["results"]) == n


@pytest.mark.parametrize(("prompts", "n", "ok"), [(MAX_TEXTS, 1, True), (MAX_TEXTS + 1, 1, False), (1, MAX_TEXTS, True),
                                                  (1, MAX_TEXTS + 1, False)])
def test_completions_prompts_times_n_boundary(server, prompts, n, ok):
    r = _post(server, "/v1/completions", {"model": MODEL, "prompt": ["a b ="] * prompts, "n": n, "max_tokens": 1})
    assert r.status_code == (200 if ok else 400), r.text
    if ok:
        assert len(r.json()["choices"]) == prompts * n


@pytest.mark.parametrize("length", [MAX_CHARS, MAX_CHARS + 1])
def test_max_chars_boundary_for_analyze_and_chat(server, length):
    text = ("good " * MAX_CHARS)[:length - 1] + "x"
    assert len(text) == length
    want = 200 if length <= MAX_CHARS else 400
    r = _post(server, "/v1/analyze", {"task": "sentiment", "texts": [text], "max_tokens": 1})
    assert r.status_code == want, r.text
    r = _post(server, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": text}],
                                               "max_tokens": 1})
    assert r.status_code == want, r.text


@pytest.mark.parametrize("max_tokens", [MAX_TOKENS, MAX_TOKENS + 1])
def test_max_tokens_boundary(server, max_tokens):
    r = _post(server, "/v1/completions", {"model": MODEL, "prompt": "a b =", "max_tokens": max_tokens})
    assert r.status_code == (200 if max_tokens <= MAX_TOKENS else 400), r.text


@pytest.mark.parametrize("size", [MAX_BODY, MAX_BODY + 1])
def test_body_bytes_boundary(server, size):
    body = json.dumps({"model": MODEL, "prompt": "a b =", "max_tokens": 1}).encode()
    body += b" " * (size - len(body))  # JSON allows trailing whitespace: the same request, exactly `size` bytes
    assert len(body) == size
    r = httpx.post(server.base_url + "/v1/completions", content=body, headers={"content-type": "application/json"},
                   timeout=120)
    assert r.status_code == (200 if size <= MAX_BODY else 413), r.text


def test_classifier_server_max_texts_boundary(tmp_path):
    from sentidistill.testing import build_tiny_classifier

    clf = build_tiny_classifier(tmp_path / "clf", tasks=[{"name": "sst2", "labels": ["negative", "positive"]}])
    app = create_app(str(clf), served_model_name="clf", max_texts=MAX_TEXTS, max_chars=MAX_CHARS)
    with BackgroundServer(app) as srv:
        ok = _post(srv, "/v1/analyze", {"task": "sentiment", "texts": ["good"] * MAX_TEXTS})
        over = _post(srv, "/v1/analyze", {"task": "sentiment", "texts": ["good"] * (MAX_TEXTS + 1)})
        at_chars = _post(srv, "/v1/analyze", {"task": "sentiment", "texts": ["g" * MAX_CHARS]})
        past_chars = _post(srv, "/v1/analyze", {"task": "sentiment", "texts": ["g" * (MAX_CHARS + 1)]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == MAX_TEXTS, ok.text
    assert over.status_code == 400 and str(MAX_TEXTS) in over.json()["error"]["message"]
    assert at_chars.status_code == 200, at_chars.text
    assert past_chars.status_code == 400
