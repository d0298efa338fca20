"""OpenAI-compatible routes: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``.

Log-probs follow OpenAI's contract: each token and each of its ``top_logprobs`` alternatives carries its true
bytes (a fragment of a multi-byte character is the token ``"bytes:\\xe2\\x98"`` with bytes ``[226, 152]``;
see :meth:`sentidistill.serve.engine.GenerationEngine._token_text`), and there are exactly as many
alternatives as asked for. A classifier student answers both completion routes with a 400 naming
/v1/analyze.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from sentidistill.errors import InputError
from sentidistill.serve.engine import GenParams
from sentidistill.serve.http_errors import APIError
from sentidistill.serve.routes.common import await_all, check_chars, json_response
from sentidistill.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatTokenLogprob,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    TopLogprob,
    UsageInfo,
)
from sentidistill.serve.state import ServerState

router = APIRouter()


# -- checks and helpers ------------------------------------------------------------------------------

def check_supported(req: ChatCompletionRequest | CompletionRequest) -> None:
    """400 ``unsupported_parameter`` naming the first field set to a value the student cannot honour."""
    found = req.unsupported()
    if found:
        raise APIError(400, found[1], param=found[0], code="unsupported_parameter")


def check_model(state: ServerState, name: str) -> None:
    """404 for a model name this server does not serve; 400 when the model is a classifier (no generation)."""
    if name not in state.accepted_names:
        raise APIError(404, f"The model '{name}' does not exist; this server serves '{state.model_name}'.",
                       param="model", code="model_not_found")
    if state.engine.kind == "classifier":
        from sentidistill.serve.classify import generation_refused

        raise APIError(400, generation_refused(state.model_name), param="model", code="model_does_not_generate")


def clamp_tokens(state: ServerState, n: int | None, default: int, param: str = "max_tokens") -> int:
    """``n`` (``default`` when unset); 400 above ``limits.max_tokens``."""
    n = default if n is None else n
    if n > state.limits.max_tokens:
        raise APIError(400, f"{param} is {n}; this server allows at most {state.limits.max_tokens}",
                       param=param, code="max_tokens_too_large")
    return n


def encode_checked(state: ServerState, prompts: list[Any], max_tokens: int, param: str) -> list[list[int]]:
    """Token ids of each prompt; one that leaves no room for ``max_tokens`` is a 400 naming it."""
    id_lists = []
    for i, p in enumerate(prompts):
        ids = state.engine.encode_prompt(p)
        try:
            state.engine.check_length(len(ids), max_tokens)
        except InputError as exc:
            raise APIError(400, str(exc), param=f"{param}.{i}", code="context_length_exceeded") from None
        id_lists.append(ids)
    return id_lists


async def run_all(state: ServerState, jobs: list[tuple[list[int], GenParams]]) -> list[Any]:
    """Submit every job before awaiting any (so they batch, also with other requests' jobs) and await all
    of them under the per-request timeout (504 past it)."""
    loop = asyncio.get_running_loop()
    futures = [state.engine.submit(ids, p, future=loop.create_future()) for ids, p in jobs]
    return await await_all(state, futures)


def usage(state: ServerState, gens: list[Any], prompt_counted: list[Any] | None = None) -> UsageInfo:
    """Token counts of a response (``prompt_counted``: the generations whose prompts count, default all)."""
    src = prompt_counted if prompt_counted is not None else gens
    p = sum(g.prompt_tokens for g in src)
    c = sum(g.completion_tokens for g in gens)
    state.metrics.tokens.inc(c)
    return UsageInfo(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def seeded(params: GenParams, i: int) -> GenParams:
    """The i-th of n samples: a distinct seed so that n > 1 gives n different samples."""
    if i == 0 or params.temperature <= 0:
        return params
    seed = None if params.seed is None else params.seed + i
    return GenParams(**{**params.__dict__, "seed": seed})


def text_offsets(logprobs: list[Any]) -> list[int]:
    """Where each token starts in the completion text, in characters: the characters of the tokens before
    it, counted from their bytes (a fragment of a character counts from the character's start)."""
    out, acc = [], b""
    for t in logprobs:
        out.append(len(acc.decode("utf-8", "ignore")))
        acc += bytes(t.bytes)
    return out


def _state(request: Request) -> ServerState:
    return request.app.state.server


# -- routes ------------------------------------------------------------------------------------------

@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    state = _state(request)
    return ModelList(data=[ModelCard(id=state.model_name, created=state.created)])


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
    state = _state(request)
    check_model(state, req.model)
    check_supported(req)
    if req.top_logprobs and not req.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    messages = []
    for i, m in enumerate(req.messages):
        text = m.text()
        check_chars(state, text, f"messages.{i}.content")
        # 'developer' is OpenAI's new name for 'system'; the student's template knows 'system'.
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    params = GenParams(
        max_tokens=clamp_tokens(state, req.max_completion_tokens or req.max_tokens, min(256, state.limits.max_tokens)),
        temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=req.stop_tuple(),
        logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0,
    )
    ids = state.engine.encode_prompt(messages)
    state.engine.check_length(len(ids), params.max_tokens)
    gens = await run_all(state, [(ids, seeded(params, i)) for i in range(req.n)])
    choices = []
    for i, g in enumerate(gens):
        lp = None
        if req.logprobs:
            lp = ChoiceLogprobs(content=[
                ChatTokenLogprob(
                    token=t.token, logprob=t.logprob, bytes=t.bytes,
                    top_logprobs=[TopLogprob(token=a, logprob=v, bytes=b)
                                  for (a, v), b in zip(t.top, t.top_bytes, strict=True)],
                ) for t in g.logprobs or []
            ])
        choices.append(ChatChoice(index=i, message=AssistantMessage(content=g.text),
                                  finish_reason=g.finish_reason, logprobs=lp))
    resp = ChatCompletionResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                                  model=state.model_name, choices=choices, usage=usage(state, gens, gens[:1]))
    if req.stream:
        return _sse_chat(resp, include_usage=req.include_usage())
    return json_response(resp)


@router.post("/v1/completions", response_model=CompletionResponse)
async def completions(req: CompletionRequest, request: Request) -> Any:
    state = _state(request)
    check_model(state, req.model)
    check_supported(req)
    if req.echo:
        raise APIError(400, "echo is not supported", param="echo", code="unsupported")
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if not prompts:
        raise APIError(400, "prompt is an empty list", param="prompt")
    if len(prompts) * req.n > state.limits.max_texts:
        raise APIError(400, f"{len(prompts)} prompts x n={req.n}; the limit is {state.limits.max_texts}",
                       param="prompt", code="too_many_prompts")
    for i, p in enumerate(prompts):
        check_chars(state, p, f"prompt.{i}" if len(prompts) > 1 else "prompt")
        if not p:
            raise APIError(400, "empty prompt", param="prompt", code="empty_prompt")
    k = req.logprobs
    params = GenParams(max_tokens=clamp_tokens(state, req.max_tokens, 16), temperature=req.temperature,
                       top_p=req.top_p, seed=req.seed, stop=req.stop_tuple(),
                       logprobs=k is not None, top_logprobs=k or 0)
    id_lists = encode_checked(state, prompts, params.max_tokens, "prompt")
    # Prompts of one request (and their n samples) batch together.
    results = await run_all(state, [(ids, seeded(params, j)) for ids in id_lists for j in range(req.n)])
    choices = []
    for i, g in enumerate(results):
        lp = None
        if k is not None:
            tokens = g.logprobs or []
            lp = CompletionLogprobs(
                tokens=[t.token for t in tokens],
                token_logprobs=[t.logprob for t in tokens],
                top_logprobs=[dict(t.top) for t in tokens] if k else None,
                text_offset=text_offsets(tokens),
            )
        choices.append(CompletionChoice(index=i, text=g.text, finish_reason=g.finish_reason, logprobs=lp))
    firsts = results[:: req.n]
    out = CompletionResponse(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=state.model_name,
                             choices=choices, usage=usage(state, list(results), list(firsts)))
    if req.stream:
        return _sse_completion(out, include_usage=req.include_usage())
    return json_response(out)


# -- streaming ---------------------------------------------------------------------------------------

def _sse_chat(resp: ChatCompletionResponse, include_usage: bool = False) -> StreamingResponse:
    """Server-sent events in OpenAI's chunk format. The answer is generated whole first (batching
    matters more than time-to-first-token for short sentiment answers), then sent as chunks."""

    def chunk(choice_delta: dict[str, Any], finish: str | None, index: int, logprobs: Any = None) -> str:
        body = {"id": resp.id, "object": "chat.completion.chunk", "created": resp.created, "model": resp.model,
                "choices": [{"index": index, "delta": choice_delta, "finish_reason": finish,
                             "logprobs": logprobs}]}
        return f"data: {json.dumps(body)}\n\n"

    async def events() -> Any:
        for c in resp.choices:
            yield chunk({"role": "assistant", "content": ""}, None, c.index)
            yield chunk({"content": c.message.content}, None, c.index,
                        c.logprobs.model_dump() if c.logprobs else None)
            yield chunk({}, c.finish_reason, c.index)
        if include_usage:  # stream_options.include_usage: a last chunk with no choices and the usage
            body = {"id": resp.id, "object": "chat.completion.chunk", "created": resp.created, "model": resp.model,
                    "choices": [], "usage": resp.usage.model_dump()}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _sse_completion(resp: CompletionResponse, include_usage: bool = False) -> StreamingResponse:
    """Server-sent events for /v1/completions (``stream: true``), generated whole first like the chat route."""

    def event(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"id": resp.id, "object": "text_completion", "created": resp.created,
                                "model": resp.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    async def events() -> Any:
        for c in resp.choices:
            yield event([{"index": c.index, "text": c.text, "finish_reason": None,
                          "logprobs": c.logprobs.model_dump() if c.logprobs else None}])
            yield event([{"index": c.index, "text": "", "finish_reason": c.finish_reason, "logprobs": None}])
        if include_usage:
            yield event([], resp.usage.model_dump())
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
