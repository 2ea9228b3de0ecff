"""liif upscale on videos and animations: frames, timing, sound, geometry, errors, interruption (clips made
with PyAV in tmp_path; a small LIIF keeps it fast)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import liif
from clips import attached, decoded_frames, frame_pixels, interlaced_clip, make_clip, packets, retagged
from conftest import files_bar, screen
from facts import SMALL
from liif.cli import main
from liif.imageio import read_picture
from liif.pipeline import Background, prefetch
from liif.video.reader import open_clip
from liif.video.writer import open_frame_writer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A small LIIF with seeded weights, and its checkpoint for the command line."""
    torch.manual_seed(0)
    model = liif.make(SMALL["liif"]).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    liif.save_checkpoint(model, path)
    return model, path


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    """``liif upscale ARGS`` in this process: the exit code and the stderr lines."""
    code, err = run_cli_stderr(capsys, *args)
    return code, err.splitlines()


def run_cli_stderr(capsys, *args: str) -> tuple[int, str]:
    """``liif upscale ARGS`` in this process: the exit code and stderr as written (progress bars and all)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", *map(str, args)])
    return exit_info.value.code, capsys.readouterr().err


def stream_info(path: Path) -> tuple[tuple[int, int], Fraction, list[str]]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return ((video.codec_context.width, video.codec_context.height), video.average_rate,
                [s.type for s in container.streams])


def test_lossless_frames_equal_the_picture_upscale_of_each_frame_and_sound_is_copied(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    source = make_clip(tmp_path / "clip.mp4", frames=12, size=(64, 48))
    result = liif.upscale_video(source, tmp_path / "x.mkv", scale=1.5, codec="ffv1", model=model)
    assert (result.frames, result.size) == (12, (96, 72))
    assert stream_info(tmp_path / "x.mkv") == ((96, 72), 24, ["video", "audio"])
    inputs, outputs = decoded_frames(source), decoded_frames(tmp_path / "x.mkv")
    assert len(outputs) == 12
    for (frame, _), (rendered, _) in zip(inputs, outputs):
        assert np.array_equal(rendered, liif.upscale(frame, scale=1.5, model=model))
    # Matroska shifts every stream by the AAC priming (negative audio pts) and counts milliseconds: the frames
    # keep their spacing.
    start = outputs[0][1]
    assert all(abs(t - start - k / 24) <= 0.001 for k, (_, t) in enumerate(outputs))
    assert packets(tmp_path / "x.mkv", "audio") == packets(source, "audio")


def test_variable_frame_rate_timestamps_and_audio_are_kept(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    source = make_clip(tmp_path / "vfr.mkv", frames=12, durations_ms=[40, 80, 120])
    code, _ = run_cli(capsys, source, "--size", "32x24", "-o", tmp_path / "out.mp4", "--model", weights, "-q")
    assert code == 0
    assert stream_info(tmp_path / "out.mp4")[0] == (32, 24)
    assert [round(t, 3) for _, t in decoded_frames(tmp_path / "out.mp4")] == \
        [round(t, 3) for _, t in decoded_frames(source)]
    assert packets(tmp_path / "out.mp4", "audio") == packets(source, "audio")


def test_a_variable_rate_video_lasts_as_long_as_its_input(tmp_path: Path, tiny) -> None:
    """The last frame shows until the input's declared end: the decoder gave it the duration of the packet it came
    in, which B-frames make another frame's (here 120 ms where the MP4 declares 42: 0.48 s for 0.40 s)."""
    model, _ = tiny
    for name in ("vfr.mp4", "vfr.mkv"):
        source = make_clip(tmp_path / name, frames=6, size=(32, 24), durations_ms=[40, 80, 120], audio=False)
        for out in ("out.mp4", "out.mkv"):
            liif.upscale_video(source, tmp_path / out, scale=1, model=model, overwrite=True)
            with av.open(str(source)) as before, av.open(str(tmp_path / out)) as after:
                assert abs(after.duration - before.duration) <= 1000, (name, out)  # microseconds: Matroska's ms


def test_a_matroska_video_shorter_than_its_sound_or_subtitles_is_whole(tmp_path: Path, tiny) -> None:
    """FFmpeg gives a Matroska track the file's duration: 3 frames (0.125 s) beside subtitles to 0.45 s were
    'truncated' (exit code 1), and the last frame would have shown until 0.45 s."""
    model, _ = tiny
    source = make_clip(tmp_path / "short.mkv", frames=3, size=(32, 24), subtitles=True)
    with av.open(str(source)) as container:
        assert container.streams.video[0].duration * container.streams.video[0].time_base == Fraction(9, 20)
    assert liif.upscale_video(source, tmp_path / "out.mkv", scale=1, model=model).frames == 3
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert container.streams.video[0].metadata["DURATION"] == "00:00:00.125000000"


