"""sentidistill: distil sentiment analysis from a large language model into a small, fast student.

The pipeline reads top to bottom (see ``sentidistill.pipeline``):
data -> prompts -> teacher -> corpus -> train (distill) -> checkpoint -> bench -> report, and serve/predict.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
