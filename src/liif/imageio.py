"""Pictures in and out: PNG, JPEG, WebP, BMP, TIFF; EXIF orientation applied, ICC, EXIF and DPI kept (a PNG's text
in PNG), 16-bit PNG and TIFF read in full (written in full as PNG and gray TIFF).

Pixels live in a ``Picture``: an (H, W, C) uint8 or uint16 array, C = 1 (gray), 2 (gray + alpha), 3 (RGB)
or 4 (RGBA). A file's content decides how it is read, and only those five formats are opened. PIL reads
everything but 16-bit colour PNG and TIFF, which it cuts to 8 bits, so 16-bit PNGs are read and written with pypng,
and 16-bit colour TIFFs read with FFmpeg (PyAV).
Float pictures in [0, 1] are read as 16 bits; CMYK goes through its ICC profile to sRGB; a TIFF of several
pages is refused (thumbnails aside); a profile is written only where it describes the pixels. Writing goes to a temporary name beside the target, then a rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import math
import os
import struct
import threading
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping

import av
import av.logging
import numpy as np
import png
from PIL import ExifTags, Image, ImageCms, PngImagePlugin, TiffImagePlugin, UnidentifiedImageError

from liif.bounds import flag
from liif.errors import LiifError, OutputExists, one_line, os_reason
from liif.fileio import atomic_write, check_regular_file

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
           ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_SUFFIXES = tuple(FORMATS)  # every suffix the package reads or writes as an image
READ_FORMATS = sorted(set(FORMATS.values()))  # the only formats Image.open may try, whatever a file's name says
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}  # the largest side libjpeg and libwebp encode
BMP_MAX_BYTES = 2**32 - 1 - (14 + 40 + 256 * 4)  # a 32-bit file size, less the headers and a gray palette
CLASSIC_TIFF_BYTES = 2**32 - 2**26  # pixel bytes past which a TIFF is written as BigTIFF (headroom for tags)
JPEG_MAX_EXIF = 65533  # the bytes a JPEG's APP1 segment holds: a longer EXIF (from a PNG, say) is left out
LOSSY_QUALITY = 95  # JPEG and WebP: an upscaled picture deserves better than PIL's default 75
EXIF_ORIENTATION = 0x0112
# What EXIF an upscaled copy keeps: who, when and how the picture was taken (IFD0's descriptions and the Exif and GPS
# folders), not what describes the pixels' layout (orientation, applied; size, resolution; a TIFF's own tags).
EXIF_KEPT = (ExifTags.Base.ImageDescription, ExifTags.Base.Make, ExifTags.Base.Model, ExifTags.Base.Software,
             ExifTags.Base.DateTime, ExifTags.Base.Artist, ExifTags.Base.HostComputer, ExifTags.Base.Copyright)
EXIF_FOLDERS = (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo)
EXIF_ERRORS = (SyntaxError, ValueError, KeyError, TypeError, OSError, struct.error, UnicodeError)
METRES_PER_INCH = 0.0254
TIFF16_FORMATS = {"RGB": "rgb48le", "RGBA": "rgba64le"}  # PIL's mode of a 16-bit colour TIFF: FFmpeg's format
TIFF_WIDTH, TIFF_HEIGHT = 256, 257
TIFF_BITS_PER_SAMPLE, TIFF_PHOTOMETRIC, TIFF_SAMPLES_PER_PIXEL, TIFF_X_RESOLUTION, TIFF_EXTRA_SAMPLES = \
    258, 262, 277, 282, 338
TIFF_GRAY = (0, 1)  # the photometric interpretations of gray: white or black is zero
BIGTIFF_VERSIONS = (b"\x2b\x00", b"\x00\x2b")  # bytes 2-3 of a BigTIFF, little- or big-endian (a TIFF's: 42)
TIFF_PREMULTIPLIED = 1  # the extra sample value of an associated (premultiplied) alpha
NEW_SUBFILE_TYPE = 254  # a TIFF page's tag; bit 0 marks a reduced-resolution copy of another page (a thumbnail)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# Text a PNG output leaves out: XMP and ImageMagick's hex copies of EXIF, XMP and IPTC ("Raw profile type exif"),
# which describe the pixels as they were (orientation, size, crop), not as written.
PNG_TEXT_LEFT_OUT = ("XML:com.adobe.xmp", "Raw profile type ")
PIL_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)
SRGB = ImageCms.createProfile("sRGB")


@dataclasses.dataclass
class Picture:
    """Pixels (H, W, C) uint8 or uint16, and what to carry to the output: the ICC profile, the EXIF kept
    (``EXIF_KEPT``, as bytes), the resolution in dots per inch (x, y) and a PNG's text (key: value, kept in PNG
    outputs; ``kept_text``). The layout is never guessed, as in PIL and numpy: a (C, H, W) array is refused, but
    one at most 4 pixels wide reads as (H, W, C)."""

    pixels: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    text: dict[str, str] | None = None

    def __post_init__(self) -> None:
        # Checked here, as every picture passes here: a (C, H, W) or float array would otherwise render as garbage
        # or fail deep in numpy. A gray (H, W) array gets its channel axis.
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray) or pixels.dtype not in (np.uint8, np.uint16) or \
                pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 2, 3, 4)):
            got = f"{pixels.shape} {pixels.dtype}" if isinstance(pixels, np.ndarray) else f"a {type(pixels).__name__}"
            if isinstance(pixels, np.ndarray) and pixels.ndim == 3 and pixels.shape[0] in (1, 2, 3, 4):
                got += " (if (C, H, W), pass pixels.transpose(1, 2, 0))"
            raise LiifError(f"an array image must be (H, W) or (H, W, 1|2|3|4), uint8 or uint16; got {got}")
        if pixels.size == 0:
            raise LiifError(f"empty image ({pixels.shape[1]}x{pixels.shape[0]} pixels)")
        if pixels.ndim == 2:
            self.pixels = pixels[:, :, None]

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

    @functools.cached_property
    def content_key(self) -> tuple:
        """What the pixels are (shape, type, a digest), computed once per Picture: renders of one picture share
        encoder features (``FeatureCache``) without hashing it again. Pixels are not to change in place after."""
        digest = hashlib.blake2b(np.ascontiguousarray(self.pixels).data, digest_size=16).hexdigest()
        return self.pixels.shape, str(self.pixels.dtype), digest

    def to_pil(self) -> Image.Image:
        """A PIL image (8-bit modes L, LA, RGB, RGBA; 16-bit gray as I;16), its ICC profile, EXIF and DPI in its
        ``info`` as a file opened by PIL holds them. PIL has no 16-bit colour mode."""
        if self.pixels.dtype == np.uint16 and self.pixels.shape[2] != 1:
            raise LiifError("PIL cannot hold 16-bit colour: use Picture.pixels or Picture.save")
        # PIL picks the mode from the array's dtype and shape (uint16 (H, W) is I;16).
        img = Image.fromarray(self.pixels[:, :, 0] if self.pixels.shape[2] == 1 else self.pixels)
        metadata = {"icc_profile": self.icc_profile, "exif": written_exif(self), "dpi": self.dpi}
        img.info.update((key, value) for key, value in metadata.items() if value)
        return img

    def with_pixels(self, pixels: np.ndarray) -> Picture:
        """Other pixels (the same picture resized) with this picture's profile, EXIF and DPI."""
        return dataclasses.replace(self, pixels=pixels)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write to ``path`` in the format its extension names (see ``write_picture``)."""
        write_picture(self, path, overwrite)


def picture_from_pil(img: Image.Image, file_orientation: int | None = None) -> Picture:
    """A Picture of a PIL image, EXIF orientation applied: 16-bit gray stays 16-bit, floats in [0, 1] become
    16-bit, CMYK goes through its profile to sRGB, palettes and other modes become L/LA/RGB/RGBA.
    ``file_orientation``: the file's, read before loading (PIL turns a TIFF as it loads it, and drops its tag)."""
    check_mode(img)
    icc = img.info.get("icc_profile") or None
    if img.mode.startswith("I;16"):
        pixels = np.asarray(img).astype(np.uint16)[:, :, None]
    elif img.mode == "F":
        pixels = float_pixels(np.asarray(img))[:, :, None]
    else:
        if img.mode == "CMYK":  # its profile describes CMYK values: the converted pixels are plain sRGB
            img, icc = cmyk_to_srgb(img, icc), None
        mode = picture_mode(img)
        pixels = np.asarray(img if img.mode == mode else img.convert(mode))  # convert copies even to its own mode
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    text = kept_text(img.text) if img.format == "PNG" else None  # PIL's text of a PNG: its pixels are loaded
    return described(img, pixels, icc, file_orientation, text)


