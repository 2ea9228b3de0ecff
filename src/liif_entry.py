"""The ``liif`` console script, outside the liif package: importing anything inside it first runs
``liif/__init__``, which loads torch (a second or two), and Ctrl-C there would print a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

# What a shell reports for a command that SIGINT ended: 128 + the signal's number.
INTERRUPTED = 130


def interrupted(prog: str) -> NoReturn:
    """Exit 130 after one line on stderr saying that ``prog`` was interrupted."""
    print(f"{prog}: interrupted", file=sys.stderr)
    sys.exit(INTERRUPTED)


def main() -> None:
    """``liif.cli.main``, with a Ctrl-C that comes before it can catch one (while torch loads) ending in one
    line too."""
    try:
        from liif.cli import main as command

        command()
    except KeyboardInterrupt:
        interrupted("liif")
