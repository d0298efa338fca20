"""Label-free calibration of a teacher's label distributions.

An LLM answering a classification prompt carries a label prior of its own (Qwen2.5-Coder-1.5B calls 299 of
300 P-Stance tweets AGAINST); a student trained on its raw answers copies that skew. Both methods here
correct the prior without a single gold label:

- **Batch calibration** (Zhou et al. 2023, "Batch Calibration: Rethinking Calibration for In-Context
  Learning and Prompt Engineering", ICLR 2024): estimate the prior as the teacher's mean distribution over
  the unlabeled pool, ``prior[k] = mean_i p(k | x_i)``, then ``p_cal(k | x) ∝ p(k | x) / prior[k]``.
- **Contextual calibration** (Zhao et al. 2021, "Calibrate Before Use", ICML 2021): estimate the prior from
  content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``) put through the same prompt, then divide the same way
  (their ``W = diag(p_cf)^-1``, ``b = 0``).

All functions take and return probabilities as ``numpy`` arrays of shape ``[N, K]`` (rows sum to 1).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sentidistill.errors import InputError

CalibrationMethod = Literal["none", "batch", "contextual"]

# Zhao et al. 2021, section 5: the content-free inputs they average.
CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "", "[MASK]")

_EPS = 1e-12


def _check(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise InputError(f"{name} must be a 2-D array [N, K]", field=name, expected="shape [N, K]",
                         got=getattr(p, "shape", None))
    if not np.all(np.isfinite(p)) or (p < 0).any():
        raise InputError(f"{name} holds negative or non-finite values", field=name,
                         expected="probabilities in [0, 1]")
    return p


def normalize(probs: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum to 1 (a row of zeros becomes uniform)."""
    p = _check(probs)
    s = p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    return np.where(s > 0, p / np.maximum(s, _EPS), 1.0 / k)


def softmax_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """``[N, K]`` log-likelihoods (nats; ``-inf`` allowed) -> probabilities over the K labels (restricted
    scoring: the distribution renormalised over the label set).

    A ``-inf`` entry gets probability 0. A row that says nothing - every entry ``-inf``, or any entry NaN
    (unknown) or ``+inf`` - comes back as a row of NaN, never as a uniform guess: callers count and drop it
    (:func:`sentidistill.teacher.restricted.usable_scores` is the same test, per row)."""
    x = np.asarray(logprobs, dtype=np.float64)
    if x.ndim != 2:
        raise InputError("logprobs must be a 2-D array [N, K]", field="logprobs", expected="shape [N, K]",
                         got=x.shape)
    bad = np.isnan(x).any(axis=1) | (x == np.inf).any(axis=1) | ~np.isfinite(x).any(axis=1)
    out = np.full(x.shape, np.nan)
    good = ~bad
    if good.any():
        g = x[good]
        m = np.max(np.where(np.isfinite(g), g, -np.inf), axis=1, keepdims=True)
        out[good] = normalize(np.exp(np.where(np.isfinite(g), g - m, -np.inf)))
    return out


def estimate_prior(probs: np.ndarray) -> np.ndarray:
    """Batch calibration's prior: the mean distribution over the pool, shape ``[K]`` (sums to 1)."""
    p = _check(probs)
    if p.shape[0] == 0:
        raise InputError("cannot estimate a label prior from an empty pool", field="probs",
                         expected="at least one row")
    prior = normalize(p).mean(axis=0)
    return prior / prior.sum()


def apply_prior(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``p_cal(k | x) ∝ p(k | x) / prior[k]``, renormalised: ``[N, K]`` and ``[K]`` -> ``[N, K]``."""
    p = _check(probs)
    q = np.asarray(prior, dtype=np.float64).reshape(-1)
    if q.shape[0] != p.shape[1]:
        raise InputError("prior and probs disagree on the number of labels", field="prior",
                         expected=f"{p.shape[1]} values", got=q.shape[0])
    return normalize(p / np.maximum(q, _EPS)[None, :])


def batch_calibrate(probs: np.ndarray, prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batch calibration (Zhou et al. 2023). Returns ``(calibrated [N, K], prior [K])``; the prior is
    estimated from ``probs`` itself unless given (e.g. the training pool's, applied to test items)."""
    prior = estimate_prior(probs) if prior is None else np.asarray(prior, dtype=np.float64)
    return apply_prior(probs, prior), prior


def contextual_calibrate(probs: np.ndarray, content_free_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contextual calibration (Zhao et al. 2021): the prior is the mean distribution over the content-free
    inputs' answers ``[M, K]``. Returns ``(calibrated [N, K], prior [K])``."""
    prior = estimate_prior(content_free_probs)
    return apply_prior(probs, prior), prior


def log_prior(prior: np.ndarray) -> list[float]:
    """The prior as log-probabilities (nats): what a scorer subtracts from label log-likelihoods."""
    return [float(x) for x in np.log(np.maximum(np.asarray(prior, dtype=np.float64), _EPS))]
