"""`liif zoom`: geometric frame regions, frames equal to `liif upscale` of their regions, every output kind."""

from __future__ import annotations

import io
import math
import os
import re
import struct
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFilter

from liif import load_model
from liif.cli import main
from liif.errors import LiifError
from liif.geometry import Geometry
from liif.imageio import PNG_SIGNATURE, SRGB, Picture, png_chunk, read_picture, rgb8
from liif.renderer import FeatureCache
from liif.upscale import render_picture, resize_bicubic
from liif.video.writer import FRAME_NAME, open_frame_writer
from liif.zoom import keeps_alpha, over_background, render_frames, zoom, zoom_regions
from conftest import BENCHMARKS, ROOT, TINY, common_tags, gray_profile, icc_profile, shared_file
from serving import small_picture

SIZE = (32, 18)  # even sides, for H.264
FRAMES = 6


@pytest.fixture(scope="module")
def picture_path(tmp_path_factory):
    return small_picture(tmp_path_factory.mktemp("zoom"))  # 48x36


def test_regions_zoom_geometrically_into_the_point():
    regions = zoom_regions((48, 36), (32, 18), center=(30, 12), end=16, frames=9)
    assert regions[0] == (0.0, 0.0, 48.0, 27.0)  # the whole width, fitted, cut to 16:9, centred on y=12 as far as it can
    widths = [x1 - x0 for x0, _, x1, _ in regions]
    assert math.isclose(widths[-1], 32 / 16)  # x16 at the end
    ratios = [b / a for a, b in zip(widths, widths[1:])]
    assert all(math.isclose(r, ratios[0]) for r in ratios)  # geometric
    for x0, y0, x1, y1 in regions:  # the point keeps its place in the frame
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 36
        assert math.isclose((30 - x0) / (x1 - x0), 30 / 48) and math.isclose((12 - y0) / (y1 - y0), 12 / 27)
        assert math.isclose((x1 - x0) / (y1 - y0), 32 / 18)


def test_print_regions_and_png_frames_equal_liif_upscale(picture_path, tmp_path, capsys):
    out = tmp_path / "frames"
    with pytest.raises(SystemExit) as code:
        main(["zoom", str(picture_path), "-o", str(out), "--size", "32x18", "--frames", str(FRAMES), "--fps", "6",
              "--center", "20,15", "--zoom", "1:8", "--print-regions", "--device", "cpu", "-q"])
    assert code.value.code == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == FRAMES
    frames = sorted(out.iterdir())
    assert len(frames) == FRAMES
    for k in (0, FRAMES - 1):  # through the command line, as a user would check it
        expected = tmp_path / f"upscaled{k}.png"
        with pytest.raises(SystemExit) as code:
            main(["upscale", str(picture_path), "--region", lines[k], "--size", "32x18", "-o", str(expected),
                  "--device", "cpu", "-q"])
        assert code.value.code == 0
        assert np.array_equal(read_picture(frames[k]).pixels, read_picture(expected).pixels)
    model = load_model("edsr-baseline-liif")
    picture = read_picture(picture_path)
    for frame, line in zip(frames, lines):  # every frame, through the Python API
        target = Geometry(size=SIZE, region=tuple(float(v) for v in line.split(","))).target((36, 48))
        assert np.array_equal(read_picture(frame).pixels, render_picture(model, picture, target).pixels)


def test_encoder_and_tables_shared_across_frames(picture_path, monkeypatch):
    """LIIF's per-latent first-layer tables (a 3x3 convolution over the whole window) were made again for every
    frame: 80% of the time of each frame after the first in a 64x64 zoom into a 500x480 picture. The cache keeps
    them beside the features; the frames are the same bytes."""
    picture = read_picture(picture_path)
    model = load_model("edsr-baseline-liif")
    made = []
    fast_latents = type(model).fast_latents
    monkeypatch.setattr(type(model), "fast_latents",
                        lambda net, *args: made.append(args[-1]) or fast_latents(net, *args))
    cache = FeatureCache()
    regions = zoom_regions((48, 36), SIZE, start=1, end=8, frames=FRAMES)
    frames = list(render_frames(model, picture, regions, SIZE, cache=cache))
    assert len(frames) == FRAMES and cache.encoded == 1  # up to x8 every frame uses the one 256-latent window
    assert len(made) == 1 and cache.latents_made == 1
    for frame, region in zip(frames, regions):
        target = Geometry(size=SIZE, region=region).target((36, 48))
        assert np.array_equal(frame, rgb8(render_picture(model, picture, target).pixels))
    assert len(made) == 1 + FRAMES  # without a cache, each frame makes its own


