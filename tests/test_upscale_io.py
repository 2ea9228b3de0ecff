"""Reading and writing pictures, and the Python API: formats, EXIF, ICC, gray, alpha, 16 bits, atomic writes."""

from __future__ import annotations

import importlib
import io
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
import zlib

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin, PngImagePlugin

import liif
import liif.imageio
from liif.errors import LiifError
from liif.imageio import Picture, orient, read_picture, write_picture
from liif.upscale import render_picture, resize_bicubic
from conftest import BENCHMARKS, ROOT, TINY, shared_file, upscale_cli

upscale_module = importlib.import_module("liif.upscale")  # liif.upscale is also the function


@pytest.fixture(scope="module")
def model():
    return liif.load_model(shared_file(TINY))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path, crop, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(crop).save(tmp_path / "o.jpg", exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.jpg")).convert("RGB"))
    assert np.array_equal(read_picture(tmp_path / "o.jpg").pixels, expected)
    assert orient(crop[:, :, :1], orientation).shape[:2] == (expected.shape[:2])


@pytest.mark.parametrize("extension", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
def test_formats_by_extension_keep_gray_and_icc(tmp_path, model, crop, extension):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(crop).save(tmp_path / "rgb.png", icc_profile=icc)
    Image.fromarray(crop).convert("L").save(tmp_path / "gray.png")
    for name in ("rgb", "gray"):
        liif.upscale(str(tmp_path / f"{name}.png"), scale=1.5, model=model, device="cpu").save(
            tmp_path / f"{name}_out{extension}")
    with Image.open(tmp_path / f"rgb_out{extension}") as rgb, Image.open(tmp_path / f"gray_out{extension}") as gray:
        assert rgb.format == gray.format == {".jpg": "JPEG", ".tiff": "TIFF"}.get(extension, extension[1:].upper())
        assert rgb.size == gray.size == (42, 30)
        assert gray.mode == ("RGB" if extension == ".webp" else "L")  # WebP has no gray mode
        assert rgb.info.get("icc_profile") == (None if extension == ".bmp" else icc)  # BMP has no ICC profile


def test_jpeg_keeps_colour_at_full_resolution(tmp_path, crop):
    """JPEG is written 4:4:4: PIL's default 4:2:0 halves the colour's resolution, blurring the red/blue detail."""
    Picture(crop).save(tmp_path / "out.jpg")
    with Image.open(tmp_path / "out.jpg") as img:
        assert JpegImagePlugin.get_sampling(img) == 0
        # the colour difference between neighbouring pixels survives as it would not at half resolution
        chroma = np.asarray(img.convert("YCbCr"), dtype=float)[:, :, 1:]
    original = np.asarray(Image.fromarray(crop).convert("YCbCr"), dtype=float)[:, :, 1:]
    assert np.abs(chroma - original).mean() < 1.15  # 4:2:0 errs by 1.4 levels on this crop


def test_16bit_png_kept_in_full(tmp_path, model, crop):
    """A 16-bit RGB PNG is read with its low bits, rendered, and written at 16 bits (PIL alone would cut them)."""
    pixels = crop.astype(np.uint16) * 257 + np.arange(crop.size, dtype=np.uint16).reshape(crop.shape) % 200
    Picture(pixels).save(tmp_path / "in16.png")
    assert np.array_equal(read_picture(tmp_path / "in16.png").pixels, pixels)
    out = liif.upscale(str(tmp_path / "in16.png"), scale=2, model=model, device="cpu")
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (40, 56, 3)
    assert np.any(out.pixels % 257 != 0)  # values between the 8-bit levels: real 16-bit output
    out.save(tmp_path / "out16.png")
    assert np.array_equal(read_picture(tmp_path / "out16.png").pixels, out.pixels)
    reference = liif.upscale((pixels // 257).astype(np.uint8), scale=2, model=model, device="cpu")
    assert np.abs(out.pixels / 65535 - reference / 255).max() < 0.02  # the same picture, finer levels


def test_16bit_pixels_in_an_8_bit_format_take_the_nearest_level(tmp_path):
    """Every 16-bit value, written where only 8 bits fit (colour TIFF here, as JPEG, WebP and BMP), becomes the
    nearest 8-bit level, v / 257 rounded (no value lies halfway), not the level below it."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Picture(np.repeat(values[:, :, None], 3, axis=2)).save(tmp_path / "levels.tiff")
    written = read_picture(tmp_path / "levels.tiff").pixels
    assert written.dtype == np.uint8
    assert np.array_equal(written[:, :, 0], np.round(values / 257).astype(np.uint8))


def test_16bit_gray_tiff_is_written_at_16_bits(tmp_path):
    """A 16-bit gray scan or micrograph upscaled to TIFF keeps its 16 bits, as in PNG (it was cut to 8)."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Picture(values).save(tmp_path / "levels.tiff")
    assert Image.open(tmp_path / "levels.tiff").mode == "I;16"
    assert np.array_equal(read_picture(tmp_path / "levels.tiff").pixels[:, :, 0], values)


def write_tiff16(path, pixels: np.ndarray, compression: str) -> None:
    """A 16-bit RGB or RGBA TIFF as FFmpeg's encoder writes it (PIL writes none)."""
    context = av.CodecContext.create("tiff", "w")
    context.height, context.width, channels = pixels.shape
    context.pix_fmt = "rgb48le" if channels == 3 else "rgba64le"
    context.options = {"compression_algo": compression}
    frame = av.VideoFrame.from_ndarray(pixels, format=context.pix_fmt)
    path.write_bytes(b"".join(bytes(packet) for packet in [*context.encode(frame), *context.encode(None)]))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("compression", ["raw", "lzw", "deflate"])
def test_16bit_colour_tiff_is_read_in_full(tmp_path, crop, channels, compression):
    """A 48-bit (or 64-bit with alpha) TIFF scan is read with its low bits (PIL alone cuts them to 8)."""
    pixels = crop.astype(np.uint16) * 257 + np.arange(crop.size, dtype=np.uint16).reshape(crop.shape) % 200
    if channels == 4:
        pixels = np.concatenate([pixels, pixels[:, :, 1:2] // 3], axis=2)
    write_tiff16(tmp_path / "scan.tif", pixels, compression)
    with Image.open(tmp_path / "scan.tif") as img:
        assert img.mode == ("RGB", "RGBA")[channels - 3]  # what PIL would give: 8 bits
    got = read_picture(tmp_path / "scan.tif")
    assert got.pixels.dtype == np.uint16 and np.array_equal(got.pixels, pixels)


@pytest.mark.parametrize("orientation", [1, 6, 7])
def test_a_48bit_tiff_stored_plane_by_plane_is_read_in_full_and_turned(tmp_path, crop, orientation):
    """A TIFF whose red, green and blue planes are stored one after the other (PlanarConfiguration 2), which PIL
    misreads at 16 bits, is read as written, turned once as its EXIF orientation says (PIL turns it too as it loads
    its 8 bits)."""
    pixels = crop.astype(np.uint16) * 257 + np.arange(crop.size, dtype=np.uint16).reshape(crop.shape) % 200
    height, width, _ = pixels.shape
    planes = [pixels[:, :, channel].astype("<u2").tobytes() for channel in range(3)]
    ifd_at = 8 + 3 * len(planes[0])
    arrays_at = ifd_at + 2 + 11 * 12 + 4  # bits per sample, strip offsets, strip sizes: 3 values each
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, arrays_at), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 3, arrays_at + 6), (274, 3, 1, orientation), (277, 3, 1, 3), (278, 3, 1, height),
            (279, 4, 3, arrays_at + 18), (284, 3, 1, 2)]
    # little-endian: a single SHORT sits in the first two bytes of the 4-byte value field, as a LONG would
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags) + struct.pack("<I", 0)
    arrays = struct.pack("<3H3I3I", 16, 16, 16, *(8 + k * len(planes[0]) for k in range(3)), *map(len, planes))
    (tmp_path / "planes.tif").write_bytes(b"II*\x00" + struct.pack("<I", ifd_at) + b"".join(planes) + ifd + arrays)
    assert np.array_equal(read_picture(tmp_path / "planes.tif").pixels, orient(pixels, orientation))


@pytest.mark.parametrize("orientation", [1, 5, 6, 8])
def test_the_size_from_a_header_is_the_size_read_for_a_turned_tiff(tmp_path, crop, orientation):
    """PIL gives a TIFF's size turned as its EXIF orientation says (a JPEG's as stored): picture_size, which plans
    zooms and training crops from the header, swapped a turned TIFF's sides back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(crop).save(tmp_path / "photo.tif", exif=exif)
    read = read_picture(tmp_path / "photo.tif").pixels
    assert np.array_equal(read, orient(crop, orientation))
    assert liif.imageio.picture_size(tmp_path / "photo.tif") == read.shape[:2]


def test_a_48bit_bigtiff_which_ffmpeg_does_not_read_is_read_at_8_bits_as_pil_reads_it(tmp_path, crop):
    pixels = crop.astype(np.uint16) * 256 + 100  # PIL keeps the high byte
    height, width, _ = pixels.shape
    data = pixels.astype("<u2").tobytes()
    # BigTIFF: every value here fits in an entry's 8 bytes (bits per sample: three SHORTs), none stored apart
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 16 | 16 << 16 | 16 << 32), (259, 3, 1, 1),
            (262, 3, 1, 2), (273, 16, 1, 16), (277, 3, 1, 3), (278, 3, 1, height), (279, 16, 1, len(data)),
            (284, 3, 1, 1)]
    (tmp_path / "big.tif").write_bytes(b"II" + struct.pack("<HHHQ", 43, 8, 0, 16 + len(data)) + data
                                       + struct.pack("<Q", len(tags))
                                       + b"".join(struct.pack("<HHQQ", *tag) for tag in tags) + struct.pack("<Q", 0))
    assert np.array_equal(read_picture(tmp_path / "big.tif").pixels, crop)


@pytest.mark.parametrize("compression", ["lzw", "deflate"])
def test_a_damaged_16bit_colour_tiff_is_a_one_line_error(tmp_path, crop, compression):
    """FFmpeg decodes damaged strips as black, saying so in its log only: the picture is refused."""
    write_tiff16(tmp_path / "scan.tif", crop.astype(np.uint16) * 257, compression)
    data = (tmp_path / "scan.tif").read_bytes()
    (tmp_path / "scan.tif").write_bytes(data[:8] + bytes(len(data) // 2) + data[8 + len(data) // 2:])
    with pytest.raises(LiifError, match="^cannot read the image, it may be truncated or corrupt"):
        read_picture(tmp_path / "scan.tif")


def test_ffmpeg_errors_of_one_thread_outlive_another_threads_block(tmp_path, crop):
    """PyAV's log level is process-wide: a thread whose block ended first turned the log off under another's
    decode (whose damaged TIFF then read as black), and the last to end left it raised for good."""
    write_tiff16(tmp_path / "scan.tif", crop.astype(np.uint16) * 257, "lzw")
    data = (tmp_path / "scan.tif").read_bytes()
    damaged = data[:8] + bytes(len(data) // 2) + data[8 + len(data) // 2:]
    level, entered, left = av.logging.get_level(), threading.Event(), threading.Event()

    def other_block():
        with liif.imageio.ffmpeg_errors():
            entered.set()
            assert left.wait(10)

    other = threading.Thread(target=other_block)
    other.start()
    assert entered.wait(10)
    with liif.imageio.ffmpeg_errors() as errors:
        left.set()
        other.join()
        with av.open(io.BytesIO(damaged), format="tiff_pipe") as container:
            next(container.decode(video=0))
    assert errors and av.logging.get_level() == level


def camera_jpeg(path, crop, icc_profile=None) -> None:
    """A camera's JPEG of ``crop``, stored turned a quarter (orientation 6), at 300 x 200 dpi, with its EXIF (and
    ``icc_profile`` where given)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F], exif[0x0110], exif[0x8298] = "Canon", "EOS 5D", "(c) A. Photographer"
    exif[0x011A] = 300.0  # IFD0's resolution: the output's DPI is written in the format's own field instead
    folder = exif.get_ifd(0x8769)
    folder[0x9003], folder[0x829A] = "2024:05:01 10:00:00", 1 / 250
    folder[0xA002], folder[0xA003] = crop.shape[1], crop.shape[0]  # the image's size as the camera gave it
    Image.fromarray(crop).save(path, exif=exif, dpi=(300, 200), quality=95, icc_profile=icc_profile)


