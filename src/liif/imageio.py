"""Pictures in and out: PNG, JPEG, WebP, BMP, TIFF; EXIF orientation applied, ICC kept, 16-bit PNG in full.

Pixels live in a ``Picture``: an (H, W, C) uint8 or uint16 array, C = 1 (gray), 2 (gray + alpha), 3 (RGB)
or 4 (RGBA). PIL reads everything but 16-bit colour PNG, which it cuts to 8 bits, so 16-bit PNGs are read
and written with pypng. Writing goes to a temporary name beside the target, then a rename.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import png
from PIL import Image, UnidentifiedImageError

from liif.errors import LiifError
from liif.fileio import atomic_write

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
           ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_SUFFIXES = tuple(FORMATS)  # every suffix the package reads or writes as an image
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
LOSSY_QUALITY = 95  # JPEG and WebP: an upscaled picture deserves better than PIL's default 75
EXIF_ORIENTATION = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PIL_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)


@dataclass
class Picture:
    """Pixels (H, W, C) uint8 or uint16, and the ICC profile to carry to the output."""

    pixels: np.ndarray
    icc_profile: bytes | None = None

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def color(self) -> np.ndarray:
        """The gray or RGB channels, (H, W, 1 or 3)."""
        return self.pixels[:, :, :3 if self.pixels.shape[2] >= 3 else 1]

    @property
    def alpha(self) -> np.ndarray | None:
        """The alpha channel (H, W), or None."""
        return self.pixels[:, :, -1] if self.has_alpha else None

    @property
    def max_value(self) -> int:
        return int(np.iinfo(self.pixels.dtype).max)

    def to_pil(self) -> Image.Image:
        """A PIL image (8-bit modes L, LA, RGB, RGBA; 16-bit gray as I;16). PIL has no 16-bit colour mode."""
        if self.pixels.dtype == np.uint16:
            if self.pixels.shape[2] != 1:
                raise LiifError("PIL cannot hold 16-bit colour: use Picture.pixels or Picture.save")
            return Image.fromarray(self.pixels[:, :, 0], "I;16")
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[self.pixels.shape[2]]
        return Image.fromarray(self.pixels[:, :, 0] if mode == "L" else self.pixels, mode)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write to ``path`` in the format its extension names (see ``write_picture``)."""
        write_picture(self, path, overwrite)


def picture_from_pil(img: Image.Image) -> Picture:
    """A Picture of a PIL image, EXIF orientation applied; palettes and other modes become L/LA/RGB/RGBA."""
    icc = img.info.get("icc_profile") or None
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    if img.mode.startswith("I;16") or img.mode == "I":
        pixels = np.asarray(img).clip(0, 65535).astype(np.uint16)[:, :, None]
    else:
        has_alpha = "A" in img.mode or "a" in img.mode or "transparency" in img.info
        gray = img.mode in ("1", "L", "LA", "La")
        mode = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
        pixels = np.asarray(img.convert(mode))
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return Picture(orient(pixels, orientation), icc)


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Undo EXIF orientation 1..8 on an (H, W, C) array, as ``PIL.ImageOps.exif_transpose`` does."""
    transforms = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms.get(orientation, lambda a: a)(pixels))


def read_picture(path: str | os.PathLike) -> Picture:
    """Read an image file; every problem with it is a LiifError with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise LiifError("no such file")
    if path.is_dir():
        raise LiifError("is a folder, not an image")
    try:
        with Image.open(path) as img:
            if img.width == 0 or img.height == 0:
                raise LiifError(f"empty image ({img.width}x{img.height} pixels)")
            if img.format == "PNG" and png_bit_depth(path) == 16:
                return read_png16(path, img)
            img.load()
            picture = picture_from_pil(img)
    except UnidentifiedImageError:
        raise LiifError("not an image, or in a format that cannot be read") from None
    except Image.DecompressionBombError as exc:
        raise LiifError(f"too many pixels to read safely ({exc})") from None
    except PIL_READ_ERRORS as exc:
        raise LiifError(f"cannot read the image, it may be truncated or corrupt ({one_line(exc)})") from None
    if picture.pixels.size == 0:
        raise LiifError("empty image (0 pixels)")
    return picture


def png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        header = f.read(25)
    return header[24] if len(header) == 25 and header.startswith(PNG_SIGNATURE) else 8


def read_png16(path: Path, img: Image.Image) -> Picture:
    """A 16-bit PNG at full precision (pypng), with the ICC profile and orientation PIL found."""
    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except (png.Error, zlib.error, EOFError, ValueError) as exc:
        raise LiifError(f"cannot read the image, it may be truncated or corrupt ({one_line(exc)})") from None
    if pixels.shape[0] != height:
        raise LiifError("cannot read the image, it is truncated")
    pixels = pixels.reshape(height, width, info["planes"])
    return Picture(orient(pixels, img.getexif().get(EXIF_ORIENTATION, 1)), img.info.get("icc_profile") or None)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def output_format(path: str | os.PathLike) -> str:
    """The PIL format name a file extension selects."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise LiifError(f"{path}: unknown output format {suffix or '(no extension)'!r}; "
                        f"use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


def encode_picture(picture: Picture, fmt: str, stream: BinaryIO) -> None:
    """Write ``picture`` in ``fmt`` to ``stream``; 16 bits are kept in PNG and reduced to 8 elsewhere."""
    if picture.has_alpha and fmt not in ALPHA_FORMATS:
        raise LiifError(f"{fmt} cannot store alpha; write .png, .webp or .tiff")
    if picture.pixels.dtype == np.uint16 and fmt == "PNG":
        write_png16(picture, stream)
        return
    if picture.pixels.dtype == np.uint16:
        picture = Picture(((picture.pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8),
                          picture.icc_profile)
    options = {"quality": LOSSY_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    if picture.icc_profile and fmt != "BMP":
        options["icc_profile"] = picture.icc_profile
    picture.to_pil().save(stream, format=fmt, **options)


def write_png16(picture: Picture, stream: BinaryIO) -> None:
    height, width, channels = picture.pixels.shape
    writer = png.Writer(width, height, greyscale=channels < 3, alpha=channels in (2, 4), bitdepth=16)
    raw = io.BytesIO()
    writer.write_array(raw, picture.pixels.reshape(-1))
    data = raw.getvalue()
    if picture.icc_profile:
        # pypng cannot write iCCP: insert it right after IHDR (signature 8 bytes + IHDR chunk 25 bytes).
        data = data[:33] + png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(picture.icc_profile)) + data[33:]
    stream.write(data)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_picture(picture: Picture, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``picture`` to ``path`` (format by extension) via a temporary file and a rename."""
    path = Path(path)
    check_writable(path, overwrite)
    fmt = output_format(path)
    try:
        atomic_write(path, lambda f: encode_picture(picture, fmt, f))
    except OSError as exc:
        raise LiifError(f"cannot write {path}: {exc.strerror or one_line(exc)}") from None


def check_writable(path: Path, overwrite: bool) -> None:
    """Fail early, before any rendering, when ``path`` cannot or must not be written."""
    output_format(path)
    if path.is_dir():
        raise LiifError(f"cannot write {path}: it is a folder")
    if path.exists() and not overwrite:
        raise LiifError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise LiifError(f"cannot write {path}: no folder {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise LiifError(f"cannot write {path}: permission denied")