def test_a_picture_beyond_the_feature_cache_is_encoded_once_with_a_cache_that_holds_it(tmp_path, capsys):
    """A zoom kept its shared encoder windows in a fixed 512 MB cache, about 29 CPU windows: the largest frames of a
    picture of more (a photo above 2 MP) scanned windows in an order that evicts each before the next frame asks
    for it, and encoded every window again for every frame. Now `zoom` takes a ``cache`` (`--feature-cache-mb`):
    one that holds the picture's windows encodes each once, with the same frames."""
    picture = shared_file(BENCHMARKS / "Set14" / "baboon.png")  # 500x480: 2x2 windows of 256 latents
    kept, starved = FeatureCache(), FeatureCache(1)  # all windows, and none
    # every frame reaches all four windows, its region astride their corner
    zoom_into_corner = {"center": (256, 256), "start": 1, "end": 2, "frames": 4, "size": (16, 16), "model": TINY,
                        "device": "cpu"}
    regions = zoom(picture, tmp_path / "kept", cache=kept, **zoom_into_corner)
    zoom(picture, tmp_path / "starved", cache=starved, **zoom_into_corner)
    assert (kept.encoded, starved.encoded) == (4, 4 * len(regions))
    for k in range(len(regions)):
        name = FRAME_NAME.format(k)
        assert np.array_equal(read_picture(tmp_path / "kept" / name).pixels,
                              read_picture(tmp_path / "starved" / name).pixels)
    for value in ("0", "nan"):
        with pytest.raises(SystemExit) as exit_info:
            main(["zoom", str(picture), "-o", str(tmp_path / "no"), "--feature-cache-mb", value])
        assert exit_info.value.code == 2 and not (tmp_path / "no").exists()
        assert capsys.readouterr().err.startswith("liif zoom: error: --feature-cache-mb must be a number > 0")


def test_a_picture_with_alpha_has_its_colour_alone_rendered(picture_path, monkeypatch):
    """The model rendered the alpha too, as a second picture in its batch: twice the work, for a channel the frames
    then dropped. Frames without alpha are `liif upscale`'s pixels of the picture over white."""
    pixels = read_picture(picture_path).pixels
    rgba = Picture(np.dstack([pixels, np.arange(48 * 36, dtype=np.uint8).reshape(36, 48, 1)]))
    model = load_model("edsr-baseline-liif")
    batches = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda inp: batches.append(inp.shape[0]) or encode(inp))
    regions = zoom_regions((48, 36), SIZE, start=1, end=4, frames=2)
    frames = list(render_frames(model, rgba, regions, SIZE, compare="bicubic"))
    assert batches == [1]  # one window (render_frames shares it), of the colour alone: no second picture
    for frame, region in zip(frames, regions):
        target = Geometry(size=SIZE, region=region).target((36, 48))
        halves = [rgb8(render_picture(model, over_background(rgba), target).pixels),
                  rgb8(resize_bicubic(over_background(rgba), target).pixels)]
        assert np.array_equal(frame, np.concatenate(halves, axis=1))


def test_each_frame_shows_its_own_progress(picture_path, capsys):
    """The bar counted frames alone: the wide first frames of a big picture (encoded whole, for minutes on a CPU)
    showed 0 of N frames until done. Each frame's render has its bar under it, by pixels, cleared when done."""
    regions = zoom_regions((48, 36), SIZE, start=1, end=4, frames=2)
    list(render_frames(load_model(TINY), read_picture(picture_path), regions, SIZE, progress=True))
    err = capsys.readouterr().err
    assert all(f"frame {k}:   0%|" in err for k in (1, 2)) and "/576 [" in err  # drawn when made; cleared when done
    assert err.rstrip().splitlines()[-1].startswith("zoom: 100%|") and "| 2/2 [" in err


