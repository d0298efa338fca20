"""The student server over a real uvicorn on 127.0.0.1, driven by the openai client and raw httpx.

The served model is a tiny causal LM trained to list its prompt's words (``tests/tiny_trained.py``): its answers
are several tokens long and depend on the prompt, so comparisons with transformers' own greedy decoding,
stop strings and streaming test something.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from sentidistill.serve import create_app
from sentidistill.serve.background import BackgroundServer
from sentidistill.serve.engine import GenerationEngine
from sentidistill.students import load_student
from tiny_trained import check_answers_differ, copy_prompt

MODEL = "tiny"


@pytest.fixture(scope="module")
def server(copy_causal_dir: Path):
    app = create_app(str(copy_causal_dir), served_model_name=MODEL, max_batch_size=8, batch_wait_ms=20,
                     max_texts=4, max_chars=300, max_body_bytes=8192, max_tokens=48)
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _hf_greedy(model_dir: Path, prompt: str, n: int) -> str:
    """Reference: transformers' own greedy decoding, without the server."""
    lm = load_student(str(model_dir))
    ids = lm.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = lm.model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    return lm.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_models_and_health(client: openai.OpenAI, server: BackgroundServer) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(server.base_url + "/health").json()
    assert health["status"] == "ok" and health["kind"] == "causal"


def test_completion_matches_transformers_greedy(client: openai.OpenAI, copy_causal_dir: Path) -> None:
    texts = []
    for words in (["food", "great", "plot"], ["screen", "awful"], ["battery", "phone", "bad", "day"]):
        prompt = copy_prompt(words)
        r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8)
        assert r.model == MODEL and r.object == "text_completion"
        assert r.choices[0].text == _hf_greedy(copy_causal_dir, prompt, 8)
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        texts.append(r.choices[0].text)
    check_answers_differ(texts)
    r = client.completions.create(model=MODEL, prompt=copy_prompt(["food", "great", "plot"]), max_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2
    assert texts[0].startswith(r.choices[0].text)


def test_chat_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": copy_prompt(["movie", "boring", "plot"])}],
        max_tokens=6, logprobs=True, top_logprobs=3,
    )
    choice = r.choices[0]
    content = choice.logprobs.content
    assert choice.finish_reason == "stop"  # the answer ends with EOS before 6 tokens
    assert len(content) == r.usage.completion_tokens >= 2
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        alts = [a.logprob for a in t.top_logprobs]
        assert alts == sorted(alts, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token and abs(alts[0] - t.logprob) < 1e-5
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token


def test_completions_batch_prompts_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=[copy_prompt(["phone", "great"]), copy_prompt(["screen", "awful"])],
                                  max_tokens=4, logprobs=2)
    assert [c.index for c in r.choices] == [0, 1]
    check_answers_differ([c.text for c in r.choices])
    for c in r.choices:
        lp = c.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) >= 1
        assert "".join(lp.tokens) == c.text
        # Each token's offset is where it starts in the completion text; two alternatives each, best first.
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
        assert all(len(d) == 2 and max(d.values()) == pytest.approx(v, abs=1e-5)
                   for d, v in zip(lp.top_logprobs, lp.token_logprobs, strict=True))


def test_sampling_seed_and_stop(client: openai.OpenAI) -> None:
    msgs = [{"role": "user", "content": copy_prompt(["day", "food", "bad", "great"])}]
    a = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, temperature=1.0, seed=7)
    b = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, temperature=1.0, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content
    prompt = copy_prompt(["screen", "plot", "food", "great"])
    full = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10).choices[0].text
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[-1]
    cut = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, stop=[stop]).choices[0]
    assert cut.text == full[: full.find(stop)] and cut.text.strip() and cut.finish_reason == "stop"


def test_stream_chunks(client: openai.OpenAI) -> None:
    answers = []
    for words in (["day", "food", "bad", "great"], ["awful", "screen"]):
        msgs = [{"role": "user", "content": copy_prompt(words)}]
        whole = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8).choices[0]
        chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.message.content
        assert chunks[-1].choices[0].finish_reason == whole.finish_reason
        answers.append(whole.message.content)
    check_answers_differ(answers)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["code"] == "model_not_found"