def described(img: Image.Image, pixels: np.ndarray, icc: bytes | None, file_orientation: int | None = None,
              text: dict[str, str] | None = None) -> Picture:
    """``img``'s ``pixels`` (H, W, C) as a Picture: turned as its EXIF orientation says, with the profile ``icc``,
    the EXIF and DPI it keeps (the DPI's axes swapped where the file's orientation turns a quarter) and ``text``."""
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    # PIL gives a TIFF without resolution tags 1 dpi
    dpi = picture_dpi(img.info.get("dpi")) if img.format != "TIFF" or TIFF_X_RESOLUTION in img.tag_v2 else None
    if dpi and swaps_sides(file_orientation or orientation):
        dpi = dpi[::-1]
    return Picture(orient(pixels, orientation), icc, kept_exif(img), dpi, text)


def picture_dpi(dpi: object) -> tuple[float, float] | None:
    """PIL's ``dpi`` of an image as two floats; None where it is absent or not two positive finite numbers (a
    damaged header's 0 or NaN: an output says nothing rather than that)."""
    try:
        x, y = (float(d) for d in dpi)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return (x, y) if 0 < x < math.inf and 0 < y < math.inf else None


def kept_exif(img: Image.Image) -> bytes | None:
    """The EXIF of ``img`` an upscaled copy keeps (``EXIF_KEPT`` and the Exif and GPS folders), or None where it
    has none; damaged EXIF is left out, as it does not change the pixels."""
    try:
        exif = img.getexif()
        kept = Image.Exif()
        for tag in EXIF_KEPT:
            if tag in exif:
                kept[tag] = exif[tag]
        for tag in EXIF_FOLDERS:
            if tag in exif and (folder := exif.get_ifd(tag)):
                kept[tag] = {key: value for key, value in folder.items() if key != ExifTags.IFD.Interop}
        return kept.tobytes() if len(kept) else None
    except EXIF_ERRORS:
        return None