@pytest.mark.parametrize("name", ["zoom.mp4", "zoom.webm", "zoom.gif", "zoom.webp", "frames"])
def test_every_output_kind(picture_path, tmp_path, name):
    out = tmp_path / name
    regions = zoom(picture_path, out, end=4, frames=FRAMES, fps=6, size=SIZE, compare="bicubic", device="cpu")
    assert len(regions) == FRAMES
    width, height = 2 * SIZE[0], SIZE[1]  # LIIF | bicubic
    if out.suffix in (".mp4", ".webm"):
        with av.open(str(out)) as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(decoded) == FRAMES and decoded[0].shape == (height, width, 3)
    elif out.suffix:
        with Image.open(out) as animation:
            assert animation.n_frames == FRAMES and animation.size == (width, height)
    else:
        files = sorted(out.iterdir())
        assert len(files) == FRAMES and Image.open(files[0]).size == (width, height)


@pytest.mark.parametrize("fps", [0.0001, 0, -1, 1001, float("nan")])
def test_a_frame_rate_out_of_bounds_is_refused_before_the_model_loads(picture_path, tmp_path, fps):
    with pytest.raises(LiifError, match=rf"^fps must be a number in \[0.001, 1000\], got {fps!r}$"):
        zoom(picture_path, tmp_path / "zoom.gif", frames=2, fps=fps, size=SIZE, model="no-such-model", device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_the_slowest_frame_rate_is_kept(picture_path, tmp_path):
    zoom(picture_path, tmp_path / "zoom.mkv", end=2, frames=2, fps=0.001, size=SIZE, device="cpu")
    with av.open(str(tmp_path / "zoom.mkv")) as container:
        assert container.streams.video[0].average_rate == Fraction(1, 1000)


@pytest.mark.parametrize("frames", [0, 100_001])
def test_a_frame_count_out_of_bounds_is_one_line_before_any_region_is_planned(picture_path, capsys, frames):
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "--print-regions", "--frames", str(frames), "--size", "32x18"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert err == f"liif zoom: error: --frames must be an int in [1, 100000], got {frames}\n"


def test_the_picture_zoomed_into_is_never_written_over(picture_path, tmp_path, capsys):
    picture = tmp_path / "picture.png"
    picture.write_bytes(picture_path.read_bytes())
    (tmp_path / "link.png").symlink_to(picture)
    for output in (picture, tmp_path / "link.png"):
        with pytest.raises(SystemExit) as exit_info:
            main(["zoom", str(picture), "-o", str(output), "--overwrite", "--frames", "2", "--size", "32x18",
                  "--device", "cpu"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == (f"liif zoom: error: {output} is the picture zoomed into, which is never "
                                           f"written over\n")
    with pytest.raises(LiifError, match="is the picture zoomed into"):
        zoom(picture, picture, frames=2, size=SIZE, overwrite=True, device="cpu")
    assert picture.read_bytes() == picture_path.read_bytes() and (tmp_path / "link.png").is_symlink()


@pytest.mark.parametrize("arguments,message", [
    ({"end": "4"}, "the end zoom must be a number above 0 and at most 1000000, got '4'"),
    ({"end": math.inf}, "the end zoom must be a number above 0 and at most 1000000, got inf"),
    ({"end": 1e300}, "the end zoom must be a number above 0 and at most 1000000, got 1e"),
    ({"start": "1"}, "the start zoom must be a number above 0 and at most 1000000, got '1'"),
    ({"center": (1, 2, 3)}, r"^center must be two numbers \(x, y\), got \(1, 2, 3\)"),
    ({"frame_size": (0, 16)}, r"^each side of size must be an int in \[1, 16384\], got 0$"),
    ({"frame_size": (16, 20000)}, r"^each side of size must be an int in \[1, 16384\], got 20000$"),
])
def test_zoom_numbers_are_checked_before_any_region_is_planned(arguments, message):
    """A string failed inside a comparison; an infinite zoom or a frame of no pixels planned empty regions."""
    with pytest.raises(LiifError, match=message):
        zoom_regions(**{"picture_size": (28, 20), "frame_size": (16, 16), "end": 2.0, "frames": 2, **arguments})


def test_printed_regions_stop_quietly_when_the_reader_leaves(picture_path):
    """``liif zoom --print-regions | head -1``: a BrokenPipeError's traceback, then Python's own complaint."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen([sys.executable, "-m", "liif", "zoom", str(picture_path), "--print-regions",
                                "--frames", "100000", "--size", "32x18"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == "0.0,4.5,48.0,31.5\n"
        process.stdout.close()  # as `head -1` does
        err = process.stderr.read()
        process.wait(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, err) == (141, "")


@pytest.mark.parametrize("name,arguments,message", [
    ("zoom.mp4", {"size": (33, 18)}, "yuv420p halves the colour resolution, so the width must be even"),
    ("zoom.gif", {"compare": "Bicubic"}, "unknown comparison 'Bicubic'; use bicubic"),
    ("taken.mp4", {}, "taken.mp4 exists; pass overwrite=True to replace it"),
    ("taken.mp4/zoom.gif", {}, "cannot write"),
])
def test_the_output_is_refused_before_the_model_loads(picture_path, tmp_path, name, arguments, message):
    """These were found only once the model had loaded (a missing model was reported instead)."""
    (tmp_path / "taken.mp4").write_bytes(b"kept")
    with pytest.raises(LiifError, match=re.escape(message)):
        zoom(picture_path, tmp_path / name, **{"frames": 2, "size": SIZE, "model": "no-such-model", **arguments})
    assert [p.name for p in tmp_path.iterdir()] == ["taken.mp4"] and (tmp_path / "taken.mp4").read_bytes() == b"kept"


def test_videos_take_the_encoder_options(picture_path, tmp_path, capsys):
    """An odd side needs a 4:4:4 pixel format, as the refusal of one in yuv420p says: there was no --pix-fmt."""
    out = tmp_path / "zoom.mp4"
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "-o", str(out), "--size", "33x17", "--frames", "2", "--fps", "6",
              "--pix-fmt", "yuv444p", "--crf", "10", "--preset", "veryfast", "--device", "cpu", "-q"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.pix_fmt, stream.average_rate) == ("yuv444p", 6)
        assert [frame.to_ndarray(format="rgb24").shape for frame in container.decode(stream)] == [(17, 33, 3)] * 2
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "-o", str(tmp_path / "other.mp4"), "--size", "32x18", "--crf", "99",
              "--model", "no-such-model"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "liif zoom: error: --crf must be 0 to 63 (lower is better quality), got 99\n"
    with pytest.raises(LiifError, match=r"zoom.gif: codec is for video outputs .*, not a .gif animation"):
        zoom(picture_path, tmp_path / "zoom.gif", frames=2, size=SIZE, codec="vp9", model="no-such-model")


@pytest.mark.parametrize("center,message", [("1e400,3", "--center must be a number, got inf"),
                                            ("99,1", "--center 99,1 must lie in the 48x36 picture")])
def test_a_centre_out_of_bounds_names_the_option(picture_path, capsys, center, message):
    """It was "the centre", which is neither --center nor center=."""
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "--print-regions", "--size", "32x18", f"--center={center}"])
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"liif zoom: error: {message}\n"
    with pytest.raises(LiifError, match=f"^{message[2:]}$"):
        zoom_regions((48, 36), SIZE, tuple(float(v) for v in center.split(",")))


def test_a_fit_beyond_the_end_says_it_is_the_fit(picture_path, capsys):
    """The 48x36 picture fills the default 1280x720 frame at x26.7, past the default end (x16): the error said
    "the zoom must grow: x26.6667 to x16", a zoom never asked for."""
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "--print-regions"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("liif zoom: error: the zoom must grow: x26.67, where the 1280x720 frame shows "
                                       "the whole 48x36 picture, to x16\n")


@pytest.mark.parametrize("size,got", [("0x18", "0"), ("32.5x18", "32.5")])
def test_a_frame_side_out_of_bounds_names_the_option(picture_path, capsys, size, got):
    """It read "size must be ...", as Python's size= reads, not --size."""
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "--print-regions", "--size", size])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"liif zoom: error: --size must be an int above 0 and at most 16777216, got {got}\n"


@pytest.mark.parametrize("arguments,message", [
    (["-o", "taken.mp4"], "taken.mp4 exists; pass --overwrite to replace it"),
    (["-o", "zoom.gif", "--fps", "0"], "--fps must be a number in [0.001, 1000], got 0.0"),
    (["-o", "zoom.gif", "--model", "no-such-model"], "unknown model 'no-such-model'"),
])
def test_regions_are_printed_only_once_the_zoom_is_accepted(picture_path, tmp_path, monkeypatch, capsys, arguments,
                                                            message):
    """With -o, the regions were printed and then the output, frame rate or model refused: a script reading them
    took regions of a zoom never written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.mp4").write_bytes(b"kept")
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "--print-regions", "--size", "32x18", "--frames", "2", "--device", "cpu",
              "-q", *arguments])
    out, err = capsys.readouterr()
    assert (exit_info.value.code, out) == (2, "") and err.startswith(f"liif zoom: error: {message}")


@pytest.mark.parametrize("text", ["fit", "abc:3", "fit:fit", ":4", "2:", "2:4:8"])
def test_a_zoom_range_not_understood_says_what_it_takes(picture_path, capsys, text):
    """It read "--zoom START 'abc': expected 1 numbers separated by ','", of a range that has no commas."""
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "--print-regions", "--size", "32x18", f"--zoom={text}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"liif zoom: error: --zoom {text!r}: expected START:END, START 'fit' or a "
                                       f"number and END a number, such as fit:16 or 2:32\n")


@pytest.mark.parametrize("text,got", [("0:4", "0.0"), ("fit:inf", "inf"), ("2:1e7", "10000000.0")])
def test_a_zoom_out_of_bounds_is_refused_before_the_picture_is_read(tmp_path, capsys, text, got):
    """The command checks --zoom through the API's check (``checked_zooms``), in its own words, before reading."""
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(tmp_path / "missing.png"), "--print-regions", f"--zoom={text}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"liif zoom: error: --zoom {text}: each zoom must be a number above 0 and at "
                                       f"most 1000000, got {got}\n")


