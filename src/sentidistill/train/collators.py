"""Deprecated, removed in 0.3 (importing it warns). Moved to :mod:`sentidistill.students.collate` (each student kind picks its collator:
``student.collator(...)``)."""

from sentidistill.students.collate import (
    IGNORE_INDEX,
    CausalCollator,
    Seq2SeqCollator,
    encode_prompt,
    parse_messages,
    source_text,
)
from sentidistill.utils.deprecation import warn_moved

warn_moved("sentidistill.train.collators", "sentidistill.students.collate")

__all__ = ["IGNORE_INDEX", "CausalCollator", "Seq2SeqCollator", "encode_prompt", "parse_messages", "source_text"]
