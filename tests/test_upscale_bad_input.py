"""Hostile input and faults: every bad input fails alone on one line, nothing is written from bad numbers,
over an input, or over another output of the run, and a killed write leaves nothing behind for long."""

from __future__ import annotations

import importlib
import io
import itertools
import os
import signal
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, TiffImagePlugin

import liif
import liif.commands.upscale
from liif import cli
from liif.errors import LiifError
from liif.fileio import atomic_write
from liif.imageio import Picture, check_picture, read_picture, write_picture
from conftest import TINY, common_tags, gray_profile, icc_profile, shared_file, upscale_cli


@pytest.fixture
def picture(tmp_path, crop) -> Path:
    path = tmp_path / "comic.png"
    Image.fromarray(crop).save(path)
    return path


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("liif upscale: error:")]


def cmyk_profile() -> bytes:
    """A CMYK printer profile (a 2-point lut16 to Lab) unlike PIL's plain formula: lightness from C and K."""
    clut = b"".join(struct.pack(">3H", round((1 - k) * (1 - 0.7 * c) * 0xFF00), 0x8000, round(0x8000 - 0x3000 * y))
                    for c, m, y, k in itertools.product((0, 1), repeat=4))
    identity = struct.pack(">9i", *(65536 * (i % 4 == 0) for i in range(9)))
    lut = struct.pack(">4B", 4, 3, 2, 0) + identity + struct.pack(">2H", 2, 2) + struct.pack(">2H", 0, 65535) * 4 \
        + clut + struct.pack(">2H", 0, 65535) * 3
    return icc_profile(b"prtr", b"CMYK", b"Lab ", common_tags() + [(b"A2B0", b"mft2", lut)])


def test_non_finite_render_writes_nothing(picture, tmp_path, crop, capsys, monkeypatch):
    """NaN from the model (fp16 overflow, a broken model) fails the file on one line: no picture of it."""
    model = liif.load_model(shared_file(TINY))
    with torch.no_grad():
        list(model.parameters())[-1].fill_(float("nan"))
    with pytest.raises(LiifError, match="NaN or infinite values; nothing was written"):
        liif.upscale(crop, scale=2, model=model, device="cpu")
    monkeypatch.setattr(importlib.import_module("liif.upscale"), "resolve_model", lambda name, device: model)
    code, lines = upscale_cli(capsys, picture, "--scale", "2", "-o", tmp_path / "out.png")
    assert code == 1
    assert lines == [f"liif upscale: error: {picture}: the model gave NaN or infinite values; nothing was written"]
    assert not (tmp_path / "out.png").exists()


def test_a_tiff_of_several_pages_is_refused_not_cut_to_its_first(tmp_path, crop, capsys):
    """A multi-page TIFF (a scanned document, a microscope stack) was upscaled as its first page alone, silently;
    now it fails on one line and the batch goes on. A thumbnail page (a reduced-resolution copy) is no page."""
    folder = tmp_path / "in"
    folder.mkdir()
    page = Image.fromarray(crop)
    page.save(folder / "pages.tif", save_all=True, append_images=[page.transpose(Image.FLIP_LEFT_RIGHT)] * 2)
    with TiffImagePlugin.AppendingTiffWriter(folder / "thumbnail.tif", True) as tiff:
        page.save(tiff, format="TIFF", tiffinfo={254: 0})
        tiff.newFrame()
        page.resize((7, 5)).save(tiff, format="TIFF", tiffinfo={254: 1})
        tiff.newFrame()
    assert Image.open(folder / "pages.tif").n_frames == 3 and Image.open(folder / "thumbnail.tif").n_frames == 2
    code, lines = upscale_cli(capsys, folder, "--scale", "2", "-o", tmp_path / "out")
    assert code == 1
    assert errors(lines) == [f"liif upscale: error: {folder / 'pages.tif'}: a TIFF of 3 pages: only single "
                             "pictures are read; save each page as a file of its own"]
    assert sorted(os.listdir(tmp_path / "out")) == ["thumbnail.tif"]
    assert np.array_equal(read_picture(folder / "thumbnail.tif").pixels, crop)
    with pytest.raises(LiifError, match="3 pages"):
        check_picture(folder / "pages.tif")