@pytest.mark.parametrize("extension", [".png", ".jpg", ".webp", ".tiff", ".bmp", "16.png"])
def test_exif_and_dpi_are_kept_the_orientation_applied(tmp_path, model, crop, extension):
    """A photographer's EXIF (camera, dates, exposure, copyright) and DPI reach the upscaled file, as far as its
    format holds them: orientation gone with the turn it asked for, the DPI's axes turned too, the Exif folder's
    image size the output's. DPI is kept as it was: the print grows with the pixels."""
    camera_jpeg(tmp_path / "photo.jpg", crop)
    out = liif.upscale(str(tmp_path / "photo.jpg"), scale=2, model=model, device="cpu")
    if extension == "16.png":
        out = out.with_pixels(out.pixels.astype(np.uint16) * 257)  # as a 16-bit input would render
    out.save(tmp_path / f"out{extension}")
    with Image.open(tmp_path / f"out{extension}") as img:
        img.load()
        assert img.size == (40, 56)  # turned: 28 wide, 20 high, stored turned
        dpi = [round(float(dpi)) for dpi in img.info.get("dpi", (0, 0))]
        assert dpi == ([0, 0] if extension == ".webp" else [200, 300])
        exif = img.getexif()
        if extension == ".bmp":  # no EXIF in BMP
            return
        assert 0x0112 not in exif or exif[0x0112] == 1
        assert (exif[0x010F], exif[0x0110], exif[0x8298]) == ("Canon", "EOS 5D", "(c) A. Photographer")
        folder = exif.get_ifd(0x8769)
        assert folder[0x9003] == "2024:05:01 10:00:00" and float(folder[0x829A]) == 1 / 250
        assert (folder[0xA002], folder[0xA003]) == (40, 56)
    assert np.array_equal(read_picture(tmp_path / f"out{extension}").pixels.shape[:2], (56, 40))  # not turned again


