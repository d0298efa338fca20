"""``python -m sentidistill.serve MODEL --port N``: the same as ``sentidistill serve``."""

from __future__ import annotations

import sys

import typer

from sentidistill.errors import SentidistillError
from sentidistill.serve.cli import serve_command


def main() -> None:
    try:
        typer.run(serve_command)
    except SentidistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
