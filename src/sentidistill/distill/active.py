"""Which unlabeled texts the teacher labels: active selection for soft labels (fewer teacher calls).

The teacher is the cost of a label-free run; many texts of a pool teach the student little (near
duplicates, texts it already gets right with confidence). ``soft_labels.selection`` chooses ``budget``
texts per task from the ``n_per_task`` pool:

- ``random``: a seeded uniform sample (the baseline).
- ``uncertainty_diversity``: rounds, as in batch active learning (Sener & Savarese 2018, "core-set":
  k-center greedy; Ash et al. 2020, BADGE, and Kirsch et al. 2019, BatchBALD, for why a batch must be
  diverse as well as uncertain). Round 0 labels ``seed_fraction`` of the budget chosen by k-center greedy
  on the student's encoder embeddings (coverage of the pool). Each later round fits a softmax regression
  on the embeddings of the texts labelled so far (the student's encoder with a linear head: a cheap stand-in
  for the classifier student, trained on the batch-calibrated teacher distributions), scores the rest by
  its uncertainty (predictive entropy, or 1 - margin between the top two labels), keeps the ``candidates``
  x round-size most uncertain texts, and picks the round's texts among them by k-center greedy against
  everything labelled (so a round does not spend its budget on near duplicates).

The embeddings are the classifier student's (mean-pooled, L2-normalised, ``builtin:minilm`` by default).
Choices are deterministic for a seed: k-center greedy starts from a seeded draw, ties go to the lower
index, and the regression is full-batch gradient descent from zeros.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LabelFn = Callable[[list[int]], np.ndarray]  # pool indices -> teacher distributions [n, K] (NaN rows: failures)


def kcenter_greedy(x: np.ndarray, k: int, *, chosen: Sequence[int] = (), candidates: Sequence[int] | None = None,
                   rng: np.random.Generator | None = None) -> list[int]:
    """``k`` indices of ``x`` ([N, d], rows L2-normalised) by k-center greedy (Sener & Savarese 2018): each
    pick is the candidate farthest (Euclidean) from everything chosen so far. With nothing ``chosen``, the
    first pick is a draw from ``rng`` (else the first candidate). Returns fewer when candidates run out."""
    pool = np.arange(len(x)) if candidates is None else np.asarray(list(candidates), dtype=int)
    pool = pool[~np.isin(pool, np.asarray(list(chosen), dtype=int))]
    if k <= 0 or pool.size == 0:
        return []
    picks: list[int] = []
    if len(chosen):
        dist = np.min(np.linalg.norm(x[pool, None, :] - x[None, list(chosen), :], axis=-1), axis=1)
    else:
        first = int(pool[int(rng.integers(pool.size))]) if rng is not None else int(pool[0])
        picks.append(first)
        dist = np.linalg.norm(x[pool] - x[first], axis=1)
    while len(picks) < k:
        dist[np.isin(pool, picks)] = -1.0
        j = int(np.argmax(dist))  # the lowest index among ties
        if dist[j] < 0:
            break
        picks.append(int(pool[j]))
        dist = np.minimum(dist, np.linalg.norm(x[pool] - x[pool[j]], axis=1))
    return picks


def uncertainty(probs: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Per row of ``probs`` ([N, K], rows summing to 1): ``entropy`` (nats) or ``margin`` (1 - (p1 - p2),
    the gap between the two most likely labels). Higher = less certain. Raises ``ValueError`` otherwise."""
    p = np.clip(probs, 1e-12, 1.0)
    if kind == "entropy":
        return -(p * np.log(p)).sum(axis=1)
    if kind == "margin":
        top = np.sort(p, axis=1)[:, ::-1]
        return 1.0 - (top[:, 0] - (top[:, 1] if p.shape[1] > 1 else 0.0))
    raise ValueError(f"unknown uncertainty {kind!r}: expected entropy or margin")


def fit_softmax_probe(x: np.ndarray, targets: np.ndarray, *, l2: float = 1e-3, steps: int = 300,
                      lr: float = 2.0) -> Callable[[np.ndarray], np.ndarray]:
    """A softmax regression ``x`` ([N, d]) -> ``targets`` ([N, K] distributions), by full-batch gradient
    descent on the cross-entropy with soft targets (+ ``l2``); returns ``predict(x) -> [M, K]`` probs."""
    n, d = x.shape
    k = targets.shape[1]
    w = np.zeros((d, k))
    b = np.zeros(k)

    def probs(z: np.ndarray) -> np.ndarray:
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    for _ in range(steps):
        g = (probs(x) - targets) / n
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum(axis=0)
    return probs


