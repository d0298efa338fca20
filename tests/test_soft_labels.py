"""Label-free distillation maths: calibration, the soft-label KL, curation (values computed by hand)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from sentidistill.core.records import TeacherResponse
from sentidistill.distill.calibration import (
    apply_prior,
    batch_calibrate,
    contextual_calibrate,
    estimate_prior,
    softmax_logprobs,
)
from sentidistill.distill.curation import curate
from sentidistill.errors import InputError
from sentidistill.teacher.restricted import case_variants, response_label_logprobs
from sentidistill.train.losses import label_ce, soft_label_kl
from toy_task import write_toy_task

# -- calibration ------------------------------------------------------------------------------------

def test_batch_calibration_hand_computed():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    cal, prior = batch_calibrate(probs)
    # prior = column means = [0.75, 0.25]; row 1: [0.9/0.75, 0.1/0.25] = [1.2, 0.4] -> [0.75, 0.25];
    # row 2: [0.6/0.75, 0.4/0.25] = [0.8, 1.6] -> [1/3, 2/3].
    np.testing.assert_allclose(prior, [0.75, 0.25])
    np.testing.assert_allclose(cal, [[0.75, 0.25], [1 / 3, 2 / 3]])
    # The arg-max of the second row flips: the skew towards label 0 is removed.
    assert cal.argmax(1).tolist() == [0, 1]


def test_batch_calibration_with_a_given_prior_and_three_labels():
    probs = np.array([[0.5, 0.3, 0.2]])
    cal = apply_prior(probs, np.array([0.5, 0.25, 0.25]))
    # [1.0, 1.2, 0.8] / 3.0
    np.testing.assert_allclose(cal, [[1.0 / 3.0, 0.4, 0.8 / 3.0]])


def test_contextual_calibration_hand_computed():
    cf = np.array([[0.7, 0.3], [0.9, 0.1]])  # content-free answers: prior [0.8, 0.2]
    cal, prior = contextual_calibrate(np.array([[0.5, 0.5]]), cf)
    np.testing.assert_allclose(prior, [0.8, 0.2])
    # [0.5/0.8, 0.5/0.2] = [0.625, 2.5] -> [0.2, 0.8]
    np.testing.assert_allclose(cal, [[0.2, 0.8]])


def test_calibration_rejects_bad_input():
    with pytest.raises(InputError, match="2-D"):
        estimate_prior(np.array([0.5, 0.5]))
    with pytest.raises(InputError, match="negative or non-finite"):
        batch_calibrate(np.array([[0.5, -0.1]]))
    with pytest.raises(InputError, match="number of labels"):
        apply_prior(np.array([[0.5, 0.5]]), np.array([0.3, 0.3, 0.4]))


def test_softmax_over_label_logprobs_handles_minus_inf():
    p = softmax_logprobs(np.array([[math.log(0.2), math.log(0.6), -math.inf]]))
    np.testing.assert_allclose(p, [[0.25, 0.75, 0.0]])


# -- the soft-label KL --------------------------------------------------------------------------------

def test_soft_label_kl_hand_computed():
    logits = torch.zeros(1, 2)
    teacher = torch.tensor([[0.75, 0.25]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # KL(p || uniform) = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert soft_label_kl(logits, teacher, mask).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1308120, abs=1e-6)


def test_soft_label_kl_temperature_and_mask():
    # T = 2: the teacher becomes sqrt(p) renormalised, the student softmax(z/2); the loss is scaled by T^2.
    logits = torch.tensor([[2.0, 0.0, 123.0]])
    teacher = torch.tensor([[0.64, 0.36, 0.0]])
    mask = torch.tensor([[True, True, False]])  # the third label does not exist for this task
    p = torch.tensor([0.8, 0.6]) / 1.4
    q = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected = 4 * float((p * (p / q).log()).sum())
    got = soft_label_kl(logits, teacher, mask, temperature=2.0).item()
    assert got == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        soft_label_kl(logits, teacher, mask, temperature=0.0)


def test_soft_label_kl_weights_and_gradient_direction():
    logits = torch.zeros(2, 2, requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    weights = torch.tensor([3.0, 1.0])
    loss = soft_label_kl(logits, teacher, mask, weights=weights)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # both rows: KL(onehot || uniform) = ln 2
    loss.backward()
    g = logits.grad
    # Gradient descent raises the teacher's label: d/dz0 < 0 for row 0, d/dz1 < 0 for row 1; row 0 weighs 3x.
    assert g[0, 0] < 0 < g[0, 1] and g[1, 1] < 0 < g[1, 0]
    assert abs(g[0, 0].item()) == pytest.approx(3 * abs(g[1, 1].item()), rel=1e-5)


def test_label_ce_ignores_rows_without_gold():
    logits = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert label_ce(logits, torch.tensor([-100, -100]), mask).item() == 0.0
    assert label_ce(logits, torch.tensor([1, -100]), mask).item() == pytest.approx(math.log(2), abs=1e-6)


# -- reading teacher responses ------------------------------------------------------------------------

def test_case_variants_and_exact_scores_sum_over_variants():
    flat, owner = case_variants(["negative", "positive", "FAVOR"])
    assert flat == ["negative", "Negative", "positive", "Positive", "FAVOR"]
    assert owner == [0, 0, 1, 1, 2]
    resp = TeacherResponse(text="x", label_logprobs=[math.log(0.1), math.log(0.3), math.log(0.2), math.log(0.2),
                                                     math.log(0.05)])
    lp, via = response_label_logprobs(resp, ["negative", "positive", "FAVOR"])
    assert via == "exact"
    np.testing.assert_allclose(np.exp(lp), [0.4, 0.4, 0.05])


def test_text_fallback_and_failures():
    resp = TeacherResponse(text="Positive.", logprobs=None)
    lp, via = response_label_logprobs(resp, ["negative", "positive"], parse=lambda t: 1 if "ositive" in t else None)
    assert via == "text" and lp == [-math.inf, 0.0]
    bad = TeacherResponse(text="", status="error")
    lp, via = response_label_logprobs(bad, ["negative", "positive"])
    assert via == "none" and all(math.isnan(x) for x in lp)


# -- curation -----------------------------------------------------------------------------------------

def _rows(n: int, task: str = "t", skew: float = 0.8, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        p0 = skew if rng.random() < 0.75 else 1 - skew
        rows.append({"task": task, "id": f"{task}-{i}", "text": f"text number {i}", "labels": ["a", "b"],
                     "probs_raw": [p0, 1 - p0], "probs": [p0, 1 - p0]})
    return rows


def test_curation_is_deterministic_and_order_free():
    rows = _rows(200)
    a, sa = curate(rows, seed=7)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    b, sb = curate(shuffled, seed=7)
    key = lambda rs: sorted((r["id"], r["split"], round(r["weight"], 9)) for r in rs)  # noqa: E731
    assert key(a) == key(b)
    assert sa.to_dict() == sb.to_dict()
    c, _ = curate(rows, seed=8)
    assert {r["id"] for r in a if r["split"] == "dev"} != {r["id"] for r in c if r["split"] == "dev"}


def test_curation_dev_slice_balance_and_counts():
    rows = _rows(200)
    rows.append({**rows[0], "id": "dup", "text": "  TEXT number 0 "})  # a duplicate after normalisation
    out, stats = curate(rows, seed=3, dev_fraction=0.2, balance="weight")
    st = stats.by_task["t"]
    assert st.removed_duplicates == 1 and st.n_in == 201
    assert st.n_dev == 40 and st.n_train == 160
    train = [r for r in out if r["split"] == "train"]
    by_label: dict[str, float] = {}
    for r in train:
        by_label[r["teacher_label"]] = by_label.get(r["teacher_label"], 0.0) + r["weight"]
    # Inverse-frequency weights: each label carries the same total weight, and the mean weight is 1.
    assert by_label["a"] == pytest.approx(by_label["b"])
    assert sum(r["weight"] for r in train) == pytest.approx(len(train))
    # The dev slice keeps the teacher's label proportions (stratified).
    dev = [r for r in out if r["split"] == "dev"]
    share_a = sum(r["teacher_label"] == "a" for r in dev) / len(dev)
    assert abs(share_a - st.teacher_calibrated_counts["a"] / 200) < 0.05


def test_curation_downsample_and_confidence_filter():
    rows = _rows(100, skew=0.9) + _rows(10, task="u", skew=0.55, seed=2)
    out, stats = curate(rows, seed=1, balance="downsample", min_confidence=0.6, dev_fraction=0.1)
    t = stats.by_task["t"]
    train_counts = t.train_counts
    assert train_counts["a"] == train_counts["b"]
    assert t.removed_balance == sum(t.teacher_calibrated_counts.values()) - t.n_dev - t.n_train
    u = stats.by_task["u"]
    assert u.removed_low_confidence == 10 and u.n_train == 0  # 0.55 < 0.6: every text of task u removed
    assert all(r["task"] == "t" for r in out)


# -- the soft-label corpus through a scoring teacher (exact label likelihoods) ---------------------------

class _ScoringBackend:
    supports_label_scoring = True


class _FakeScoringTeacher:
    """Answers ``score_labels`` requests like llama.cpp in-process: a skewed prior (0.7 on the first label)
    times a lexicon likelihood; content-free inputs get the bare prior. Records every request."""

    backend = _ScoringBackend()
    model_id = "fake"

    def __init__(self):
        self.requests = []
        self.stats = {}

    def generate(self, requests):
        self.requests.extend(requests)
        out = []
        for r in requests:
            text = r.messages[-1]["content"].lower()
            like = [0.5, 0.5]
            if "great" in text:
                like = [0.2, 0.8]
            elif "awful" in text:
                like = [0.95, 0.05]
            p = np.array([0.7 * like[0], 0.3 * like[1]])
            p /= p.sum()
            # case variants: "negative", "Negative", "positive", "Positive" share each label's mass
            flat = [p[0] / 2, p[0] / 2, p[1] / 2, p[1] / 2]
            out.append(TeacherResponse(text="x", label_logprobs=[math.log(x) for x in flat]))
        return out


def _toy_task(tmp_path):
    rows = [{"t": f"the {w} thing {i}", "y": "positive" if w == "great" else "negative"}
            for i, w in enumerate(["great", "awful", "great", "plain"] * 10)]
    return write_toy_task(tmp_path, rows)


@pytest.mark.parametrize("calibration", ["batch", "contextual", "none"])
def test_soft_label_corpus_calibrates_without_gold(tmp_path, calibration):
    from sentidistill.config import SoftLabelsConfig
    from sentidistill.data.soft_label_corpus import read_soft_labels
    from sentidistill.distill.soft_labels import build_soft_label_corpus

    task = _toy_task(tmp_path)
    cfg = SoftLabelsConfig(enabled=True, tasks=[str(task)], n_per_task=None, calibration=calibration,
                           prompt_variants=2, dev_fraction=0.25)
    teacher = _FakeScoringTeacher()
    stats = build_soft_label_corpus(cfg, teacher, tmp_path / "soft.parquet", seed=0)
    rows = read_soft_labels(tmp_path / "soft.parquet")
    n_cf = 3 if calibration == "contextual" else 0
    assert len(teacher.requests) == 40 * 2 + n_cf  # two prompt variants per text (+ content-free inputs)
    assert all(r.params.score_labels == ("negative", "Negative", "positive", "Positive") for r in teacher.requests)
    assert len({r.prompt_id for r in teacher.requests}) == 2 + (1 if n_cf else 0)
    plain = [r for r in rows if "plain" in r["text"]]
    raw = np.array(plain[0]["probs_raw"])
    np.testing.assert_allclose(raw, [0.7, 0.3], atol=1e-9)  # the teacher's prior alone on a neutral text
    prior = np.array(stats.priors["toy"])
    if calibration == "none":
        np.testing.assert_allclose(prior, [0.5, 0.5])
        assert plain[0]["teacher_label"] == "negative"
    else:
        if calibration == "contextual":
            np.testing.assert_allclose(prior, [0.7, 0.3], atol=1e-9)  # the content-free answers = the prior
        # Dividing the prior out makes the neutral text a tie, not "negative" by default.
        np.testing.assert_allclose(plain[0]["probs"], raw / prior / (raw / prior).sum(), atol=1e-9)
    great = [r for r in rows if "great" in r["text"]]
    assert all(r["teacher_label"] == "positive" for r in great) or calibration == "none"
    assert stats.tasks["toy"]["via"] == {"exact": 40}
    assert {r["split"] for r in rows} == {"train", "dev"} and all(r["gold"] is None for r in rows)
