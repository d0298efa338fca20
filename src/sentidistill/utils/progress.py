"""Progress bars: when to show them, and the one rich layout every long loop uses (teacher calls, the bench)."""

from __future__ import annotations

import os
import sys
from typing import Any


def progress_default() -> bool:
    """Whether progress bars show when not told: ``$SENTIDISTILL_PROGRESS`` (``1``/``0``) when set, else
    whether stderr is a terminal. (A bar on a non-terminal is printed once, in its final state.)"""
    env = os.environ.get("SENTIDISTILL_PROGRESS")
    if env in ("0", "1"):
        return env == "1"
    return sys.stderr.isatty()


def progress_bar(title: str, *, info: bool = False) -> Any:
    """A ``rich.progress.Progress`` on stderr: ``title`` (rich markup), bar, done/total, the task's ``rate``
    field, elapsed time, ETA, and (``info=True``) the task's ``info`` field. Tasks added to it must set
    ``rate`` (and ``info``) fields. Not started: use it as a context manager or call ``start()``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(title), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, transient=False, console=Console(stderr=True))
