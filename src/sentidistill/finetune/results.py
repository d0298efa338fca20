"""The finished cells of a fine-tuning run, as the runner collects them and the report reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FinetuneResults"]


@dataclass
class FinetuneResults:
    """Finished cells of a run (one dict per cell, as in its metrics.json) and the grid that was asked for."""

    out_dir: Path
    cells: list[dict[str, Any]]
    models: list[str]
    datasets: list[str]
    seeds: list[int]
    train_fractions: list[float]
    settings: dict[str, Any] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def scores(self, model: str, dataset: str, fraction: float, subset: str = "all") -> dict[int, float]:
        """Seed -> F1 (x100) of one (model, dataset, fraction) on a test subset."""
        return {c["seed"]: 100 * c["metrics"][subset]["f1"] for c in self.cells
                if c["model"] == model and c["dataset"] == dataset
                and abs(c["train_fraction"] - fraction) < 1e-9 and subset in c["metrics"]}
