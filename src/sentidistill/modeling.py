"""Deprecated, removed in 0.3 (importing it warns). Compatibility module: model loading now lives in :mod:`sentidistill.students` (one class per kind).

``load_model(spec)`` is :func:`sentidistill.students.load_student`; ``LoadedModel`` is
:class:`sentidistill.students.Student` (``.model``, ``.tokenizer``, ``.kind``, ``.source``, ``.device``).
The tiny test-model builders moved to :mod:`sentidistill.testing` (still reachable here by name).
"""

from __future__ import annotations

import importlib
from typing import Any

from sentidistill.core.assets import default_cache_dir, minilm_path
from sentidistill.students import PLAIN_CHAT_TEMPLATE, Student, detect_kind, load_student, resolve_model_path
from sentidistill.students.builtin import BUILTIN_STUDENTS, build_minilm_encdec
from sentidistill.utils.deprecation import warn_moved

warn_moved("sentidistill.modeling", "sentidistill.students (tiny test models: sentidistill.testing)")

LoadedModel = Student
load_model = load_student

__all__ = ["BUILTIN_STUDENTS", "PLAIN_CHAT_TEMPLATE", "LoadedModel", "build_minilm_encdec", "default_cache_dir",
           "detect_kind", "load_model", "minilm_path", "resolve_model_path"]

_TESTING = ("build_tiny_tokenizer", "build_tiny_causal_lm", "build_tiny_seq2seq")


def __getattr__(name: str) -> Any:
    if name in _TESTING:  # moved to sentidistill.testing; resolved lazily so production code never loads it
        return getattr(importlib.import_module("sentidistill.testing"), name)
    raise AttributeError(f"module 'sentidistill.modeling' has no attribute {name!r}")
