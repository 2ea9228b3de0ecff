"""liif.video.writer: every output kind, timestamps, copied streams, atomic rename, refusals."""

from __future__ import annotations

import os
import re
import stat
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from clips import box_spans, decoded_frames, frame_pixels, make_clip, packets
from liif.errors import LiifError
from liif.video.writer import open_frame_writer

SIZE = (64, 48)
FRAMES = [frame_pixels(i, SIZE) for i in range(12)]


def write_all(path: Path, frames=FRAMES, rate=Fraction(24), **options) -> None:
    with open_frame_writer(path, (frames[0].shape[1], frames[0].shape[0]), rate, **options) as writer:
        for frame in frames:
            writer.write(frame)


@pytest.mark.parametrize("name, codec, pix_fmt", [("a.mp4", None, "yuv420p"), ("a.mov", "h264", "yuv420p"),
                                                  ("a.mkv", None, "yuv420p"), ("a.webm", None, "yuv420p"),
                                                  ("a.mkv", "av1", "yuv420p"), ("a.mkv", "ffv1", "bgr0")])
def test_videos_keep_frame_count_rate_size_and_codec(tmp_path: Path, name, codec, pix_fmt) -> None:
    path = tmp_path / name
    write_all(path, codec=codec)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        expected = {None: {".webm": "vp9"}.get(path.suffix, "h264"), "h264": "h264", "av1": "av1", "ffv1": "ffv1"}
        assert stream.codec_context.name in (expected[codec], "libdav1d")
        assert (stream.codec_context.width, stream.codec_context.height) == SIZE
        assert stream.codec_context.pix_fmt == pix_fmt
        assert stream.average_rate == 24
    frames = decoded_frames(path)
    assert len(frames) == 12
    assert [round(t * 24) for _, t in frames] == list(range(12))
    # lossy codecs stay close to the frames; ffv1 is exact
    errors = [np.abs(got.astype(int) - want).mean() for (got, _), want in zip(frames, FRAMES)]
    assert max(errors) == 0 if codec == "ffv1" else max(errors) < 12


def test_prores_gets_a_pixel_format_it_takes_by_default(tmp_path: Path) -> None:
    """--codec prores with no --pix-fmt was refused (ProRes takes no yuv420p): it gets ProRes 422's yuv422p10le, and
    ProRes 4444's yuva444p10le for frames with transparency, which it keeps."""
    write_all(tmp_path / "a.mov", codec="prores")
    with av.open(str(tmp_path / "a.mov")) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv422p10le"
    frames = decoded_frames(tmp_path / "a.mov")
    assert len(frames) == 12  # close to the frames, as the other lossy codecs are (4:2:2 halves the ramps' colour)
    assert max(np.abs(got.astype(int) - want).mean() for (got, _), want in zip(frames, FRAMES)) < 12
    clear = [np.dstack([frame, np.full(frame.shape[:2], 255 * (index % 2), np.uint8)])
             for index, frame in enumerate(FRAMES[:2])]
    write_all(tmp_path / "b.mov", clear, codec="prores", alpha=True)
    with av.open(str(tmp_path / "b.mov")) as container:
        assert container.streams.video[0].codec_context.pix_fmt.startswith("yuva444p")  # ProRes 4444 decodes as 12-bit
    assert [pixels[:, :, 3].mean() for pixels, _ in decoded_frames(tmp_path / "b.mov", "rgba")] == [0, 255]
    # which has no quality or speed setting: they were ignored without a word
    for settings, named in (({"crf": 20}, "crf"), ({"preset": "slow"}, "preset"), ({"crf": 9, "preset": "1"},
                                                                                    "crf or preset")):
        with pytest.raises(LiifError, match=f"^prores takes no {named}: leave (it|them) out$"):
            open_frame_writer(tmp_path / "c.mov", SIZE, Fraction(24), codec="prores", **settings)
    # and whose odd sides need a 4:4:4 format it takes: yuv444p, which the message named, it does not
    with pytest.raises(LiifError, match=r"^yuv422p10le halves the colour resolution, so the width must be even; the "
                                        r"frames are 65x48 \(choose an even size, or a 4:4:4 pixel format such as "
                                        r"yuv444p10le\)$"):
        open_frame_writer(tmp_path / "d.mov", (65, 48), Fraction(24), codec="prores")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mov", "b.mov"]


@pytest.mark.parametrize("rate,kept", [(29.97, Fraction(2997, 100)), (23.976, Fraction(2997, 125)),
                                       (Fraction(30000, 1001), Fraction(30000, 1001)), (24, Fraction(24))])
