"""Batched restricted scoring in the llama.cpp backend (many texts and all label continuations per
``llama_decode``) gives the log-probs of one-by-one scoring, on a tiny f32 GGUF built in-process."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sentidistill.teacher import RequestRejected, SamplingParams, TeacherRequest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")

# Labels with shared first tokens (a trie with branches), single-token labels, and case variants: the
# tiny tokenizer splits "very negative" into 3 tokens and "Very negative" into 4.
WORDS = ["very negative", "very positive", "negative", "neutral", "positive"]
TEXTS = [
    "The food was great.",
    "ok",
    "Terrible movie, boring plot and bad acting, I would never go again, the worst evening of the year.",
    "I love this phone, the battery lasts all day. The screen is awful.",
    "Meh.",
]


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You label sentiment."},
            {"role": "user", "content": f"Classify the sentiment of the review.\nReview: {text}\nLabel:"}]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 with sharpened attention (q/k weights x6) and an untied random output head: its scores
    and answers depend on the text, so a token attending to another text's cells, or missing the shared
    prefix, changes them (with the tied head it only repeats the prompt's last token)."""
    import torch
    from safetensors.torch import load_file, save_file

    from sentidistill.students.base import PLAIN_CHAT_TEMPLATE
    from sentidistill.testing import build_tiny_causal_lm, write_gguf_from_hf

    d = tmp_path_factory.mktemp("tiny-teacher")
    hf = build_tiny_causal_lm(d / "hf", seed=3)
    weights = load_file(hf / "model.safetensors")
    for k, v in list(weights.items()):
        if "q_proj" in k or "k_proj" in k:
            weights[k] = v * 6.0
        elif "embed_tokens" in k:
            weights[k] = v * 3.0
            g = torch.Generator().manual_seed(1)
            weights["lm_head.weight"] = torch.randn(v.shape, generator=g) * 3.0 / v.shape[1] ** 0.5
    save_file(weights, str(hf / "model.safetensors"), metadata={"format": "pt"})
    return write_gguf_from_hf(hf, d / "tiny.gguf", chat_template=PLAIN_CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def backend(tiny_gguf: Path) -> Iterator[object]:
    from sentidistill.teacher.llamacpp_inprocess import LlamaCppInProcessBackend

    # n_batch 48: the long review (and a wave of several texts) spans more than one llama_decode.
    b = LlamaCppInProcessBackend(str(tiny_gguf), n_ctx=512, n_threads=1, n_batch=48, batch_size=3)
    yield b
    b.close()


def _requests(labels: tuple[str, ...]) -> list[TeacherRequest]:
    return [TeacherRequest(messages=_messages(t), params=SamplingParams(max_tokens=1, temperature=0.0,
                                                                        score_labels=labels)) for t in TEXTS]


def test_batched_scoring_equals_one_by_one(backend) -> None:
    from sentidistill.teacher.restricted import case_variants

    flat, _ = case_variants(WORDS)
    labels = tuple(flat)
    tokens = [backend.llm.tokenize(w.encode(), add_bos=False, special=False) for w in labels]
    assert max(len(t) for t in tokens) >= 3 and len({t[0] for t in tokens}) < len(tokens)  # shared prefixes
    reqs = _requests(labels)
    one = np.array([backend.generate_one(r).label_logprobs for r in reqs])  # the single-sequence path
    batched = backend.score_batch(reqs)
    got = np.array([r.label_logprobs for r in batched])
    np.testing.assert_allclose(got, one, atol=1e-3, rtol=0)
    # The test can see a mix-up: the scores differ between texts far more than the tolerance.
    assert np.abs(one - one[0]).max() > 0.05
    assert [r.text for r in batched] == [labels[int(np.argmax(row))] for row in one]
    # Batched for real: 5 texts with 10 labels each in a few decodes, not one per text and label prefix.
    scorer = backend._scorer
    assert scorer.decodes <= 8, scorer.decodes
    # Again in another order and after a different prefix was cached: the same scores.
    backend.score_batch([_requests(("neutral",))[1]])
    again = np.array([r.label_logprobs for r in backend.score_batch(reqs[::-1])])[::-1]
    np.testing.assert_allclose(again, one, atol=1e-3, rtol=0)


def test_batched_scoring_through_the_runner_and_the_config(tiny_gguf: Path, backend) -> None:
    from sentidistill.config import TeacherConfig
    from sentidistill.teacher import build_teacher
    from sentidistill.teacher.restricted import score_labels

    prompts = [_messages(t) for t in TEXTS]
    words = ["negative", "neutral", "positive"]
    from sentidistill.teacher.restricted import case_variants

    flat, owner = case_variants(words)
    one = np.array([backend.generate_one(r).label_logprobs for r in _requests(tuple(flat))])
    ref = np.stack([np.logaddexp.reduce(one[:, [i for i, o in enumerate(owner) if o == j]], axis=1)
                    for j in range(len(words))], axis=1)
    for batch_size in (8, 1):
        cfg = TeacherConfig(kind="llamacpp", model=str(tiny_gguf), n_ctx=512, n_threads=1, concurrency=8,
                            batch_size=batch_size)
        with build_teacher(cfg, None, progress=False) as teacher:
            got, via, _ = score_labels(teacher, prompts, words, prompt_id="t")
            scorer = teacher.backend._scorer
            if batch_size == 1:
                assert scorer is None  # one by one: the multi-sequence context is never made
            else:
                assert scorer is not None and scorer.decodes <= 2  # the 5 requests in flight became one batch
        assert via == ["exact"] * len(prompts)
        np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)


