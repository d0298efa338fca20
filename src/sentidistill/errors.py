"""Errors that users see: each names where the problem is and what was expected."""

from __future__ import annotations

from pathlib import Path


class SentidistillError(Exception):
    """Base class for errors that the CLI prints as one clear message (no traceback)."""


class InputError(SentidistillError):
    """Bad user input: a file, line and field, and what was expected there."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        got: object = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.expected = expected
        self.got = got
        where = []
        if self.path:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field '{field}'")
        text = (", ".join(where) + ": " if where else "") + message
        if expected:
            text += f" (expected {expected}"
            text += f", got {got!r})" if got is not None else ")"
        super().__init__(text)


class ConfigError(SentidistillError):
    """An invalid pipeline configuration, reported before any work starts."""


class BudgetExceeded(SentidistillError):
    """The per-run request or token budget of the teacher is spent."""
