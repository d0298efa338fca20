"""Statistics over seeds: mean ± std, and the paired difference B − A with bootstrap and t intervals.

Seeds pair the runs: for seed s both models saw the same training subset, order and dev set, so the
difference per seed removes that shared variance. The bootstrap resamples the per-seed differences
(percentile interval, seeded); the t-interval assumes they are roughly normal. With a handful of seeds
the percentile bootstrap is too narrow (with 3 seeds it can only take 10 distinct means, all inside the
observed range), so a difference is called *significant* only when both intervals exclude 0. With a
single seed there is no interval at all: we say so instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sentidistill.bench.metrics import mean_std  # the one mean ± sample std (NaN for no values)
from sentidistill.bench.stats import bootstrap_mean_ci, excludes_zero

__all__ = ["PairedDifference", "bootstrap_ci", "mean_std", "paired_difference"]


@dataclass
class PairedDifference:
    """B − A over paired seeds."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    std_diff: float
    boot_low: float | None
    boot_high: float | None
    t_low: float | None
    t_high: float | None
    p_value: float | None  # two-sided paired t-test
    significant: bool  # both the bootstrap and the t-interval exclude 0
    seeds: list[int]
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(diffs: Sequence[float], *, n_resamples: int = 10_000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (seeded, so reports are reproducible).

    The one implementation lives in :func:`sentidistill.bench.stats.bootstrap_mean_ci`.
    """
    return bootstrap_mean_ci(diffs, n_resamples=n_resamples, confidence=confidence, seed=seed)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], *, n_resamples: int = 10_000,
                      confidence: float = 0.95, seed: int = 0) -> PairedDifference:
    """Compare B with A on the seeds both have (e.g. seed -> F1)."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError("the two runs share no seed")
    xa = np.array([a[s] for s in seeds], dtype=float)
    xb = np.array([b[s] for s in seeds], dtype=float)
    d = xb - xa
    n = len(d)
    mean_d = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    boot = t_lo = t_hi = p = None
    if n > 1:
        boot = bootstrap_ci(d, n_resamples=n_resamples, confidence=confidence, seed=seed)
        if sd > 0:
            half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
            t_lo, t_hi = mean_d - half, mean_d + half
            p = float(2 * stats.t.sf(abs(mean_d) / (sd / math.sqrt(n)), n - 1))
        else:  # identical differences on every seed: the interval collapses to a point
            t_lo = t_hi = mean_d
            p = 0.0 if mean_d != 0 else 1.0
    significant = boot is not None and excludes_zero(*boot) and excludes_zero(t_lo, t_hi)
    return PairedDifference(
        n=n, mean_a=float(xa.mean()), mean_b=float(xb.mean()), mean_diff=mean_d, std_diff=sd,
        boot_low=boot[0] if boot else None, boot_high=boot[1] if boot else None, t_low=t_lo, t_high=t_hi,
        p_value=p, significant=significant, seeds=seeds, confidence=confidence,
    )