def test_a_missing_output_folder_is_made_and_removed_again_when_the_zoom_is_dropped(picture_path, tmp_path):
    """The writer made the output's missing folders (as `liif upscale` does for a video) and left them behind, empty,
    when the zoom failed after it: a model refused, an odd side for yuv420p, an interruption. A zoom written keeps
    them."""
    def interrupt(regions):
        raise KeyboardInterrupt

    for name, arguments, failure in [
            ("new/deeper/zoom.gif", {"model": "no-such-model"}, LiifError),
            ("new/zoom.mp4", {"size": (33, 18)}, LiifError),
            ("new/frames", {"planned": interrupt}, KeyboardInterrupt)]:
        with pytest.raises(failure):
            zoom(picture_path, tmp_path / name, **{"end": 2, "frames": 2, "size": SIZE, "model": TINY,
                                                   "device": "cpu", **arguments})
        assert list(tmp_path.iterdir()) == [], name
    zoom(picture_path, tmp_path / "new" / "zoom.gif", end=2, frames=2, size=SIZE, model=TINY, device="cpu")
    with Image.open(tmp_path / "new" / "zoom.gif") as animation:
        assert animation.n_frames == 2


def display_p3_profile() -> bytes:
    """A Display P3 profile: P3's primaries (adapted to D50) and a gamma of 2.2."""
    def xyz(x, y, z):
        return struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))
    gamma = struct.pack(">IH", 1, 0x0233)
    tags = [(b"rXYZ", b"XYZ ", xyz(0.5151, 0.2412, -0.0011)), (b"gXYZ", b"XYZ ", xyz(0.2919, 0.6922, 0.0419)),
            (b"bXYZ", b"XYZ ", xyz(0.1571, 0.0666, 0.7841))]
    tags += [(name, b"curv", gamma) for name in (b"rTRC", b"gTRC", b"bTRC")]
    return icc_profile(b"mntr", b"RGB ", b"XYZ ", common_tags() + tags)