def kept_text(text: Mapping[str, str]) -> dict[str, str] | None:
    """The text of a PNG an output keeps (``PNG_TEXT_LEFT_OUT`` left out), or None where none is left."""
    kept = {key: str(value) for key, value in text.items() if not key.startswith(PNG_TEXT_LEFT_OUT)}
    return kept or None


def png_text(path: Path) -> dict[str, str]:
    """The text chunks of the PNG ``path`` wherever they lie, read by PIL with its limits, its pixels skipped
    undecoded; a damaged chunk and those after it are left out, as text does not change the pixels."""
    with open(path, "rb") as f:
        f.seek(len(PNG_SIGNATURE))
        stream = PngImagePlugin.PngStream(f)
        try:
            while (chunk := stream.read())[0] != b"IEND":
                kind, position, length = chunk
                if kind in PNG_TEXT_CHUNKS:
                    stream.call(kind, position, length)
                else:
                    f.seek(length, os.SEEK_CUR)
                f.seek(4, os.SEEK_CUR)  # its CRC
        except (*PIL_READ_ERRORS, struct.error, UnicodeError):
            pass
    return stream.im_text


def picture_mode(img: Image.Image) -> str:
    """The mode a Picture holds ``img``'s pixels in: 16-bit gray and floats as they are (one channel), the rest as
    L, LA, RGB or RGBA (CMYK as RGB)."""
    if img.mode.startswith("I;16") or img.mode == "F":
        return img.mode
    has_alpha = "A" in img.mode or "a" in img.mode or "transparency" in img.info
    gray = img.mode in ("1", "L", "LA", "La")
    return ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")


def check_mode(img: Image.Image) -> None:
    """Refuse the pixels no Picture holds, which the header tells: 32-bit integers."""
    if img.mode.startswith("I") and not img.mode.startswith("I;16"):
        raise LiifError("32-bit integer pixels are not read (their range is unknown): "
                        "save the picture with 8 or 16 bits, or as floats in [0, 1]")