def test_float_pictures_by_their_range_and_32_bit_integers_refused(tmp_path, crop, capsys):
    gray = np.asarray(Image.fromarray(crop).convert("L"))
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray((gray / 255).astype(np.float32)).save(folder / "unit.tif")
    Image.fromarray(gray.astype(np.float32)).save(folder / "levels.tif")
    Image.fromarray(np.where(gray > 100, np.nan, 0.5).astype(np.float32)).save(folder / "nan.tif")
    Image.fromarray(gray.astype(np.int32) * 1000).save(folder / "int32.tif")
    assert Image.open(folder / "unit.tif").mode == "F" and Image.open(folder / "int32.tif").mode == "I"

    pixels = read_picture(folder / "unit.tif").pixels
    assert pixels.dtype == np.uint16 and np.abs(pixels[:, :, 0] - gray * 257.0).max() <= 1
    code, lines = upscale_cli(capsys, folder, "--scale", "2", "-o", tmp_path / "out", "--format", "png")
    assert code == 1
    assert sorted(errors(lines)) == [
        f"liif upscale: error: {folder / 'int32.tif'}: 32-bit integer pixels are not read (their range is unknown): "
        "save the picture with 8 or 16 bits, or as floats in [0, 1]",
        f"liif upscale: error: {folder / 'levels.tif'}: float pixels must lie in [0, 1]; this picture holds "
        f"{gray.min()} to {gray.max()}",
        f"liif upscale: error: {folder / 'nan.tif'}: float pixels must be finite numbers in [0, 1]; "
        "this picture holds NaN or infinity"]
    out = Image.open(tmp_path / "out" / "unit.png")
    assert out.mode == "I;16" and out.size == (56, 40)
    reference = liif.upscale(gray, scale=2, model=str(shared_file(TINY)), device="cpu")
    assert np.abs(np.asarray(out) / 65535 - reference / 255).max() < 0.02  # the picture, not black


def test_cmyk_goes_through_its_profile_to_srgb(tmp_path, crop, capsys):
    cmyk = Image.fromarray(crop).convert("CMYK")
    cmyk.save(tmp_path / "plain.jpg", quality=95)
    plain = read_picture(tmp_path / "plain.jpg")
    assert plain.icc_profile is None
    assert np.array_equal(plain.pixels, np.asarray(Image.open(tmp_path / "plain.jpg").convert("RGB")))

    profile = cmyk_profile()
    cmyk.save(tmp_path / "profiled.jpg", quality=95, icc_profile=profile)
    stored = Image.open(tmp_path / "profiled.jpg")
    assert stored.mode == "CMYK" and stored.info["icc_profile"] == profile
    expected = np.asarray(ImageCms.profileToProfile(stored, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                                    ImageCms.createProfile("sRGB"), outputMode="RGB"))
    profiled = read_picture(tmp_path / "profiled.jpg")
    assert profiled.icc_profile is None and np.array_equal(profiled.pixels, expected)
    assert np.abs(expected.astype(int) - plain.pixels).mean() > 20  # the profile did the conversion

    code, _ = upscale_cli(capsys, tmp_path / "profiled.jpg", "--scale", "2", "-o", tmp_path / "out.jpg")
    out = Image.open(tmp_path / "out.jpg")
    assert code == 0 and out.mode == "RGB" and out.size == (56, 40) and "icc_profile" not in out.info


