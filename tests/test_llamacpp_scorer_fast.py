"""The in-process llama.cpp scorer on a tiny GGUF built in-process (seconds, no weights to download).

``_score_labels`` must sum the log-probs of EVERY token of a label: SST-5's ``very negative`` and
``very positive`` share their first tokens, so a scorer that reads only the first token ties them (issue 24:
both at -4.766 on the real teacher). The reference here is the same weights run by transformers on the same
token ids, so each label's score is checked to the float, for five labels with shared multi-token prefixes,
directly and through ``build_teacher`` + restricted scoring (the config -> backend -> scorer wiring).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or
                                importlib.util.find_spec("gguf") is None,
                                reason="needs llama-cpp-python and gguf")

SST5 = ["very negative", "negative", "neutral", "positive", "very positive"]
MESSAGES = [{"role": "user", "content": "Sentence: The food was great.\nLabel:"}]


@pytest.fixture(scope="module")
def tiny_gguf(tiny_causal_dir, tmp_path_factory) -> Path:
    from sentidistill.students.base import PLAIN_CHAT_TEMPLATE
    from sentidistill.testing import write_gguf_from_hf

    return write_gguf_from_hf(tiny_causal_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf",
                              chat_template=PLAIN_CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def backend(tiny_gguf):
    from sentidistill.teacher.llamacpp_inprocess import LlamaCppInProcessBackend

    b = LlamaCppInProcessBackend(str(tiny_gguf), n_ctx=256, n_threads=1)
    yield b
    b.close()


def reference_scores(hf_dir: Path, prompt: list[int], seqs: list[list[int]]) -> list[float]:
    """log P(seq | prompt) summed over every token of seq, by transformers on the same weights and ids."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    out = []
    for seq in seqs:
        ids = torch.tensor([prompt + seq])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        out.append(float(sum(lp[len(prompt) - 1 + i, t] for i, t in enumerate(seq))))
    return out


def test_labels_share_first_tokens_and_span_several(backend):
    seqs = {w: backend.llm.tokenize(w.encode(), add_bos=False, special=False) for w in SST5}
    assert seqs["very negative"][0] == seqs["very positive"][0]  # the case the scorer exists for
    assert all(len(seqs[w]) >= 2 for w in ("very negative", "very positive"))
    assert seqs["very negative"] != seqs["very positive"]


def test_every_token_of_every_label_is_scored(backend, tiny_causal_dir):
    prompt = backend.format_prompt(MESSAGES)
    resp = backend._score_labels(prompt, tuple(SST5))
    seqs = [backend.llm.tokenize(w.encode(), add_bos=False, special=False) for w in SST5]
    want = reference_scores(tiny_causal_dir, prompt, seqs)
    np.testing.assert_allclose(resp.label_logprobs, want, atol=2e-3)
    # The two labels that share their first token are told apart (a first-token reader ties them).
    vn, vp = resp.label_logprobs[0], resp.label_logprobs[-1]
    assert abs(vn - vp) > 1e-3
    assert resp.text == SST5[int(np.argmax(want))]


def test_through_build_teacher_and_restricted_scoring(tiny_gguf, tiny_causal_dir, backend):
    from sentidistill.config import TeacherConfig
    from sentidistill.teacher import build_teacher
    from sentidistill.teacher.restricted import case_variants, score_labels

    teacher = build_teacher(TeacherConfig(kind="llamacpp", model=str(tiny_gguf), n_ctx=256, n_threads=1), None,
                            progress=False)
    try:
        scores, via, _ = score_labels(teacher, [MESSAGES], SST5, prompt_id="t")
    finally:
        teacher.close()
    assert via == ["exact"]
    flat, owner = case_variants(SST5)  # each label and its capitalised form, summed
    prompt = backend.format_prompt(MESSAGES)
    ref = reference_scores(tiny_causal_dir, prompt,
                           [backend.llm.tokenize(w.encode(), add_bos=False, special=False) for w in flat])
    want = [float(np.logaddexp.reduce([r for r, j in zip(ref, owner, strict=True) if j == k])) for k in range(5)]
    np.testing.assert_allclose(scores[0], want, atol=2e-3)
    assert all(math.isfinite(x) for x in scores[0])