def float_pixels(values: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] as 16-bit integers; any other range is refused, never guessed."""
    if not np.isfinite(values).all():
        raise LiifError("float pixels must be finite numbers in [0, 1]; this picture holds NaN or infinity")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise LiifError(f"float pixels must lie in [0, 1]; this picture holds {low:g} to {high:g}")
    return np.round(values * 65535).astype(np.uint16)


def open_profile(icc: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """The ICC profile ``icc`` describes, or None where there is none or it cannot be read."""
    if not icc:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def cmyk_to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """A CMYK image in sRGB through its own CMYK profile; PIL's plain formula where it has no usable one."""
    profile = open_profile(icc)
    if profile is not None and profile.profile.xcolor_space.strip() == "CMYK":
        try:
            return ImageCms.profileToProfile(img, profile, SRGB, outputMode="RGB")
        except ImageCms.PyCMSError:
            pass  # a profile lcms cannot apply: read as if it had none
    return img.convert("RGB")


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Undo EXIF orientation 1..8 on an (H, W, C) array, as ``PIL.ImageOps.exif_transpose`` does."""
    transforms = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms.get(orientation, lambda a: a)(pixels))


def swaps_sides(orientation: int) -> bool:
    """Whether undoing EXIF ``orientation`` (``orient``) turns a quarter or transposes, swapping width and height."""
    return orientation in (5, 6, 7, 8)


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened image as ``picture_from_pil`` gives its pixels: EXIF orientations 5 to 8
    (those ``orient`` turns a quarter or transposes) swap the header's, but for a TIFF, whose size PIL gives turned
    already. A PNG's eXIf chunk counts only before its pixels: finding one after them would decode the whole image."""
    exif_read = img.format != "PNG" or "exif" in img.info
    turned = img.format != "TIFF" and exif_read and swaps_sides(img.getexif().get(EXIF_ORIENTATION, 1))
    return (img.width, img.height) if turned else (img.height, img.width)


@contextlib.contextmanager
def opened_image(path: Path) -> Iterator[Image.Image]:
    """``path`` opened by Pillow (its header read), by its content whatever its name says: every problem with
    it, there or in the ``with`` body, is a LiifError with a one-line reason. Pillow's decompression-bomb limit
    applies, without its warning."""
    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit (Image.MAX_IMAGE_PIXELS) and twice it, and refuses above: the
            # refusal is the rule, and the warning would only be a raw line on the terminal.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow's UserWarnings on damaged metadata ("Corrupt EXIF data", "Tag data larger than file"): the
            # picture reads or fails with its own one-line error, and the warning would be two raw lines more.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path, formats=READ_FORMATS) as img:
                if img.width == 0 or img.height == 0:
                    raise LiifError(f"empty image ({img.width}x{img.height} pixels)")
                if img.format == "TIFF" and (pages := tiff_pages(img)) > 1:  # not its first page alone, silently
                    raise LiifError(f"a TIFF of {pages} pages: only single pictures are read; "
                                    f"save each page as a file of its own")
                yield img
    except UnidentifiedImageError:
        raise LiifError(unread_tiff(path) or "not an image, or not one of the formats read (PNG, JPEG, WebP, BMP, "
                        "TIFF)") from None
    except Image.DecompressionBombError as exc:
        raise LiifError(f"too many pixels to read safely ({exc})") from None
    except PIL_READ_ERRORS as exc:
        raise LiifError(f"cannot read the image, it may be truncated or corrupt ({one_line(exc)})") from None


