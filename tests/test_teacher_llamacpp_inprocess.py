"""The in-process llama.cpp teacher on the real builtin Qwen2.5-Coder-0.5B GGUF (loaded once per module)."""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentidistill.config import TeacherConfig
from sentidistill.errors import InputError
from sentidistill.teacher import RequestRejected, SamplingParams, TeacherRequest, build_teacher

pytestmark = pytest.mark.llamacpp

MODEL = "builtin:qwen2.5-coder-0.5b"
# One thread: the CI/dev machines are small and shared, and llama.cpp with more threads than free cores is
# many times slower (its threads spin on barriers); the answers do not depend on it.
THREADS = 1
LABEL_PROMPT = (
    "Classify the sentiment of the sentence as positive or negative. Answer with one word.\n"
    "Sentence: {}\nLabel:"
)


def _gguf_or_skip() -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    from sentidistill.core.assets import resolve_gguf

    try:
        return resolve_gguf(MODEL)
    except InputError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def backend() -> Iterator[object]:
    _gguf_or_skip()
    from sentidistill.teacher.llamacpp_inprocess import LlamaCppInProcessBackend

    b = LlamaCppInProcessBackend(MODEL, n_ctx=1024, n_threads=THREADS)
    yield b
    b.close()


def _req(text: str, **params: object) -> TeacherRequest:
    return TeacherRequest(messages=[{"role": "user", "content": text}], params=SamplingParams(**params))


def test_greedy_matches_create_chat_completion_and_logprobs_are_consistent(backend) -> None:
    messages = [{"role": "user", "content": "Describe a rainy café in one sentence, with an emoji."}]
    backend.llm.reset()  # both from an empty KV cache: batch shapes change the last float bits
    ours = backend.generate_one(
        TeacherRequest(messages=messages, params=SamplingParams(max_tokens=24, logprobs=True, top_logprobs=5))
    )
    backend.llm.reset()
    ref = backend.llm.create_chat_completion(messages, temperature=0, max_tokens=24)
    choice = ref["choices"][0]
    assert ours.text == choice["message"]["content"]
    assert ours.finish_reason == choice["finish_reason"]
    assert ours.usage.prompt_tokens == ref["usage"]["prompt_tokens"]
    assert ours.usage.completion_tokens == ref["usage"]["completion_tokens"]

    lps = ours.logprobs
    assert lps is not None and len(lps) == ours.usage.completion_tokens
    assert "".join(e.token for e in lps) == ours.text  # what the KD aligner relies on
    for e in lps:
        assert len(e.top) == 5
        values = [v for _, v in e.top]
        assert all(v <= 0.0 for v in values) and values == sorted(values, reverse=True)
        # Greedy: the chosen token is the top-1 alternative, with the same log-prob.
        assert e.top[0][1] == pytest.approx(e.logprob) and e.logprob <= 0.0
    assert any(e.top[0][0] == e.token for e in lps)


def test_label_prompt_puts_positive_in_the_top5(backend) -> None:
    resp = backend.generate_one(_req(LABEL_PROMPT.format("I loved it."), max_tokens=3, logprobs=True, top_logprobs=5))
    first = resp.logprobs[0].top
    assert any(tok.strip().lower().startswith("pos") for tok, _ in first), first
    # The top-5 are the head of a normalised distribution: at most 1 in all (raw logits would sum far above),
    # and on a one-word label prompt most of the mass (a wrong normalisation would spread it thin).
    assert 0.5 < sum(math.exp(v) for _, v in first) <= 1.0 + 1e-6


def test_stop_strings_eos_and_length(backend) -> None:
    long = backend.generate_one(_req("Count from 1 to 50, separated by commas.", max_tokens=12, logprobs=True))
    assert long.finish_reason == "length" and long.usage.completion_tokens == 12
    assert long.logprobs is not None and all(e.top == [] for e in long.logprobs)  # top_logprobs=0

    stopped = backend.generate_one(
        _req("Count from 1 to 50, separated by commas.", max_tokens=40, stop=("5",), logprobs=True, top_logprobs=2)
    )
    assert stopped.finish_reason == "stop" and "5" not in stopped.text
    assert long.text.startswith(stopped.text) and stopped.text.strip()
    joined = "".join(e.token for e in stopped.logprobs)
    assert joined.startswith(stopped.text) and len(joined) < len(stopped.text) + 4  # tokens after the stop dropped

    short = backend.generate_one(_req(LABEL_PROMPT.format("The food was awful."), max_tokens=20))
    assert short.finish_reason == "stop" and short.logprobs is None  # ended with <|im_end|>, not the budget
    assert short.usage.completion_tokens < 20


def test_prefix_cache_gives_the_same_answers(backend) -> None:
    sentences = ["Great service, would come back.", "The room was dirty and loud."]
    warm = [backend.generate_one(_req(LABEL_PROMPT.format(s), max_tokens=3, logprobs=True, top_logprobs=3))
            for s in sentences]
    cold = []
    for s in sentences:
        backend.llm.reset()
        cold.append(backend.generate_one(_req(LABEL_PROMPT.format(s), max_tokens=3, logprobs=True, top_logprobs=3)))
    for w, c in zip(warm, cold, strict=True):
        assert w.text == c.text
        # Only float rounding differs (the shared prefix was evaluated in another batch shape).
        assert w.logprobs[0].logprob == pytest.approx(c.logprobs[0].logprob, abs=0.05)


