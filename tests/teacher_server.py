"""A small OpenAI-compatible chat server for the teacher tests and the throughput benchmark.

Answers are deterministic so tests can check them: a ``<<reply:TEXT>>`` directive in the first user
message is the answer; after an assistant turn (a repair round) ``<<repair:TEXT>>`` is used instead;
a classification prompt (the last user message ends with ``Label:`` or is a ``Sentence:`` turn) is answered by a tiny sentiment
lexicon over the query sentence, with the other label as the runner-up (a cheap, *correct-ish* teacher
for pipeline tests); otherwise the server echoes ``echo: <last user message>``. Each generated "token" is a word with a
deterministic log-probability and top-k alternatives. ``GET /stats`` counts requests per prompt (the
messages before the first assistant turn), so tests can prove nothing was sent twice.

Run: ``python tests/teacher_server.py --port 8123 --latency 0.2``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

_REPLY = re.compile(r"<<reply:(.*?)>>", re.DOTALL)
# <<lp:TOKEN=VALUE,...>> anywhere in a user message: report TOKEN (generated or alternative) with log-prob VALUE,
# written to the wire as given: -inf / nan as the bare JSON constants -Infinity / NaN (what Python servers such as
# aphrodite, lmdeploy and mlx emit), "str:X" as the JSON string "X", null as null.
_LP = re.compile(r"<<lp:(.*?)>>", re.DOTALL)


def _lp_overrides(messages: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in messages:
        if m.get("role") != "user":
            continue
        for spec in _LP.findall(str(m.get("content") or "")):
            for item in spec.split(","):
                tok, _, val = item.strip().partition("=")
                out[tok] = (val[4:] if val.startswith("str:") else None if val == "null" else float(val))
    return out
_REPAIR = re.compile(r"<<repair:(.*?)>>", re.DOTALL)


def prompt_id(messages: list[dict[str, Any]]) -> str:
    """The identity of a prompt: its messages up to the first assistant turn."""
    head: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") == "assistant":
            break
        head.append({"role": m.get("role"), "content": m.get("content")})
    return hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()[:16]


_POSITIVE = {"wonderful", "great", "loved", "love", "warm", "delightful", "beautifully", "best", "charming", "good"}
_NEGATIVE = {"dull", "terrible", "hated", "boring", "painful", "badly", "worst", "tedious", "bad", "stupid"}


def lexicon_label(prompt: str) -> str | None:
    """For classification prompts (ending in ``Label:``, or a chat turn ``Sentence: ...``): positive or
    negative by counting lexicon words in the query."""
    if not (prompt.rstrip().endswith("Label:") or prompt.lstrip().startswith("Sentence:")):
        return None
    query = prompt.rsplit("Sentence:", 1)[-1].lower()
    words = set(re.findall(r"[a-z]+", query))
    return "negative" if len(words & _NEGATIVE) > len(words & _POSITIVE) else "positive"


_SAMPLES = re.compile(r"<<samples:(.*?)>>", re.DOTALL)
# Aspect terms the tuple lexicon knows; a term's polarity is the lexicon label of the words around it.
_ASPECTS = {"pizza", "service", "food", "staff", "pasta", "wine", "price", "decor", "waiter", "dessert"}


def lexicon_tuples(query: str) -> str:
    """For tuple prompts: ``[('aspect', 'polarity'), ...]`` over the query's known aspect terms, each with the
    polarity of the lexicon words in its clause (split at 'but' and commas); ``[]`` when none."""
    out = []
    for clause in re.split(r",|\bbut\b", query.lower()):
        words = re.findall(r"[a-z]+", clause)
        pos, neg = len(set(words) & _POSITIVE), len(set(words) & _NEGATIVE)
        pol = "positive" if pos > neg else "negative" if neg > pos else "neutral"
        out += [(w, pol) for w in words if w in _ASPECTS]
    return "[" + ", ".join(f"('{a}', '{p}')" for a, p in out) + "]"


def _tuple_answer(messages: list[dict[str, Any]], seed: int | None) -> str | None:
    """Tuple prompts (a system message asking for a list of tuples): a ``<<samples:A|B|...>>`` directive in
    the query picks answer ``seed % n`` (a sampling teacher, for self-consistency); else the tuple lexicon."""
    system = " ".join(m.get("content") or "" for m in messages if m.get("role") == "system")
    if "list of tuples" not in system:
        return None
    queries = [m.get("content") or "" for m in messages if m.get("role") == "user"
               and (m.get("content") or "").startswith("Sentence:")]
    query = queries[-1] if queries else ""
    m = _SAMPLES.search(query)
    if m:
        options = m.group(1).split("|")
        return options[(seed or 0) % len(options)]
    m = _REPLY.search(query)
    if m:
        return m.group(1)
    return lexicon_tuples(query)


def _answer(messages: list[dict[str, Any]], seed: int | None = None) -> str:
    tuples = _tuple_answer(messages, seed)
    if tuples is not None:
        return tuples
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    first = users[0] if users else ""
    if any(m.get("role") == "assistant" for m in messages):
        m = _REPAIR.search(first)
        if m:
            return m.group(1)
    m = _REPLY.search(first)
    if m:
        return m.group(1)
    label = lexicon_label(users[-1] if users else "")
    if label:
        return label
    return "echo: " + (users[-1] if users else "")


def _logprob(token: str, pos: int) -> float:
    h = int(hashlib.md5(f"{pos}:{token}".encode()).hexdigest()[:6], 16)
    return -round((h % 1000) / 1000.0, 3)


def create_app(latency_s: float = 0.0) -> FastAPI:
    app = FastAPI(title="teacher test server")
    counts: Counter[str] = Counter()
    state: dict[str, Any] = {"total": 0, "auth_sha256": None}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "tests"}]}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"total": state["total"], "by_prompt": dict(counts), "auth_sha256": state["auth_sha256"]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") or []
        state["total"] += 1
        auth = request.headers.get("authorization", "")
        # Only a hash is kept, so tests can prove the key was sent without the server holding it.
        state["auth_sha256"] = hashlib.sha256(auth.removeprefix("Bearer ").encode()).hexdigest()
        counts[prompt_id(messages)] += 1
        if latency_s:
            await asyncio.sleep(latency_s)
        words = _answer(messages, body.get("seed")).split(" ")
        words = words[: int(body.get("max_tokens") or 256)]
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
        text = "".join(tokens)
        logprobs = None
        overrides = _lp_overrides(messages)
        if body.get("logprobs"):
            k = int(body.get("top_logprobs") or 0)
            content = []
            for pos, tok in enumerate(tokens):
                lp = overrides.get(tok.strip(), _logprob(tok, pos))
                top = [{"token": tok, "logprob": lp, "bytes": None}]
                other = None
                if tok in ("positive", "negative"):  # the runner-up label, so restricted scoring has a choice
                    other = "negative" if tok == "positive" else "positive"
                    top.append({"token": other, "logprob": overrides.get(other, _logprob(tok, pos) - 1.5),
                                "bytes": None})
                for word, value in overrides.items():  # other labels the test names, e.g. "neutral"
                    if word not in (tok.strip(), other):
                        top.append({"token": word, "logprob": value, "bytes": None})
                base = _logprob(tok, pos)
                top += [{"token": f" alt{j}", "logprob": base - 2 - j, "bytes": None} for j in range(1, k)]
                content.append({"token": tok, "logprob": lp, "bytes": None, "top_logprobs": top[:k]})
            logprobs = {"content": content}
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return _json_response(
            {
                "id": f"chatcmpl-{state['total']}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "echo"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if len(words) >= int(body.get("max_tokens") or 256) else "stop",
                        "logprobs": logprobs,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt_tokens + len(tokens),
                },
            }
        )

    return app


def _json_response(content: dict[str, Any]) -> Response:
    """JSON with -Infinity/NaN written as Python's json writes them (Starlette's JSONResponse refuses them)."""
    return Response(json.dumps(content, ensure_ascii=False), media_type="application/json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def running_server(latency_s: float = 0.0) -> Iterator[str]:
    """Start this server in a subprocess; yields its base URL (``http://127.0.0.1:PORT``)."""
    port = free_port()
    with subprocess_on_port([str(Path(__file__).resolve()), "--port", str(port), "--latency", str(latency_s)],
                            port) as url:
        yield url


@contextlib.contextmanager
def subprocess_on_port(args: list[str], port: int) -> Iterator[str]:
    """Run ``python ARGS`` until it listens on ``port``; yields its base URL; stops it afterwards."""
    proc = subprocess.Popen([sys.executable, *args], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_stats(base_url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(base_url + "/stats", timeout=10).json()


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    uvicorn.run(create_app(args.latency), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