def unread_tiff(path: Path) -> str | None:
    """Why the TIFF ``path``, which Pillow does not open, is not read, where its first directory tells: 16-bit gray
    with alpha, which Pillow has no mode for; else None."""
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's on damaged tags: the refusal says it all
            directory = TiffImagePlugin.ImageFileDirectory_v2(f.read(8))
            f.seek(directory.next)
            directory.load(f)
            gray_and_alpha16 = TIFF_WIDTH in directory and TIFF_HEIGHT in directory and \
                directory.get(TIFF_PHOTOMETRIC) in TIFF_GRAY and directory.get(TIFF_SAMPLES_PER_PIXEL) == 2 and \
                set(directory.get(TIFF_BITS_PER_SAMPLE, ())) == {16}
    except (*PIL_READ_ERRORS, struct.error, TypeError, KeyError):
        return None
    if not gray_and_alpha16:  # damage, or a layout this does not tell: the general refusal
        return None
    return "a TIFF of 16-bit gray with alpha, a layout not read (Pillow has no mode for it); save it as PNG, which " \
           "keeps 16-bit gray and alpha"


def tiff_pages(img: Image.Image) -> int:
    """The pages of an opened TIFF that are pictures of their own, reduced-resolution copies left out."""
    pages = 0
    for index in range(img.n_frames):
        img.seek(index)
        pages += not img.tag_v2.get(NEW_SUBFILE_TYPE, 0) & 1
    img.seek(0)
    return pages


def read_picture(path: str | os.PathLike) -> Picture:
    """Read a PNG, JPEG, WebP, BMP or TIFF file; every problem with it is a LiifError with a one-line reason."""
    path = Path(path)
    with opened_image(path) as img:
        if img.format == "PNG" and png_depth(path) == 16:
            return read_png16(path, img)
        if tiff16 := tiff16_format(img, path):  # its pixels decoded by FFmpeg alone, not by PIL at 8 bits first
            return read_tiff16(path, img, tiff16)
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        img.load()  # damage shows here
        return picture_from_pil(img, orientation)


def picture_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of the pixels ``read_picture`` would give, from the file's header alone."""
    with opened_image(Path(path)) as img:
        return oriented_size(img)


def check_picture(path: str | os.PathLike) -> None:
    """Refuse what ``read_picture`` would refuse by the header alone (not a picture, a format not read, no pixels,
    too many, pixels no Picture holds), the same for every format; damage past the header shows when it is read."""
    with opened_image(Path(path)) as img:
        check_mode(img)


def png_depth(path: Path) -> int:
    """The bit depth a PNG's header gives (8 for anything that is not a PNG)."""
    with open(path, "rb") as f:
        header = f.read(25)
    return header[24] if len(header) == 25 and header.startswith(PNG_SIGNATURE) else 8


def read_png16(path: Path, img: Image.Image) -> Picture:
    """A 16-bit PNG at full precision (pypng), with the ICC profile and orientation PIL found."""
    try:
        with open(path, "rb") as stream:  # closed on a damaged file too, not left to the garbage collector
            width, height, rows, info = png.Reader(file=stream).asDirect()
            pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except (png.Error, zlib.error, EOFError, ValueError) as exc:
        raise LiifError(f"cannot read the image, it may be truncated or corrupt ({one_line(exc)})") from None
    if pixels.shape[0] != height:
        raise LiifError("cannot read the image, it is truncated")
    return described(img, pixels.reshape(height, width, info["planes"]), img.info.get("icc_profile") or None,
                     text=kept_text(png_text(path)))


def tiff16_format(img: Image.Image, path: Path) -> str | None:
    """FFmpeg's pixel format of ``path``, opened as ``img``, where it is a 16-bit RGB or RGBA TIFF (alpha not
    premultiplied), which PIL would cut to 8 bits (or, stored plane by plane, misread); else None, as for a BigTIFF,
    which FFmpeg does not read (PIL does, at 8 bits)."""
    if img.format != "TIFF" or img.mode not in TIFF16_FORMATS:
        return None
    with open(path, "rb") as f:
        if f.read(4)[2:] in BIGTIFF_VERSIONS:
            return None
    tags = img.tag_v2
    extra_samples = tags.get(TIFF_EXTRA_SAMPLES, ())
    if set(tags.get(TIFF_BITS_PER_SAMPLE, ())) != {16} or tags.get(TIFF_PHOTOMETRIC) != 2 or \
            TIFF_PREMULTIPLIED in (extra_samples if isinstance(extra_samples, tuple) else (extra_samples,)):
        return None
    return TIFF16_FORMATS[img.mode]