def test_seeded_sampling_is_reproducible(backend) -> None:
    def sample(seed: int) -> str:
        return backend.generate_one(
            _req("Name a fruit and a colour.", max_tokens=10, temperature=1.0, top_p=0.9, seed=seed)
        ).text

    a, b = sample(7), sample(7)
    assert a == b and a.strip()
    assert len({a, sample(8), sample(9), sample(10)}) > 1  # the seed matters


def test_rejects_a_prompt_longer_than_the_context(backend) -> None:
    with pytest.raises(RequestRejected, match="n_ctx"):
        backend.generate_one(_req("word " * 1500, max_tokens=2))


def test_config_selection_runner_queueing_and_cache(tmp_path: Path) -> None:
    _gguf_or_skip()
    with pytest.raises(ValueError, match="'inprocess' or 'server'"):  # refused when the config is made
        TeacherConfig(kind="llamacpp", model=MODEL, extra={"mode": "grpc"})
    with pytest.raises(InputError, match="GGUF model file not found"):
        build_teacher(TeacherConfig(kind="llamacpp", model=str(tmp_path / "none.gguf")))

    cfg = TeacherConfig(kind="llamacpp", model=MODEL, n_ctx=512, n_threads=THREADS, concurrency=4)
    reqs = [_req(LABEL_PROMPT.format(s), max_tokens=3, logprobs=True, top_logprobs=2)
            for s in ["I loved it.", "Terrible.", "I loved it.", "Fine, I guess."]]
    with build_teacher(cfg, tmp_path / "cache.sqlite", progress=False) as teacher:
        assert type(teacher.backend).__name__ == "LlamaCppInProcessBackend"  # the default mode
        first = teacher.generate(reqs)  # 4 in flight at once: they queue on the model's lock
        assert teacher.stats["sent"] == 3  # the duplicate is sent once
        again = teacher.generate(reqs)
        assert teacher.stats["cache_hits"] == 4
    assert [r.text for r in first] == [r.text for r in again]
    assert first[0].text == first[2].text and all(r.logprobs and len(r.logprobs[0].top) == 2 for r in first)


def test_inprocess_evaluates_less_than_the_server_path(backend, capsys: pytest.CaptureFixture[str]) -> None:
    """Why the in-process path is cheaper, asserted on what it did rather than on the clock.

    The server path needs ``logits_all`` (llama.cpp computes full-vocabulary logits at every prompt
    position) to return log-probs; the in-process path keeps logits for the last position only and, for
    prompts sharing a prefix (few-shot demos, instructions), evaluates only the new suffix. Both paths must
    give the same answers. The per-request times are printed for the record, not asserted (they depend on
    the machine's load).
    """
    sentences = ["I loved it.", "The food was awful.", "Great service, would come back.", "Meh."]
    reqs = [_req(LABEL_PROMPT.format(s), max_tokens=4, logprobs=True, top_logprobs=5) for s in sentences]
    assert backend.llm._logits_all is False  # llama-cpp-python keeps the flag here (no public accessor)
    evaluated: list[int] = []
    real_eval = backend.llm.eval

    def counting_eval(tokens):  # type: ignore[no-untyped-def]
        evaluated.append(len(tokens))
        return real_eval(tokens)

    backend.llm.reset()
    cfg = TeacherConfig(kind="llamacpp", model=MODEL, n_ctx=1024, n_threads=THREADS,
                        extra={"mode": "server", "logits_all": True})
    t_ours = t_server = 0.0
    with build_teacher(cfg, None, progress=False) as server:
        backend.llm.eval = counting_eval
        try:
            for r in reqs:
                prompt_len = len(backend.format_prompt(r.messages))
                n_before = len(evaluated)
                t0 = time.perf_counter()
                ours = backend.generate_one(r)
                t1 = time.perf_counter()
                theirs = server.generate([r])[0]
                t_ours, t_server = t_ours + t1 - t0, t_server + time.perf_counter() - t1
                assert ours.text == theirs.text
                a, b = dict(ours.logprobs[0].top), dict(theirs.logprobs[0].top)
                assert len(a.keys() & b.keys()) >= 4
                assert all(a[t] == pytest.approx(b[t], abs=0.05) for t in a.keys() & b.keys())
                prompt_evals = evaluated[n_before]  # the first eval() of a request is its prompt
                if r is reqs[0]:
                    assert prompt_evals >= prompt_len - 1  # an empty cache: the whole prompt
                else:
                    # The shared instruction was reused from the KV cache: only the sentence and the tail.
                    assert prompt_evals < prompt_len // 2, (prompt_evals, prompt_len)
                # Decoding then evaluates one token per generated token.
                assert evaluated[n_before + 1:] == [1] * (len(evaluated) - n_before - 1)
        finally:
            backend.llm.eval = real_eval
    with capsys.disabled():
        print(f"\n[llamacpp teacher, {THREADS} thread(s), top_logprobs=5, seconds per request] in-process "
              f"{t_ours / len(reqs):.3f} vs server+logits_all {t_server / len(reqs):.3f}")