@pytest.mark.parametrize("gray", [False, True])
def test_a_picture_with_a_colour_profile_has_its_frames_in_srgb(picture_path, tmp_path, gray):
    """The picture's ICC profile was dropped: the frames of a Display P3 photo (a phone's) showed its values as
    sRGB ones, its colours dull and shifted, in every video and GIF (which carry no profile). Each frame is now
    `liif upscale`'s pixels taken through the profile to sRGB, the bicubic beside them too."""
    pixels = read_picture(picture_path).pixels
    profile = gray_profile() if gray else display_p3_profile()
    picture = Picture(pixels[:, :, :1] if gray else pixels, profile)
    regions = zoom(picture, tmp_path / "frames", start=1, end=4, frames=2, size=SIZE, compare="bicubic", model=TINY,
                   device="cpu")
    model = load_model(TINY)
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    for k, region in enumerate(regions):
        target = Geometry(size=SIZE, region=region).target((36, 48))
        halves = [render_picture(model, picture, target).pixels, resize_bicubic(picture, target).pixels]
        as_written = np.concatenate(halves, axis=1)
        expected = ImageCms.profileToProfile(Image.fromarray(as_written[:, :, 0] if gray else as_written), source,
                                             SRGB, outputMode="RGB")
        frame = read_picture(tmp_path / "frames" / FRAME_NAME.format(k)).pixels
        assert np.array_equal(frame, np.asarray(expected))
        assert not np.array_equal(frame, rgb8(as_written))  # the profile is no sRGB in disguise