CHAT = "/v1/chat/completions"
OK_MSG = [{"role": "user", "content": "hi"}]
BAD_REQUESTS = [
    ("malformed json", CHAT, b'{"model": "tiny", "messages": [', 400),
    ("json array body", CHAT, b"[1, 2]", 400),
    ("not json at all", CHAT, b"hello", 400),
    ("missing messages", CHAT, {"model": MODEL}, 400),
    ("empty messages", CHAT, {"model": MODEL, "messages": []}, 400),
    ("bad role", CHAT, {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400),
    ("content wrong type", CHAT, {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400),
    ("max_tokens string", CHAT, {"model": MODEL, "messages": OK_MSG, "max_tokens": "many"}, 400),
    ("max_tokens zero", CHAT, {"model": MODEL, "messages": OK_MSG, "max_tokens": 0}, 400),
    ("max_tokens over cap", CHAT, {"model": MODEL, "messages": OK_MSG, "max_tokens": 10_000}, 400),
    ("temperature high", CHAT, {"model": MODEL, "messages": OK_MSG, "temperature": 9}, 400),
    ("top_logprobs w/o logprobs", CHAT, {"model": MODEL, "messages": OK_MSG, "top_logprobs": 2}, 400),
    ("top_logprobs too many", CHAT, {"model": MODEL, "messages": OK_MSG, "logprobs": True, "top_logprobs": 50}, 400),
    ("message too long", CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "x" * 301}]}, 400),
    ("unknown model", CHAT, {"model": "nope", "messages": OK_MSG}, 404),
    ("completion empty prompt", "/v1/completions", {"model": MODEL, "prompt": ""}, 400),
    ("completion empty list", "/v1/completions", {"model": MODEL, "prompt": []}, 400),
    ("completion too many", "/v1/completions", {"model": MODEL, "prompt": ["a"] * 5}, 400),
    ("completion echo", "/v1/completions", {"model": MODEL, "prompt": "a", "echo": True}, 400),
    ("completion logprobs type", "/v1/completions", {"model": MODEL, "prompt": "a", "logprobs": "yes"}, 400),
    ("analyze unknown task", "/v1/analyze", {"task": "nope", "texts": ["x"]}, 400),
    ("analyze task is a path", "/v1/analyze", {"task": "/etc/passwd.yaml", "texts": ["x"]}, 400),
    ("analyze empty text", "/v1/analyze", {"task": "sentiment", "texts": ["  "]}, 400),
    ("analyze no texts", "/v1/analyze", {"task": "sentiment", "texts": []}, 400),
    ("analyze texts not list", "/v1/analyze", {"task": "sentiment", "texts": "abc"}, 400),
    ("analyze text wrong type", "/v1/analyze", {"task": "sentiment", "texts": [3]}, 400),
    ("analyze too many", "/v1/analyze", {"task": "sentiment", "texts": ["a"] * 5}, 400),
    ("analyze text too long", "/v1/analyze", {"task": "sentiment", "texts": ["x" * 301]}, 400),
    ("analyze stance no target", "/v1/analyze", {"task": "stance", "texts": ["I back her"]}, 400),
    ("analyze bad shot label", "/v1/analyze",
     {"task": "sentiment", "texts": ["x"], "shots": [{"text": "good", "gold": "purple"}]}, 400),
    ("analyze extra field", "/v1/analyze", {"task": "sentiment", "texts": ["x"], "bogus": 1}, 400),
    ("body too large", "/v1/analyze", b'{"task": "sentiment", "texts": ["' + b"x" * 9000 + b'"]}', 413),
    ("unknown path", "/v1/nothing", {}, 404),
]