def test_a_float_frame_rate_is_written_as_the_nearest_plain_fraction(tmp_path: Path, rate, kept) -> None:
    """29.97 as a float is a fraction over 2^48, which overflowed FFmpeg's rational: 'value too large to convert to
    int', where the zoom's frame rate was cut to a plain fraction, a rate given to the writer itself was not."""
    write_all(tmp_path / "a.mp4", FRAMES[:3], rate=rate)
    with av.open(str(tmp_path / "a.mp4")) as container:
        assert container.streams.video[0].average_rate == kept
    for wrong in (0, -24, float("nan"), float("inf"), "fast", None):
        with pytest.raises(LiifError, match=f"^the frame rate must be a number above 0, got {re.escape(repr(wrong))}$"):
            open_frame_writer(tmp_path / "b.mp4", SIZE, wrong)


def test_timestamps_in_a_time_base_are_kept(tmp_path: Path) -> None:
    path, times = tmp_path / "vfr.mkv", [0, 40, 120, 240, 280, 360]
    with open_frame_writer(path, SIZE, Fraction(25), codec="ffv1", time_base=Fraction(1, 1000)) as writer:
        for frame, pts in zip(FRAMES, times):
            writer.write(frame, pts=pts)
    assert [round(t * 1000) for _, t in decoded_frames(path)] == times


@pytest.mark.parametrize("name, codec", [("a.mp4", None), ("a.mov", "hevc"), ("a.mp4", "hevc"), ("a.mkv", "hevc"),
                                         ("a.mkv", "ffv1"), ("a.webm", None), ("a.mkv", "av1")])
def test_every_frame_keeps_its_duration_the_last_included(tmp_path: Path, name, codec) -> None:
    """An animation's closing pause (100 ms frames, then 1 s) lasts its second in a video: the encoders gave every
    packet one frame at the mean rate (4 fps), which cut the video to 0.75 s. (Noise makes x265 reorder these
    frames so that another one comes last in decoding order, where MP4 ends a track.)"""
    path, durations = tmp_path / name, [100, 100, 100, 100, 100, 1000]
    noise = np.random.default_rng(0).integers(0, 256, (len(durations), SIZE[1], SIZE[0], 3), dtype=np.uint8)
    with open_frame_writer(path, SIZE, Fraction(4), codec=codec, time_base=Fraction(1, 1000)) as writer:
        for frame, duration in zip(noise, durations):
            writer.write(frame, duration_ms=duration)
    with av.open(str(path)) as container:
        assert container.duration == 1_500_000  # microseconds
        assert [round(t * 1000) for _, t in decoded_frames(path)] == [0, 100, 200, 300, 400, 500]


@pytest.mark.parametrize("name, codec, pix_fmt", [("a.mp4", None, "gray"), ("a.mkv", None, "gray10le"),
                                                  ("a.mkv", "hevc", "gray"), ("a.mkv", "ffv1", "gray16le")])
