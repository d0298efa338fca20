"""Serving the student: ``predict`` (Python API), ``create_app`` (OpenAI-compatible FastAPI server), ONNX export.

>>> from sentidistill.serve import predict
>>> predict(["I loved it"], task="sentiment")  # doctest: +SKIP
[{'text': 'I loved it', 'task': 'sst2', 'prediction': 'positive', 'valid': True, 'raw': 'positive'}]

Start a server: ``sentidistill serve MODEL --port 8000`` or ``python -m sentidistill.serve MODEL --port 8000``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GenParams", "GenerationEngine", "ServeLimits", "create_app", "predict"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not pull in torch/fastapi (the CLI's --help stays fast).
    if name in ("create_app", "ServeLimits"):
        from sentidistill.serve import app

        return getattr(app, name)
    if name in ("GenerationEngine", "GenParams"):
        from sentidistill.serve import engine

        return getattr(engine, name)
    if name == "predict":
        from sentidistill.serve.predict import predict

        return predict
    raise AttributeError(f"module 'sentidistill.serve' has no attribute '{name}'")