def test_a_video_that_starts_late_is_whole_and_keeps_its_times(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    late = make_clip(tmp_path / "late.mkv", frames=6, size=(32, 24), start=48)  # at 2 s; the sound from 0
    for name in ("late_x2.mkv", "late_x2.mp4"):
        assert liif.upscale_video(late, tmp_path / name, scale=2, model=model).frames == 6  # not "truncated"
        assert [t for _, t in decoded_frames(tmp_path / name)] == [t for _, t in decoded_frames(late)]
        assert packets(tmp_path / name, "audio") == packets(late, "audio")


def test_a_recording_whose_clock_runs_an_hour_in_starts_at_0(tmp_path: Path, tiny) -> None:
    """A TV recording's timestamps start where its broadcaster's clock was: the times were kept, and the MKV (what a
    .ts becomes) began with an hour of nothing before the 0.5 s clip. The output starts at 0, sound and picture
    still together."""
    model, _ = tiny
    source = make_clip(tmp_path / "tv.ts", frames=12, size=(32, 24), clock=3600)
    with av.open(str(source)) as container:
        assert container.start_time >= 3_599_000_000  # microseconds
        video, audio = container.streams.video[0], container.streams.audio[0]
        offset = video.start_time * video.time_base - audio.start_time * audio.time_base
    for name in ("tv.mkv", "tv.mp4"):
        liif.upscale_video(source, tmp_path / name, scale=1, model=model)
        with av.open(str(tmp_path / name)) as container:
            assert container.duration < 1_000_000, name
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert abs(video.start_time * video.time_base - audio.start_time * audio.time_base - offset) < 0.002, name
    whole = make_clip(tmp_path / "tv.mkv", frames=24, size=(32, 24), clock=3600)  # its times are said from 0 too
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    with pytest.raises(liif.LiifError, match=r"^the video is truncated: decoding stopped at frame \d+ \(0\.\d\d s\) "
                                             r"of 1\.00 s; "):
        liif.upscale_video(cut, tmp_path / "cut_x1.mkv", scale=1, model=model)


def test_rotation_region_and_odd_sizes(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    rotated = make_clip(tmp_path / "rotated.mp4", frames=12, audio=False, rotation=90)
    code, err = run_cli(capsys, rotated, "--scale", "0.5", "-o", tmp_path / "r.mp4", "--model", weights)
    assert code == 0 and stream_info(tmp_path / "r.mp4")[0] == (24, 32)  # shown upright: 48 wide, 64 tall
    with open_clip(rotated) as clip:  # the reader turns the frames upright (the model above is too small to tell)
        upright = np.rot90(frame_pixels(0, (64, 48)))
        first = next(clip.frames()).pixels.astype(int)
        assert np.abs(first - upright).mean() < 8 and np.abs(first - upright[::-1, ::-1]).mean() > 30
    assert any("frame/s" in line or "s/frame" in line for line in err)  # the progress bar: frames per second

    clip = make_clip(tmp_path / "clip.webm", frames=12, audio=False, codec="libvpx-vp9")
    code, err = run_cli(capsys, clip, "--region", "10,8,33,31", "-o", tmp_path / "crop.webm", "--model", weights,
                        "-q", "--scale", "1")
    assert code == 0 and stream_info(tmp_path / "crop.webm")[0] == (24, 24)
    assert err == [f"liif upscale: note: {clip}: the output 23x23 is rounded to 24x24: yuv420p needs even sides "
                   f"(a 4:4:4 --pix-fmt such as yuv444p keeps odd ones)"]
    code, err = run_cli(capsys, clip, "--region", "10,8,33,31", "--scale", "1", "-o", tmp_path / "odd.mkv",
                        "--model", weights, "-q", "--pix-fmt", "yuv444p")
    assert code == 0 and err == [] and stream_info(tmp_path / "odd.mkv")[0] == (23, 23)


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_every_turn_and_mirroring_of_the_display_matrix_is_shown_as_players_show_it(tmp_path: Path, rotation,
                                                                                    mirrored) -> None:
    """A display matrix turns the frames counter-clockwise, then may mirror them (a phone's front camera): a mirrored
    one was read as its rotation alone, a mirror without a turn as a half turn (upside down)."""
    size = (16, 8)
    clip = make_clip(tmp_path / "turned.mov", frames=1, size=size, audio=False, codec="png", pix_fmt="rgb24",
                     rotation=rotation, mirrored=mirrored)
    shown = np.rot90(frame_pixels(0, size), rotation // 90)
    shown = shown[:, ::-1] if mirrored else shown
    with open_clip(clip) as opened:
        assert opened.info.size == shown.shape[1::-1]
        assert np.array_equal(next(opened.frames()).pixels, shown)  # PNG in MOV: lossless


def combing(pixels: np.ndarray) -> float:
    """How far each row of ``pixels`` is from the mean of the rows about it: a combed frame's moving edges."""
    rows = pixels.astype(float)
    return float(np.abs(rows[1:-1] - (rows[:-2] + rows[2:]) / 2).mean())


def test_interlaced_video_is_deinterlaced_keeping_its_frames_and_times(tmp_path: Path) -> None:
    """The two fields of a TV or camcorder frame, a moment apart, were upscaled as one picture: every moving edge
    combed. Each frame is made of its first field (FFmpeg's bwdif), at its own time."""
    source = interlaced_clip(tmp_path / "tv.mkv")
    raw = decoded_frames(source)
    with open_clip(source) as clip:
        frames = list(clip.frames())
    assert [frame.pts for frame in frames] == [round(time * 1000) for _, time in raw]  # Matroska's ms
    assert all(combing(pixels) > 20 for pixels, _ in raw)
    assert all(combing(frame.pixels) < 2 for frame in frames)
    for frame, (pixels, _) in zip(frames, raw):  # the first field's rows (the bottom one here), as they were
        assert np.abs(frame.pixels[1::2].astype(int) - pixels[1::2]).mean() < 2


def test_a_video_interlaced_after_a_progressive_start_is_deinterlaced_from_there(tmp_path: Path) -> None:
    """Deinterlacing was decided by the first frame: a recording that begins progressive (a film, an advert) stayed
    combed to its end. Its progressive frames pass as they are, and its interlaced ones are deinterlaced."""
    source = interlaced_clip(tmp_path / "tv.mkv", frames=6, progressive=2)
    raw = decoded_frames(source)
    with open_clip(source) as clip:
        frames = list(clip.frames())
    assert [frame.pts for frame in frames] == [round(time * 1000) for _, time in raw]
    assert all(np.array_equal(frame.pixels, pixels) for frame, (pixels, _) in zip(frames[:2], raw))
    assert all(combing(pixels) > 20 for pixels, _ in raw[2:])
    assert all(combing(frame.pixels) < 2 for frame in frames[2:])


def test_anamorphic_video_keeps_its_display_shape(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    wide = make_clip(tmp_path / "wide.mp4", frames=3, size=(32, 24), audio=False, pixel_aspect=Fraction(4, 3))
    for name in ("x2.mp4", "x2.mkv"):  # shown 16:9 before and after, as FFmpeg's scale keeps it
        liif.upscale_video(wide, tmp_path / name, scale=2, model=model)
        with av.open(str(tmp_path / name)) as container:
            assert container.streams.video[0].sample_aspect_ratio == Fraction(4, 3), name
    liif.upscale_video(wide, tmp_path / "square.mp4", size=(64, 36), model=model)  # its display shape, in square pixels
    with av.open(str(tmp_path / "square.mp4")) as container:
        assert container.streams.video[0].sample_aspect_ratio in (None, 1)
    upright = make_clip(tmp_path / "upright.mp4", frames=3, size=(32, 24), audio=False, rotation=90,
                        pixel_aspect=Fraction(4, 3))
    liif.upscale_video(upright, tmp_path / "upright_x2.mp4", scale=2, model=model)  # a quarter turn: 3:4 pixels
    with av.open(str(tmp_path / "upright_x2.mp4")) as container:
        assert container.streams.video[0].sample_aspect_ratio == Fraction(3, 4)


def test_a_pixel_aspect_ratio_the_output_cannot_hold_is_said(tmp_path: Path, tiny, capsys) -> None:
    """Matroska keeps a sample aspect ratio only in an H.264 or HEVC bitstream (PyAV cannot set its display size):
    an anamorphic clip written as FFV1, VP9 or AV1 MKV/WebM came out stretched without a word."""
    _, weights = tiny
    wide = make_clip(tmp_path / "wide.mp4", frames=2, size=(32, 24), audio=False, pixel_aspect=Fraction(4, 3))
    for name, codec, kept in (("x2.mkv", "ffv1", False), ("x2.webm", "vp9", False), ("x2.mp4", "ffv1", True),
                              ("h264.mkv", "h264", True)):
        code, err = run_cli(capsys, wide, "--scale", "2", "-o", tmp_path / name, "--codec", codec, "--model", weights,
                            "-q")
        with av.open(str(tmp_path / name)) as container:
            assert (container.streams.video[0].sample_aspect_ratio == Fraction(4, 3)) == kept, name
        encoder = {"ffv1": "ffv1", "vp9": "libvpx-vp9", "h264": "libx264"}[codec]
        assert (code, err) == (0, [] if kept else [
            f"liif upscale: note: {wide}: its pixel aspect ratio 4/3 is left out: a {Path(name).suffix} file keeps it "
            f"only in H.264 or HEVC video; write .mp4 to keep it with {encoder}"]), name


def timecodes(path: Path) -> dict[str, str]:
    """Each stream's timecode as FFmpeg's demuxer reports it, by stream type (Matroska's tag is TIMECODE)."""
    with av.open(str(path)) as container:
        return {s.type: value for s in container.streams for key, value in s.metadata.items()
                if key.lower() == "timecode"}


def test_hdr_video_keeps_its_colour_primaries_and_transfer(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    BT709, BT2020, HLG = 1, 9, 18  # FFmpeg's numbers

    def colour(path: Path) -> tuple[int, int, int]:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.color_primaries, frame.color_trc, frame.colorspace

    # A phone's HDR clip: the frames' RGB is BT.2020 light through HLG, and stays so; only the matrix between RGB
    # and YUV is the writer's own (BT.709)
    phone = make_clip(tmp_path / "hdr.mov", frames=3, size=(32, 24), pix_fmt="yuv420p10le",
                      colour=(BT2020, HLG, BT2020))
    liif.upscale_video(phone, tmp_path / "x2.mp4", scale=2, model=model, pix_fmt="yuv420p10le")
    assert colour(tmp_path / "x2.mp4") == (BT2020, HLG, BT709)
    liif.upscale_video(phone, tmp_path / "x2.mkv", scale=2, model=model, codec="ffv1")
    assert colour(tmp_path / "x2.mkv")[:2] == (BT2020, HLG)
    # a clip that declares nothing is taken for BT.709, as players take HD
    plain = make_clip(tmp_path / "plain.mp4", frames=3, size=(32, 24), audio=False)
    assert colour(plain)[:2] == (2, 2)  # unspecified
    liif.upscale_video(plain, tmp_path / "plain_x2.mp4", scale=2, model=model)
    assert colour(tmp_path / "plain_x2.mp4") == (BT709, BT709, BT709)


def test_a_10_bit_video_is_rendered_in_16_bits(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    # a smooth gray ramp in 10 bits (x264 at qp 0 is lossless), of which 8-bit frames would keep one level in four
    source = tmp_path / "ramp.mkv"
    ramp = np.repeat(np.linspace(0, 65535, 64).round().astype(np.uint16)[None, :, None], 48, axis=0)
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p10le"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.repeat(ramp, 3, axis=2), format="rgb48le")  # gray
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with open_clip(source) as clip:
        pixels = next(clip.frames()).pixels
    assert pixels.dtype == np.uint16 and clip.info.bits == 16
    assert len(np.unique(pixels[:, :, 1])) > 56  # ramp: 64 levels, 16 apart in 10 bits; 8 bits merge many
    liif.upscale_video(source, tmp_path / "x1.mkv", scale=1, model=model, codec="ffv1")  # lossless: gbrp16le, not bgr0
    rendered = liif.upscale(pixels, scale=1, model=model)  # the 16-bit frame's picture render
    assert rendered.dtype == np.uint16
    assert np.array_equal(decoded_frames(tmp_path / "x1.mkv", "rgb48le")[0][0], rendered)  # 16-bit RGB, lossless
    with pytest.warns(UserWarning, match=r"^its depth of more than 8 bits a channel is cut to 8: yuv420p holds 8 "
                                         r"\(pix_fmt yuv420p10le keeps 10 with H.264, HEVC or AV1, and codec ffv1 "
                                         r"keeps them all\)$"):
        liif.upscale_video(source, tmp_path / "x1.mp4", scale=1, model=model)
    for name in ("frames", "x1.gif"):
        liif.upscale_video(source, tmp_path / name, scale=1, model=model)
    with av.open(str(tmp_path / "x1.mp4")) as container:  # the default yuv420p: 8 bits
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert np.array_equal(read_picture(tmp_path / "frames" / "frame_00000.png").pixels, rendered)  # PNG: 16 bits
    with Image.open(tmp_path / "x1.gif") as gif:  # 8 bits
        assert gif.n_frames == 3


def test_a_camera_timecode_is_kept(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    source = make_clip(tmp_path / "camera.mov", frames=6, size=(32, 24), timecode="01:02:03:04")
    tmcd = {"video": "01:02:03:04", "data": "01:02:03:04"}  # the demuxer's view of a tmcd track
    assert timecodes(source) == tmcd
    for name in ("x2.mov", "x2.mp4"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the tmcd track is written again: nothing is left out
            liif.upscale_video(source, tmp_path / name, scale=2, model=model)
        assert timecodes(tmp_path / name) == tmcd, name
    liif.upscale_video(source, tmp_path / "x2.mkv", scale=2, model=model)
    assert timecodes(tmp_path / "x2.mkv") == {"video": "01:02:03:04"}  # a tag, as FFmpeg's CLI copies it
    liif.upscale_video(tmp_path / "x2.mkv", tmp_path / "back.mov", scale=1, model=model)  # the tag read back
    assert timecodes(tmp_path / "back.mov") == tmcd
    tagged = make_clip(tmp_path / "tagged.mkv", frames=3, audio=False, file_timecode="10:00:00:00")
    with open_clip(tagged) as clip:
        assert clip.info.timecode == "10:00:00:00"
    # a tag no muxer could write again (any tool may write Matroska's tags) is not a timecode: the clip still upscales
    odd = make_clip(tmp_path / "odd.mkv", frames=3, audio=False, file_timecode="ten o'clock")
    with open_clip(odd) as clip:
        assert clip.info.timecode is None
    assert liif.upscale_video(odd, tmp_path / "odd.mov", scale=2, model=model).frames == 3
    assert timecodes(tmp_path / "odd.mov") == {}


def test_track_languages_titles_and_flags_are_kept(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    DEFAULT, FORCED = av.stream.Disposition.default, av.stream.Disposition.forced
    plain = make_clip(tmp_path / "plain.mkv", frames=4, size=(32, 24), subtitles=True)
    # a film as mkvmerge leaves it: its title, each track's language and name, the default sound, forced subtitles,
    # and statistics of the video as it was encoded
    film = retagged(plain, tmp_path / "film.mkv", {"title": "Holiday", "ENCODER": "mkvmerge v80.0"},
                    {0: {"language": "eng", "title": "Picture", "BPS": "123456", "NUMBER_OF_FRAMES": "4"},
                     1: {"language": "fre", "title": "Commentaire"}, 2: {"language": "ger", "title": "Untertitel"}},
                    {0: DEFAULT, 1: DEFAULT, 2: FORCED})
    liif.upscale_video(film, tmp_path / "x2.mkv", scale=2, model=model)
    with av.open(str(tmp_path / "x2.mkv")) as container:
        assert container.metadata["title"] == "Holiday"
        assert not container.metadata["ENCODER"].startswith("mkvmerge")  # FFmpeg muxed it (read as such)
        video, sound, cues = container.streams
        assert (video.language, video.metadata.get("title")) == ("eng", "Picture")
        assert "BPS" not in video.metadata and "NUMBER_OF_FRAMES" not in video.metadata  # the old encoding's
        assert (sound.language, sound.metadata.get("title"), sound.disposition & DEFAULT) == ("fre", "Commentaire",
                                                                                             DEFAULT)
        assert (cues.language, cues.metadata.get("title"), cues.disposition & FORCED) == ("ger", "Untertitel", FORCED)
    # MP4 keeps the languages and the flags
    phone = retagged(make_clip(tmp_path / "plain.mp4", frames=4, size=(32, 24)), tmp_path / "phone.mp4", {},
                     {0: {"language": "eng"}, 1: {"language": "jpn"}}, {0: DEFAULT, 1: DEFAULT})
    liif.upscale_video(phone, tmp_path / "x2.mp4", scale=2, model=model)
    with av.open(str(tmp_path / "x2.mp4")) as container:
        assert [(s.language, s.disposition & DEFAULT) for s in container.streams] == [("eng", DEFAULT),
                                                                                       ("jpn", DEFAULT)]


def test_attached_fonts_go_with_the_subtitles_into_mkv_and_are_said_to_be_left_out_elsewhere(tmp_path: Path, tiny,
                                                                                               capsys) -> None:
    """An anime MKV's subtitles come with their fonts attached: they were dropped without a word."""
    _, weights = tiny
    font = b"\x00\x01\x00\x00" + bytes(range(256))
    subtitled = attached(make_clip(tmp_path / "subs.mkv", frames=3, size=(32, 24), subtitles=True),
                         tmp_path / "anime.mkv", "Font.ttf", "font/ttf", font)
    code, err = run_cli(capsys, subtitled, "--scale", "2", "-o", tmp_path / "out.mkv", "--model", weights, "-q")
    assert (code, err) == (0, [])
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert [s.type for s in container.streams] == ["video", "audio", "subtitle", "attachment"]
        copy = container.streams[3]
        assert (copy.metadata["filename"], copy.mimetype, copy.data) == ("Font.ttf", "font/ttf", font)
    plain = attached(make_clip(tmp_path / "plain.mkv", frames=3, size=(32, 24)), tmp_path / "fonts.mkv", "Font.ttf",
                     "font/ttf", font)
    code, err = run_cli(capsys, plain, "--scale", "2", "-o", tmp_path / "out.mp4", "--model", weights, "-q")
    assert (code, err) == (0, [f"liif upscale: note: {plain}: its attached files (Font.ttf) are left out: only .mkv "
                                f"holds them"])
    assert stream_info(tmp_path / "out.mp4")[2] == ["video", "audio"]


def test_camcorder_tv_and_flash_videos_are_read_and_written_as_mkv(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    (tmp_path / "in").mkdir()
    for name in ("camera.MTS", "tv.ts", "dvd.mpg", "web.flv"):  # AVCHD, a TV recording, MPEG-PS, Flash video
        make_clip(tmp_path / "in" / name, frames=3, size=(32, 24), audio=not name.endswith(".mpg"))
    for name in ("app.ts", "types.mts", "g.ts"):  # TypeScript, which shares the suffixes: no video, left alone
        (tmp_path / "in" / name).write_text("Generated: export const x = 1;\n" * 20 if name == "g.ts" else
                                            "export const x = 1;\n")
    code, err = run_cli(capsys, tmp_path / "in", "--scale", "2", "-o", tmp_path / "out", "--model", weights, "-q")
    assert (code, err) == (0, [])
    for name in ("camera", "tv", "dvd", "web"):
        out = tmp_path / "out" / f"{name}.mkv"
        sound = [] if name == "dvd" else ["audio"]  # Matroska holds MPEG-TS's ADTS sound as raw AAC, as FFmpeg does
        assert stream_info(out) == ((64, 48), 24, ["video", *sound]) and len(decoded_frames(out)) == 3, name


def test_sound_no_container_written_holds_is_left_out_with_a_note(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    # an old digital camera's AVI: Motion JPEG, and IMA ADPCM sound that neither Matroska nor MP4 holds
    source = make_clip(tmp_path / "camera.avi", frames=4, size=(32, 24), codec="mjpeg", pix_fmt="yuvj420p",
                       audio_codec="adpcm_ima_wav")
    code, err = run_cli(capsys, source, "--scale", "2", "--model", weights, "-q")
    assert (code, err) == (0, [f"liif upscale: note: {source}: its audio stream #1 (adpcm_ima_wav) is left out: "
                                f"none of .mp4, .m4v, .mov, .mkv, .webm holds it without re-encoding"])
    assert stream_info(tmp_path / "camera_liif.mkv") == ((64, 48), 24, ["video"])


def test_data_streams_are_said_to_be_left_out(tmp_path: Path, tiny, capsys) -> None:
    """A drone's KLV telemetry (MPEG-TS) was dropped without a word: no output container holds it."""
    _, weights = tiny
    source = make_clip(tmp_path / "drone.ts", frames=3, size=(32, 24), klv=True)
    with av.open(str(source)) as container:
        index = next(stream.index for stream in container.streams if stream.type == "data")
    code, err = run_cli(capsys, source, "--scale", "2", "-o", tmp_path / "x2.mkv", "--model", weights, "-q")
    assert (code, err) == (0, [f"liif upscale: note: {source}: its data stream #{index} (klv) is left out: the output "
                               f"holds its video, audio and subtitles"])
    assert stream_info(tmp_path / "x2.mkv") == ((64, 48), 24, ["video", "audio"])


def test_cover_art_listed_first_is_not_taken_for_the_video(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    source = make_clip(tmp_path / "covered.mp4", frames=6, size=(32, 24), cover=True)
    with av.open(str(source)) as container:  # FFmpeg lists the 32x32 cover picture as the first video stream
        assert [(s.type, s.codec_context.name) for s in container.streams] == \
            [("video", "png"), ("video", "h264"), ("audio", "aac")]
    with pytest.warns(UserWarning, match=r"^its cover art #0 \(png\) is left out: the output holds its video, audio "
                                         r"and subtitles$"):
        result = liif.upscale_video(source, tmp_path / "x2.mkv", scale=2, codec="ffv1", model=model)
    assert (result.frames, result.size) == (6, (64, 48))
    assert stream_info(tmp_path / "x2.mkv") == ((64, 48), 24, ["video", "audio"])  # the cover is not carried
    with av.open(str(source)) as container:
        inputs = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[1])]
    for frame, (rendered, _) in zip(inputs, decoded_frames(tmp_path / "x2.mkv"), strict=True):
        assert np.array_equal(rendered, liif.upscale(frame, scale=2, model=model))


def test_an_animated_gif_keeps_frames_durations_plays_and_transparency(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    frames = [Image.fromarray(np.dstack([frame_pixels(i, (32, 24)), np.full((24, 32), 255 * (i % 2), np.uint8)]))
              for i in range(12)]
    durations = [40, 60, 80] * 4
    with open_frame_writer(tmp_path / "anim.gif", (32, 24), Fraction(20), plays=3) as writer:
        for frame, duration in zip(frames, durations):
            writer.write(np.asarray(frame), duration_ms=duration)
    # (bicubic alpha: the small model's random weights would make every frame half transparent)
    code, _ = run_cli(capsys, tmp_path / "anim.gif", "--scale", "2", "-o", f"{tmp_path}/out/", "--model", weights, "-q",
                      "--alpha", "bicubic")
    assert code == 0
    with Image.open(tmp_path / "out" / "anim.gif") as image:
        assert (image.n_frames, image.size, image.info["loop"]) == (12, (64, 48), 2)  # 2 repeats: 3 plays
        for index in range(12):
            image.seek(index)
            assert image.info["duration"] == durations[index]
            alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
            assert (alpha == 255 * (index % 2)).all()


def test_encoder_settings_for_an_animation_or_frames_are_refused_not_ignored(tmp_path: Path, tiny, capsys) -> None:
    """--crf and --codec were dropped without a word for a GIF, WebP or APNG output, --pix-fmt for PNG frames."""
    _, weights = tiny
    with open_frame_writer(tmp_path / "anim.gif", (16, 12), Fraction(10)) as writer:
        for index in range(2):
            writer.write(frame_pixels(index, (16, 12)))
    for output, given in (("x.webp", ["--codec", "vp9", "--crf", "20"]), ("frames", ["--pix-fmt", "yuv444p"])):
        code, err = run_cli(capsys, tmp_path / "anim.gif", "--scale", "2", "-o", tmp_path / output, "--model",
                            weights, "-q", *given)
        what = "a .webp animation: leave them out" if output == "x.webp" else "a folder of PNG frames: leave it out"
        assert (code, err) == (1, [f"liif upscale: error: {tmp_path / 'anim.gif'}: {tmp_path / output}: "
                                   f"{' and '.join(given[::2])} {'are' if len(given) > 2 else 'is'} for video outputs "
                                   f"(.mp4, .m4v, .mov, .mkv, .webm), not {what}"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["anim.gif"]


def test_transparency_a_video_cannot_hold_is_said_to_be_left_out(tmp_path: Path, tiny, capsys) -> None:
    """A transparent GIF to MP4 lost its alpha without a word (yuv420p holds none); VP9's yuva420p keeps it."""
    _, weights = tiny
    half = np.dstack([frame_pixels(0, (16, 12)), np.full((12, 16), 255, np.uint8)])
    half[:, :8, 3] = 0
    with open_frame_writer(tmp_path / "sticker.gif", (16, 12), Fraction(10)) as writer:
        for _ in range(2):
            writer.write(half)
    code, err = run_cli(capsys, tmp_path / "sticker.gif", "--scale", "2", "-o", tmp_path / "sticker.mp4", "--model",
                        weights, "-q", "--alpha", "bicubic")
    assert (code, err) == (0, [f"liif upscale: note: {tmp_path / 'sticker.gif'}: its transparency is left out: yuv420p "
                                f"has no alpha (VP9 keeps it with --pix-fmt yuva420p, and --codec ffv1, an "
                                f"animation or PNG frames keep it)"])
    code, err = run_cli(capsys, tmp_path / "sticker.gif", "--scale", "2", "-o", tmp_path / "sticker.webm", "--model",
                        weights, "-q", "--alpha", "bicubic", "--pix-fmt", "yuva420p")
    assert (code, err) == (0, [])
    with av.open(str(tmp_path / "sticker.webm")) as container:
        assert container.streams.video[0].metadata["alpha_mode"] == "1"


def webm_sticker(path: Path) -> np.ndarray:
    """Write a WebM sticker (VP9 with alpha) of two 16x12 frames, transparent on their left half; the frame."""
    half = np.dstack([frame_pixels(0, (16, 12)), np.full((12, 16), 255, np.uint8)])
    half[:, :8, 3] = 0
    with open_frame_writer(path, (16, 12), Fraction(10), pix_fmt="yuva420p") as writer:
        for _ in range(2):
            writer.write(half)
    return half


def test_a_transparent_webm_keeps_its_transparency(tmp_path: Path, tiny) -> None:
    """A WebM sticker stores VP9's alpha beside the frames, which FFmpeg's own decoder drops: it came out opaque."""
    model, _ = tiny
    half = webm_sticker(tmp_path / "sticker.webm")
    with open_clip(tmp_path / "sticker.webm") as clip:
        assert clip.info.alpha
        assert all(np.array_equal(frame.pixels[:, :, 3], half[:, :, 3]) for frame in clip.frames())
    liif.upscale_video(tmp_path / "sticker.webm", tmp_path / "sticker.gif", scale=2, model=model, alpha="bicubic")
    with Image.open(tmp_path / "sticker.gif") as image:
        alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
        assert (alpha[:, :15] == 0).all() and (alpha[:, 17:] == 255).all()
    with av.open(str(tmp_path / "sticker.webm")) as container:  # (alpha_mode describes the encoding: not copied)
        assert {key.lower() for key in container.streams.video[0].metadata} == {"alpha_mode", "duration"}
    with pytest.warns(UserWarning, match="^its transparency is left out: yuv420p has no alpha"):
        liif.upscale_video(tmp_path / "sticker.webm", tmp_path / "opaque.webm", scale=2, model=model, alpha="bicubic")
    with av.open(str(tmp_path / "opaque.webm")) as container:
        assert "alpha_mode" not in {key.lower() for key in container.streams.video[0].metadata}


def test_ffv1_keeps_the_transparency_of_the_frames(tmp_path: Path, tiny) -> None:
    """FFV1, the lossless choice, wrote bgr0 and dropped the frames' alpha: it writes bgra, which is read back."""
    model, _ = tiny
    webm_sticker(tmp_path / "sticker.webm")
    with open_clip(tmp_path / "sticker.webm") as clip:
        expected = liif.upscale(next(clip.frames()).pixels, scale=2, model=model, alpha="bicubic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note of transparency left out
        liif.upscale_video(tmp_path / "sticker.webm", tmp_path / "x2.mkv", scale=2, model=model, alpha="bicubic",
                           codec="ffv1")
    with av.open(str(tmp_path / "x2.mkv")) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "bgra"
    with open_clip(tmp_path / "x2.mkv") as clip:  # a format with alpha is read with it
        assert clip.info.alpha
        assert all(np.array_equal(frame.pixels, expected) for frame in clip.frames())


def test_a_gif_of_one_hundredth_delays_plays_as_browsers_play_it(tmp_path: Path, tiny) -> None:
    """Browsers and FFmpeg show a GIF frame of delay 0 or 1 hundredth for 100 ms: read as 10 ms, such a GIF ran ten
    times as fast as a video or a WebP. A delay of 2 hundredths is its own."""
    model, _ = tiny
    frames = [Image.fromarray(frame_pixels(i, (8, 6))) for i in range(4)]
    frames[0].save(tmp_path / "fast.gif", save_all=True, append_images=frames[1:], duration=[10, 0, 20, 10], loop=0)
    with open_clip(tmp_path / "fast.gif") as clip:
        assert [frame.duration_ms for frame in clip.frames()] == [100, 100, 20, 100]
    liif.upscale_video(tmp_path / "fast.gif", tmp_path / "fast.webp", scale=2, model=model)
    with Image.open(tmp_path / "fast.webp") as image:
        shown = []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()
            shown.append(image.info["duration"])
        assert shown == [100, 100, 20, 100]


def test_the_frame_count_of_a_gif_is_that_of_its_frames_shown(tmp_path: Path, tiny) -> None:
    """A 60 fps video to a GIF drops the frames browsers would stretch; the count said the video's frames were all
    written."""
    model, _ = tiny
    source = make_clip(tmp_path / "fast.mp4", frames=12, size=(16, 12), rate=60, audio=False)
    result = liif.upscale_video(source, tmp_path / "fast.gif", scale=2, model=model)
    with Image.open(tmp_path / "fast.gif") as image:
        assert result.frames == image.n_frames == 8


def test_play_counts_convert_between_gif_webp_and_apng(tmp_path: Path, tiny) -> None:
    # Pillow's loop is each format's own field: a GIF's counts the repeats after the first play (no field: one
    # play), WebP's and APNG's count every play.
    model, _ = tiny
    frames = [Image.fromarray(frame_pixels(i, (8, 6))) for i in range(2)]
    cases = [("gif", {"loop": 2}, {"webp": 3, "png": 3, "gif": 2}),  # 3 plays
             ("gif", {}, {"webp": 1, "png": 1, "gif": None}),  # 1 play
             ("gif", {"loop": 0}, {"webp": 0, "png": 0}),  # forever
             ("gif", {"loop": 65535}, {"webp": 65535, "png": 65535}),  # 65536 plays: more than WebP, APNG count
             ("webp", {"loop": 1}, {"gif": None, "png": 1}),
             ("webp", {"loop": 4}, {"gif": 3}),
             ("png", {"loop": 2}, {"gif": 1, "webp": 2}),
             ("png", {"loop": 1}, {"gif": None})]
    for index, (kind, loop, expected) in enumerate(cases):
        source = tmp_path / f"in{index}.{kind}"
        frames[0].save(source, save_all=True, append_images=frames[1:], duration=100, **loop)
        for suffix, count in expected.items():
            out = tmp_path / f"out{index}.{suffix}"
            liif.upscale_video(source, out, scale=2, model=model)
            with Image.open(out) as image:
                assert (image.n_frames, image.info.get("loop")) == (2, count), (source.name, loop, out.name)


def test_a_truncated_clip_gives_the_frames_before_the_cut_and_one_line(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    whole = make_clip(tmp_path / "whole.mkv", frames=24)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    code, err = run_cli(capsys, cut, "--size", "32x24", "-o", tmp_path / "out.mkv", "--model", weights, "-q")
    written = len(decoded_frames(tmp_path / "out.mkv"))
    assert code == 1 and 0 < written < 24
    assert len(err) == 1 and re.fullmatch(
        rf"liif upscale: error: {re.escape(str(cut))}: the video is truncated: decoding stopped at frame {written} "
        rf"\(0\.\d\d s\) of 1\.00 s; the {written} frames before it were written to "
        rf"{re.escape(str(tmp_path / 'out.mkv'))}", err[0]), err


def test_a_clip_whose_last_packet_is_cut_short_is_truncated_not_whole(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:  # the index before the data
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        for index in range(24):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, (32, 24)), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:-8])  # into the last packet: frame threads swallow its decoding error
    with pytest.raises(liif.LiifError, match=r"^the video is truncated: decoding stopped at frame 2\d \(0\.\d\d s\) "
                                             r"of 1\.00 s; the 2\d frames before it were written to "):
        liif.upscale_video(cut, tmp_path / "out.mkv", scale=1, model=model)
    assert 20 <= len(decoded_frames(tmp_path / "out.mkv")) < 24


def test_bad_videos_and_options_are_one_line_errors(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    sound = tmp_path / "sound.mkv"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    clip = make_clip(tmp_path / "clip.mp4", frames=12, audio=False)
    cover_only = make_clip(tmp_path / "cover_only.mp4", cover=True, video=False)  # a song with its cover
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    cases = [
        ([sound, "--scale", "2"], f"{sound}: no video stream in it (it holds audio)"),
        ([cover_only, "--scale", "2"], f"{cover_only}: no video stream in it (it holds audio, cover art)"),
        ([tmp_path / "junk.mp4", "--scale", "2"], f"{tmp_path / 'junk.mp4'}: cannot read it as a video, it may be "
                                                   f"truncated or corrupt (Invalid data found when processing input)"),
        ([clip, "--scale", "2", "--codec", "nonesuch"], f"{clip}: this PyAV build"),
        ([clip, "--scale", "2", "--max-pixels", "1000"], f"{clip}: the output would be 128x96 = 0.0 MP, above"),
        ([clip, "--scale", "2", "--crf", "99"], f"{clip}: --crf must be 0 to 63"),
    ]
    for args, start in cases:
        code, err = run_cli(capsys, *args, "-o", f"{tmp_path}/out/", "--model", weights, "-q")
        assert code == 1 and len(err) == 1 and err[0].startswith(f"liif upscale: error: {start}"), err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_in_a_batch_a_clips_frame_bar_is_cleared_beneath_the_files_bar(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    inputs = tmp_path / "in"
    inputs.mkdir()
    make_clip(inputs / "a.mp4", frames=6, audio=False)
    Image.fromarray(frame_pixels(0, (64, 48))).save(inputs / "b.png")
    make_clip(inputs / "c.mkv", frames=6, audio=False)
    code, err = run_cli_stderr(capsys, inputs, "--scale", "0.5", "-o", tmp_path / "out", "--model", weights)
    assert code == 0
    bar, summary = screen(err)
    assert files_bar(bar, 3), err
    assert summary.startswith("liif upscale: 3 written, 0 failed")
    for name, unit in (("a.mp4", "frame/s"), ("b.png", "px/s"), ("c.mkv", "frame/s")):  # drawn beneath it, then cleared
        assert re.search(rf"\n\r{re.escape(name)}: +\d+%\|[^\r\n]*{unit}\]\x1b\[A", err), (name, err)


def test_a_clips_bar_ends_full_when_its_frame_count_was_an_estimate(tmp_path: Path, tiny, capsys) -> None:
    _, weights = tiny
    # Matroska counts no frames: the bar's total is estimated from the duration and the rate, here 6 for 5 frames
    source = make_clip(tmp_path / "vfr.mkv", frames=5, durations_ms=[40, 80, 33], audio=False)
    with open_clip(source) as clip:
        assert clip.info.frames == 6
    code, err = run_cli_stderr(capsys, source, "--scale", "0.5", "-o", tmp_path / "out.mkv", "--model", weights)
    assert code == 0
    bar, summary = screen(err)
    assert re.fullmatch(r"vfr\.mkv: 100%\|.+\| 5/5 \[.*frame/s\]", bar), err
    assert summary.startswith("liif upscale: 1 written, 0 failed")


def test_reading_an_animations_frames_before_rendering_shows_a_bar(tmp_path: Path, tiny, capsys) -> None:
    """An animation's frames are all decoded once for their durations and transparency before the first is rendered:
    a long one showed nothing for that while. A bar counts them, and is cleared for the rendering's."""
    _, weights = tiny
    frames = [Image.fromarray(frame_pixels(i, (16, 12))) for i in range(5)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    code, err = run_cli_stderr(capsys, tmp_path / "anim.gif", "--scale", "2", "-o", tmp_path / "out.gif",
                               "--model", weights)
    assert code == 0
    assert re.search(r"reading anim\.gif:   0%\|.*\| 0/5 ", err), err
    bar, summary = screen(err)
    assert re.fullmatch(r"anim\.gif: 100%\|.+\| 5/5 \[.*frame/s\]", bar), err
    assert summary.startswith("liif upscale: 1 written, 0 failed")


def test_an_interrupted_run_leaves_nothing_and_skip_existing_finishes_the_batch(tmp_path: Path, tiny, capsys,
                                                                                monkeypatch) -> None:
    _, weights = tiny
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.mp4", "b.mkv"):
        make_clip(inputs / name, frames=12, audio=name == "a.mp4")
    import liif.video.upscale as video_upscale
    real, calls = video_upscale.render_pictures, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 15:  # in the second clip
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(video_upscale, "render_pictures", interrupted)
    code, _ = run_cli(capsys, inputs, "--size", "32x24", "-o", tmp_path / "out", "--model", weights, "-q")
    assert code == 130
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4"]  # no temporary, no half of b.mkv
    monkeypatch.setattr(video_upscale, "render_pictures", real)
    code, err = run_cli(capsys, inputs, "--size", "32x24", "-o", tmp_path / "out", "--model", weights,
                        "--skip-existing")
    assert code == 0 and "1 written, 1 skipped (existing), 0 failed" in err[-1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "b.mkv"]
    assert len(decoded_frames(tmp_path / "out" / "b.mkv")) == 12


def test_batches_of_frames_render_like_single_frames(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    source = make_clip(tmp_path / "clip.mkv", frames=12, audio=False)
    liif.upscale_video(source, tmp_path / "one", size=(40, 30), model=model, batch=1)
    liif.upscale_video(source, tmp_path / "three", size=(40, 30), model=model, batch=3)
    for name in sorted(p.name for p in (tmp_path / "one").iterdir()):
        one = np.asarray(Image.open(tmp_path / "one" / name), dtype=int)
        three = np.asarray(Image.open(tmp_path / "three" / name), dtype=int)
        assert np.abs(one - three).max() <= 1  # float sums in another order: at most one level after truncation
    assert len(list((tmp_path / "three").iterdir())) == 12


@pytest.mark.parametrize("batch", [0, 2.5, "4"])
def test_a_batch_that_is_no_count_of_frames_is_refused(tmp_path: Path, tiny, batch) -> None:
    """As --batch is: 2.5 would gather every frame into one model call, "4" fail in a comparison."""
    source = make_clip(tmp_path / "clip.mkv", frames=2, audio=False)
    with pytest.raises(liif.LiifError, match=f"^batch must be an int >= 1, got {batch!r}$"):
        liif.upscale_video(source, tmp_path / "out", scale=2, model=tiny[0], batch=batch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]


def test_an_unknown_alpha_mode_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    """It was refused at the first frame, once the model had loaded and the writer had opened."""
    source = make_clip(tmp_path / "clip.mkv", frames=2, audio=False)
    with pytest.raises(liif.LiifError, match=r"^unknown alpha mode 'keep'; use model or bicubic$"):
        liif.upscale_video(source, tmp_path / "out", scale=2, alpha="keep", model=tmp_path / "absent.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]


@pytest.mark.parametrize("max_pixels", [float("nan"), "1000"])
def test_max_pixels_that_counts_no_pixels_is_refused_naming_it(tmp_path: Path, tiny, max_pixels) -> None:
    source = make_clip(tmp_path / "clip.mkv", frames=2, audio=False)
    with pytest.raises(liif.LiifError, match="^max_pixels must be a number >= 1, got "):
        liif.upscale_video(source, tmp_path / "out", scale=2, model=tiny[0], max_pixels=max_pixels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]


def test_the_pipeline_is_bounded_and_passes_errors_on() -> None:
    produced = []

    def numbers():
        for n in range(100):
            produced.append(n)
            yield n

    stream = prefetch(numbers(), depth=3)
    assert next(stream) == 0
    threading.Event().wait(0.3)
    assert len(produced) <= 5  # the one taken, three queued, one waiting to be queued
    stream.close()

    def failing():
        yield 1
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        list(prefetch(failing(), depth=2))
    seen = []
    background = Background(lambda n: seen.append(n) if n < 3 else 1 / 0, depth=2)
    with pytest.raises(ZeroDivisionError):
        for n in range(10):
            background.put(n)
            threading.Event().wait(0.01)
        background.join()
    background.stop()
    assert seen == [0, 1, 2]


def test_damaged_clips_end_in_an_output_or_a_one_line_error(tmp_path: Path, tiny) -> None:
    model, _ = tiny
    sources = [make_clip(tmp_path / "seed.mkv", frames=12, size=(32, 24)),
               make_clip(tmp_path / "seed.mp4", frames=12, size=(32, 24))]
    with open_frame_writer(tmp_path / "seed.gif", (32, 24), Fraction(10)) as writer:
        for index in range(4):
            writer.write(frame_pixels(index, (32, 24)))
    sources.append(tmp_path / "seed.gif")
    rng = np.random.default_rng(0)
    outcomes = []
    for source in sources:
        data = source.read_bytes()
        for trial in range(6):
            damaged = bytearray(data[:int(len(data) * rng.uniform(0.3, 1.0))] if trial % 2 else data)
            for spot in rng.integers(0, len(damaged), size=8):
                damaged[spot] ^= 1 << int(rng.integers(0, 8))
            path = tmp_path / f"damaged{trial}{source.suffix}"
            path.write_bytes(bytes(damaged))
            out = tmp_path / f"out{trial}{source.suffix}"
            try:
                with warnings.catch_warnings(record=True) as notes:  # a damaged sound stream is left out, said so
                    warnings.simplefilter("always")
                    result = liif.upscale_video(path, out, size=(32, 24), model=model, overwrite=True)
                outcomes.append("written")
                assert result.frames >= 1 and out.is_file()
                assert all("\n" not in str(note.message) for note in notes)
            except liif.LiifError as exc:
                outcomes.append("error")
                assert "\n" not in str(exc)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".liif-")]
    assert "error" in outcomes and "written" in outcomes, outcomes


def test_a_killed_run_leaves_no_output_and_its_leftover_goes_with_the_next_write(tmp_path: Path, tiny) -> None:
    _, weights = tiny
    source = make_clip(tmp_path / "clip.mp4", frames=24, size=(64, 48))
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "liif", "upscale", str(source), "--scale", "2", "-o", str(out / "clip.mp4"),
               "--model", str(weights), "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".liif-") for p in out.iterdir()) and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before it was killed"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".liif-")  # the temporary file only, never out/clip.mp4
    liif.upscale_video(source, out / "clip.mp4", size=(32, 24), model=tiny[0])
    assert [p.name for p in out.iterdir()] == ["clip.mp4"]


def test_an_animation_gone_after_opening_stops_at_its_first_frame(tmp_path: Path) -> None:
    from liif.video.reader import DecodeStopped

    with open_frame_writer(tmp_path / "anim.gif", (32, 24), Fraction(10)) as writer:
        for index in range(3):
            writer.write(frame_pixels(index, (32, 24)))
    with open_clip(tmp_path / "anim.gif") as clip:
        (tmp_path / "anim.gif").unlink()
        with pytest.raises(DecodeStopped, match=r"^decoding stopped at frame 0 \(0.00 s\): .*No such file"):
            next(iter(clip.frames()))