def test_a_gray_video_keeps_its_contrast(tmp_path: Path, name, codec, pix_fmt) -> None:
    """swscale makes gray planes at full range (0-255); they were tagged limited (16-235), or left untagged, which
    reads as limited: x264's gray came back stretched, 32 as 18 and 226 as 244, and players stretch the others."""
    path, ramp = tmp_path / name, np.repeat(np.linspace(0, 255, SIZE[0]).astype(np.uint8), 3)
    write_all(path, [np.broadcast_to(ramp.reshape(1, SIZE[0], 3), (SIZE[1], SIZE[0], 3)).copy()] * 3,
              codec=codec, pix_fmt=pix_fmt)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.color_range == 2  # AVCOL_RANGE_JPEG: full
        assert np.abs(frame.to_ndarray(format="rgb24")[SIZE[1] // 2].astype(int) - ramp.reshape(-1, 3)).max() <= 3


def test_streams_are_copied_packet_for_packet(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mp4", frames=12)
    out = tmp_path / "out.mp4"
    write_all(out, copy_streams_from=source)
    assert packets(out, "audio") == packets(source, "audio") and len(packets(out, "audio")) > 2
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]


@pytest.mark.parametrize("name", ["a.mp4", "a.mov"])
def test_mp4_and_mov_put_their_index_first_to_play_as_they_download(tmp_path: Path, name) -> None:
    """FFmpeg writes the moov box (the index) last by default: a browser could not start the video until it had the
    whole file. It comes first, as -movflags +faststart puts it."""
    write_all(tmp_path / name, frames=FRAMES[:2], copy_streams_from=make_clip(tmp_path / "in.mp4", frames=2))
    data = (tmp_path / name).read_bytes()
    boxes = [data[start + 4:start + 8] for start, _ in box_spans(data, 0, len(data))]
    assert boxes.index(b"moov") < boxes.index(b"mdat")
    assert len(decoded_frames(tmp_path / name)) == 2 and len(packets(tmp_path / name, "audio")) > 1


@pytest.mark.parametrize("name", ["a.mp4", "a.mov"])
def test_hevc_in_mp4_and_mov_is_tagged_as_apple_plays_it(tmp_path: Path, name) -> None:
    """FFmpeg tags HEVC hev1 by default, which QuickTime, Safari and iOS refuse to play: it is tagged hvc1."""
    write_all(tmp_path / name, frames=FRAMES[:2], codec="hevc")
    with av.open(str(tmp_path / name)) as container:
        assert container.streams.video[0].codec_context.codec_tag == "hvc1"
    assert len(decoded_frames(tmp_path / name)) == 2


def test_a_drop_frame_timecode_becomes_a_tmcd_track(tmp_path: Path) -> None:
    write_all(tmp_path / "ntsc.mov", rate=Fraction(30000, 1001), timecode="10:00:00;02")
    with av.open(str(tmp_path / "ntsc.mov")) as container:
        assert [(s.type, s.metadata.get("timecode")) for s in container.streams] == \
            [("video", "10:00:00;02"), ("data", "10:00:00;02")]
    for timecode in ("garbage", "1:02:03:04", "01:62:03:04", 12):  # the muxer dropped a string, 12 failed in PyAV
        with pytest.raises(LiifError, match=rf"^a timecode is hours:minutes:seconds:frames .*, got {timecode!r}$"):
            open_frame_writer(tmp_path / "bad.mov", SIZE, Fraction(24), timecode=timecode)
    assert not (tmp_path / "bad.mov").exists()


def test_subtitles_are_copied_and_a_stream_the_container_cannot_hold_is_refused(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mkv", subtitles=True)
    write_all(tmp_path / "out.mkv", copy_streams_from=source)
    assert packets(tmp_path / "out.mkv", "subtitle") == packets(source, "subtitle") == [b"Hello", b"World"]
    assert packets(tmp_path / "out.mkv", "audio") == packets(source, "audio")
    with pytest.raises(LiifError, match=r"subtitle stream #2 \((srt|subrip)\) cannot be copied into .mp4 without "
                                         r"re-encoding; write \.mkv$"):
        open_frame_writer(tmp_path / "out.mp4", SIZE, Fraction(24), copy_streams_from=source)
    with pytest.raises(LiifError, match=r"audio stream #1 \(aac\) cannot be copied into .webm without re-encoding; "
                                         r"write \.mp4, \.m4v, \.mov or \.mkv$"):
        open_frame_writer(tmp_path / "out.webm", SIZE, Fraction(24), copy_streams_from=source)
    # a phone's or iTunes' MP4 subtitles (mov_text) go to MP4 or MOV, not to Matroska
    phone = make_clip(tmp_path / "phone.mp4", subtitles=True)
    write_all(tmp_path / "out.mov", copy_streams_from=phone)
    cues = [cue for cue in packets(tmp_path / "out.mov", "subtitle") if cue != b"\0\0"]  # the muxer's gap fillers
    assert cues == [b"\0\5Hello", b"\0\5World"]
    with pytest.raises(LiifError, match=r"subtitle stream #2 \(mov_text\) cannot be copied into .mkv without "
                                         r"re-encoding; write \.mp4, \.m4v or \.mov$"):
        open_frame_writer(tmp_path / "phone.mkv", SIZE, Fraction(24), copy_streams_from=phone)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "in.srt", "out.mkv", "out.mov", "phone.mp4"]


def test_gif_webp_and_apng_keep_durations_plays_and_transparency(tmp_path: Path) -> None:
    frames = [np.dstack([f, np.full(f.shape[:2], 255 if i % 2 else 0, np.uint8)]) for i, f in enumerate(FRAMES[:4])]
    durations = [50, 100, 150, 200]
    for name in ("a.gif", "a.webp", "a.png", "a.apng"):
        with open_frame_writer(tmp_path / name, SIZE, Fraction(10), plays=3) as writer:
            for frame, duration in zip(frames, durations):
                writer.write(frame, duration_ms=duration)
        with Image.open(tmp_path / name) as image:
            assert image.n_frames == 4, name
            assert image.info.get("loop") == (2 if name == "a.gif" else 3), name  # a GIF counts the repeats
            seen = []
            for index in range(4):
                image.seek(index)
                image.load()  # WebP sets a frame's duration when it decodes it
                seen.append(image.info["duration"])
                rgba = np.asarray(image.convert("RGBA"))
                assert (rgba[:, :, 3] == (255 if index % 2 else 0)).all(), (name, index)
            assert seen == durations, name


def test_a_gif_is_written_frame_by_frame(tmp_path: Path) -> None:
    """A GIF's frames were all held in memory until the end (Pillow writes an animation in one call): a long video to
    GIF could run out of memory. Each frame is on the disk once it is written."""
    noise = np.random.default_rng(0).integers(0, 256, (4, 96, 128, 3), dtype=np.uint8)  # frames LZW cannot shrink
    sizes = []
    with open_frame_writer(tmp_path / "a.gif", (128, 96), Fraction(10)) as writer:
        for frame in noise:
            writer.write(frame)
            sizes.append(writer.temporary.stat().st_size)  # each frame is written once the next gives its delay
    assert sizes[0] == 0 and all(after - before > 96 * 128 / 2 for before, after in zip(sizes[1:], sizes[2:]))
    with Image.open(tmp_path / "a.gif") as image:
        assert image.n_frames == 4


def test_an_apng_is_written_as_its_frames_come(tmp_path: Path) -> None:
    """A WebP's or APNG's frames were all held in memory until the end (Pillow writes an animation in one call): a
    long video to one could run out of memory. An APNG's frames are on the disk as they come (in FFmpeg's blocks)."""
    noise = np.random.default_rng(0).integers(0, 256, (12, 96, 128, 3), dtype=np.uint8)  # frames PNG cannot shrink
    with open_frame_writer(tmp_path / "a.png", (128, 96), Fraction(10)) as writer:
        for frame in noise:
            writer.write(frame)
        assert writer.temporary.stat().st_size > 4 * noise[0].nbytes
    with Image.open(tmp_path / "a.png") as image:
        assert image.n_frames == 12
        image.seek(11)
        assert np.array_equal(np.asarray(image.convert("RGB")), noise[11])


def test_a_gif_keeps_its_frame_rate_in_whole_hundredths(tmp_path: Path) -> None:
    """A GIF counts delays in hundredths of a second: 24 fps was 40 ms a frame, i.e. 25 fps, a clip 4% short."""
    write_all(tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as image:
        delays = []
        for index in range(image.n_frames):
            image.seek(index)
            delays.append(image.info["duration"])
    assert sum(delays) == 500 and set(delays) == {40, 50}  # 12 frames at 24 fps: half a second
    times = [time for _, time in decoded_frames(tmp_path / "a.gif")]
    assert [round(time * 100) for time in times] == [round(k * 100 / 24) for k in range(12)]  # on time, to 1/100 s


def test_a_gif_drops_frames_browsers_would_stretch_and_keeps_its_length(tmp_path: Path) -> None:
    """A 60 fps video made GIF delays of 10 ms, which browsers (and the reader) play as 100 ms: the GIF ran at a third
    of its speed. A frame that would show for less than 20 ms is dropped, and the next one shows from its start."""
    write_all(tmp_path / "a.gif", frames=FRAMES[:12], rate=Fraction(60))
    with Image.open(tmp_path / "a.gif") as image:
        delays = []
        for index in range(image.n_frames):
            image.seek(index)
            delays.append(image.info["duration"])
            if index == 1:  # from 20 ms: the frame of 33 ms, as that of 17 ms would show for 10 ms
                shown = np.asarray(image.convert("RGB")).astype(int)
                assert np.argmin([np.abs(shown - frame).mean() for frame in FRAMES[:4]]) == 2  # (a GIF's palette)
    assert delays == [20, 30, 20, 30, 20, 30, 20, 30] and sum(delays) == 200  # 12 frames at 60 fps: 0.2 s
    with open_frame_writer(tmp_path / "b.gif", SIZE, Fraction(10)) as writer:  # a flash of 10 ms: the next shows
        for frame, duration in zip(FRAMES, (10, 500, 300, 10)):
            writer.write(frame, duration_ms=duration)
    with Image.open(tmp_path / "b.gif") as image:
        delays = []
        for index in range(image.n_frames):
            image.seek(index)
            delays.append(image.info["duration"])
    assert delays == [510, 300, 20]  # the last lasts at least 20 ms


def test_a_frame_longer_than_the_format_holds_is_refused_before_any_frame(tmp_path: Path) -> None:
    """A GIF's delay is 16 bits of hundredths: Pillow's OverflowError came once every frame was made."""
    with pytest.raises(LiifError, match=r"^a \.gif frame shows for at most 655\.32 s, got 1000 s, one frame at "
                                        r"0\.001 frames per second$"):
        open_frame_writer(tmp_path / "a.gif", SIZE, Fraction(1, 1000))
    with pytest.raises(LiifError, match=r"^a \.gif frame shows for at most 655\.32 s, got 700 s$"):
        with open_frame_writer(tmp_path / "a.gif", SIZE, Fraction(1)) as writer:
            writer.write(FRAMES[0], duration_ms=700_000)
    assert list(tmp_path.iterdir()) == []
    write_all(tmp_path / "a.webp", frames=FRAMES[:2], rate=Fraction(1, 1000))  # 24 bits of ms: 4.6 hours
    with Image.open(tmp_path / "a.webp") as image:
        image.load()
        assert image.info["duration"] == 1_000_000


def test_an_encoder_refusal_names_the_settings_it_refused(tmp_path: Path) -> None:
    """x264 refuses a frame this large: the message said "crf None, preset None", not what x264 was given."""
    with pytest.raises(LiifError, match=r"^cannot encode \S+a\.mp4 with libx264 \(16384x16384 yuv420p, crf 18\): "):
        open_frame_writer(tmp_path / "a.mp4", (16384, 16384), Fraction(24))
    with pytest.raises(LiifError, match=r"^cannot encode \S+a\.webm with libvpx-vp9 \(64x48 yuv420p, crf 24, b 0, "
                                        r"cpu-used 99\): "):
        open_frame_writer(tmp_path / "a.webm", SIZE, Fraction(24), preset="99")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["taken.png/a.mp4", "taken.png/sub/a.gif", "taken.png/frames"])
def test_a_file_where_the_output_needs_a_folder_is_named(tmp_path: Path, name) -> None:
    """It was "File exists" or "Not a directory", whichever mkdir met first."""
    (tmp_path / "taken.png").write_bytes(b"kept")
    with pytest.raises(LiifError, match=rf"^cannot write \S+{re.escape(name)}: \S+taken.png is a file, not a folder$"):
        open_frame_writer(tmp_path / name, SIZE, Fraction(24))
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"] and (tmp_path / "taken.png").read_bytes() == b"kept"


@pytest.mark.parametrize("name", [".", "", "sub/.."])
def test_an_output_with_no_name_of_its_own_is_refused(tmp_path: Path, monkeypatch, name) -> None:
    """``-o .`` in an empty folder: a ValueError's traceback, as no temporary name can sit beside it."""
    monkeypatch.chdir(tmp_path)
    folders = ["sub"] if "sub" in name else []
    for folder in folders:
        (tmp_path / folder).mkdir()
    with pytest.raises(LiifError, match=rf"^cannot write {re.escape(str(Path(name)))}: name the output \(such as "):
        open_frame_writer(name, SIZE, Fraction(24))
    assert [p.name for p in tmp_path.iterdir()] == folders


def test_a_container_that_refuses_the_codec_says_so(tmp_path: Path) -> None:
    """MOV's muxer refuses VP9 only as it writes the header: the message quoted the hidden temporary name."""
    with pytest.raises(LiifError, match=r"^a \.mov file cannot hold libvpx-vp9 video; choose another codec or "
                                        r"container$"):
        open_frame_writer(tmp_path / "a.mov", SIZE, Fraction(24), codec="vp9")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.access("/proc", os.W_OK), reason="needs a /proc that passes os.access (root on Linux)")
def test_a_folder_that_takes_no_file_is_a_write_error() -> None:
    """It read "cannot encode /proc/a.mp4 with libx264 (...)", as if the encoder had refused."""
    with pytest.raises(LiifError, match=r"^cannot write /proc/a\.mp4: No such file or directory$"):
        open_frame_writer("/proc/a.mp4", SIZE, Fraction(24))


def test_play_counts_are_written_as_each_format_counts(tmp_path: Path) -> None:
    # The counts in the files: a GIF's NETSCAPE block counts the repeats after the first play (and one play has
    # no block), WebP's ANIM chunk and APNG's acTL chunk count every play.
    fields = {"a.gif": netscape_loop, "a.webp": webp_loop, "a.png": apng_plays}
    written = {"a.gif": {0: 0, 1: None, 2: 1, 65536: 65535}, "a.webp": {0: 0, 1: 1, 2: 2, 65535: 65535},
               "a.png": {0: 0, 1: 1, 2: 2, 65535: 65535}}
    for name, counts in written.items():
        for plays, field in counts.items():
            write_all(tmp_path / name, frames=FRAMES[:2], plays=plays, overwrite=True)
            assert fields[name]((tmp_path / name).read_bytes()) == field, (name, plays)
    for name, most in (("b.gif", 65536), ("b.webp", 65535), ("b.apng", 65535)):
        for plays in (-1, most + 1, 2.5, "3", None, True):  # 2.5 failed in Pillow, True was one play
            with pytest.raises(LiifError, match=rf"^the play count of a \.\w+ must be 0 \(forever\) to {most}, "
                                                rf"got {re.escape(repr(plays))}$"):
                open_frame_writer(tmp_path / name, SIZE, Fraction(10), plays=plays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.png", "a.webp"]


def netscape_loop(data: bytes) -> int | None:
    """A GIF's NETSCAPE2.0 loop count, None without the block."""
    at = data.find(b"NETSCAPE2.0")
    return None if at < 0 else int.from_bytes(data[at + 13:at + 15], "little")


def webp_loop(data: bytes) -> int:
    """An animated WebP's loop count, from its ANIM chunk."""
    return int.from_bytes(data[data.index(b"ANIM") + 12:][:2], "little")


def apng_plays(data: bytes) -> int:
    """An APNG's play count, from its acTL chunk."""
    return int.from_bytes(data[data.index(b"acTL") + 8:][:4], "big")


def test_a_folder_of_png_frames(tmp_path: Path) -> None:
    write_all(tmp_path / "frames", frames=FRAMES[:3])
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert (np.asarray(Image.open(tmp_path / "frames" / names[2])) == FRAMES[2]).all()
    write_all(tmp_path / "frames", frames=FRAMES[:2], overwrite=True)  # an earlier output is replaced whole
    assert len(list((tmp_path / "frames").iterdir())) == 2
    (tmp_path / "frames" / "notes.txt").write_text("mine")
    with pytest.raises(LiifError, match="never replaced"):
        write_all(tmp_path / "frames", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


@pytest.mark.parametrize("name", ["a.mp4", "a.gif", "a.webp", "a.png", "frames"])
def test_an_exception_leaves_nothing_and_a_normal_exit_plain_permissions(tmp_path: Path, name, umask_022) -> None:
    path = tmp_path / name
    with pytest.raises(KeyboardInterrupt):
        with open_frame_writer(path, SIZE, Fraction(24)) as writer:
            writer.write(FRAMES[0])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    write_all(path, frames=FRAMES[:2])
    assert list(tmp_path.iterdir()) == [path]
    assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644)


def test_refusals_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(LiifError, match="cannot encode video with codec 'nonesuch'"):
        open_frame_writer(tmp_path / "a.mp4", SIZE, Fraction(24), codec="nonesuch")
    with pytest.raises(LiifError, match="yuv420p halves the colour resolution, so the width must be even"):
        open_frame_writer(tmp_path / "a.mp4", (65, 48), Fraction(24))
    write_all(tmp_path / "odd.mp4", frames=[np.zeros((47, 65, 3), np.uint8)], pix_fmt="yuv444p")
    with pytest.raises(LiifError, match="cannot encode pixel format 'rgb24'"):
        open_frame_writer(tmp_path / "a.mp4", SIZE, Fraction(24), pix_fmt="rgb24")
    with pytest.raises(LiifError, match="unknown video output '.avi'"):
        open_frame_writer(tmp_path / "a.avi", SIZE, Fraction(24))
    with pytest.raises(LiifError, match=r"exists; pass overwrite=True to replace it$"):
        open_frame_writer(tmp_path / "odd.mp4", (65, 47), Fraction(24), pix_fmt="yuv444p")
    with pytest.raises(LiifError, match=r"must be \(48, 64, 3 or 4\) uint8"):
        with open_frame_writer(tmp_path / "b.mp4", SIZE, Fraction(24)) as writer:
            writer.write(np.zeros((48, 64), np.uint8))
    with pytest.raises(LiifError, match="no frame was written"):
        with open_frame_writer(tmp_path / "c.mp4", SIZE, Fraction(24)):
            pass
    with pytest.raises(LiifError, match="timecode and copied streams are for video outputs"):
        open_frame_writer(tmp_path / "a.gif", SIZE, Fraction(24), timecode="01:02:03:04")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


@pytest.mark.parametrize("crf", [64, "18", True, float("nan")])
def test_a_crf_that_is_no_number_from_0_to_63_is_refused_in_words(tmp_path: Path, crf) -> None:
    with pytest.raises(LiifError, match=r"^crf must be 0 to 63 \(lower is better quality\), got "):
        open_frame_writer(tmp_path / "a.mp4", SIZE, Fraction(24), crf=crf)
    assert not list(tmp_path.iterdir())


def test_x265_prints_nothing(tmp_path: Path, capfd) -> None:
    """x265 printed its settings (22 lines) and a summary straight to stderr, through any progress bar."""
    write_all(tmp_path / "a.mp4", frames=FRAMES[:2], codec="hevc")
    assert capfd.readouterr().err == ""
    assert len(decoded_frames(tmp_path / "a.mp4")) == 2


def test_a_hevc_clip_of_one_or_two_frames_is_written_every_time(tmp_path: Path) -> None:
    """x265 leaves the decoding times of so short a clip unset (whatever its memory held): about one write in three
    failed, "Not yet implemented in FFmpeg, patches welcome", as the MP4 muxer met a garbage dts."""
    for attempt in range(12):
        for count in (1, 2):
            path = tmp_path / f"{attempt}_{count}.mp4"
            write_all(path, frames=FRAMES[:count], codec="hevc")
            assert [round(t * 24) for _, t in decoded_frames(path)] == list(range(count))


def test_an_unknown_x264_preset_is_one_line_and_x264_prints_nothing(tmp_path: Path, capfd) -> None:
    with pytest.raises(LiifError, match=r"^preset 'quick': libx264 takes ultrafast, superfast, .*, placebo$"):
        open_frame_writer(tmp_path / "a.mp4", SIZE, Fraction(24), preset="quick")
    assert capfd.readouterr().err == ""  # x264's own "x264 [error]: invalid preset" line would land here
    assert list(tmp_path.iterdir()) == []
    write_all(tmp_path / "a.mp4", frames=FRAMES[:2], preset="UltraFast")  # x264 takes them in any case


@pytest.mark.parametrize("name", ["a.gif", "a.webp", "a.png"])
@pytest.mark.parametrize("alpha", [False, True])
def test_repeated_frames_stay_frames(tmp_path: Path, name, alpha) -> None:
    frame = np.dstack([FRAMES[0], np.full((48, 64), 200, np.uint8)]) if alpha else FRAMES[0]
    with open_frame_writer(tmp_path / name, SIZE, Fraction(10)) as writer:
        for duration in (30, 40, 50, 60):
            writer.write(frame, duration_ms=duration)
    with Image.open(tmp_path / name) as image:
        assert image.n_frames == 4
        seen, previous = [], None
        for index in range(4):
            image.seek(index)
            image.load()
            seen.append(image.info["duration"])
            rgba = np.asarray(image.convert("RGBA")).astype(int)
            assert (rgba[:, :, 3] == (200 if alpha and name != "a.gif" else 255)).all()
            if name == "a.png":
                assert np.array_equal(rgba[:, :, :3], FRAMES[0])
            if index and name != "a.webp":
                assert np.array_equal(rgba, previous)  # a repeat looks the same
            elif index:  # lossy, and one pixel nudged
                assert np.abs(rgba - previous).mean() < 0.1
            previous = rgba
        assert seen == [30, 40, 50, 60]


def test_a_webp_frame_within_a_level_of_the_one_before_stays_a_frame(tmp_path: Path) -> None:
    """Lossy libwebp folded a frame that near the one before into it: still scenes of a video lost frames."""
    near = FRAMES[0].copy()
    near[::2, ::2] += 1  # FRAMES[0] has no 255 here
    assert FRAMES[0][::2, ::2].max() < 255
    with open_frame_writer(tmp_path / "a.webp", SIZE, Fraction(10)) as writer:
        for frame in (FRAMES[0], near, FRAMES[0]):
            writer.write(frame)
    with Image.open(tmp_path / "a.webp") as image:
        assert image.n_frames == 3


@pytest.mark.parametrize("opaque", [True, False])
def test_a_webp_repeat_stays_a_frame_where_its_corner_is_transparent(tmp_path: Path, opaque: bool) -> None:
    """A repeat's nudge went to pixel (0, 0): where it is fully transparent libwebp ignores its colour, and folded the
    repeat into the frame before (one frame, the durations summed). A frame with no opaque pixel is nudged too."""
    alpha = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    alpha[SIZE[1] // 2:, SIZE[0] // 2:] = 255 if opaque else 0
    frame = np.dstack([FRAMES[0], alpha])
    with open_frame_writer(tmp_path / "a.webp", SIZE, Fraction(10)) as writer:
        for duration in (30, 40):
            writer.write(frame, duration_ms=duration)
    with Image.open(tmp_path / "a.webp") as image:
        assert image.n_frames == 2
        seen = []
        for index in range(2):
            image.seek(index)
            image.load()
            seen.append(image.info["duration"])
            assert np.abs(np.asarray(image.convert("RGBA"))[:, :, 3].astype(int) - alpha).max() <= 4
        assert seen == [30, 40]


def test_an_output_of_the_other_kind_is_refused_up_front_or_at_the_rename(tmp_path: Path) -> None:
    from liif.video.writer import AnimationWriter

    (tmp_path / "plain").write_text("mine")  # no suffix: the output is a folder of frames
    with pytest.raises(LiifError, match="plain is a file: it cannot be replaced by a folder of frames"):
        open_frame_writer(tmp_path / "plain", SIZE, Fraction(24), overwrite=True)
    (tmp_path / "a.gif").mkdir()
    with pytest.raises(LiifError, match="a.gif is a folder: it cannot be replaced by a file"):
        AnimationWriter(tmp_path / "a.gif", SIZE, Fraction(24), True, 0)
    (tmp_path / "a.gif").rmdir()
    for name, make in (("frames", lambda p: p.write_text("late")), ("b.mp4", lambda p: (p / "x").mkdir(parents=True))):
        with pytest.raises(LiifError, match=f"cannot write .*{name}: "):  # the path appears while frames are written
            with open_frame_writer(tmp_path / name, SIZE, Fraction(24)) as writer:
                writer.write(FRAMES[0])
                make(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.mp4", "frames", "plain"]
    assert (tmp_path / "plain").read_text() == "mine" and (tmp_path / "frames").read_text() == "late"


def test_a_frame_folder_that_cannot_be_made_is_one_line(tmp_path: Path, monkeypatch) -> None:
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name.startswith(".liif-"):  # the temporary folder of frames, on a full disk
            raise OSError(28, "No space left on device")
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(LiifError, match=r"^cannot write .*frames: No space left on device$"):
        write_all(tmp_path / "frames", frames=FRAMES[:2])
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_keeps_the_earlier_frames(tmp_path: Path, monkeypatch) -> None:
    write_all(tmp_path / "frames", frames=FRAMES[:2])
    real_replace, calls = os.replace, []

    def replace(source, target):
        calls.append(target)
        if len(calls) == 2:  # the new frames moving in, once the earlier ones moved aside
            raise PermissionError(13, "Permission denied")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(LiifError, match="cannot write .*frames: Permission denied"):
        write_all(tmp_path / "frames", frames=FRAMES[:3], overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    assert len(list((tmp_path / "frames").iterdir())) == 2


def test_an_encoder_failure_is_a_one_line_error_and_leaves_nothing(tmp_path: Path) -> None:
    refusal = r"^cannot write .*a\.webm: Invalid data found when processing input$"  # not PyAV's number and name
    with pytest.raises(LiifError, match=refusal) as refused:
        with open_frame_writer(tmp_path / "a.webm", SIZE, Fraction(24)) as writer:
            for pts in (5, 3):  # libvpx refuses a frame that comes before the one before
                writer.write(FRAMES[0], pts=pts)
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("channels", [3, 4])
def test_an_apng_keeps_16_bit_frames(tmp_path: Path, channels: int) -> None:
    """An APNG was written at 8 bits whatever the frames held: a 16-bit source lost its low bits, which PNG frames
    and still PNGs keep. FFmpeg's apng encoder takes 16 bits, and the file now holds them."""
    noise = np.random.default_rng(0).integers(0, 65536, (2, SIZE[1], SIZE[0], channels), dtype=np.uint16)
    write_all(tmp_path / "a.apng", list(noise), rate=Fraction(10))
    decoded = decoded_frames(tmp_path / "a.apng", "rgba64le" if channels == 4 else "rgb48le")
    assert len(decoded) == 2 and all((pixels == frame).all() for (pixels, _), frame in zip(decoded, noise))
