"""Deprecated, removed in 0.3 (importing it warns). Moved to :mod:`sentidistill.students.gguf` (GGUF files are a student kind: ``gguf``)."""

from sentidistill.students.gguf import (
    RECORD,
    convert_gguf_to_hf,
    gguf_student_dir,
    is_current,
    is_gguf_spec,
    load_gguf_tokenizer,
    read_record,
    resolve_gguf_source,
)
from sentidistill.utils.deprecation import warn_moved

warn_moved("sentidistill.train.gguf_student", "sentidistill.students.gguf")

__all__ = ["RECORD", "convert_gguf_to_hf", "gguf_student_dir", "is_current", "is_gguf_spec", "load_gguf_tokenizer",
           "read_record", "resolve_gguf_source"]