def test_pil_in_pil_out_keeps_the_profile_exif_and_dpi(tmp_path, model, crop):
    """The Python API's PIL image holds what the CLI's file keeps, in ``info`` as PIL's own files do: the ICC
    profile, the EXIF (orientation applied, the image size the output's) and the DPI (turned with the picture)."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    camera_jpeg(tmp_path / "photo.jpg", crop, icc)
    with Image.open(tmp_path / "photo.jpg") as img:
        out = liif.upscale(img, scale=2, model=model, device="cpu")
    assert out.size == (40, 56) and out.info["icc_profile"] == icc
    assert [round(float(dpi)) for dpi in out.info["dpi"]] == [200, 300]
    exif = out.getexif()
    assert 0x0112 not in exif and (exif[0x010F], exif[0x8298]) == ("Canon", "(c) A. Photographer")
    assert (exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003]) == (40, 56)
    out.save(tmp_path / "out.png", exif=out.info["exif"], dpi=out.info["dpi"])  # and the profile from info itself
    saved = read_picture(tmp_path / "out.png")
    assert saved.icc_profile == icc and saved.exif and [round(dpi) for dpi in saved.dpi] == [200, 300]


@pytest.mark.parametrize("bits", [8, 16])
def test_png_text_is_kept_in_png_outputs(tmp_path, model, crop, bits):
    """A PNG's text (Stable Diffusion's parameters, a description, an author in another script, one after the
    pixels) reaches a PNG output; XMP and ImageMagick's raw EXIF, which describe the pixels as they were, do not."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk\nSteps: 30, Sampler: Euler a, Seed: 42")
    info.add_text("Author", "Ærøskøbing, 北京")  # not Latin-1: an iTXt chunk
    info.add_text("Description", "long " * 400, zip=True)
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>")
    info.add_text("Raw profile type exif", "\nexif\n      20\n45786966000049492a00080000000000000000000000")
    pixels = crop if bits == 8 else crop.astype(np.uint16) * 257 + 3
    Picture(pixels).save(tmp_path / "plain.png")
    plain = (tmp_path / "plain.png").read_bytes()
    before = b"".join(png_chunk_bytes(kind, body) for kind, body, _ in info.chunks)
    after = png_chunk_bytes(b"tEXt", b"Comment\x00after the pixels")
    end = plain.rindex(b"IEND") - 4
    (tmp_path / "in.png").write_bytes(plain[:33] + before + plain[33:end] + after + plain[end:])
    picture = liif.upscale(tmp_path / "in.png", scale=2, model=model, device="cpu")
    assert picture.pixels.dtype == pixels.dtype
    expected = {"parameters": "a lighthouse at dusk\nSteps: 30, Sampler: Euler a, Seed: 42",
                "Author": "Ærøskøbing, 北京", "Description": "long " * 400, "Comment": "after the pixels"}
    for name in ("out.png", "out.jpg"):
        picture.save(tmp_path / name)
    with Image.open(tmp_path / "out.png") as img:
        img.load()
        assert img.text == expected
    assert read_picture(tmp_path / "out.png").text == expected
    assert b"lighthouse" not in (tmp_path / "out.jpg").read_bytes()


