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