def read_tiff16(path: Path, img: Image.Image, pixel_format: str) -> Picture:
    """A 16-bit colour TIFF, opened by PIL and not loaded (its header and EXIF orientation as stored), at full
    precision: FFmpeg's TIFF decoder in ``pixel_format``, with the profile, EXIF and DPI PIL found. FFmpeg decodes
    damaged data as black, saying so in its log: a line there refuses the picture."""
    try:
        with open(path, "rb") as stream, av.open(stream, format="tiff_pipe") as container:
            with ffmpeg_errors() as errors:
                frame = next(container.decode(video=0))
            if errors:
                raise LiifError(f"cannot read the image, it may be truncated or corrupt ({one_line(errors[0])})")
            pixels = frame.to_ndarray(format=pixel_format)
    except (av.FFmpegError, StopIteration, IndexError) as exc:
        reason = getattr(exc, "strerror", None) or "no picture in it"
        raise LiifError(f"cannot read the image, it may be truncated or corrupt ({reason})") from None
    picture = described(img, pixels, img.info.get("icc_profile") or None)
    if picture.pixels.shape[:2] != (img.height, img.width):  # PIL's size of a TIFF is turned as its EXIF says
        raise LiifError("cannot read the image, it may be truncated or corrupt (its size differs from its header's)")
    return picture


class FFmpegErrorLevel:
    """PyAV's log level, which is process-wide, at error level at least while any thread's ``ffmpeg_errors`` block
    runs, and given back when the last ends: one thread's end would otherwise silence another's block, or leave the
    level raised for good (the server decodes in threads)."""

    def __init__(self) -> None:
        self.lock, self.blocks, self.level_before = threading.Lock(), 0, None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            if self.blocks == 0:
                self.level_before = av.logging.get_level()
                if self.level_before is None or self.level_before < av.logging.ERROR:
                    av.logging.set_level(av.logging.ERROR)
            self.blocks += 1
        try:
            yield
        finally:
            with self.lock:
                self.blocks -= 1
                if self.blocks == 0:
                    av.logging.set_level(self.level_before)


FFMPEG_ERROR_LEVEL = FFmpegErrorLevel()


@contextlib.contextmanager
def ffmpeg_errors() -> Iterator[list[str]]:
    """The messages FFmpeg logs at error level in this thread while the block runs, in the list yielded once it
    ends (PyAV passes FFmpeg's log on at no level by default)."""
    with FFMPEG_ERROR_LEVEL.held(), av.logging.Capture() as logs:
        messages: list[str] = []
        yield messages
        messages.extend(message for severity, _, message in logs if severity <= av.logging.ERROR)


