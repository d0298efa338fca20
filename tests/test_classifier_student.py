"""The classifier student: label-embedding init, soft-label training with early stopping, save/load, heads."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sentidistill.config import ClassifierConfig, TrainingConfig
from sentidistill.data.soft_label_corpus import write_soft_labels
from sentidistill.errors import InputError
from sentidistill.students.classifier import (
    build_classifier,
    classifier_input,
    is_classifier_checkpoint,
    load_classifier,
    save_classifier,
)
from sentidistill.testing import build_tiny_encoder
from sentidistill.train.classifier import agreement_metrics, train_classifier


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("enc") / "bert")


TASKS = [
    {"name": "polarity", "labels": ["negative", "positive"], "words": ["negative", "positive"]},
    {"name": "emotion3", "labels": ["anger", "joy", "sadness"], "words": ["anger", "joy", "sadness"]},
]

WORDS = {"polarity": {"negative": ["awful", "terrible", "bad"], "positive": ["great", "lovely", "good"]},
         "emotion3": {"anger": ["furious", "rage"], "joy": ["happy", "delight"], "sadness": ["tears", "grief"]}}
FILLER = ["the food", "our visit", "this phone", "the staff", "that movie", "my week"]


def synthetic_corpus(n_per_task: int, seed: int = 0) -> list[dict]:
    """Texts whose keyword decides the teacher's soft label (a confident but not one-hot distribution)."""
    rng = random.Random(seed)
    rows = []
    for t in TASKS:
        for i in range(n_per_task):
            j = rng.randrange(len(t["labels"]))
            lab = t["labels"][j]
            text = f"{rng.choice(FILLER)} was {rng.choice(WORDS[t['name']][lab])} {rng.choice(FILLER)}"
            k = len(t["labels"])
            probs = [0.8 if m == j else 0.2 / (k - 1) for m in range(k)]
            rows.append({"task": t["name"], "id": f"{t['name']}-{i}", "text": text, "target": None,
                         "labels": t["labels"], "probs_raw": probs, "probs": probs, "teacher_label": lab,
                         "split": "dev" if i % 5 == 0 else "train", "weight": 1.0, "via": "exact",
                         "teacher_logprobs": [float(np.log(p)) for p in probs]})
    return rows


def test_label_embedding_init_is_a_zero_shot_similarity_classifier(tiny_encoder):
    model, tok = build_classifier(str(tiny_encoder), TASKS, head_init="label_embeddings")
    # A text that IS a label word is most similar to that label's embedding (cosine 1).
    for t in TASKS:
        probs = model.predict_proba(tok, t["name"], t["words"])
        assert probs.shape == (len(t["words"]), len(t["words"]))
        assert probs.argmax(1).tolist() == list(range(len(t["words"])))
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    w = model.heads[0].weight.detach()
    np.testing.assert_allclose(torch.linalg.vector_norm(w, dim=1).numpy(), [20.0, 20.0], rtol=1e-5)


def test_train_on_soft_labels_learns_early_stops_and_reloads(tiny_encoder, tmp_path, caplog):
    corpus = write_soft_labels(synthetic_corpus(100), tmp_path / "soft.parquet")
    cfg = ClassifierConfig(
        enabled=True, encoder=str(tiny_encoder), max_length=32, patience=3,
        training=TrainingConfig(epochs=40, learning_rate=5e-3, batch_size=16, eval_steps=10, save_steps=10,
                                logging_steps=50, warmup_ratio=0.0),
    )
    with caplog.at_level(logging.INFO, logger="sentidistill.train.classifier"):
        final = train_classifier(corpus, tmp_path / "clf", cfg, seed=1)
    summary = json.loads((tmp_path / "clf" / "final" / "training_summary.json").read_text())
    # One evaluation per eval step (and one before training): the best checkpoint's is reused, not redone.
    evaluated = [r.getMessage().split("step ")[1].split("/")[0] for r in caplog.records if "dev agreement" in r.getMessage()]
    assert len(evaluated) >= 3 and len(set(evaluated)) == len(evaluated), evaluated
    assert is_classifier_checkpoint(final) and (final / "model.safetensors").is_file()
    assert summary["dev_before"]["eval_teacher_agreement"] < 0.8
    assert summary["dev_after"]["eval_teacher_agreement"] >= 0.9
    assert summary["dev_after"]["eval_teacher_agreement"] == pytest.approx(summary["best_teacher_agreement"])
    # Early stopping: 40 epochs of 160 rows at batch 16 would be 400 steps; it stops once agreement plateaus.
    assert summary["global_step"] < 400
    model, tok = load_classifier(final)
    probs = model.predict_proba(tok, "polarity", ["the staff was great the food", "the food was awful my week"])
    assert probs.argmax(1).tolist() == [1, 0]
    # Save -> load gives the same answers.
    save_classifier(model, tok, tmp_path / "copy")
    again, tok2 = load_classifier(tmp_path / "copy")
    texts = [r["text"] for r in synthetic_corpus(5, seed=9)]
    np.testing.assert_allclose(again.predict_proba(tok2, "emotion3", texts), model.predict_proba(tok, "emotion3", texts),
                               atol=1e-6)