@pytest.mark.parametrize(("path", "body", "status"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_is_clean_4xx(server: BackgroundServer, path: str, body: object, status: int) -> None:
    url = server.base_url + path
    if isinstance(body, bytes):
        r = httpx.post(url, content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(url, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_wrong_method_is_405(server: BackgroundServer) -> None:
    r = httpx.get(server.base_url + "/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_analyze_structured(server: BackgroundServer, copy_causal_dir: Path) -> None:
    body = {"task": "stance", "texts": [{"text": "She will fix healthcare", "target": "Bernie Sanders"}],
            "shots": [{"text": "Vote for him!", "target": "Joe Biden", "gold": "FAVOR"}], "max_tokens": 4}
    r = httpx.post(server.base_url + "/v1/analyze", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "pstance" and out["model"] == MODEL
    (res,) = out["results"]
    assert res["text"] == "She will fix healthcare" and res["valid"] == (res["prediction"] is not None)
    assert res["prediction"] in (None, "FAVOR", "AGAINST")
    # The raw answer is exactly what the model says to the task's own prompt.
    from sentidistill.bench import get_task

    task = get_task("pstance")
    prompt = task.prompt({"text": "She will fix healthcare", "target": "Bernie Sanders"},
                         [{"text": "Vote for him!", "target": "Joe Biden", "gold": "FAVOR"}], style="plain")
    assert res["raw"] == _hf_greedy(copy_causal_dir, prompt, 4)
    assert res["prediction"] == task.parse(res["raw"])


def _readme_analyze_body() -> dict:
    """The JSON body of the README's `curl .../v1/analyze` example, read from the README itself."""
    import json
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"curl -s localhost:8000/v1/analyze .*?-d '(\{.*?\})'", readme)
    assert m, "the README has no /v1/analyze curl example"
    return json.loads(m.group(1))


def test_readme_analyze_request(server: BackgroundServer, copy_causal_dir: Path) -> None:
    body = _readme_analyze_body()
    assert body["task"] == "sentiment"
    r = httpx.post(server.base_url + "/v1/analyze", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "sst2" and out["model"] == MODEL
    (res,) = out["results"]
    from sentidistill.bench import get_task

    task = get_task("sst2")
    prompt = task.prompt({"text": body["texts"][0]}, [], style="plain")
    assert res["text"] == body["texts"][0] and res["raw"] == _hf_greedy(copy_causal_dir, prompt, len(
        load_student(str(copy_causal_dir)).tokenizer(res["raw"], add_special_tokens=False)["input_ids"]) or 1)
    assert res["prediction"] == task.parse(res["raw"]) and res["valid"] == (res["prediction"] is not None)
    assert out["usage"]["completion_tokens"] >= 1


def _metric(server: BackgroundServer, name: str) -> dict[tuple, float]:
    text = httpx.get(server.base_url + "/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


class _GatedEngine(GenerationEngine):
    """Holds its first batch until ``gate`` more requests are queued behind it.

    That makes batching independent of the machine's speed: however slowly the HTTP requests arrive, they
    are all waiting when the worker looks for its next batch, so the batches the server forms, and records
    in its metrics, are determined by the code alone (``max_batch_size``), not by a time window.
    """

    def __init__(self, *args, gate: int, **kw) -> None:  # type: ignore[no-untyped-def]
        self.gate = gate
        self.holding = threading.Event()
        super().__init__(*args, **kw)

    def _generate_batch(self, jobs):  # type: ignore[no-untyped-def]
        if self.gate:
            self.holding.set()
            deadline = time.monotonic() + 120
            while self.queued() < self.gate and time.monotonic() < deadline:
                time.sleep(0.01)
            self.gate = 0
        return super()._generate_batch(jobs)


def test_concurrent_requests_are_batched(copy_causal_dir: Path) -> None:
    engine = _GatedEngine(load_student(str(copy_causal_dir)), gate=10, max_batch_size=4, batch_wait_ms=0)
    app = create_app(str(copy_causal_dir), served_model_name=MODEL, engine=engine, max_tokens=48)
    prompts = [copy_prompt(w.split()) for w in (
        "food great", "plot boring bad", "screen awful", "battery phone day", "movie boring",
        "service food", "phone screen battery", "bad plot movie", "great day", "awful food", "boring service",
    )]
    with BackgroundServer(app) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)

        def one(p: str) -> str:
            return client.completions.create(model=MODEL, prompt=p, max_tokens=8).choices[0].text

        with cf.ThreadPoolExecutor(len(prompts)) as pool:
            first = pool.submit(one, prompts[0])  # held by the gate until the other ten are queued
            assert engine.holding.wait(60), "the first request never reached the engine"
            rest = [pool.submit(one, p) for p in prompts[1:]]
            batched = [f.result() for f in (first, *rest)]
        counts = _metric(srv, "sentidistill_batch_size_count")[()]
        sizes = _metric(srv, "sentidistill_batch_size_sum")[()]
        buckets = {dict(k)["le"]: v for k, v in _metric(srv, "sentidistill_batch_size_bucket").items()}
        # The gated first request alone, then the ten queued ones in batches of at most max_batch_size=4.
        assert (counts, sizes) == (4, 11)
        assert buckets["1.0"] == 1 and buckets["2.0"] == 2 and buckets["4.0"] == 4
        # Padding inside a batch must not change greedy answers: each one again, alone.
        alone = [one(p) for p in prompts]
        reqs = _metric(srv, "sentidistill_requests_total")
    check_answers_differ(alone)
    assert batched == alone
    assert reqs[(("endpoint", "/v1/completions"), ("status", "200"))] == 2 * len(prompts)


def test_cli_module_starts_server(tiny_seq2seq_dir: Path) -> None:
    """`python -m sentidistill.serve MODEL --port N` serves a seq2seq student."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sentidistill.serve", str(tiny_seq2seq_dir), "--port", str(port),
                             "--served-model-name", "s2s", "--log-level", "warning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        r = c.chat.completions.create(model="s2s", messages=[{"role": "user", "content": "great food"}], max_tokens=3,
                                      logprobs=True, top_logprobs=2)
        assert r.usage.completion_tokens == len(r.choices[0].logprobs.content) <= 3
        assert httpx.get(url + "/health").json()["kind"] == "seq2seq"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