def output_format(path: str | os.PathLike) -> str:
    """The PIL format name a file extension selects."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":  # Pillow writes it, but an upscaled picture's colours would be cut to a palette
        raise LiifError(f"{path}: GIF holds 256 colours, too few for an upscaled picture (only a GIF is upscaled to "
                        f"GIF); use .png to keep every colour, or one of {', '.join(sorted(FORMATS))}")
    if suffix not in FORMATS:
        raise LiifError(f"{path}: unknown output format {suffix or '(no extension)'!r}; "
                        f"use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


def check_encodable(fmt: str, shape: tuple[int, int, int], instead: str = "write .png or .tiff") -> None:
    """Refuse an (H, W, C) picture that ``fmt`` cannot hold: alpha where it has none, a size above its limits
    (the refusal ending with ``instead``: what holds it, in the caller's terms)."""
    height, width, channels = shape
    if channels in (2, 4) and fmt not in ALPHA_FORMATS:
        raise LiifError(f"{fmt} cannot store alpha; write .png, .webp or .tiff")
    side = MAX_SIDE.get(fmt)
    if side is not None and max(height, width) > side:
        raise LiifError(f"{fmt} holds at most {side}x{side} pixels, the output would be {width}x{height}; {instead}")
    if fmt == "BMP" and (width * channels + 3) // 4 * 4 * height > BMP_MAX_BYTES:  # rows padded to 4 bytes
        raise LiifError(f"BMP holds at most 4 GiB, the {width}x{height} output would not fit; {instead}")


def encode_picture(picture: Picture, fmt: str, stream: BinaryIO, exact: bool = False) -> None:
    """Write ``picture`` in ``fmt`` to ``stream`` (``check_encodable`` first), with its profile (``written_profile``),
    EXIF (not in BMP, nor in JPEG above its room) and DPI (not in WebP); 16 bits are kept where ``keeps_16_bits``,
    reduced to 8 elsewhere. ``exact``: WebP lossless, JPEG at quality 100 (the nearest it comes)."""
    picture = dataclasses.replace(picture, icc_profile=written_profile(picture, fmt), exif=written_exif(picture))
    if picture.pixels.dtype == np.uint16 and fmt == "PNG":
        write_png16(picture, stream)
        return
    if picture.pixels.dtype == np.uint16 and not keeps_16_bits(fmt, picture.pixels.shape[2]):
        picture = picture.with_pixels(eight_bit(picture.pixels))
    options = {"quality": LOSSY_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    if exact and fmt in ("JPEG", "WEBP"):
        options = {"lossless": True} if fmt == "WEBP" else {"quality": 100}
    if fmt == "JPEG":  # colour at full resolution (4:4:4): PIL's 4:2:0 would halve the colour detail just made
        options["subsampling"] = 0
    if fmt == "TIFF" and picture.pixels.nbytes > CLASSIC_TIFF_BYTES:
        options["big_tiff"] = True  # classic TIFF offsets are 32-bit
    if picture.icc_profile:
        options["icc_profile"] = picture.icc_profile
    if picture.exif and fmt != "BMP" and not (fmt == "JPEG" and len(picture.exif) > JPEG_MAX_EXIF):
        options["exif"] = picture.exif
    if picture.dpi:
        options["dpi"] = picture.dpi
    if picture.text and fmt == "PNG":
        options["pnginfo"] = png_text_info(picture.text)
    picture.to_pil().save(stream, format=fmt, **options)


def keeps_16_bits(fmt: str, channels: int) -> bool:
    """Whether 16-bit pixels of ``channels`` channels are written in ``fmt`` at 16 bits: in PNG, and in TIFF for
    gray alone (PIL writes no 16-bit colour or gray-and-alpha TIFF); other formats hold 8."""
    return fmt == "PNG" or (fmt == "TIFF" and channels == 1)


def depth_note(picture: Picture, fmt: str) -> str | None:
    """A note where ``picture``'s 16 bits per channel are written in ``fmt`` at 8, else None."""
    if picture.pixels.dtype != np.uint16 or keeps_16_bits(fmt, picture.pixels.shape[2]):
        return None
    holds = "only gray TIFF is written with 16" if fmt == "TIFF" else f"{fmt} holds 8"
    return f"16 bits per channel written as 8 ({holds}; .png keeps 16)"


def png_text_info(text: Mapping[str, str]) -> PngImagePlugin.PngInfo:
    """PIL's PNG chunks of ``text``: tEXt, or iTXt where a value is not Latin-1."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info


def written_exif(picture: Picture) -> bytes | None:
    """The picture's EXIF with its Exif folder's image size, where it has one, set to the pixels written."""
    if not picture.exif:
        return None
    try:
        exif = Image.Exif()
        exif.load(picture.exif)
        folder = exif.get_ifd(ExifTags.IFD.Exif)
        height, width = picture.pixels.shape[:2]
        for tag, side in ((ExifTags.Base.ExifImageWidth, width), (ExifTags.Base.ExifImageHeight, height)):
            if tag in folder:
                folder[tag] = side
        return exif.tobytes()
    except EXIF_ERRORS:  # EXIF passed in by a caller, not read: left out where it does not read
        return None


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    """Pixels as uint8: 16 bits rounded to the nearest 8-bit level, 8 bits as they are."""
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return pixels


def rgb8(pixels: np.ndarray) -> np.ndarray:
    """Pixels (H, W, C) as contiguous 8-bit RGB: 16 bits rounded to 8 (as 8-bit outputs are written), gray
    repeated, alpha dropped; what training, evaluation and zoom frames take of a picture."""
    pixels = eight_bit(pixels)
    color = pixels[:, :, :3] if pixels.shape[2] >= 3 else np.repeat(pixels[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(color)


def written_profile(picture: Picture, fmt: str) -> bytes | None:
    """The picture's ICC profile where ``fmt`` stores one and it describes the pixels as written (gray, or RGB:
    WebP stores gray as RGB); else None, so that no file tags its pixels with a CMYK, Lab or broken profile."""
    profile = open_profile(picture.icc_profile)
    if fmt == "BMP" or profile is None:  # PIL writes no profile into BMP
        return None
    written = "GRAY" if picture.pixels.shape[2] < 3 and fmt != "WEBP" else "RGB"
    return picture.icc_profile if profile.profile.xcolor_space.strip() == written else None


def srgb_converter(picture: Picture) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function taking ``rgb8`` pixels of ``picture`` (or of a render of it) through its ICC profile to sRGB, for
    outputs that carry no profile; None where there is nothing to convert: no profile, one that does not describe
    the pixels (gray, or RGB), or one lcms cannot apply."""
    profile = open_profile(picture.icc_profile)
    gray = picture.pixels.shape[2] < 3
    if profile is None or profile.profile.xcolor_space.strip() != ("GRAY" if gray else "RGB"):
        return None
    try:
        transform = ImageCms.buildTransform(profile, SRGB, "L" if gray else "RGB", "RGB")
    except ImageCms.PyCMSError:
        return None
    return lambda pixels: np.asarray(transform.apply(Image.fromarray(pixels[:, :, 0] if gray else pixels)))


def write_png16(picture: Picture, stream: BinaryIO) -> None:
    """A 16-bit PNG of ``picture`` (pypng: Pillow writes 16-bit gray only), with its ICC profile, EXIF, DPI and
    text."""
    height, width, channels = picture.pixels.shape
    density = {}
    if picture.dpi:  # pHYs: dots per metre, rounded as Pillow writes them
        density = {"x_pixels_per_unit": int(picture.dpi[0] / METRES_PER_INCH + 0.5),
                   "y_pixels_per_unit": int(picture.dpi[1] / METRES_PER_INCH + 0.5), "unit_is_meter": True}
    writer = png.Writer(width, height, greyscale=channels < 3, alpha=channels in (2, 4), bitdepth=16, **density)
    raw = io.BytesIO()
    writer.write_array(raw, picture.pixels.reshape(-1))
    data = raw.getvalue()
    # pypng cannot write iCCP, eXIf or text: inserted right after IHDR (signature 8 bytes + IHDR chunk 25 bytes).
    chunks = b""
    if picture.icc_profile:
        chunks += png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(picture.icc_profile))
    if picture.exif:
        chunks += png_chunk(b"eXIf", picture.exif.removeprefix(b"Exif\x00\x00"))
    if picture.text:
        chunks += b"".join(png_chunk(kind, body) for kind, body, _ in png_text_info(picture.text).chunks)
    stream.write(data[:33] + chunks + data[33:])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_picture(picture: Picture, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``picture`` to ``path`` (format by extension) via a temporary file and a rename."""
    path = Path(path)
    fmt = check_output(path, picture.pixels.shape, overwrite)
    try:
        atomic_write(path, lambda f: encode_picture(picture, fmt, f))
    except (OSError, ValueError) as exc:  # ValueError: an encoder refusing what it was given
        raise LiifError(f"cannot write {path}: {os_reason(exc)}") from None


def check_output(path: Path, shape: tuple[int, int, int], overwrite: bool) -> str:
    """The format of ``path``, once nothing forbids writing an (H, W, C) picture there; the CLI calls it
    before rendering, so that a refusal costs nothing."""
    overwrite = flag(overwrite, "overwrite", LiifError)  # "no" would replace the file
    fmt = output_format(path)
    check_encodable(fmt, shape)
    try:
        if path.is_dir():
            raise LiifError(f"cannot write {path}: it is a folder")
        if path.exists() and not overwrite:
            raise OutputExists(f"{path} exists")
        if not path.parent.is_dir():
            raise LiifError(f"cannot write {path}: no folder {path.parent}")
        if not os.access(path.parent, os.W_OK):
            raise LiifError(f"cannot write {path}: permission denied")
    except OSError as exc:  # a name too long, say
        raise LiifError(f"cannot write {path}: {os_reason(exc)}") from None
    return fmt
