"""Atomic file writes: an interrupted or failed write never leaves half a file, and a killed one's temporary
file is removed by the next write to its folder."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import stat
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

from liif.errors import LiifError, os_reason
from liif_entry import STOP_SIGNALS

# The writer's host and process id are in the name, so that a later write can tell a killed writer's leftover
# from a live one's, even in a folder shared by several machines or containers.
HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()):08x}"
TEMPORARY = re.compile(rf"\.liif-{HOST_TAG}-(\d{{1,10}})-[0-9a-f]+\.tmp")


def check_regular_file(path: Path, noun: str = "file") -> None:
    """Refuse, without opening it, anything but a readable regular file (a FIFO or a device could block): a
    LiifError saying why, with ``noun`` naming what was expected ("no such checkpoint file")."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise LiifError(f"no such {noun}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise LiifError(f"cannot read it: {os_reason(exc)}") from None
    if stat.S_ISDIR(mode):
        raise LiifError(f"is a folder, not a {noun}")
    if not stat.S_ISREG(mode):
        raise LiifError("not a regular file (a FIFO, socket or device); it is not opened")
    if not os.access(path, os.R_OK):
        raise LiifError("cannot read it: permission denied")


def file_id(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None where there is none: one file by any name or link."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path`` (its folder created if needed), sync it, rename it."""
    tmp = written_temporary(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def written_temporary(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """The temporary file beside ``path`` (its folder created if needed) that ``write`` was called on, synced, for
    the caller to rename to ``path``; nothing is left where ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    # Mode 0o666 so the umask alone decides, as for open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` as UTF-8 at ``path``, atomically; a failure is a LiifError naming the file and the reason."""
    write_texts({path: text})


def write_texts(texts: Mapping[str | os.PathLike, str]) -> None:
    """``write_text`` of files read together (a table and its means) as one: each is written to a temporary file,
    then all are renamed with Ctrl-C and SIGTERM held, so that a stop never leaves new files beside old ones."""
    renames: list[tuple[Path, str | os.PathLike]] = []
    path: str | os.PathLike = ""
    try:
        for path, text in texts.items():
            renames.append((written_temporary(path, lambda f: f.write(text.encode("utf-8"))), path))
        with stop_signals_held():
            for tmp, path in renames:
                os.replace(tmp, path)
    except OSError as exc:
        raise LiifError(f"cannot write {path}: {os_reason(exc)}") from None
    finally:
        for tmp, _ in renames:
            tmp.unlink(missing_ok=True)  # those a failure left unrenamed


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back during a with-block, then handled as they would have been, so that no stop
    falls inside it; in the main thread, where Python handles them (elsewhere the block is as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, object]] = []
    handlers = {each: handler for each in STOP_SIGNALS if callable(handler := signal.getsignal(each))}
    for each in handlers:
        signal.signal(each, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        for each, handler in handlers.items():
            signal.signal(each, handler)
        if held:
            handlers[held[0][0]](*held[0])


def temporary_name(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` for a file or folder to be renamed to ``path`` once complete;
    a killed writer's leftovers in that folder are removed first. Short, so that any legal output name works."""
    path = Path(path)
    remove_stale_temporaries(path.parent)
    return path.with_name(f".liif-{HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files and folders this host's killed writers left in ``folder`` (their process is
    gone)."""
    if os.name != "posix":  # elsewhere os.kill(pid, 0) would end the process instead of probing it
        return
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return  # cleaning is a courtesy: the write itself reports a folder it cannot use
    for name in names:
        match = TEMPORARY.fullmatch(name)
        if match and not process_exists(int(match.group(1))):
            try:
                remove_path(folder / name)
            except OSError:
                pass  # another user's leftover in a shared folder: not ours to remove


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (POSIX)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # EPERM: it exists under another user; a pid out of range is left alone
    return True


def remove_path(path: Path) -> None:
    """Remove a file or a whole folder (a link is removed, never followed); nothing if it is gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
