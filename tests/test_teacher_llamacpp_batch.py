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
    """The tiny Qwen2 with sharpened attention (q/k weights x6): its answers depend on the text, so a
    token attending to another text's cells, or missing the shared prefix, changes the scores."""
    from safetensors.torch import load_file, save_file

    from sentidistill.students.base import PLAIN_CHAT_TEMPLATE
    from sentidistill.testing import build_tiny_causal_lm, write_gguf_from_hf

    d = tmp_path_factory.mktemp("tiny-teacher")
    hf = build_tiny_causal_lm(d / "hf", seed=3)
    weights = load_file(hf / "model.safetensors")
    for k, v in weights.items():
        if "q_proj" in k or "k_proj" in k:
            weights[k] = v * 6.0
        elif "embed_tokens" in k:
            weights[k] = v * 20.0
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
