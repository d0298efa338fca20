"""Issue 15, item 4: label words that share their first token (SST-5), for endpoint log-probs and for
local models (full log-likelihood and the ``--first-token`` variant)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sentidistill.bench.models import HFModelAdapter, first_token_label_scores, label_scores_from_logprobs
from sentidistill.core.records import TokenLogprob
from sentidistill.teacher.label_scores import label_logprobs_from_top_logprobs

SST5 = ["very negative", "negative", "neutral", "positive", "very positive"]
# The issue's teacher answer "very positive" with its top-5 log-probs.
ISSUE = [
    TokenLogprob(token="very", logprob=-0.11, top=[("very", -0.11), ("positive", -2.42), ("Very", -3.70),
                                                    ("neutral", -4.90), ("negative", -6.30)]),
    TokenLogprob(token=" positive", logprob=-0.02, top=[(" positive", -0.02)]),
]


def test_issue_sst5_teacher_answer_scores_very_positive() -> None:
    scores = label_logprobs_from_top_logprobs(ISSUE, SST5)
    assert scores == pytest.approx([None, -6.30, -4.90, -2.42, -0.13])  # "Very" starts two labels: neither
    best = max((s, j) for j, s in enumerate(scores) if s is not None)[1]
    assert SST5[best] == "very positive"
    assert label_scores_from_logprobs(ISSUE, SST5)[0] == scores
    # One position alone cannot tell "very ..." labels apart: neither gets the shared token's mass.
    assert first_token_label_scores(ISSUE[0].top, SST5) == pytest.approx([None, -6.30, -4.90, -2.42, None])


def test_constructed_agreement_scale_with_a_leading_newline() -> None:
    # Same class: a 4-point scale whose "strongly ..." labels share their first token, a chat model that
    # opens with a newline, capitalised tokens, and an alternative for the diverging label at position 2.
    words = ["strongly agree", "agree", "strongly disagree", "disagree"]
    lps = [
        TokenLogprob(token="\n", logprob=-0.01, top=[("\n", -0.01)]),
        TokenLogprob(token="Strongly", logprob=-0.3, top=[("Strongly", -0.3), ("Disagree", -1.4), ("Agree", -2.5)]),
        TokenLogprob(token=" disagree", logprob=-0.05, top=[(" disagree", -0.05), (" agree", -3.2)]),
        TokenLogprob(token=".", logprob=-0.4, top=[(".", -0.4), (" strongly", -5.0)]),
    ]
    scores = label_logprobs_from_top_logprobs(lps, words)
    assert scores == pytest.approx([-0.01 - 0.3 - 3.2, -0.01 - 2.5, -0.01 - 0.3 - 0.05, -0.01 - 1.4])
    assert words[max(range(4), key=lambda j: scores[j])] == "strongly disagree"


def test_same_label_read_twice_adds_probabilities_and_prefix_labels_need_the_end() -> None:
    lps = [TokenLogprob(token="positive", logprob=-0.5, top=[("positive", -0.5), ("Positive", -1.0), ("negative", -2.0)])]
    assert label_logprobs_from_top_logprobs(lps, ["negative", "positive"]) == pytest.approx(
        [-2.0, math.log(math.exp(-0.5) + math.exp(-1.0))])
    # "negative" is a prefix of "negative-ish": it is read only once the answer ends or a non-word follows.
    words = ["negative", "negative-ish"]
    went_on = [TokenLogprob(token="negative", logprob=-0.2), TokenLogprob(token="-ish", logprob=-0.4)]
    assert label_logprobs_from_top_logprobs(went_on, words) == pytest.approx([None, -0.6])
    ended = [TokenLogprob(token="negative", logprob=-0.2), TokenLogprob(token=".", logprob=-0.4)]
    assert label_logprobs_from_top_logprobs(ended, words) == pytest.approx([-0.2, None])
    # Prose first: nothing can be read; the caller parses the text instead.
    prose = [TokenLogprob(token="The", logprob=-0.1, top=[("The", -0.1), ("positive", -3.0)]),
             TokenLogprob(token=" sentiment", logprob=-0.1, top=[(" negative", -1.0)])]
    assert label_logprobs_from_top_logprobs(prose, ["negative", "positive"]) == [None, -3.0]


# -- local models ---------------------------------------------------------------------------------------

def _ll(adapter: HFModelAdapter, prompt: str, ids: list[int]) -> float:
    """log P(ids | prompt) from one unbatched forward pass (the reference)."""
    ctx = adapter.tok(prompt)["input_ids"]
    x = torch.tensor([ctx + ids])
    with torch.no_grad():
        logp = torch.log_softmax(adapter.model(input_ids=x).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(ids))


@pytest.fixture(scope="module")
def causal(tiny_causal_dir: Path) -> HFModelAdapter:
    return HFModelAdapter(str(tiny_causal_dir), device="cpu", prompt_style="plain")


def test_first_token_variant_tells_sst5_labels_apart(causal: HFModelAdapter) -> None:
    first = HFModelAdapter(causal.lm, first_token=True, prompt_style="plain")
    conts, lengths = first.student.label_continuations(SST5, "plain", first_token=True)
    ids = [first.student.continuation_ids(c) for c in conts]
    assert ids[0][0] == ids[4][0]  # " very" is the first token of both "very" labels: they tied before
    scored = [tuple(i[:n]) for i, n in zip(ids, lengths, strict=True)]
    assert len(set(scored)) == 5  # every label is scored on a token sequence of its own
    assert lengths[0] > 1 and lengths[4] > 1
    prompt = "Sentence: a warm, lovely film\nLabel:"
    (answer,) = first.choose([prompt], SST5)
    expected = [_ll(first, prompt, s) for s in map(list, scored)]
    assert answer.scores == pytest.approx(expected, abs=1e-3)
    assert answer.scores[0] != answer.scores[4]
    assert answer.text == SST5[max(range(5), key=lambda j: expected[j])]


def test_full_likelihood_scores_prefix_labels_with_the_end_of_the_answer(causal: HFModelAdapter) -> None:
    prompt = "Sentence: meh\nLabel:"
    (sst5,) = causal.choose([prompt], SST5)  # no label is a prefix of another: the words alone
    assert sst5.scores == pytest.approx([_ll(causal, prompt, causal.student.continuation_ids(" " + w)) for w in SST5], abs=1e-3)
    words = ["negative", "negative-ish"]
    (ans,) = causal.choose([prompt], words)
    assert ans.scores == pytest.approx([_ll(causal, prompt, causal.student.continuation_ids(" " + w + "\n")) for w in words],
                                       abs=1e-3)


def test_seq2seq_first_token_variant_tells_sst5_labels_apart(tiny_seq2seq_dir: Path) -> None:
    a = HFModelAdapter(str(tiny_seq2seq_dir), device="cpu", first_token=True)
    conts, lengths = a.student.label_continuations(SST5, a.prompt_style, first_token=True)
    ids = [a.student.continuation_ids(c) for c in conts]
    assert ids[0][0] == ids[4][0] and lengths[0] > 1 and lengths[4] > 1
    (answer,) = a.choose(["Sentence: a warm, lovely film\nLabel:"], SST5)
    assert answer.scores[0] != answer.scores[4]
    # Each score is the log-likelihood of exactly the scored tokens.
    full = HFModelAdapter(a.lm, first_token=False)
    n = lengths[4]
    assert answer.scores[4] == pytest.approx(
        full.loglikelihood(["Sentence: a warm, lovely film\nLabel:"], [conts[4]], [n])[0], abs=1e-4)
