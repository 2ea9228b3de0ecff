"""Atomic file writes: an interrupted or failed write never leaves half a file, nor a temporary one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temporary file beside ``path`` (its folder created if needed), sync it, rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A short name, so that any legal output name still works; mode 0o666 so the umask alone decides, as for open().
    tmp = path.with_name(f".liif-{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
