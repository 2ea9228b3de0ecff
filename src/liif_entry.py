"""The ``liif`` console script, outside the liif package: importing anything inside it first runs
``liif/__init__``, which loads torch (a second or two), and Ctrl-C there would print a traceback."""

from __future__ import annotations

import signal
import sys
from typing import NoReturn


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, the signal by which SLURM, Kubernetes and torchrun's agent stop a command: a KeyboardInterrupt, so
    that it unwinds as Ctrl-C does (temporary files removed, a run's written checkpoints kept)."""


class Stopped(SystemExit):
    """The exit of a command that Ctrl-C or SIGTERM stopped (``interrupted``'s)."""


def ignore_stop_signals() -> None:
    """Ignore Ctrl-C and SIGTERM from now on, so that a second one cannot cut a stopping command's clean-up short
    (the DataLoader's workers being joined printed a traceback)."""
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)


def interrupted(prog: str, stop: KeyboardInterrupt, say: bool = True, detail: str = "") -> NoReturn:
    """End as a shell reports a command that ``stop``'s signal ended, exit 128 + its number (Ctrl-C: 130,
    SIGTERM: 143), after one line on stderr saying that ``prog`` was interrupted or terminated, and ``detail``
    (what the stop left: where a training run goes on from, the scores an eval kept), if any (no line where
    ``say`` is false: another process of the command says it)."""
    signum, word = (signal.SIGTERM, "terminated") if isinstance(stop, Terminated) else (signal.SIGINT, "interrupted")
    if say:
        print(f"{prog}: {word}{f'; {detail}' if detail else ''}", file=sys.stderr)
    raise Stopped(128 + signum)


def main() -> None:
    """``liif.cli.main``, with a Ctrl-C that comes before it can catch one (while torch loads) ending in one
    line too. Once a stop signal has ended the command, the process is ending: another is ignored until it has
    (``liif.cli.main`` gives the handlers it found back to the program that called it)."""
    try:
        from liif.cli import main as command

        command()
    except KeyboardInterrupt as stop:
        ignore_stop_signals()
        interrupted("liif", stop)
    except Stopped:
        ignore_stop_signals()
        raise
