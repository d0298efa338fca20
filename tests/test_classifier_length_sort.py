"""The classifier engine queues a request's texts shortest first (batches pad to similar lengths) and still
answers every text with its own probabilities, in the request's order; a user's own head is addressed by name."""

from __future__ import annotations

import numpy as np
import pytest

from sentidistill.errors import InputError
from sentidistill.serve.classify import ClassifierEngine

LABELS = ["anger", "joy", "optimism", "sadness"]  # more than two labels


class _Backend:
    """Logits that depend on the text alone (its length and first letter), recording each batch's texts."""

    def __init__(self) -> None:
        self.tasks = [{"name": "moods", "labels": LABELS, "words": LABELS}]
        self.batches: list[list[str]] = []

    def logits(self, texts):
        self.batches.append(list(texts))
        z = np.array([[len(t) % 7, ord(t[0]) % 5, 1.0, -len(t) / 10] for t in texts], dtype=np.float32)
        return z, [len(t.split()) for t in texts]

    def close(self) -> None:
        pass


def _expected(text: str) -> np.ndarray:
    z = np.array([len(text) % 7, ord(text[0]) % 5, 1.0, -len(text) / 10], dtype=np.float64)
    p = np.exp(z - z.max())
    return p / p.sum()


def test_texts_are_batched_shortest_first_and_answered_in_request_order() -> None:
    backend = _Backend()
    texts = ["a much longer text than the others here", "hi", "medium sized one", "yo", "z" * 60, "short one"]
    with ClassifierEngine(backend, max_batch_size=2) as engine:
        task = engine.task_for("moods")  # the classifier's own head, not a registry task
        answers = engine.classify(task, [{"text": t} for t in texts], timeout=30)
    assert [len(t) for b in backend.batches for t in b] == sorted(len(t) for t in texts)
    assert all(len(b) <= 2 for b in backend.batches)
    for text, a in zip(texts, answers, strict=True):
        want = _expected(text)
        assert list(a.probabilities) == LABELS
        assert [a.probabilities[lab] for lab in LABELS] == pytest.approx(list(want), abs=1e-9)
        assert a.label == LABELS[int(np.argmax(want))] and a.tokens == len(text.split())


def test_task_for_refuses_an_unknown_name_listing_the_heads() -> None:
    with ClassifierEngine(_Backend()) as engine:
        assert engine.task_for(None).name == "moods"  # the only head
        assert engine.task_for("sentiment").name == "sst2"  # an alias still resolves to the registry
        with pytest.raises(InputError, match="unknown task") as err:
            engine.task_for("mods")
    assert "moods" in str(err.value.expected) and err.value.field == "task"
