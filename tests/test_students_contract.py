"""Contract tests over every registered student kind: what bench, serve, train and finetune rely on.

A new kind is covered by registering it (sentidistill.students.STUDENTS) and giving it a small spec in
sentidistill.testing.TINY_STUDENTS; nothing here names a kind.
"""

from __future__ import annotations

import math

import pytest
import torch

from sentidistill.errors import InputError
from sentidistill.students import STUDENTS, Student, load_student, student_class
from sentidistill.testing import SLOW_STUDENTS, TINY_STUDENTS

KINDS = [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_STUDENTS else k for k in STUDENTS.names()]
PROMPTS = ["Review: the food was great.\nSentiment:", [{"role": "user", "content": "Terrible movie. Sentiment?"}]]
LABELS = ["positive", "negative", "neutral"]


def test_every_registered_kind_has_a_tiny_spec():
    missing = [k for k in STUDENTS.names() if k not in TINY_STUDENTS]
    assert not missing, f"register a small spec in sentidistill.testing.TINY_STUDENTS for {missing}"


@pytest.fixture(scope="module", params=KINDS)
def student(request, tmp_path_factory) -> Student:
    kind = request.param
    if kind == "gguf":
        pytest.importorskip("gguf")
    spec = TINY_STUDENTS[kind](tmp_path_factory.mktemp(kind))
    return load_student(spec, kind, cache_dir=tmp_path_factory.mktemp(f"{kind}-cache"))


def test_loads_as_a_student_of_a_registered_kind(student):
    assert isinstance(student, Student)
    assert student.kind in STUDENTS
    assert student.model is not None and student.tokenizer is not None
    assert student.n_params > 0


def test_prompts_encode_and_fit(student):
    for p in PROMPTS:
        ids = student.encode_prompt(p)
        assert ids and all(isinstance(i, int) for i in ids)
        assert student.tokens_needed(len(ids), 4) >= len(ids)
    assert student.default_prompt_style in ("plain", "chat")


def test_label_scores_are_one_finite_score_per_label(student):
    scores = student.label_scores(LABELS, prompts=PROMPTS, task="sst2", texts=["great food", "terrible"])
    assert len(scores) == len(PROMPTS) and all(len(row) == len(LABELS) for row in scores)
    assert all(math.isfinite(x) for row in scores for x in row)
    if student.label_score_type in ("loglikelihood", "logprob"):
        assert all(x <= 1e-6 for row in scores for x in row)  # log-probabilities
    # Scores belong to (item, label) pairs: the label order and the batch around an item do not change them.
    rev = student.label_scores(LABELS[::-1], prompts=PROMPTS, task="sst2", texts=["great food", "terrible"])
    assert [x for row in rev for x in row[::-1]] == pytest.approx([x for row in scores for x in row], abs=1e-4)
    alone = student.label_scores(LABELS, prompts=PROMPTS[1:], task="sst2", texts=["terrible"])
    assert alone[0] == pytest.approx(scores[1], abs=1e-4)


def test_generation_is_greedy_and_strips_the_prompt_or_is_refused(student):
    if not student.can_generate:
        with pytest.raises(InputError, match="cannot generate"):
            student.generate(PROMPTS, 4)
        return
    out = student.generate(PROMPTS, 4, batch_size=2)
    assert len(out) == len(PROMPTS) and all(isinstance(t, str) for t in out)
    assert student.generate(PROMPTS, 4, batch_size=1) == out  # batching does not change greedy answers
    assert not any("food was great" in t for t in out)  # the prompt is not part of the answer
    assert student.eos_token_ids()


def test_training_pieces(student):
    assert student.methods, "a student kind must support at least one training method"
    for m in student.methods:
        student.require_method(m)
    with pytest.raises(InputError):
        student.require_method("no-such-method")
    if not student.text_pair_training:  # trained by its own trainer (e.g. the classifier on soft labels)
        with pytest.raises(NotImplementedError):
            student.collator(max_source_length=32, max_target_length=8)
        return
    col = student.collator(max_source_length=32, max_target_length=8)
    feats = [col.encode("Review: fine.\nSentiment:", "neutral"), col.encode("Bad!", "negative")]
    assert all(f["input_ids"] and f["labels"] for f in feats)
    batch = col(feats)
    assert batch["input_ids"].shape[0] == 2 and batch["labels"].shape[0] == 2
    assert (batch["labels"] != -100).any()
    logits = torch.zeros(2, batch["labels"].shape[1], 7)
    aligned = student.align_next_token(logits, batch["labels"])
    assert aligned[0].shape[:2] == aligned[1].shape[:2]


def test_save_and_reload_keep_kind_and_scores(student, tmp_path):
    folder = student.save(tmp_path / "saved")
    back = load_student(folder)
    assert type(back) is type(student)
    kw = {"prompts": PROMPTS[:1], "task": "sst2", "texts": ["great food"]}
    assert back.label_scores(LABELS, **kw)[0] == pytest.approx(student.label_scores(LABELS, **kw)[0], abs=1e-4)


def test_onnx_runner_exists_for_the_kind(student):
    cls = student_class(student.kind)
    assert cls.onnx_padding_side() in ("left", "right")


def test_unknown_kind_lists_the_known_ones_and_the_closest():
    with pytest.raises(InputError) as e:
        load_student("whatever", "seq2sq")
    msg = str(e.value)
    assert "did you mean 'seq2seq'" in msg and all(k in msg for k in STUDENTS.names())
