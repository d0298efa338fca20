"""Pairs that share a prompt are scored on one pass over it (its KV cache copied to each continuation): the
same log-likelihoods and the same gradients as scoring each ``prompt + continuation`` in full."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sentidistill.students import load_student


@pytest.fixture(scope="module")
def student(tiny_causal_dir: Path):
    return load_student(str(tiny_causal_dir))


# Three prompts of different lengths (left padding), label sets of 2, 3 and 4 words, continuations of one to
# four tokens, one truncated by n_tokens, a prompt cut at max_length (its
# continuations are as long as each other: a cut prompt keeps room for its longest continuation).
PROMPTS = ["the food was great =", "a b c d e f g h i j k l m n o p q r s t u v w =", "bad ="]
CONTS = {0: ["good", "bad"], 1: ["very bad", "good bad"], 2: ["good bad good bad", "bad", "very bad", "good"]}


def _pairs() -> tuple[list[str], list[str], list[int]]:
    prompts, conts, n = [], [], []
    for g, words in CONTS.items():
        for w in words:
            prompts.append(PROMPTS[g])
            conts.append(" " + w)
            n.append(3 if w == "good bad good bad" else 99)
    return prompts, conts, n


def test_shared_prompt_pass_gives_the_full_sequence_scores_and_gradients(student) -> None:
    prompts, conts, n = _pairs()
    assert any(len(student.continuation_ids(c)) > 1 for c in conts)  # the cached second pass is exercised
    ids = [student.continuation_ids(c)[:k] for c, k in zip(conts, n, strict=True)]
    student.model.train()
    try:
        student.model.zero_grad(set_to_none=True)
        shared = student.sequence_logprobs(prompts, conts, n_tokens=n, max_length=12)
        shared.sum().backward()
        g_shared = student.model.model.embed_tokens.weight.grad.clone()
        student.model.zero_grad(set_to_none=True)
        full = student._full_sequence_logprobs(prompts, ids, max_length=12)
        full.sum().backward()
        g_full = student.model.model.embed_tokens.weight.grad.clone()
    finally:
        student.model.zero_grad(set_to_none=True)
        student.model.eval()
    assert shared.shape == (len(prompts),)
    assert torch.allclose(shared, full, atol=1e-4), (shared, full)
    assert torch.allclose(g_shared, g_full, atol=1e-5)
    # One pair per prompt takes the full-sequence pass: the same numbers again.
    single = student.sequence_logprobs(PROMPTS, [" good", " very bad", " bad"], max_length=12)
    again = student._full_sequence_logprobs(PROMPTS, [student.continuation_ids(c) for c in
                                                      [" good", " very bad", " bad"]], max_length=12)
    assert torch.allclose(single.detach(), again.detach(), atol=1e-5)


def test_label_scores_match_pair_by_pair_scoring(student) -> None:
    labels = ["negative", "neutral", "positive", "very positive"]
    prompts = [f"Classify: {q} =" for q in ("the food was great", "meh", "awful, never again")]
    batched = student.label_scores(labels, prompts=prompts, batch_size=2)
    for p, row in zip(prompts, batched, strict=True):
        one_by_one = [student.loglikelihood([student.render(p)], [c], n_tokens=[k])[0]
                      for c, k in zip(*student.label_continuations(labels), strict=True)]
        assert row == pytest.approx(one_by_one, abs=1e-4)
