"""Folders of images (``image-folder``, ``paired-image-folders``) held as uint8, with optional caching.

Cache modes: ``none`` decodes on every access; ``in_memory`` keeps every decoded image as uint8 (a quarter
of the reference's float tensors); ``bin`` (alias ``disk``) writes each decoded image once as a uint8
``<name>.<suffix>.npy`` under ``<parent>/_bin_<folder>`` (or ``cache_dir``) and memory-maps it later (no
pickle). Unreadable files are skipped with a warning and counted in ``skipped``; a folder with no readable image
is an error, and so is a cache that cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from tqdm import tqdm

from liif.data.checks import check_count
from liif.errors import LiifError, os_reason
from liif.fileio import atomic_write
from liif.imageio import IMAGE_SUFFIXES, opened_image, picture_size, read_picture, rgb8
from liif.registry import DATASETS
from liif.resize import from_uint8
from liif.runtime import available_memory

CACHE_MODES = ("none", "in_memory", "bin", "disk")


def find_images(root: Path) -> list[Path]:
    """Every image file under ``root``, recursively, sorted by relative path."""
    if not root.is_dir():  # a picture given for its folder is not looked for inside
        why = "not a folder (root_path is a folder of images)" if root.exists() else "no such image folder"
        raise LiifError(f"{root}: {why}")
    return sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith("_bin_") for part in p.relative_to(root).parts)),
                  key=lambda p: p.relative_to(root).as_posix())


def split_names(split_file: str, split_key: str | None) -> list[str]:
    """The image names a JSON split file (the reference's) lists under ``split_key``."""
    try:
        split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, a folder, not UTF-8 or not JSON
        raise LiifError(f"{split_file}: cannot read the split file "
                        f"({os_reason(exc)})") from None
    names = split.get(split_key) if isinstance(split, dict) and isinstance(split_key, str) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise LiifError(f"{split_file}: no list of image names under split_key {split_key!r}")
    return names


def decode(path: Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 array, read as ``liif eval`` and ``liif upscale`` read it
    (``read_picture``: EXIF orientation, CMYK through its profile); grey repeated, alpha dropped, 16 bits
    rounded to 8 (``rgb8``). On 8-bit RGB files without orientation (DIV2K, the benchmarks) it equals PIL's RGB
    conversion."""
    return rgb8(read_picture(path).pixels)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) as ``decode`` gives the image (EXIF orientation 5 to 8 swaps them), from the header, after
    checking the file's integrity."""
    with opened_image(path) as img:
        img.verify()  # only directly after opening
    return picture_size(path)


def check_memory_holds(root: Path, files: list[Path], copies: int) -> None:
    """Refuse to decode ``files`` for ``cache: in_memory`` where their pixels, held by each of ``copies``
    processes, would not fit in the memory available, as found from their headers before any is decoded."""
    held = 0
    for path in files:
        try:
            height, width = picture_size(path)
        except (LiifError, OSError):  # skipped with its warning when the folder is read
            continue
        held += height * width * 3
    free = available_memory()
    if free is not None and held * copies > free:
        each = f" in each of {copies} processes" if copies > 1 else ""
        raise LiifError(f"{root}: cache: in_memory would hold {held / 2**30:.1f} GiB of decoded images{each}, only "
                        f"{free / 2**30:.1f} GiB is available: use cache: bin (memory-mapped from disk, shared by "
                        f"the processes) or none")


class CacheUnwritable(LiifError):
    """The ``bin`` cache of a folder cannot be written (a read-only dataset mount): no image of it is at fault."""


def cache_folder(root: Path, cache_dir: str | None) -> Path:
    """Where ``bin`` keeps ``root``'s arrays: ``_bin_<folder>`` beside it, as the reference does, or in
    ``cache_dir``, where a hash of its path keeps folders of the same name (LR and HR) apart."""
    if cache_dir is None:
        return root.parent / f"_bin_{root.name}"
    digest = hashlib.sha1(os.fsencode(root.resolve())).hexdigest()[:8]
    return Path(cache_dir) / f"_bin_{root.name}-{digest}"


@DATASETS.register("image-folder")
class ImageFolder(torch.utils.data.Dataset):
    """Images of a folder as (3, H, W) floats in [0, 1]; ``len`` = images x ``repeat``. ``progress``: a bar while
    the folder is read (decoding DIV2K's 800 pictures for ``in_memory`` takes minutes on a CPU), cleared after;
    ``copies``: the processes of this machine that hold the folder too (torchrun's), for ``in_memory``'s check."""

    def __init__(self, root_path: str, split_file: str | None = None, split_key: str | None = None,
                 first_k: int | None = None, repeat: int = 1, cache: str = "none", cache_dir: str | None = None,
                 progress: bool = False, copies: int = 1):
        if cache not in CACHE_MODES:
            raise LiifError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        if cache_dir is not None and not isinstance(cache_dir, str):
            raise ValueError(f"cache_dir must be a folder's path or null, got {cache_dir!r}")
        if cache_dir is not None and cache not in ("bin", "disk"):
            raise ValueError(f"cache_dir is where cache: bin writes; this folder's cache is {cache}")
        check_count("repeat", repeat, optional=False)
        check_count("first_k", first_k)
        root = Path(root_path)
        if split_file is None:
            files = find_images(root)
        else:
            files = [root / name for name in split_names(split_file, split_key)]
        if first_k is not None:
            files = files[:first_k]
        self.root, self.repeat, self.cache = root, repeat, cache
        self.cache_root = cache_folder(root, cache_dir)
        self.files: list[Path] = []
        self.sizes: list[tuple[int, int]] = []
        self.arrays: list[np.ndarray] = []
        self.skipped = 0
        if cache == "in_memory":
            check_memory_holds(root, files, copies)
        for path in tqdm(files, desc=f"reading {root.name}", unit="img", leave=False, dynamic_ncols=True,
                         disable=not progress):
            try:
                if cache == "none":
                    self.sizes.append(image_size(path))
                else:
                    array = self.load_cached(path)
                    self.arrays.append(array)
                    self.sizes.append(array.shape[:2])
            except CacheUnwritable:
                raise  # the image is fine, and none after it could be cached either
            except (LiifError, OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                self.skipped += 1
                warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=2)
                continue
            self.files.append(path)
        if not self.files:
            raise LiifError(f"{root}: no readable images (found {len(files)} image files"
                            f"{f', {self.skipped} unreadable' if self.skipped else ''})")

    def load_cached(self, path: Path) -> np.ndarray:
        """Decode for ``in_memory``; for ``bin``/``disk``, a memory-mapped ``.npy`` written on first use."""
        if self.cache == "in_memory":
            return decode(path)
        rel = path.relative_to(self.root) if path.is_relative_to(self.root) else Path(path.name)
        # the full name, suffix included: x.png and x.bmp get a cache file each
        cached = self.cache_root / rel.with_name(rel.name + ".npy")
        if not cached.exists():
            array = decode(path)
            try:
                atomic_write(cached, lambda f: np.save(f, array, allow_pickle=False))
            except OSError as exc:
                raise CacheUnwritable(f"{self.root}: cannot write its bin cache in {self.cache_root} "
                                      f"({os_reason(exc)}): use cache: in_memory or none, or set cache_dir to a "
                                      "folder that can be written") from None
        return np.load(cached, mmap_mode="c", allow_pickle=False)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def file(self, idx: int) -> Path:
        """The file of the image at ``idx`` (indices run over the files ``repeat`` times)."""
        return self.files[idx % len(self.files)]

    def array(self, idx: int) -> np.ndarray:
        """The (H, W, 3) uint8 image at ``idx`` (samplers crop this before converting to float)."""
        if self.cache != "none":
            return self.arrays[idx % len(self.files)]
        try:  # read at each use: the file may have changed since the set-up checked its header
            return decode(self.file(idx))
        except LiifError as exc:
            raise LiifError(f"{self.file(idx)}: {exc}") from None

    def size(self, idx: int) -> tuple[int, int]:
        """(height, width) of the image at ``idx`` without decoding it."""
        return self.sizes[idx % len(self.files)]

    def __getitem__(self, idx: int) -> torch.Tensor:
        return from_uint8(self.array(idx))


@DATASETS.register("paired-image-folders")
class PairedImageFolders(torch.utils.data.Dataset):
    """(LR, HR) pairs from two folders matched by sorted order: folder 1 is LR, folder 2 is HR."""

    def __init__(self, root_path_1: str, root_path_2: str, **kwargs: Any):
        self.lr = ImageFolder(root_path_1, **kwargs)
        self.hr = ImageFolder(root_path_2, **kwargs)
        if len(self.lr.files) != len(self.hr.files):
            raise LiifError(f"{root_path_1} has {len(self.lr.files)} readable images but "
                            f"{root_path_2} has {len(self.hr.files)}: they must pair one to one")
        self.skipped = self.lr.skipped + self.hr.skipped

    def __len__(self) -> int:
        return len(self.lr)

    def array(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        return self.lr.array(idx), self.hr.array(idx)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lr[idx], self.hr[idx]