def test_resume_from_checkpoint_continues(tiny_encoder, tmp_path):
    corpus = write_soft_labels(synthetic_corpus(30), tmp_path / "soft.parquet")
    cfg = ClassifierConfig(enabled=True, encoder=str(tiny_encoder), max_length=32, patience=50,
                           training=TrainingConfig(max_steps=8, learning_rate=1e-3, batch_size=8, eval_steps=4,
                                                   save_steps=4, logging_steps=50))
    train_classifier(corpus, tmp_path / "clf", cfg, seed=3)
    first = json.loads((tmp_path / "clf" / "final" / "training_summary.json").read_text())
    assert first["resumed_from"] is None and first["global_step"] == 8
    cfg2 = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 12})})
    train_classifier(corpus, tmp_path / "clf", cfg2, seed=3)
    second = json.loads((tmp_path / "clf" / "final" / "training_summary.json").read_text())
    assert second["resumed_from"] is not None and second["resumed_from"].endswith("checkpoint-8")
    assert second["global_step"] == 12


def test_head_for_maps_label_sets_and_reports_heads(tiny_encoder):
    model, _ = build_classifier(str(tiny_encoder), TASKS, head_init="random")
    assert model.head_for("polarity", ["negative", "positive"]) == (0, [0, 1])
    # An unseen task with the same label set (e.g. MR through an SST-2 head), labels in another order.
    assert model.head_for("mr", ["POSITIVE", "negative"]) == (0, [1, 0])
    with pytest.raises(InputError, match=r"no head .* answers task 'stance'.*polarity \['negative', 'positive'\]"):
        model.head_for("stance", ["favor", "against"])
    with pytest.raises(InputError, match="has labels"):
        model.head_for("polarity", ["anger", "joy", "sadness"])


def test_agreement_metric_is_macro_f1_against_teacher_per_task():
    logits = np.array([[2.0, 0.0, -1e4], [0.0, 2.0, -1e4], [2.0, 0.0, -1e4], [0.0, 0.0, 5.0]])
    task_ids = np.array([0, 0, 0, 1])
    teacher = np.array([0, 1, 1, 2])
    m = agreement_metrics(logits, task_ids, teacher, TASKS)
    # Task 0: preds [0,1,0] vs [0,1,1]: F1(label 0) = 2/3, F1(label 1) = 2/3 -> 2/3. Task 1: one right -> F1 only
    # over the labels present... sklearn with labels=[0,1,2] and zero_division=0 -> (0 + 0 + 1) / 3.
    assert m["agreement_f1_polarity"] == pytest.approx(2 / 3)
    assert m["agreement_f1_emotion3"] == pytest.approx(1 / 3)
    assert m["teacher_agreement"] == pytest.approx(0.5)


def test_classifier_input_puts_the_target_first():
    assert classifier_input({"text": "vote for her", "target": "Hillary Clinton"}) == "Hillary Clinton: vote for her"
    assert classifier_input({"text": "just text"}) == "just text"


def test_corpus_without_dev_rows_is_a_clear_error(tiny_encoder, tmp_path):
    rows = [dict(r, split="train") for r in synthetic_corpus(10)]
    corpus = write_soft_labels(rows, tmp_path / "soft.parquet")
    with pytest.raises(InputError, match="no dev rows"):
        train_classifier(corpus, tmp_path / "x", ClassifierConfig(enabled=True, encoder=str(tiny_encoder)))


@pytest.mark.slow  # ~1 min on 2 cores
def test_generative_student_learns_soft_labels_with_label_kl(tiny_seq2seq_dir, tmp_path):
    """A seq2seq student trained on soft labels: the label-distribution KL falls and the student's
    restricted-scoring answers move to the teacher's labels (checked on the training texts)."""
    from sentidistill.bench.models import HFModelAdapter
    from sentidistill.train.softlabel_lm import train_generative_on_soft_labels

    rng = random.Random(0)
    rows = []
    for i in range(48):
        pos = i % 2 == 0
        text = f"{rng.choice(FILLER)} was {'great' if pos else 'awful'} {i}"
        probs = [0.1, 0.9] if pos else [0.9, 0.1]
        rows.append({"task": "sst2", "id": f"r{i}", "text": text, "target": None, "labels": ["negative", "positive"],
                     "probs_raw": probs, "probs": probs, "teacher_label": "positive" if pos else "negative",
                     "split": "dev" if i % 8 in (0, 1) else "train", "weight": 1.0, "via": "exact",
                     "teacher_logprobs": [float(np.log(p)) for p in probs]})
    corpus = write_soft_labels(rows, tmp_path / "soft.parquet")
    training = TrainingConfig(epochs=12, learning_rate=3e-3, batch_size=8, eval_steps=10, save_steps=10,
                              logging_steps=100, warmup_ratio=0.0)
    final = train_generative_on_soft_labels(str(tiny_seq2seq_dir), corpus, tmp_path / "gen", training, patience=3,
                                            max_length=64, seed=0)
    summary = json.loads((tmp_path / "gen" / "final" / "training_summary.json").read_text())
    assert summary["best_teacher_agreement"] >= 0.9 > summary["dev_before"]["eval_teacher_agreement"]
    adapter = HFModelAdapter(str(final), device="cpu")
    from sentidistill.bench import get_task

    task = get_task("sst2")
    probe = [{"text": "the food was great my week"}, {"text": "the staff was awful the plot"}]
    answers = adapter.choose([task.prompt(r, [], style=adapter.prompt_style) for r in probe], ["negative", "positive"],
                             task="sst2", rows=probe)
    assert [a.text for a in answers] == ["positive", "negative"]