def header_only_png(path):
    """A 12000x9000 8-bit RGB PNG with no pixel data: its header reads, its pixels do not."""
    header = struct.pack(">2I5B", 12000, 9000, 8, 2, 0, 0, 0)
    path.write_bytes(PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b""))
    return path


def test_printed_regions_read_the_picture_header_alone(tmp_path, capsys):
    """--print-regions decoded the whole picture (minutes and gigabytes for a big photo) for its size alone: a
    picture whose pixels are not there yet (a header alone) failed. Its header is enough now."""
    path = header_only_png(tmp_path / "big.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(path), "--print-regions", "--frames", "2", "--size", "32x18", "--zoom", "fit:1"])
    out, err = capsys.readouterr()
    assert (exit_info.value.code, err) == (0, "")
    assert out.split() == ["0.0,1125.0,12000.0,7875.0", "5984.0,4491.0,6016.0,4509.0"]


def test_a_gif_faster_than_its_delays_allow_is_refused_before_the_model_loads(picture_path, tmp_path, capsys):
    """A GIF's delays are hundredths of a second, and players show a delay of one hundredth for a tenth: at 60 fps,
    a third of the frames showed for 100 ms, the zoom playing stuttering at about a third of its rate. Above 50 fps
    a GIF is refused; at 50 every frame shows for 20 ms."""
    with pytest.raises(SystemExit) as exit_info:
        main(["zoom", str(picture_path), "-o", str(tmp_path / "zoom.gif"), "--fps", "60", "--size", "32x18",
              "--model", "no-such-model"])
    assert exit_info.value.code == 2 and list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err == ("liif zoom: error: a .gif plays at most 50 frames per second, got --fps 60: "
                                       "lower it, or write .webp or a video\n")
    zoom(picture_path, tmp_path / "zoom.gif", end=2, frames=3, fps=50, size=SIZE, model=TINY, device="cpu")
    with Image.open(tmp_path / "zoom.gif") as animation:
        delays = []
        for k in range(animation.n_frames):
            animation.seek(k)
            delays.append(animation.info["duration"])
    assert delays == [20, 20, 20]


def test_frames_below_x1_are_antialiased_bicubic(tmp_path):
    """Frames below x1 (a picture larger than the frame, the opening of most zooms) were LIIF's: it samples its
    continuous picture without averaging, so the baboon's fur at x0.25 aliased into coloured noise, and every such
    frame encoded all the windows its wide region reached. They are plain bicubic now, antialiased, with nothing
    encoded; from x1 on, LIIF's."""
    picture = read_picture(shared_file(BENCHMARKS / "Set14" / "baboon.png"))  # 500x480
    cache = FeatureCache()
    regions = zoom_regions((500, 480), (125, 120), center=(128, 128), end=1, frames=3)  # x0.25, x0.5, x1
    frames = render_frames(load_model(TINY), picture, regions, (125, 120), cache=cache)
    for region in regions[:2]:
        target = Geometry(size=(125, 120), region=region).target((480, 500))
        assert np.array_equal(next(frames), rgb8(resize_bicubic(picture, target).pixels)) and cache.encoded == 0
    next(frames)
    assert cache.encoded == 1  # x1: LIIF, the one window under the frame


def test_an_animation_beyond_the_memory_is_refused_before_the_model_loads(picture_path, tmp_path, monkeypatch):
    """A WebP animation keeps every frame until it is written: 100,000 frames of 16384x16384 rendered for
    days, then the writer ran out of memory. It is refused at once, naming what it would hold (its encoded frames,
    at most a WebP file's 4 GiB, and libwebp's four 1 GiB canvases); frames written as they come (a GIF's, an
    APNG's, a folder's) are not held."""
    monkeypatch.setattr("liif.zoom.available_memory", lambda: 6 * 2**30)
    arguments = {"end": 1000, "frames": 100_000, "size": (16384, 16384), "model": "no-such-model"}
    with pytest.raises(LiifError, match=r"zoom.webp: an animation is held whole in memory until written, 8.0 GiB "
                                        r"for 100000 frames, and only 6.0 GiB is available: write a video"):
        zoom(picture_path, tmp_path / "zoom.webp", **arguments)
    for streamed in ("zoom.gif", "zoom.png", "frames"):
        with pytest.raises(LiifError, match="unknown model 'no-such-model'"):
            zoom(picture_path, tmp_path / streamed, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_the_output_is_refused_before_the_picture_is_read(tmp_path, capsys):
    """The picture was decoded whole (seconds and gigabytes for a big photo) before an output there already was
    refused. Its header plans the regions; its pixels are read once the output is accepted, and a failure to read
    them leaves nothing behind, not even the output's folder."""
    path = header_only_png(tmp_path / "big.png")
    (tmp_path / "taken.mp4").write_bytes(b"kept")
    for output, message in ((tmp_path / "taken.mp4", "taken.mp4 exists; pass --overwrite to replace it"),
                            (tmp_path / "new" / "zoom.mp4", "big.png: cannot read the image")):
        with pytest.raises(SystemExit) as exit_info:
            main(["zoom", str(path), "-o", str(output), "--size", "32x18", "--frames", "2", "--model", "no-such-model"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("liif zoom: error: ") and message in err
        assert len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "taken.mp4"]


def test_a_webp_is_refused_only_where_its_encoded_frames_could_not_fit(picture_path, tmp_path, monkeypatch):
    """The WebP estimate counted every frame's raw RGB, though libwebp keeps them encoded and a WebP file holds at
    most 4 GiB: 2000 1280x720 frames (5.1 GiB of pixels) were refused with 5 GiB free, where they always fit."""
    monkeypatch.setattr("liif.zoom.available_memory", lambda: 5 * 2**30)
    with pytest.raises(LiifError, match="unknown model 'no-such-model'"):  # accepted, up to the model
        zoom(picture_path, tmp_path / "zoom.webp", end=64, frames=2000, size=(1280, 720), model="no-such-model")
    assert list(tmp_path.iterdir()) == []


def half_transparent(path) -> Picture:
    """The picture at ``path`` with its left half transparent, black under it (as most editors leave it)."""
    pixels = read_picture(path).pixels.copy()
    alpha = np.full(pixels.shape[:2], 255, np.uint8)
    alpha[:, :24] = 0
    pixels[alpha == 0] = 0
    return Picture(np.dstack([pixels, alpha]))


def test_a_transparent_picture_is_over_white_where_the_output_has_no_alpha(picture_path):
    """The alpha was dropped, so transparent areas showed the colour under them: black here, anything elsewhere. A
    GIF or a plain video shows the picture over white."""
    regions = zoom_regions((48, 36), SIZE, start=1, end=4, frames=2)
    frames = list(render_frames(load_model("edsr-baseline-liif"), half_transparent(picture_path), regions, SIZE,
                                compare="bicubic"))
    assert all(frame.shape == (18, 64, 3) for frame in frames)
    for half in (frames[0][:, :4], frames[0][:, 32:36]):  # its left edge: transparent, in both halves at x1
        assert (half >= 250).all()  # LIIF's white is within a few levels
    assert not keeps_alpha("z.gif") and not keeps_alpha("z.mp4")


@pytest.mark.parametrize("background", [(0, 0, 0), (200, 30, 90)])
def test_a_half_transparent_picture_is_blended_exactly_over_the_background(picture_path, background):
    """A transparent picture was shown over white, with no choice. Over black or a colour, each pixel is the blend
    c * a + b * (1 - a), rounded; gray becomes RGB over a colour, and 16-bit pixels blend at their own precision."""
    pixels = read_picture(picture_path).pixels
    alpha = np.arange(48 * 36).reshape(36, 48) % 256
    gray = pixels[:, :, :1]
    for color, top in ((pixels, 255), (gray, 255), (gray.astype(np.uint16) * 257, 65535)):
        blended = over_background(Picture(np.dstack([color, (alpha * (top // 255)).astype(color.dtype)])),
                                  background).pixels
        a = (alpha * (top // 255) / top)[:, :, None]
        under = np.array(background, float) * top / 255
        expected = np.rint(color * a + under * (1 - a))  # (36, 48, 3)
        assert blended.shape == (36, 48, 3 if background != (0, 0, 0) or color.shape[2] == 3 else 1)
        assert blended.dtype == color.dtype and np.array_equal(np.broadcast_to(blended, expected.shape), expected)
    regions = zoom_regions((48, 36), SIZE, start=1, end=4, frames=2)
    frame = next(render_frames(load_model(TINY), half_transparent(picture_path), regions, SIZE, compare="bicubic",
                               background=background))
    assert (frame[:, 32:36] == background).all()  # the bicubic half's transparent left edge, at x1


def test_a_bad_background_is_one_line_before_the_model_loads(picture_path, tmp_path, capsys):
    for arguments in (["-o", str(tmp_path / "zoom.gif"), "--model", "no-such-model"], ["--print-regions"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["zoom", str(picture_path), "--size", "32x18", "--background", "#12345", *arguments])
        assert exit_info.value.code == 2
        assert capsys.readouterr() == ("", "liif zoom: error: --background #12345: expected a colour such as "
                                           "#1a2b3c, black or white\n")
    with pytest.raises(LiifError, match=r"^background='nope': expected a colour"):
        zoom(picture_path, tmp_path / "zoom.gif", frames=2, size=SIZE, background="nope", model="no-such-model")
    assert list(tmp_path.iterdir()) == []


def test_a_transparent_picture_keeps_its_alpha_where_the_output_holds_it(picture_path, tmp_path):
    """PNG frames, a WebP or APNG, a video in a pixel format with alpha keep the transparency (resized bicubic, as
    `liif upscale --alpha bicubic`); they were opaque."""
    picture = half_transparent(picture_path)
    regions = zoom(picture, tmp_path / "frames", start=1, end=4, frames=2, size=SIZE, model=TINY, device="cpu")
    alphas = []
    for region, path in zip(regions, sorted((tmp_path / "frames").iterdir())):
        target = Geometry(size=SIZE, region=region).target((36, 48))
        written = read_picture(path).pixels
        assert written.shape == (18, 32, 4)
        alphas.append(written[:, :, 3])
        assert np.array_equal(alphas[-1], resize_bicubic(picture, target).pixels[:, :, 3])
    zoom(picture, tmp_path / "zoom.webp", start=1, end=4, frames=2, size=SIZE, model=TINY, device="cpu")
    with Image.open(tmp_path / "zoom.webp") as animation:
        for index, alpha in enumerate(alphas):
            animation.seek(index)
            assert np.array_equal(np.asarray(animation.convert("RGBA"))[:, :, 3], alpha)
    assert all(keeps_alpha(name) for name in ("z.webp", "z.png", "z.apng", "frames"))
    assert keeps_alpha("z.webm", pix_fmt="yuva420p") and not keeps_alpha("z.webm")


def test_a_webp_whose_frames_have_a_transparent_border_keeps_it(tmp_path):
    """libwebp crops a frame's fully transparent border off, then flags the WebP opaque when every frame it stores
    is: decoders showed the border opaque. The WebP is flagged transparent where a frame is."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 36, 64, 4), dtype=np.uint8)  # two frames, not one
    frames[:, :, :, 3] = 255
    frames[:, :, :4, 3] = 0
    with open_frame_writer(tmp_path / "a.webp", (64, 36), Fraction(10)) as writer:
        for frame in frames:
            writer.write(frame)
    with Image.open(tmp_path / "a.webp") as image:
        for index in range(2):
            image.seek(index)
            assert np.array_equal(np.asarray(image.convert("RGBA"))[:, :, 3], frames[index, :, :, 3])


def test_a_gif_frame_is_dithered(tmp_path):
    """A GIF frame's 255 colours were matched without dithering: a photo's smooth areas banded. Dithered, the frame
    seen from a little away (blurred) is nearer the photo than the plain palette's."""
    photo = Image.open(shared_file(BENCHMARKS / "Set14" / "pepper.png")).convert("RGB").crop((0, 0, 128, 128))
    with open_frame_writer(tmp_path / "a.gif", photo.size, Fraction(10)) as writer:
        writer.write(np.asarray(photo))

    def seen_error(image: Image.Image) -> float:
        blurred = (np.asarray(i.convert("RGB").filter(ImageFilter.GaussianBlur(1.5)), float) for i in (image, photo))
        return float(np.abs(next(blurred) - next(blurred)).mean())

    with Image.open(tmp_path / "a.gif") as written:
        assert seen_error(written) < 0.85 * seen_error(photo.quantize(255))
