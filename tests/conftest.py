"""Shared fixtures: tiny models built in-process (no hub), the shared data folder, thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores: keep each test process to one intra-op thread so parallel servers/trainers don't thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data beside the repository; tests that need it skip cleanly when it is absent."""
    d = Path(os.environ.get("SENTIDISTILL_SHARED_DATA", SHARED / "data"))
    if not d.is_dir():
        pytest.skip(f"shared data folder not present at {d}")
    return d


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory) -> Path:
    from sentidistill.testing import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "causal")


@pytest.fixture(scope="session")
def tiny_seq2seq_dir(tmp_path_factory) -> Path:
    from sentidistill.testing import build_tiny_seq2seq

    return build_tiny_seq2seq(tmp_path_factory.mktemp("tiny") / "seq2seq")


@pytest.fixture(scope="session")
def copy_causal_dir(tmp_path_factory) -> Path:
    """A tiny causal LM trained (seconds) to list the words before ``=``: answers depend on the input."""
    from tiny_trained import train_copy_causal

    return train_copy_causal(tmp_path_factory.mktemp("trained") / "copy-causal")


@pytest.fixture(scope="session")
def copy_seq2seq_dir(tmp_path_factory) -> Path:
    """A tiny T5 trained (seconds) to list the words before ``=``."""
    from tiny_trained import train_copy_seq2seq

    return train_copy_seq2seq(tmp_path_factory.mktemp("trained") / "copy-seq2seq")
