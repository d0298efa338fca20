"""Deprecated, removed in 0.3 (importing it warns). Moved to :mod:`sentidistill.core.assets` (weights are assets, used by teachers and students alike)."""

from sentidistill.core.assets import BUILTIN_GGUF, BuiltinGGUF, assemble_parts, find_part_files, resolve_gguf
from sentidistill.utils.deprecation import warn_moved

warn_moved("sentidistill.teacher.weights", "sentidistill.core.assets")

__all__ = ["BUILTIN_GGUF", "BuiltinGGUF", "assemble_parts", "find_part_files", "resolve_gguf"]
