"""sentidistill: distil sentiment analysis from a large language model into a small, fast student.

The pipeline reads top to bottom (see ``sentidistill.pipeline``):
data -> prompts -> teacher -> corpus -> train (distill) -> checkpoint -> bench -> report, and serve/predict.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["DistilledStudent", "__version__", "distill_texts", "predict"]


def __getattr__(name: str):
    # Lazy: `import sentidistill` stays light; `sentidistill.predict(...)` loads torch on first use.
    if name == "predict":
        from sentidistill.serve.predict import predict

        return predict
    if name in ("distill_texts", "DistilledStudent"):
        from sentidistill import own_data

        return getattr(own_data, name)
    raise AttributeError(f"module 'sentidistill' has no attribute '{name}'")