def _round_sizes(budget: int, rounds: int, seed_fraction: float) -> list[int]:
    """How many texts each round labels: round 0 ``seed_fraction`` of the budget, the rest split evenly."""
    if rounds == 1:
        return [budget]
    first = min(budget, max(1, math.ceil(seed_fraction * budget)))
    rest = budget - first
    per = [rest // (rounds - 1) + (1 if i < rest % (rounds - 1) else 0) for i in range(rounds - 1)]
    return [first] + [n for n in per if n > 0]


def select(embeddings: np.ndarray, label: LabelFn, *, strategy: str, budget: int, rounds: int = 4,
           seed_fraction: float = 0.25, candidates: float = 4.0, uncertainty_kind: str = "entropy",
           seed: int = 0) -> list[int]:
    """Pool indices for the teacher to label, in the order they were chosen (``budget`` of them, or the
    whole pool when it is smaller).

    ``embeddings``: [N, d] L2-normalised rows; ``label(indices)`` asks the teacher and returns its
    distributions [len(indices), K] (a NaN row = no usable answer; it still counts against the budget);
    called once per round. ``strategy``: ``random`` | ``uncertainty_diversity`` (see the module doc).
    Raises ``ValueError`` for an unknown strategy."""
    n = len(embeddings)
    rng = np.random.default_rng(seed)
    if budget >= n:
        chosen = list(range(n))
        label(chosen)
        return chosen
    if strategy == "random":
        chosen = sorted(int(i) for i in rng.choice(n, size=budget, replace=False))
        label(chosen)
        return chosen
    if strategy != "uncertainty_diversity":
        raise ValueError(f"unknown selection strategy {strategy!r}: expected random or uncertainty_diversity")
    from sentidistill.distill.calibration import batch_calibrate

    sizes = _round_sizes(budget, rounds, seed_fraction)
    chosen = kcenter_greedy(embeddings, sizes[0], rng=rng)
    dists = [label(list(chosen))]
    for size in sizes[1:]:
        known = np.concatenate(dists)
        ok = ~np.isnan(known).any(axis=1)
        rest = np.setdiff1d(np.arange(n), chosen)
        if ok.sum() >= 2:
            targets, _ = batch_calibrate(known[ok])  # what the student is trained on
            predict = fit_softmax_probe(embeddings[np.asarray(chosen)[ok]], targets)
            u = uncertainty(predict(embeddings[rest]), uncertainty_kind)
            order = np.lexsort((rest, -u))  # most uncertain first, ties to the lower index
            pool = rest[order[: max(size, math.ceil(candidates * size))]]
        else:
            pool = rest
        picks = kcenter_greedy(embeddings, size, chosen=chosen, candidates=pool)
        chosen += picks
        dists.append(label(picks))
    return chosen


@functools.lru_cache(maxsize=2)
def _load_encoder(encoder: str) -> tuple[Any, Any]:
    """The encoder and its tokenizer, loaded once per process (every task of a run embeds with it)."""
    from transformers import AutoModel, AutoTokenizer

    from sentidistill.students.classifier import resolve_encoder

    path = resolve_encoder(encoder)
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def embed_texts(encoder: str, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings [N, d] (float32) of ``texts`` by ``encoder`` (``builtin:minilm``
    or a Hugging Face encoder id/path): the classifier student's own pooling."""
    import torch

    from sentidistill.students.classifier import _embed

    model, tok = _load_encoder(encoder)
    out = [_embed(model, tok, list(texts[i : i + batch_size]), max_length) for i in range(0, len(texts), batch_size)]
    return torch.cat(out).float().numpy() if out else np.zeros((0, 1), dtype=np.float32)


def select_rows(cfg: Any, rows: list[dict[str, Any]], label: LabelFn, *, seed: int, task: str = "",
                embeddings: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The rows of ``rows`` (a task's unlabeled pool) the teacher should label, by ``cfg`` (a
    :class:`sentidistill.config.SelectionConfig`), in pool order. ``label`` is called with pool indices
    (see :func:`select`); ``embeddings`` ([N, d]) skips the encoder when given."""
    from sentidistill.students.classifier import classifier_input

    if cfg.strategy == "all" or cfg.budget is None or cfg.budget >= len(rows):
        return rows  # nothing to choose: the whole pool
    if embeddings is None and cfg.strategy != "random":
        embeddings = embed_texts(cfg.encoder, [classifier_input(r) for r in rows], max_length=cfg.max_length)
    if embeddings is None:
        embeddings = np.zeros((len(rows), 1), dtype=np.float32)
    idx = select(embeddings, label, strategy=cfg.strategy, budget=cfg.budget, rounds=cfg.rounds,
                 seed_fraction=cfg.seed_fraction, candidates=cfg.candidates, uncertainty_kind=cfg.uncertainty,
                 seed=int(hashlib.sha256(f"{seed}:{task}".encode()).hexdigest()[:8], 16))
    log.info("selection %s: %d of %d texts for the teacher (%s)", task, len(idx), len(rows), cfg.strategy)
    return [rows[i] for i in sorted(idx)]
