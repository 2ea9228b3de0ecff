"""The pictures a server shows: identifiers (a file's name, or its path inside a served folder) to files,
and nothing outside the served paths: ``..``, absolute paths and links leading out are not found; and the
pictures read from those files, kept while they are unchanged."""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import NamedTuple

from liif.errors import LiifError
from liif.imageio import IMAGE_SUFFIXES, Picture, check_picture, read_picture
from liif.lru import ByteLRU
from liif.serve.iiif import IIIFError, quoted


def file_identifier(path: str | os.PathLike) -> str:
    """The identifier a served file goes by: its name."""
    return Path(path).name


class FileState(NamedTuple):
    """A served file as it was read: another path, size or time is another picture."""

    path: str
    size: int
    modified_ns: int
    changed_ns: int  # the inode's change time: also set when the file is replaced, whatever its modification time

    @property
    def last_change(self) -> float:
        """When the file last changed, in seconds since the epoch."""
        return max(self.modified_ns, self.changed_ns) / 1e9


class Library:
    """Served files (by name) and folders (by relative path, searched in the order given), and the pictures
    read from them (at most ``cache_bytes`` kept, or the largest picture read if it is more).

    Each file named is checked here, so that one that is not a picture is refused before anything is served:
    by its header (``check_picture``: cheap for a big file), and with ``read`` by reading it whole, kept for its
    first request. A folder's pictures are read when asked for."""

    def __init__(self, paths: list[str | os.PathLike], cache_bytes: int, read: bool = False) -> None:
        self.files: dict[str, Path] = {}
        self.folders: list[Path] = []
        self.pictures: ByteLRU[Picture] = ByteLRU(cache_bytes, lambda p: p.pixels.nbytes)
        # a lock per file being read, gone once nobody holds it
        self._reading: weakref.WeakValueDictionary[Path, threading.Lock] = weakref.WeakValueDictionary()
        self._reading_guard = threading.Lock()
        for path in map(Path, paths):
            if path.is_dir():
                self.folders.append(path.resolve())
            elif path.is_file():
                identifier = file_identifier(path)
                if identifier in self.files:
                    raise LiifError(f"two served files are named {identifier}: {self.files[identifier]} and {path}")
                self.files[identifier] = path.resolve()
                try:
                    check_picture(path)
                    if read:
                        self.read(self.files[identifier])
                except LiifError as exc:
                    raise LiifError(f"{path}: {exc}") from None
            else:
                raise LiifError(f"{path}: no such picture or folder")

    def read(self, path: Path) -> tuple[Picture, FileState]:
        """The picture at ``path`` (read once while the file is unchanged, however many ask for it at once), and
        the file's state, its cache key."""
        info = path.stat()
        # the change time too: a file replaced by one of the same size and modification time (cp -p) is another
        key = FileState(str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        picture = self.pictures.get(key)
        if picture is not None:
            return picture, key
        with self._reading_guard:
            lock = self._reading.setdefault(path, threading.Lock())
        with lock:  # a viewer asks for several tiles of a picture at once: the first reads it, the others wait
            picture = self.pictures.get(key)
            if picture is None:
                picture = read_picture(path)
                # a picture above the bound would not be kept, and be read again for every tile of it: the bound
                # grows to the largest picture, which is in memory while it is rendered anyway
                self.pictures.resize(max(self.pictures.max_bytes, picture.pixels.nbytes))
                self.pictures.put(key, picture)
        return picture, key

    def resolve(self, identifier: str) -> Path:
        """The file of ``identifier``, or a 404 IIIFError."""
        if identifier in self.files:
            return self.files[identifier]
        parts = identifier.split("/")
        if identifier.startswith("/") or "\\" in identifier or "\0" in identifier \
                or any(part in ("", ".", "..") for part in parts) \
                or not identifier.lower().endswith(IMAGE_SUFFIXES):
            raise IIIFError(404, f"no picture {quoted(identifier)}")
        for folder in self.folders:
            path = Path(os.path.realpath(folder.joinpath(*parts)))
            if path.is_relative_to(folder) and path.is_file():
                return path
        raise IIIFError(404, f"no picture {quoted(identifier)}")

    def identifiers(self, limit: int) -> list[str]:
        """Served pictures' identifiers, files first, then each folder's pictures (at most ``limit``)."""
        found = list(self.files)
        for folder in self.folders:
            for root, dirs, names in os.walk(folder):
                dirs.sort()
                for name in sorted(names):
                    relative = Path(root, name).relative_to(folder).as_posix()
                    if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                        try:
                            self.resolve(relative)
                        except IIIFError:
                            continue
                        found.append(relative)
                        if len(found) >= limit:
                            return found
        return found
