"""Config values reach the code that obeys them, tested at exactly their limits (issue 24, "one layer above
the maths"): the dev/train split the classifier trains on, text and review length cuts, the number of texts,
prompt variants, the confidence filter and ICL shot counts. Each test uses three or more labels where the
order of labels could hide a bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentidistill.config import ICLDistConfig, SoftLabelsConfig
from sentidistill.errors import InputError

LABELS3 = ["negative", "neutral", "positive"]


def _task(tmp_path: Path, texts: list[str], name: str = "toy") -> Path:
    data = tmp_path / f"{name}.jsonl"
    data.write_text("\n".join(json.dumps({"t": t, "y": LABELS3[i % 3]}) for i, t in enumerate(texts)),
                    encoding="utf-8")
    task = tmp_path / f"{name}.yaml"
    task.write_text(f"""
name: {name}
category: basic
kind: classification
loader: {{format: jsonl, splits: {{train: {data}, test: {data}}}, options: {{text_field: t, label_field: y}}}}
labels: [{{name: negative}}, {{name: neutral}}, {{name: positive}}]
instruction: Classify the sentiment.
demos: {{split: train, k: 0}}
metric: macro_f1
""", encoding="utf-8")
    return task


# -- the classifier's training rows and its early-stopping rows ---------------------------------------

def test_split_corpus_keeps_dev_rows_out_of_training(tmp_path):
    from sentidistill.train.classifier import split_corpus

    rows = [{"id": f"r{i}", "split": ("dev" if i % 4 == 0 else "train") if i < 12 else None} for i in range(14)]
    for r in rows[12:]:
        del r["split"]  # rows without a split column are training rows
    train, dev = split_corpus(rows, tmp_path / "c.parquet")
    train_ids, dev_ids = {r["id"] for r in train}, {r["id"] for r in dev}
    assert not train_ids & dev_ids  # early stopping on rows the model never trained on
    assert train_ids | dev_ids == {r["id"] for r in rows}
    assert dev_ids == {"r0", "r4", "r8"} and len(train) == 11


def test_train_classifier_trains_on_the_training_rows_only(tmp_path, monkeypatch):
    """The wiring: what train_classifier hands the Trainer is split_corpus's training part, dev apart."""
    import sentidistill.train.classifier as tc

    seen: dict[str, int] = {}
    real = tc.encode_rows

    def spy(rows, *a, **k):
        seen.setdefault("train" if "train" not in seen else "dev", len(rows))
        seen.setdefault("ids_" + ("train" if "ids_train" not in seen else "dev"), {r["id"] for r in rows})
        return real(rows, *a, **k)

    monkeypatch.setattr(tc, "encode_rows", spy)
    from sentidistill.config import ClassifierConfig
    from sentidistill.data.soft_label_corpus import write_soft_labels
    from sentidistill.testing import build_tiny_encoder

    enc = build_tiny_encoder(tmp_path / "enc")
    rows = []
    for i in range(12):
        p = [0.8, 0.1, 0.1] if i % 3 == 0 else [0.1, 0.8, 0.1] if i % 3 == 1 else [0.1, 0.1, 0.8]
        rows.append({"task": "toy", "id": f"r{i}", "text": f"text {i}", "target": None, "labels": LABELS3,
                     "teacher_logprobs": [0.0, 0.0, 0.0], "probs_raw": p, "probs": p, "via": "exact",
                     "split": "dev" if i < 3 else "train", "teacher_label": LABELS3[i % 3], "weight": 1.0,
                     "gold": None})
    write_soft_labels(rows, tmp_path / "soft.parquet")
    cfg = ClassifierConfig(enabled=True, encoder=str(enc), max_length=16, patience=1,
                           training={"epochs": 1, "batch_size": 4, "eval_steps": 2, "save_steps": 2,
                                     "logging_steps": 100})
    tc.train_classifier(tmp_path / "soft.parquet", tmp_path / "out", cfg, seed=0)
    assert seen["train"] == 9 and seen["dev"] == 3
    assert not seen["ids_train"] & seen["ids_dev"]


# -- lengths and counts -------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [19, 20, 21])
def test_soft_label_texts_cut_at_exactly_max_chars(tmp_path, n):
    from sentidistill.bench import get_task
    from sentidistill.distill.soft_labels import unlabeled_texts

    text = "abcdefghij" * 3
    task = get_task(str(_task(tmp_path, [text[:n], "x" * 50, "short"])))
    rows = unlabeled_texts(task, None, data_dir=None, seed=0, max_chars=20)
    got = {r["text"] for r in rows}
    assert text[:min(n, 20)] in got and "x" * 20 in got and "short" in got
    assert all(len(t) <= 20 for t in got) and not any("gold" in r or "label" in r for r in rows)


@pytest.mark.parametrize(("n_per_task", "want"), [(4, 4), (5, 5), (6, 5), (None, 5)])
def test_n_per_task_at_and_past_the_split_size(tmp_path, n_per_task, want):
    from sentidistill.bench import get_task
    from sentidistill.distill.soft_labels import unlabeled_texts

    task = get_task(str(_task(tmp_path, [f"text {i}" for i in range(5)])))
    rows = unlabeled_texts(task, n_per_task, data_dir=None, seed=0, max_chars=100)
    assert len(rows) == want and len({r["text"] for r in rows}) == want


