"""Moved modules: the old import path keeps working for one minor version, with a ``DeprecationWarning``.

The pattern of trl and distilabel: a moved module is replaced by a shim that re-exports the names from the
new home and warns once, on import, naming the new path and the version in which the old one goes away.
Production code never imports a shim (import-linter's "No production import of a moved module" contract
in ``pyproject.toml``, run by ``tests/test_architecture.py``).
"""

from __future__ import annotations

import warnings

#: The version in which the moved modules' old paths are removed.
REMOVED_IN = "0.3"


def warn_moved(old: str, new: str) -> None:
    """Warn (``DeprecationWarning``) that module ``old`` moved to ``new`` and is removed in :data:`REMOVED_IN`.

    Called at the top level of the shim module, so it fires once per process (when the shim is first imported).
    ``stacklevel=3`` points the warning past this helper and the shim, at the importing code's frame where
    Python's import machinery lets it.
    """
    warnings.warn(f"{old} is deprecated and will be removed in sentidistill {REMOVED_IN}: import from {new} "
                  "instead", DeprecationWarning, stacklevel=3)
