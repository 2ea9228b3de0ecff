"""The ``liif`` command: a thin layer over the Python API, one module per subcommand in liif.commands."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, NoReturn

from liif import __version__
from liif.distributed import launch_rank, says_error, says_interruption
from liif.errors import Caller, LiifError, printable
from liif_entry import STOP_SIGNALS, Terminated, ignore_stop_signals, interrupted

# subcommand -> its summary; liif.commands.<subcommand> provides add_arguments(parser) and run(args) -> exit code
SUBCOMMANDS = {
    "upscale": "upscale pictures, videos and animations to any scale, size or region (files, folders, globs)",
    "eval": "score a model on SR test sets (PSNR/SSIM by the LIIF/EDSR protocol, bicubic beside it)",
    "train": "train or fine-tune a model from a YAML config (torchrun for several processes)",
    "serve": "serve pictures over IIIF deep zoom (any region, any zoom) with a viewer page",
    "view": "open a picture in the deep-zoom viewer (serve it and open the browser)",
    "zoom": "make a continuous zoom into a point: video, animation or PNG frames",
}


def usage_error(prog: str, message: str) -> NoReturn:
    """Exit 2 on a bad command line with one line on stderr, in the commands' own style (under torchrun, from
    rank 0 alone: every process reads the same command line)."""
    if launch_rank() == 0:
        print(printable(f"{prog}: error: {message}; see {prog} --help"), file=sys.stderr)
    sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``usage_error``), not its usage block and then the error;
    ``add_subparsers`` makes the subcommands' parsers of the same class."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)


def build_parser() -> OneLineParser:
    """The ``liif`` parser with every subcommand's options."""
    parser = OneLineParser(prog="liif", description="Continuous image super-resolution with LIIF.")
    parser.add_argument("--version", action="version", version=f"liif {__version__}")
    # Not required here: argparse's "required" error would come first and hide an unknown option (``main``).
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in SUBCOMMANDS.items():
        module = importlib.import_module(f"liif.commands.{name}")
        sub = subparsers.add_parser(name, help=summary, description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def quiet_libtiff() -> None:
    """Stop libtiff printing its warnings and errors straight to file descriptor 2, below Python: a damaged TIFF
    would add raw lines ("TIFFFetchStripThing: Incompatible type ...") to the command's one-line error. Pillow
    still gets each failure, which the command reports. The command does this, not the library: it is process-wide."""
    try:
        from PIL import _imaging  # libtiff is linked into Pillow's core module

        library = ctypes.CDLL(_imaging.__file__)
        for name in ("TIFFSetWarningHandler", "TIFFSetErrorHandler"):
            setter = getattr(library, name)
            setter.restype = ctypes.c_void_p
            setter.argtypes = [ctypes.c_void_p]
            setter(None)
    except (ImportError, OSError, AttributeError):  # a Pillow without libtiff: nothing prints
        pass


# What a shell reports for a command that SIGPIPE ended, the end of a writer whose reader has gone: 128 + 13.
BROKEN_PIPE = 141
# glibc's malloc parameters (mallopt) and the environment variables that set them instead.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
# Freed blocks up to this size stay in the heap for reuse: well above one query chunk's working set.
KEPT_FREE_BYTES = 256 << 20


def keep_freed_buffers() -> bool:
    """Pin glibc's malloc thresholds so that freed tensor buffers are reused, not handed back to the OS and
    page-faulted in again. By default glibc trims the heap once twice its largest freed block lies free at the top,
    which a query chunk's 16 MiB buffers reach every chunk: `liif upscale` took 12x the minor page faults and 5% more
    time (BENCHMARKS.md). Process-wide, so the command does it, not the library; settings from the environment
    win. Returns whether it changed them (False on another libc)."""
    if any(name in os.environ for name in MALLOC_ENVIRONMENT):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators do not trim this way
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, KEPT_FREE_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def stop(signum: int, frame: object) -> NoReturn:
    """Stop the command as Ctrl-C does, a KeyboardInterrupt (``Terminated`` for SIGTERM); either signal is ignored
    from then on, so that a second one (a second Ctrl-C, or torchrun's agent passing on the terminal's) cannot cut
    the clean-up short: it printed a traceback from the DataLoader's workers being joined."""
    ignore_stop_signals()
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """``stop`` handles SIGINT and SIGTERM in a with-block (in the main thread, the one Python gives signals to),
    but one that is ignored stays ignored, as Python leaves it (a shell script's ``liif ... &`` ignores Ctrl-C);
    the handlers found are given back at its end, even after a signal: a program that ran the command in its own
    process goes on as before (the ``liif`` script, whose process is then ending, ignores them again)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    found = {each: signal.getsignal(each) for each in STOP_SIGNALS}
    for each, handler in found.items():
        if handler is not signal.SIG_IGN:
            signal.signal(each, stop)
    try:
        yield
    finally:
        for each, handler in found.items():
            signal.signal(each, handler)


def main(argv: list[str] | None = None) -> None:
    """Parse, run, and turn user errors into one line on stderr with a non-zero exit; SIGTERM stops the command
    as Ctrl-C does."""
    quiet_libtiff()
    keep_freed_buffers()
    with stopped_by_signals():
        run_command(argv)


def run_command(argv: list[str] | None) -> NoReturn:
    """``main``'s work, its signals handled."""
    args, unknown = build_parser().parse_known_args(argv)
    command = "liif" if args.command is None else f"liif {args.command}"
    if unknown:  # parse_args would report a subcommand's unknown option as the top-level parser's
        usage_error(command, f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        usage_error(command, "the following arguments are required: COMMAND")
    Caller.command_line = True
    try:
        code = args.run(args)
    except LiifError as exc:
        if says_error(exc):
            print(printable(f"{command}: error: {exc}"), file=sys.stderr)
        code = 2
    except KeyboardInterrupt as exc:
        interrupted(command, exc, says_interruption(), printable(str(exc)))  # what the stop left, if it says
    except BrokenPipeError:
        # The reader of stdout has gone (`liif zoom --print-regions | head -1`): stop as a pipe's writer does,
        # silently. Stdout goes to /dev/null, or Python's flush at exit would complain of the pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = BROKEN_PIPE
    finally:  # a program that runs a command, then calls the API, is told in Python's terms again
        Caller.command_line = False
    sys.exit(code or 0)