def test_batched_path_rejects_a_prompt_longer_than_the_context(backend) -> None:
    req = TeacherRequest(messages=_messages("word " * 600),
                         params=SamplingParams(max_tokens=1, temperature=0.0, score_labels=("positive", "negative")))
    with pytest.raises(RequestRejected, match="n_ctx"):
        asyncio.run(backend.agenerate_one(req))
    with pytest.raises(RequestRejected, match="n_ctx"):
        backend.score_batch([req])


def test_batched_generation_equals_one_by_one(backend) -> None:
    """Several answers decoded together (one sequence each, one token of each per llama_decode) equal the
    single-sequence path's: greedy text, top-k log-probs, stop strings, budgets and a seeded sample."""
    params = [
        SamplingParams(max_tokens=12, logprobs=True, top_logprobs=3),
        SamplingParams(max_tokens=5),
        SamplingParams(max_tokens=20, stop=("non",), logprobs=True, top_logprobs=2),
        SamplingParams(max_tokens=9, temperature=1.0, top_p=0.9, seed=7),
        SamplingParams(max_tokens=16, logprobs=True),
    ]
    reqs = [TeacherRequest(messages=_messages(t), params=p) for t, p in zip(TEXTS, params, strict=True)]
    one = [backend.generate_one(r) for r in reqs]
    decodes = backend._multi().decodes
    got = backend.generate_batch(reqs)
    # The prefix and the prompts' tails (n_batch 48: a few decodes), then one decode per step for all answers.
    assert backend._scorer.decodes - decodes <= 4 + max(p.max_tokens for p in params)
    for a, b, p in zip(got, one, params, strict=True):
        assert a.text == b.text and a.finish_reason == b.finish_reason
        assert a.usage.completion_tokens == b.usage.completion_tokens <= p.max_tokens
        if p.logprobs:
            assert [e.token for e in a.logprobs] == [e.token for e in b.logprobs]
            np.testing.assert_allclose([e.logprob for e in a.logprobs], [e.logprob for e in b.logprobs], atol=1e-3)
            assert [[t for t, _ in e.top] for e in a.logprobs] == [[t for t, _ in e.top] for e in b.logprobs]
    assert got[2].finish_reason == "stop" and "non" not in got[2].text  # the stop string cut it
    assert len({r.text for r in got}) > 2  # the answers differ: a mix-up between sequences would show


def test_generation_through_the_runner_is_batched(tiny_gguf: Path) -> None:
    from sentidistill.config import TeacherConfig
    from sentidistill.teacher import build_teacher

    reqs = [TeacherRequest(messages=_messages(t), params=SamplingParams(max_tokens=6)) for t in TEXTS]
    texts = {}
    for batch_size in (8, 1):
        cfg = TeacherConfig(kind="llamacpp", model=str(tiny_gguf), n_ctx=512, n_threads=1, concurrency=8,
                            batch_size=batch_size)
        with build_teacher(cfg, None, progress=False) as teacher:
            texts[batch_size] = [r.text for r in teacher.generate(reqs)]
            scorer = teacher.backend._scorer
            assert (scorer is None) == (batch_size == 1)
            if scorer is not None:
                assert scorer.decodes <= 1 + 6 + 1  # prefix, the prompts' tails, then one decode per token
    assert texts[8] == texts[1]


def test_waves_split_by_sequences_and_tokens_give_the_same_scores(backend) -> None:
    """Few sequence ids (n_seq_max 9: two texts of 4 branches per wave, though n_batch would fit more)."""
    from sentidistill.teacher.llamacpp_batch import LabelTrie, MultiSequenceScorer
    from sentidistill.teacher.restricted import case_variants

    flat, _ = case_variants(["very negative", "very positive", "neutral"])
    reqs = _requests(tuple(flat))
    one = np.array([backend.generate_one(r).label_logprobs for r in reqs])
    labels = [backend.llm.tokenize(w.encode(), add_bos=False, special=False) for w in flat]
    assert LabelTrie(labels).n_sequences() == 4  # "very ", "Very ", "neutral" and "Neutral" branch
    prompts = [backend.format_prompt(r.messages) for r in reqs]
    small = MultiSequenceScorer(backend.llm._model, n_ctx=512, n_batch=128, n_seq_max=9, n_threads=1,
                                n_vocab=backend.n_vocab, base_params=backend.llm.context_params)
    try:
        got = np.array([s for s, _ in small.score(prompts, labels)])
        assert small.decodes >= len(prompts) // 2 + 1  # at least 3 waves
    finally:
        small.close()
    np.testing.assert_allclose(got, one, atol=1e-3, rtol=0)