def test_review_length_filter_and_limit_at_exactly_their_values(tmp_path):
    from sentidistill.data.reviews import load_reviews

    f = tmp_path / "r.jsonl"
    texts = ["a" * 9, "b" * 10, "c" * 11, "d" * 29, "e" * 30, "f" * 31]
    f.write_text("\n".join(json.dumps({"text": t}) for t in texts), encoding="utf-8")
    got = load_reviews(str(f), min_chars=10, max_chars=30)
    assert got.texts == ["b" * 10, "c" * 11, "d" * 29, "e" * 30]  # both limits inclusive
    assert got.dropped["too_short"] == 1 and got.dropped["too_long"] == 1
    assert load_reviews(str(f), min_chars=10, max_chars=30, limit=4).dropped["over_limit"] == 0
    cut = load_reviews(str(f), min_chars=10, max_chars=30, limit=3)
    assert len(cut.texts) == 3 and cut.dropped["over_limit"] == 1


def test_every_prompt_variant_up_to_the_configured_maximum_exists(tmp_path):
    from sentidistill.bench import get_task
    from sentidistill.distill.soft_labels import VARIANTS, variant_prompt

    top = SoftLabelsConfig.model_fields["prompt_variants"].metadata
    most = next(m.le for m in top if hasattr(m, "le"))
    assert most == len(VARIANTS)  # the config's maximum is the number of variants the code has
    SoftLabelsConfig(prompt_variants=most)
    with pytest.raises(ValueError):
        SoftLabelsConfig(prompt_variants=most + 1)
    task = get_task(str(_task(tmp_path, ["good", "bad", "fine"])))
    prompts = [json.dumps(variant_prompt(task, {"text": "good"}, v)) for v in range(most)]
    assert len(set(prompts)) == most and all("neutral" in p for p in prompts[1:])


@pytest.mark.parametrize(("top", "kept"), [(0.59, False), (0.6, True), (0.61, True)])
def test_min_confidence_keeps_a_row_at_exactly_the_threshold(top, kept):
    from sentidistill.distill.curation import curate

    rest = (1 - top) / 2
    rows = [{"task": "t", "id": "a", "text": "a text", "labels": LABELS3, "probs_raw": [rest, top, rest],
             "probs": [rest, top, rest]},
            {"task": "t", "id": "b", "text": "b text", "labels": LABELS3, "probs_raw": [0.9, 0.05, 0.05],
             "probs": [0.9, 0.05, 0.05]}]
    out, stats = curate(rows, seed=0, dedupe=False, min_confidence=0.6, dev_fraction=0.0, balance="none")
    assert ("a" in {r["id"] for r in out}) == kept
    assert stats.by_task["t"].removed_low_confidence == (0 if kept else 1)
    assert {r["teacher_label"] for r in out} == ({"neutral", "negative"} if kept else {"negative"})


def test_icl_shots_span_min_to_max_inclusive_and_max_can_use_every_other_row(tmp_path):
    from sentidistill.distill.icl import build_icl_prompts

    task = str(_task(tmp_path, [f"row {i}" for i in range(5)]))
    cfg = ICLDistConfig(tasks=[task], n_prompts=40, min_shots=1, max_shots=3)
    counts = {len(p.demos) for p in build_icl_prompts(cfg, seed=0)}
    assert counts == {1, 2, 3}  # both ends reachable
    cfg = ICLDistConfig(tasks=[task], n_prompts=10, min_shots=4, max_shots=4)  # exactly the other 4 rows
    assert {len(p.demos) for p in build_icl_prompts(cfg, seed=0)} == {4}
    with pytest.raises(InputError, match="max_shots"):
        build_icl_prompts(ICLDistConfig(tasks=[task], n_prompts=10, min_shots=5, max_shots=5), seed=0)


class _RecordingAdapter:
    """Answers the first label for every prompt and keeps the prompts it was shown."""

    prompt_style = "plain"
    name = "rec"

    def __init__(self):
        self.prompts = []

    def choose(self, prompts, words, *, task="", rows=None):
        from sentidistill.bench.models import Answer

        self.prompts.extend(prompts)
        return [Answer(text=words[0], scores=[0.0] + [-1.0] * (len(words) - 1)) for _ in prompts]

    def generate(self, prompts, max_new_tokens, *, task="", stop=None):
        self.prompts.extend(prompts)
        return ["negative"] * len(prompts)


@pytest.mark.parametrize("n", [29, 30, 31])
def test_bench_max_chars_and_limit_at_exactly_their_values(tmp_path, n):
    from sentidistill.bench import get_task
    from sentidistill.bench.runner import run_task

    marker = "Q" * n + "END"
    texts = [marker, "a short one", "another text", "a third text", "and a fourth"]
    task = get_task(str(_task(tmp_path, texts)))
    adapter = _RecordingAdapter()
    entry = run_task(adapter, task, shots=0, max_chars=30, limit=5, bootstrap=0)
    assert entry["n"] == 5  # limit == the split size: every row
    shown = [p for p in adapter.prompts if "Q" in p]
    assert len(shown) == 1
    body = shown[0].split("Sentence: ", 1)[1].split("\n", 1)[0]
    assert body == marker[:30]  # cut at exactly max_chars, the marker kept when it fits
    assert run_task(_RecordingAdapter(), task, shots=0, limit=4, bootstrap=0)["n"] == 4
