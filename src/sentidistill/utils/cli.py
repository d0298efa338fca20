"""Running a typer app the way every sentidistill entry point does."""

from __future__ import annotations

import sys

import typer

from sentidistill.errors import SentidistillError


def run_cli(app: typer.Typer) -> None:
    """Run ``app``; a user error prints one clear line and exits 2, never a traceback."""
    try:
        app()
    except SentidistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


# Loggers of libraries whose INFO/WARNING chatter (weight loading, progress, deprecations) is noise to a
# user of `predict` and `serve`; their errors still show.
_THIRD_PARTY_LOGGERS = ("transformers", "huggingface_hub", "datasets", "torch", "onnxruntime", "optimum",
                        "sentence_transformers", "accelerate", "urllib3", "httpx", "filelock")


def quiet_third_party(verbose: bool = False) -> None:
    """Silence third-party warnings, logs and progress bars for a user-facing command, unless ``verbose``.

    Called only by the ``predict`` and ``serve`` commands (never on import): it sets the libraries' own
    controls (``transformers.logging``, ``huggingface_hub`` verbosity and progress bars, their
    environment variables) and ignores Python ``warnings`` for the rest of the process. With ``verbose``,
    or when the root logger is at DEBUG (``sentidistill -v``), nothing is changed.
    """
    import logging
    import os
    import warnings

    if verbose or logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ORT_LOG_SEVERITY_LEVEL", "3")  # onnxruntime: errors only
    warnings.simplefilter("ignore")
    for name in _THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
