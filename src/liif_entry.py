"""The ``liif`` console script, outside the liif package: importing anything inside it first runs
``liif/__init__``, which loads torch (a second or two), and Ctrl-C there would print a traceback."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


class Terminated(KeyboardInterrupt):
    """SIGTERM, the signal by which SLURM, Kubernetes and torchrun's agent stop a command: a KeyboardInterrupt, so
    that it unwinds as Ctrl-C does (temporary files removed, a run's written checkpoints kept)."""


def interrupted(prog: str, stop: KeyboardInterrupt, say: bool = True) -> NoReturn:
    """End as a shell reports a command that ``stop``'s signal ended, exit 128 + its number (Ctrl-C: 130,
    SIGTERM: 143), after one line on stderr saying that ``prog`` was interrupted or terminated (none where ``say``
    is false: another process of the command says it)."""
    signum, word = (signal.SIGTERM, "terminated") if isinstance(stop, Terminated) else (signal.SIGINT, "interrupted")
    if say:
        print(f"{prog}: {word}", file=sys.stderr)
    sys.exit(128 + signum)


def main() -> None:
    """``liif.cli.main``, with a Ctrl-C that comes before it can catch one (while torch loads) ending in one
    line too."""
    try:
        from liif.cli import main as command

        command()
    except KeyboardInterrupt as stop:
        interrupted("liif", stop)