def test_a_profile_is_written_only_where_it_describes_the_written_pixels(tmp_path, crop):
    gray = np.asarray(Image.fromarray(crop).convert("L"))[:, :, None]
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    cases = [(crop, lab, "lab.png", None), (crop, b"not a profile", "junk.png", None),
             (crop, cmyk_profile(), "cmyk.tiff", None), (gray, srgb, "rgb-on-gray.png", None),
             (gray, gray_profile(), "gray.png", gray_profile()), (gray, gray_profile(), "gray.jpg", gray_profile()),
             (gray, gray_profile(), "gray.webp", None),  # WebP stores gray as RGB
             (gray.astype(np.uint16) * 257, gray_profile(), "gray16.png", gray_profile())]
    for pixels, icc, name, written in cases:
        write_picture(Picture(pixels, icc), tmp_path / name)
        assert Image.open(tmp_path / name).info.get("icc_profile") == written, name


def test_outputs_that_clash_all_fail_and_nothing_is_overwritten(tmp_path, crop, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("photo.png", "photo.jpg", "photo.webp", "other.png"):
        Image.fromarray(crop).save(folder / name)
    code, lines = upscale_cli(capsys, folder, "--scale", "2", "-o", out, "--format", "png", quiet=False)
    assert code == 1
    photos = ", ".join(str(folder / name) for name in ("photo.jpg", "photo.png", "photo.webp"))
    assert errors(lines) == [f"liif upscale: error: {photos}: all would be written to {out / 'photo.png'}; "
                             "none of them is"]
    assert lines[-1].startswith("liif upscale: 1 written, 3 failed")
    assert sorted(p.name for p in out.iterdir()) == ["other.png"]


def test_an_input_is_never_written_over(tmp_path, picture, crop, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(crop).save(folder / name)
    before = {p: p.read_bytes() for p in folder.iterdir()}
    code, lines = upscale_cli(capsys, folder, "--scale", "2", "-o", folder, "--overwrite")
    assert code == 1 and len(errors(lines)) == 2
    assert f"{folder / 'a.png'}: its output {folder / 'a.png'} is an input of this run" in lines[0]
    assert {p: p.read_bytes() for p in folder.iterdir()} == before
    code, lines = upscale_cli(capsys, picture, "--scale", "2", "-o", picture, "--overwrite")
    assert code == 1 and "is an input of this run, which is never written over" in lines[0]
    assert np.array_equal(np.asarray(Image.open(picture)), crop)


def test_a_killed_write_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    """Only a dead writer's file is removed: a live one's, mid-write, is left alone."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child starts a write, says so, and waits to be killed
        try:
            def stalled(f) -> None:
                f.write(b"half")
                f.flush()
                os.write(ready_write, b"!")
                time.sleep(60)
            atomic_write(tmp_path / "killed.bin", stalled)
        finally:
            os._exit(0)
    try:
        os.read(ready_read, 1)
        [leftover] = [p.name for p in tmp_path.iterdir()]
        assert leftover.startswith(".liif-") and f"-{pid}-" in leftover and len(leftover) < 40
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"a"))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([leftover, "a.bin"])  # its writer lives
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    atomic_write(tmp_path / "b.bin", lambda f: f.write(b"b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_a_name_too_long_fails_alone(tmp_path, crop, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    long_name = "a" * 246 + ".png"  # legal; with the suffix, its output name is not
    for name in (long_name, "good.png"):
        Image.fromarray(crop).save(folder / name)
    too_long = tmp_path / ("b" * 300 + ".png")
    code, lines = upscale_cli(capsys, folder, too_long, "--scale", "2", "-o", tmp_path / "out",
                              "--suffix", "_upscaled")
    assert code == 1
    assert errors(lines) == [
        f"liif upscale: error: {folder / long_name}: cannot write {tmp_path / 'out' / ('a' * 246)}_upscaled.png: "
        "File name too long",
        f"liif upscale: error: {too_long}: cannot read it: File name too long"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good_upscaled.png"]


def test_format_limits_and_alpha_are_checked_before_rendering(tmp_path, crop, capsys, monkeypatch):
    rendered = []
    render = liif.commands.upscale.render_picture
    monkeypatch.setattr(liif.commands.upscale, "render_picture",
                        lambda model, picture, *args, **kwargs: rendered.append(kwargs["label"]) or
                        render(model, picture, *args, **kwargs))
    Image.fromarray(crop[:2, :3]).save(tmp_path / "tiny.png")
    for size, output, limit in (("16384x2", "wide.webp", "WEBP holds at most 16383x16383 pixels, the output would "
                                 "be 16384x2"), ("65501x1", "long.jpg", "JPEG holds at most 65500x65500 pixels")):
        code, lines = upscale_cli(capsys, tmp_path / "tiny.png", "--size", size, "-o", tmp_path / output)
        assert code == 1 and len(lines) == 1 and limit in lines[0]
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.concatenate([crop, crop[:, :, :1]], axis=2)).save(folder / "rgba.png")
    Image.fromarray(crop).save(folder / "rgb.png")
    code, lines = upscale_cli(capsys, folder, "--scale", "2", "-o", tmp_path / "out", "--format", "jpg")
    assert code == 1
    assert lines == [f"liif upscale: error: {folder / 'rgba.png'}: JPEG cannot store alpha; write .png, .webp or .tiff"]
    assert rendered == ["rgb.png"] and [p.name for p in (tmp_path / "out").iterdir()] == ["rgb.jpg"]


def test_16bit_gray_pil_image_in_and_out(crop):
    model = liif.load_model(shared_file(TINY))
    gray = np.asarray(Image.fromarray(crop).convert("L")).astype(np.uint16) * 257 + 100
    out = liif.upscale(Image.fromarray(gray), scale=2, model=model, device="cpu")
    assert out.mode == "I;16" and out.size == (56, 40)
    reference = liif.upscale((gray // 257).astype(np.uint8), scale=2, model=model, device="cpu")
    assert np.abs(np.asarray(out) / 65535 - reference / 255).max() < 0.02


def test_a_rerun_beside_the_inputs_skips_its_outputs_and_repeats(tmp_path, crop, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(crop).save(folder / "a.png")
    Image.fromarray(crop).save(folder / "a_liif.png")  # a previous run's output
    code, lines = upscale_cli(capsys, folder, folder / "a.png", f"{folder}/./a.png", "--scale", "2", "--overwrite",
                              quiet=False)
    assert code == 0 and lines[-1].startswith("liif upscale: 1 written, 0 failed")
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_liif.png"]
    assert Image.open(folder / "a_liif.png").size == (56, 40)


def test_skip_existing_finishes_a_batch_written_into_its_own_input_folder(tmp_path, crop, capsys):
    """With -o the input folder (suffix ''), a rerun lists the earlier outputs among its inputs."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(crop).save(folder / name)
    options = ("--scale", "2", "-o", folder, "--format", "webp", "--skip-existing")
    assert upscale_cli(capsys, folder / "a.png", folder / "b.png", *options)[0] == 0  # killed before c.png
    kept = (folder / "a.webp").stat().st_mtime_ns
    code, lines = upscale_cli(capsys, folder, *options, quiet=False)
    assert code == 0 and lines[-1].startswith("liif upscale: 1 written, 2 skipped (existing), 0 failed"), lines
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a.webp", "b.png", "b.webp", "c.png", "c.webp"]
    assert (folder / "a.webp").stat().st_mtime_ns == kept and Image.open(folder / "c.webp").size == (56, 40)


def test_pillow_bomb_limit_without_its_warning(picture, monkeypatch):
    """Inputs up to twice PIL.Image.MAX_IMAGE_PIXELS are read quietly; above, a one-line refusal."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # the 28x20 picture is between the limit and twice it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_picture(picture).pixels.shape == (20, 28, 3)
    assert caught == []
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    with pytest.raises(LiifError, match=r"^too many pixels to read safely \(Image size \(560 pixels\) exceeds"):
        read_picture(picture)


def test_format_that_contradicts_the_output_file_is_refused(picture, tmp_path, capsys):
    code, lines = upscale_cli(capsys, picture, "--scale", "2", "-o", tmp_path / "out.png", "--format", "webp")
    assert code == 2
    assert lines == [f"liif upscale: error: --format webp contradicts -o {tmp_path / 'out.png'}: "
                     "a single output's format follows its extension"]
    assert not (tmp_path / "out.png").exists()


def test_a_still_picture_to_gif_is_refused_saying_why(picture, tmp_path, capsys):
    """GIF (a GIF's upscale is one) would cut an upscaled picture to 256 colours: refused before rendering, naming
    that and the formats written, not as an 'unknown' format."""
    code, lines = upscale_cli(capsys, picture, "--scale", "2", "-o", tmp_path / "out.gif")
    assert code == 1
    assert lines == [f"liif upscale: error: {picture}: {tmp_path / 'out.gif'}: GIF holds 256 colours, too few for an "
                     "upscaled picture (only a GIF is upscaled to GIF); use .png to keep every colour, or one "
                     "of .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp"]
    assert not (tmp_path / "out.gif").exists()


def test_a_16bit_gray_and_alpha_tiff_is_refused_saying_why(tmp_path, crop, capsys):
    """Pillow has no mode for 16-bit gray with alpha and does not open such a TIFF: the refusal names the layout
    and what keeps it, not 'not an image'. The TIFF is written as a scanner writes it: one strip, alpha unassociated."""
    gray = np.asarray(Image.fromarray(crop).convert("L")).astype("<u2") * 257
    data = np.stack([gray, np.full_like(gray, 40000)], axis=2).tobytes()
    height, width = gray.shape
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 2, 16 | 16 << 16), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 8), (277, 3, 1, 2), (278, 3, 1, height), (279, 4, 1, len(data)), (284, 3, 1, 1),
            (338, 3, 1, 2)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags) + struct.pack("<I", 0)
    (tmp_path / "scan.tif").write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + ifd)
    code, lines = upscale_cli(capsys, tmp_path / "scan.tif", "--scale", "2", "-o", tmp_path / "out.png")
    assert code == 1 and lines == [
        f"liif upscale: error: {tmp_path / 'scan.tif'}: a TIFF of 16-bit gray with alpha, a layout not read (Pillow "
        "has no mode for it); save it as PNG, which keeps 16-bit gray and alpha"]
    (tmp_path / "scan.tif").write_bytes(b"II*\x00" + bytes(40))  # a TIFF's signature, nothing readable after it
    with pytest.raises(LiifError, match="^not an image, or not one of the formats read"):
        read_picture(tmp_path / "scan.tif")


def test_the_content_decides_and_only_listed_formats_and_regular_files_are_read(tmp_path, crop, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(crop).save(folder / "png-named.jpg", format="PNG")
    Image.fromarray(crop).save(folder / "gif-named.png", format="GIF")
    os.mkfifo(folder / "fifo.png")  # opening it would wait for a writer forever
    assert np.array_equal(read_picture(folder / "png-named.jpg").pixels, crop)
    code, lines = upscale_cli(capsys, folder, "--scale", "2", "-o", tmp_path / "out")
    assert code == 1
    assert lines == [
        f"liif upscale: error: {folder / 'fifo.png'}: not a regular file (a FIFO, socket or device); it is not opened",
        f"liif upscale: error: {folder / 'gif-named.png'}: not an image, or not one of the formats read "
        "(PNG, JPEG, WebP, BMP, TIFF)"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["png-named.jpg"]


def test_a_name_with_a_newline_or_escape_stays_one_line(tmp_path, capsys):
    """Control characters in a file name are escaped: the error stays one line and the terminal untouched."""
    bad = tmp_path / "two\nlines\x1b[2J.png"
    bad.write_bytes(b"not a picture")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["upscale", str(bad), "--scale", "2", "-o", str(tmp_path / "out"), "--model", str(shared_file(TINY)),
                  "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and "\x1b" not in err
    assert err.startswith(f"liif upscale: error: {tmp_path}/two\\nlines\\x1b[2J.png: not an image")