def png_chunk_bytes(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_exif_too_long_for_jpeg_is_left_out_not_failing_the_picture(tmp_path, crop):
    """JPEG holds 64 KiB of EXIF: a PNG's longer EXIF is written into PNG, and left out of JPEG, the picture written."""
    exif = Image.Exif()
    exif[0x010E] = "a long caption " * 5000
    Image.fromarray(crop).save(tmp_path / "captioned.png", exif=exif)
    picture = read_picture(tmp_path / "captioned.png")
    for name in ("out.png", "out.jpg"):
        picture.save(tmp_path / name)
    assert Image.open(tmp_path / "out.png").getexif()[0x010E] == exif[0x010E]
    assert 0x010E not in Image.open(tmp_path / "out.jpg").getexif()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_16bit_png_exif_orientation_is_applied_as_for_8bit(tmp_path, crop, orientation):
    """A 16-bit PNG with an eXIf chunk turns as PIL's exif_transpose turns the same picture in 8 bits."""
    pixels = crop.astype(np.uint16) * 257 + np.arange(crop.size, dtype=np.uint16).reshape(crop.shape) % 200
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(crop).save(tmp_path / "o8.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o8.png")).convert("RGB"))
    Picture(pixels).save(tmp_path / "plain16.png")
    data = (tmp_path / "plain16.png").read_bytes()
    payload = exif.tobytes()
    chunk = (len(payload).to_bytes(4, "big") + b"eXIf" + payload
             + zlib.crc32(b"eXIf" + payload).to_bytes(4, "big"))
    end_of_header = 8 + 8 + 13 + 4  # signature, IHDR length and type, its 13 bytes, its CRC
    (tmp_path / "o16.png").write_bytes(data[:end_of_header] + chunk + data[end_of_header:])
    got = read_picture(tmp_path / "o16.png").pixels
    assert got.dtype == np.uint16 and got.shape == expected.shape
    assert np.array_equal(got // 257, expected)  # the same turn, with the low bits kept


def test_alpha_goes_through_the_model_aligned_with_colour(model, crop):
    """With alpha equal to the gray picture, the rendered alpha equals the rendered gray, tiles included."""
    gray = np.asarray(Image.fromarray(crop).convert("L"))
    rgba_gray = np.stack([gray, gray, gray, gray], axis=2)
    out = liif.upscale(rgba_gray, scale=2.6, model=model, device="cpu", tile=10)
    assert out.shape == (52, 73, 4)
    colour = liif.upscale(gray, scale=2.6, model=model, device="cpu")
    assert np.array_equal(out[:, :, 3], colour)
    bicubic = liif.upscale(rgba_gray, scale=2.6, model=model, device="cpu", alpha="bicubic")
    assert np.array_equal(bicubic[:, :, :3], out[:, :, :3])
    expected = np.asarray(Image.fromarray(gray).resize((73, 52), Image.BICUBIC))
    # PIL's 8-bit bicubic rounds between its two passes: a level apart at most, and rarely (truncating: half)
    difference = np.abs(bicubic[:, :, 3].astype(int) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.3


def butterfly_alpha(bits: int) -> np.ndarray:
    """A real (256, 256) alpha channel: Set5 butterfly's gray, at 8 or 16 bits."""
    with Image.open(shared_file(BENCHMARKS / "Set5" / "butterfly.png")) as img:
        gray = np.asarray(img.convert("L"))
    return gray if bits == 8 else gray.astype(np.uint16) * 257 + (gray >> 2)  # low bits of their own


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("request_", [dict(scale=3.7), dict(scale=0.3), dict(scale=(0.45, 5.1)),
                                      dict(scale=7.3, region=(33.3, 4.7, 200.1, 30.9))])
def test_bicubic_resizes_strips_as_the_whole_channel(monkeypatch, bits, request_):
    """--alpha bicubic and resize_bicubic resize a strip of output rows at a time, from the input rows under it,
    and give what one PIL resize of the whole channel gives, but where PIL's float32 sums land a level apart (a
    pixel in a thousand at 16 bits, a few in a million at 8)."""
    alpha = butterfly_alpha(bits)
    target = liif.Geometry(**request_).target(alpha.shape)
    whole = Image.fromarray(alpha.astype(np.float32), "F").resize(target.size[::-1], Image.BICUBIC, box=target.region)
    expected = np.asarray(whole).round().clip(0, 2**bits - 1)
    monkeypatch.setattr(upscale_module, "BICUBIC_ROWS", 7)
    strips = resize_bicubic(Picture(alpha), target).pixels[:, :, 0]
    difference = np.abs(strips.astype(int) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.002


def test_bicubic_alpha_memory_follows_a_strip(model):
    """--alpha bicubic once resized the whole alpha channel at once, in float32 and three copies of it (16 bytes
    an output pixel, four times an RGBA output's own buffer), from the whole input's alpha in float32: a large
    output broke the promise of the output buffer plus a fixed working set."""
    target = liif.Geometry(size=(4000, 3000)).target((12, 16))
    rgba = Picture(np.dstack([butterfly_alpha(8)[:12, :16]] * 4))
    tracemalloc.start()  # numpy's arrays are traced: the output buffer and every copy of a channel
    try:
        resize_bicubic(rgba, target)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * 4000 * 3000 * 4
    side = 3000  # a small region of a large picture: only the input rows under it become floats
    large = Picture(np.dstack([np.tile(butterfly_alpha(8), (12, 12))[:side, :side]] * 4))
    tracemalloc.start()
    try:
        out = render_picture(model, large, liif.Geometry(scale=2, region=(1500, 1200, 1520, 1216)).target(
            (side, side)), alpha="bicubic").pixels
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (32, 40, 4) and peak < side * side


def test_pil_in_pil_out_and_region(model, crop):
    img = Image.fromarray(crop)
    out = liif.upscale(img, size=(30, 20), region=(4, 2, 19, 12), model=model, device="cpu")
    assert isinstance(out, Image.Image) and out.size == (30, 20) and out.mode == "RGB"
    with pytest.raises(LiifError, match="region"):
        liif.upscale(img, scale=2, region=(4, 2, 40, 12), model=model, device="cpu")


def test_write_is_atomic(tmp_path, crop, monkeypatch):
    """A write interrupted mid-way leaves neither the output nor a temporary file."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_picture(Picture(crop), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_alpha_refused_where_the_format_has_none(tmp_path, crop):
    rgba = np.concatenate([crop, crop[:, :, :1]], axis=2)
    with pytest.raises(LiifError, match="alpha"):
        write_picture(Picture(rgba), tmp_path / "out.jpg")
    assert list(tmp_path.iterdir()) == []


def test_palette_with_transparency_reads_as_rgba(tmp_path, crop):
    img = Image.fromarray(crop).convert("P", palette=Image.ADAPTIVE, colors=16)
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    picture = read_picture(tmp_path / "p.png")
    assert picture.pixels.shape == (20, 28, 4) and picture.has_alpha


def test_x30_and_tiny_outputs(model, crop):
    assert liif.upscale(crop[:4, :5], scale=30, model=model, device="cpu").shape == (120, 150, 3)
    assert liif.upscale(crop, scale=0.05, model=model, device="cpu").shape == (1, 1, 3)
    with pytest.raises(LiifError, match="each side must be 1 to"):
        liif.upscale(crop, scale=0.01, model=model, device="cpu")


def test_max_pixels_allows_an_output_of_exactly_that_many_pixels(model, crop):
    """The limit refuses outputs above it: 10x14 = 140 pixels render under max_pixels=140, not under 139."""
    assert liif.upscale(crop, scale=0.5, max_pixels=140, model=model, device="cpu").shape == (10, 14, 3)
    with pytest.raises(LiifError, match=r"the output would be 14x10 = 0.0 MP, above the limit of 0.000139 MP"):
        liif.upscale(crop, scale=0.5, max_pixels=139, model=model, device="cpu")


def test_an_unknown_alpha_mode_is_refused_before_the_model_loads(tmp_path, crop):
    """As the flags are: a model that is not there is not looked for, nor loaded, for a call refused anyway."""
    with pytest.raises(LiifError, match=r"^unknown alpha mode 'keep'; use model or bicubic$"):
        liif.upscale(crop, scale=2, alpha="keep", model=tmp_path / "absent.pth", device="cpu")


@pytest.mark.parametrize("max_pixels", [float("nan"), "140", 0.5])
def test_max_pixels_that_counts_no_pixels_is_refused_naming_it(model, crop, max_pixels):
    """As --max-pixels is: NaN would lift the limit (no output is above it), a string fail in a comparison."""
    with pytest.raises(LiifError, match=r"^max_pixels must be a number >= 1, got "):
        liif.upscale(crop, scale=0.5, max_pixels=max_pixels, model=model, device="cpu")


def test_a_tiff_past_the_classic_limit_is_written_as_bigtiff(tmp_path, monkeypatch, crop):
    """Classic TIFF offsets are 32-bit; past them (made small here) the file is a BigTIFF that reads back."""
    Picture(crop).save(tmp_path / "classic.tiff")
    monkeypatch.setattr(liif.imageio, "CLASSIC_TIFF_BYTES", crop.nbytes - 1)
    Picture(crop).save(tmp_path / "big.tiff")
    assert (tmp_path / "classic.tiff").read_bytes()[:4] == b"II*\x00"
    assert (tmp_path / "big.tiff").read_bytes()[:4] == b"II+\x00"
    np.testing.assert_array_equal(read_picture(tmp_path / "big.tiff").pixels, crop)


def test_numpy_numbers_are_numbers(model, crop):
    """Sizes worked out from an array's shape are numpy scalars; they give what Python numbers give."""
    height, width = crop.shape[:2]
    plain = liif.upscale(crop, size=(2 * width, 2 * height), region=(2, 1, width - 3, height - 2), model=model)
    from_numpy = liif.upscale(crop, size=(np.int64(2) * width, np.int64(2) * height),
                              region=tuple(np.float32(v) for v in (2, 1, width - 3, height - 2)), model=model)
    assert np.array_equal(from_numpy, plain)
    assert np.array_equal(liif.upscale(crop, scale=np.float32(2), model=model), liif.upscale(crop, scale=2, model=model))
    with pytest.raises(LiifError, match="scale must be a number above 0"):
        liif.upscale(crop, scale=np.float32("nan"), model=model)


@pytest.mark.parametrize("arguments,message", [
    ({"size": 640}, "size must be two numbers"),
    ({"scale": 2, "region": 5}, "region must be four numbers x0,y0,x1,y1, got 5"),
    ({"scale": 2, "region": (0, 0, 1e300, 5)}, r"each coordinate of region must be a number in \[0, 16777216\], got 1e\+300"),
    ({"scale": 2, "region": (0, 0, "5", 5)}, "each coordinate of region must be a number in"),
    # ints beyond a float's range: an OverflowError traceback once
    ({"size": (10 ** 400, 4)}, "size must be an int above 0 and at most 16777216, got 1000"),
    ({"scale": 2, "region": (0, 0, 10 ** 400, 5)}, r"each coordinate of region must be a number in \[0, 16777216\], got 1000"),
    ({"scale": 2, "width": 4}, "give exactly one of scale, size, width or height"),
    ({"scale": 2, "tile": 0}, "tile must be an int >= 1, got 0"),
    ({"scale": 2, "tile": -4}, "tile must be an int >= 1, got -4"),
    ({"scale": 2, "tile": 2.5}, "tile must be an int >= 1, got 2.5"),
])
def test_bad_api_arguments_are_one_line_errors(model, crop, arguments, message):
    with pytest.raises(LiifError, match=message):
        liif.upscale(crop, model=model, **arguments)


@pytest.mark.parametrize("name", ["anim.webp", "anim.png", "anim.gif"])
def test_an_animation_is_refused_not_upscaled_as_its_first_frame(tmp_path, model, crop, name):
    """liif.upscale once gave an animated WebP's or APNG's first frame as if it were the whole file (and a GIF was
    'not an image'); the command upscales every frame, and liif.upscale_video does in Python."""
    frames = [Image.fromarray(np.roll(crop, 3 * k, axis=1)) for k in range(3)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(LiifError, match=f"{name} is a video or an animation: liif.upscale_video upscales every frame"):
        liif.upscale(tmp_path / name, scale=2, model=model, device="cpu")
    result = liif.upscale_video(tmp_path / name, tmp_path / f"x2-{name}", scale=2, model=model, device="cpu")
    assert (result.frames, result.size) == (3, (2 * crop.shape[1], 2 * crop.shape[0]))


def test_a_picture_is_checked_when_made_not_rendered_as_garbage(model, crop):
    """A (C, H, W) Picture once rendered as a 3-row picture of 28 channels; a float one failed inside numpy."""
    chw = r"got \(3, 20, 28\) uint8 \(if \(C, H, W\), pass pixels.transpose\(1, 2, 0\)\)$"
    for pixels, got in ((crop.transpose(2, 0, 1), chw),
                        (crop / 255, r"got \(20, 28, 3\) float64"), (crop.tolist(), "got a list")):
        with pytest.raises(LiifError, match=rf"must be \(H, W\) or \(H, W, 1\|2\|3\|4\), uint8 or uint16; {got}"):
            liif.upscale(Picture(pixels), scale=2, model=model)
    with pytest.raises(LiifError, match=r"empty image \(0x0 pixels\)"):
        liif.upscale(Image.new("RGB", (0, 0)), scale=2, model=model)
    # never guessed: a (3, 4, 4) array is a 3-row RGBA picture, as PIL takes it, though (C, H, W) would fit it too
    assert liif.upscale(crop[:3, :4, :1].repeat(4, axis=2), scale=2, model=model).shape == (6, 8, 4)
    gray = liif.upscale(Picture(crop[:, :, 0]), scale=2, model=model)
    assert gray.pixels.shape == (40, 56, 1)
    np.testing.assert_array_equal(gray.pixels[:, :, 0], liif.upscale(crop[:, :, 0], scale=2, model=model))


def test_a_model_that_cannot_render_is_refused_and_left_where_it_was(crop):
    """A module other than an image model failed on a missing attribute, float64 weights inside a convolution."""
    with pytest.raises(LiifError, match="model must be an image model .* got Linear"):
        liif.upscale(crop, scale=2, model=torch.nn.Linear(2, 2))
    wide = liif.load_model(shared_file(TINY)).double()
    with pytest.raises(LiifError, match=r"weights are torch.float64; it renders with float32 weights"):
        liif.upscale(crop, scale=2, model=wide)
    assert next(wide.parameters()).dtype == torch.float64


@pytest.mark.parametrize("value", ["no", "", 1, 0, None])
def test_self_ensemble_is_a_flag_everywhere(tmp_path, model, crop, value):
    """self_ensemble="no" once averaged the 8 symmetries (a non-empty string is true); numbers and None are refused
    alike, by the Python API's every entry, and the entries that load a model refuse before loading it."""
    from liif.evaluation.runner import evaluate_image
    from liif.geometry import Geometry
    from liif.upscale import render_picture, render_pictures
    from liif.video.upscale import VideoOptions

    message = rf"self_ensemble must be True or False, got {value!r}"
    image = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    picture = Picture(crop)
    target = Geometry(scale=2).target(crop.shape[:2])
    Image.fromarray(crop).save(tmp_path / "comic.png")
    calls = [lambda: liif.render(model, image, (40, 56), self_ensemble=value),
             lambda: render_picture(model, picture, target, self_ensemble=value),
             lambda: render_pictures(model, [picture], target, self_ensemble=value),
             lambda: evaluate_image(model, image[0], image[0], "benchmark", 1, self_ensemble=value),
             lambda: VideoOptions(self_ensemble=value),
             lambda: liif.upscale(crop, scale=2, model=tmp_path / "absent.pth", self_ensemble=value),
             lambda: liif.evaluate(tmp_path / "absent.pth", tmp_path, [2], self_ensemble=value, progress=False),
             lambda: liif.upscale_video(tmp_path / "absent.mp4", tmp_path / "out.mp4", 2, model=tmp_path / "absent.pth",
                                        self_ensemble=value)]
    for call in calls:
        with pytest.raises(LiifError, match=message):
            call()


@pytest.mark.parametrize("name", ["quantize", "cell_clip"])
def test_evaluations_other_switches_are_flags_checked_before_the_model_loads(tmp_path, model, name):
    """quantize="no" would have rounded the scored pictures to 8 bits (a non-empty string is true)."""
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "hr.png")  # a dataset to plan
    with pytest.raises(LiifError, match=f"{name} must be True or False, got 'no'"):
        liif.evaluate(tmp_path / "absent.pth", tmp_path, [2], progress=False, **{name: "no"})
    if name == "quantize":
        from liif.evaluation.runner import evaluate_image

        image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
        with pytest.raises(LiifError, match="quantize must be True or False, got 'no'"):
            evaluate_image(model, image, image, "benchmark", 1, quantize="no")


@pytest.mark.parametrize("value", ["no", 1, None])
def test_progress_is_a_flag_in_every_entry_that_draws_a_bar(tmp_path, crop, value):
    """progress="no" drew the bars (a non-empty string is true); every API entry refuses it before the model loads."""
    from liif.zoom import zoom

    Image.fromarray(crop).save(tmp_path / "hr.png")  # a picture to zoom into, and a dataset to plan
    absent = tmp_path / "absent.pth"
    calls = [lambda: liif.upscale(crop, scale=2, model=absent, progress=value),
             lambda: liif.evaluate(absent, tmp_path, [2], progress=value),
             lambda: liif.upscale_video(tmp_path / "absent.mp4", tmp_path / "out.mp4", 2, model=absent, progress=value),
             lambda: zoom(tmp_path / "hr.png", tmp_path / "zoom.mp4", model=absent, progress=value)]
    for call in calls:
        with pytest.raises(LiifError, match=rf"progress must be True or False, got {value!r}"):
            call()


@pytest.mark.parametrize("value", ["no", 0, None])
def test_overwrite_is_a_flag_everywhere_and_replaces_nothing(tmp_path, crop, value):
    """overwrite="no" once replaced a picture, a video or a frame folder, and deleted a training run's checkpoints
    (a non-empty string is true); every owner of "refuse an existing output" refuses it, the entries that load a
    model before loading it, and nothing that exists is touched."""
    from liif.training.loop import replaces_a_run
    from liif.video.upscale import VideoOptions
    from liif.video.writer import open_frame_writer
    from liif.zoom import zoom

    message = rf"overwrite must be True or False, got {value!r}"
    existing = tmp_path / "existing.png"
    Image.fromarray(crop).save(existing)
    run = tmp_path / "run"
    run.mkdir()
    (run / "epoch-last.pth").write_bytes(b"a run's checkpoint")
    before = {path: path.read_bytes() for path in (existing, run / "epoch-last.pth")}
    calls = [lambda: Picture(crop).save(existing, overwrite=value),
             lambda: write_picture(Picture(crop), existing, value),
             lambda: open_frame_writer(tmp_path / "existing.png", (8, 8), 24, overwrite=value),
             lambda: VideoOptions(overwrite=value),
             lambda: zoom(existing, tmp_path / "zoom.mp4", model=tmp_path / "absent.pth", overwrite=value),
             lambda: replaces_a_run(run, None, value)]
    for call in calls:
        with pytest.raises(LiifError, match=message):
            call()
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.png", "run"]


def test_an_existing_output_is_refused_in_the_callers_words(tmp_path, crop, capsys):
    """Python passes overwrite=True, the command --overwrite: each is told its own, by one wording (OutputExists)."""
    from liif.cli import main
    from liif.training.loop import replaces_a_run
    from liif.video.writer import open_frame_writer

    picture, existing, frames, run = (tmp_path / name for name in ("in.png", "existing.png", "frames", "run"))
    for path in (picture, existing):
        Image.fromarray(crop).save(path)
    frames.mkdir()
    (frames / "frame_000000.png").write_bytes(b"a frame")
    run.mkdir()
    (run / "epoch-last.pth").write_bytes(b"a run's checkpoint")
    calls = ((lambda: write_picture(Picture(crop), existing), f"{existing} exists"),
             (lambda: open_frame_writer(existing, (8, 8), 24), f"{existing} exists"),
             (lambda: open_frame_writer(frames, (8, 8), 24), f"{frames} exists and is not empty"),
             (lambda: replaces_a_run(run, None, False), f"{run} already holds a run's checkpoints ("))

    def python_words() -> None:
        for call, what in calls:
            with pytest.raises(LiifError) as error:
                call()
            message = str(error.value)
            assert message.startswith(what) and message.endswith("; pass overwrite=True to replace it"), message

    python_words()
    # a batch's failure line, and a command's error
    assert upscale_cli(capsys, picture, "--scale", "2", "-o", existing) == \
        (1, [f"liif upscale: error: {picture}: {existing} exists; pass --overwrite to replace it"])
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture), "-o", str(frames), "--frames", "2", "--size", "8x8", "--model",
              str(shared_file(TINY)), "--device", "cpu"])
    assert exit_info.value.code == 2 and capsys.readouterr().err == \
        f"liif zoom: error: {frames} exists and is not empty; pass --overwrite to replace it\n"
    python_words()  # after a command in this process too


def test_a_numpy_bool_is_a_flag(model):
    image = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(2))
    for value in (True, False):
        assert torch.equal(liif.render(model, image, (9, 11), self_ensemble=np.bool_(value)),
                           liif.render(model, image, (9, 11), self_ensemble=value))


# The peak from /proc: ru_maxrss would carry over the peak of the process that forked this one (pytest's).
READ_PEAK = """
import re, sys
from liif.imageio import read_picture
def peak(): return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024
before = peak()
pixels = read_picture(sys.argv[1]).pixels
print((peak() - before) / pixels.nbytes)
"""


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from Linux's /proc")
def test_reading_a_big_picture_makes_no_copy_of_it_in_its_own_mode(tmp_path, mode):
    """Every picture went through Pillow's convert, even to the mode it was in: a full copy of the decoded image
    (4 bytes a pixel for RGB), so reading a 50 MP scan peaked 4.7 times its pixels' bytes above the process, 200 MB
    more than needed. Now a picture already in its Picture mode is taken as it is: 3.4 times, measured in a
    fresh process (its peak RSS)."""
    rng = np.random.default_rng(0)
    shape = (3000, 4000) if mode == "L" else (3000, 4000, 3)
    path = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, compress_level=0)
    run = subprocess.run([sys.executable, "-c", READ_PEAK, str(path)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) < 3.7, run.stdout


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak memory from Linux's /proc")
def test_a_16bit_colour_tiff_is_decoded_once(tmp_path):
    """A 48-bit TIFF was loaded by Pillow at 8 bits (4 bytes a pixel), to find damage, before FFmpeg decoded it in
    full: 2.8 times its pixels' bytes above the process. FFmpeg's log now tells the damage, and the peak is its frame
    and the array taken of it: 2.1 times, measured in a fresh process (its peak RSS)."""
    pixels = np.arange(2000 * 3000 * 3, dtype=np.uint16).reshape(2000, 3000, 3)  # stored raw: any values will do
    write_tiff16(tmp_path / "scan.tif", pixels, "raw")
    run = subprocess.run([sys.executable, "-c", READ_PEAK, str(tmp_path / "scan.tif")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) < 2.5, run.stdout
