"""Moving pictures in: a video through PyAV (any container and codec its FFmpeg decodes) or an animated GIF,
WebP or PNG through Pillow, as frames with their timestamps and durations.

``open_clip(path)`` gives a ``Clip``: its ``info`` (displayed size, rate, time base, frame count, plays) and
``frames()``, decoded one at a time. An interlaced video is deinterlaced. A video's display matrix (a rotation, and a
mirroring) is applied to every frame; its cover art (an
attached picture, which FFmpeg lists as a video stream) is not the video. A video that ends before its declared
duration, or whose decoding fails midway, yields the frames that decode and then raises ``DecodeStopped`` saying
where it stopped.
"""

from __future__ import annotations

import collections
import itertools
import re
import struct
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from liif.errors import LiifError, one_line, os_reason
from liif.fileio import check_regular_file
from liif.imageio import PIL_READ_ERRORS, orient, swaps_sides

# Containers read: those written (see writer.VIDEO_CONTAINERS), AVI, and those of camcorders (AVCHD's MPEG-TS),
# TV recordings, DVD-era MPEG and Flash video
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".m4v", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv")
CLIP_SUFFIXES = (*VIDEO_SUFFIXES, ".gif", ".apng")  # always clips; .webp and .png only when animated
ANIMATION_FORMATS = ["GIF", "WEBP", "PNG"]  # the only formats Pillow may try for an animation
MS = Fraction(1, 1000)
DEFAULT_FRAME_MS = 100.0  # an animation's frame that says nothing of its duration
SHORTEST_GIF_DELAY_MS = 20  # a GIF delay below it (0 or 1 hundredth) plays as the default, in browsers and FFmpeg
RGB_FORMATS = {(1, 3): "rgb24", (1, 4): "rgba", (2, 3): "rgb48le", (2, 4): "rgba64le"}  # by bytes a value, channels
DEFAULT_RATE = Fraction(25)  # a stream that declares no rate at all
# Suffixes transport streams share with TypeScript sources: folders take such a file only when it begins like one
SHARED_SUFFIXES = (".ts", ".mts")
SYNC = 0x47  # the first byte of every MPEG-TS packet
# FFmpeg's own VP8 and VP9 decoders drop the alpha a WebM stores beside the frames (BlockAdditional), libvpx's keep it
ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}
UNDECLARED_COLOUR = (0, 2, 3)  # AVCOL_PRI_* and AVCOL_TRC_*: reserved, unspecified, reserved
# Pillow's errors on damaged animations: those of pictures, and a truncated GIF's IndexError and struct.error
ANIMATION_ERRORS = (*PIL_READ_ERRORS, IndexError, struct.error)


class DecodeStopped(LiifError):
    """Decoding ended early (truncated or corrupt data); the frames before it were decoded."""


@dataclass(frozen=True)
class ClipInfo:
    """What a clip is: ``size`` (width, height) as displayed, ``rate`` in frames per second, the ``time_base``
    of the frames' pts, ``frames`` (a count, or an estimate from the duration; None if unknown), ``plays``
    (animations: how many times it plays, 0 forever; None for a video), ``alpha`` (whether frames carry alpha),
    ``pixel_aspect`` (the sample aspect ratio: a pixel's width over its height as displayed; 1 is square),
    ``timecode`` (a video's start timecode as FFmpeg reads it, "01:02:03:04" or drop-frame "01:02:03;04";
    None without one), ``primaries`` and ``transfer`` (the colour primaries and transfer characteristic of the
    frames' RGB as the video declares them, FFmpeg's AVCOL_PRI and AVCOL_TRC numbers: an HDR clip's BT.2020 and
    HLG or PQ; None where it declares none), ``bits`` (8: frames are uint8; 16: uint16, for a video of more than
    8 bits a channel, such as 10-bit HDR)."""

    kind: str  # "video" or "animation"
    size: tuple[int, int]
    rate: Fraction
    time_base: Fraction
    frames: int | None
    plays: int | None = None
    alpha: bool = False
    pixel_aspect: Fraction = Fraction(1)
    timecode: str | None = None
    primaries: int | None = None
    transfer: int | None = None
    bits: int = 8


@dataclass
class ClipFrame:
    """One frame: (H, W, 3|4) uint8 or uint16 ``pixels``, its ``pts`` in the clip's time base (a video's from its
    ``timeline_start``) and ``duration_ms``."""

    pixels: np.ndarray
    pts: int
    duration_ms: float


class Clip:
    """An open clip; use as a context manager, read ``info``, iterate ``frames()`` once."""

    info: ClipInfo

    def __enter__(self) -> Clip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames(self) -> Iterator[ClipFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def is_moving(path: str | Path) -> bool:
    """Whether ``path`` is a clip by its name: a video suffix, any GIF, or an animated (more than one frame)
    WebP or PNG. A still WebP or PNG is a picture."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CLIP_SUFFIXES:
        return True
    if suffix in (".webp", ".png"):
        try:
            check_regular_file(path)
            with Image.open(path, formats=ANIMATION_FORMATS) as image:
                return getattr(image, "n_frames", 1) > 1
        except (LiifError, UnidentifiedImageError, *ANIMATION_ERRORS):
            return False  # the picture reader reports what is wrong with it
    return False


def looks_like_transport_stream(path: Path) -> bool:
    """Whether a regular file ``path`` begins with two MPEG-TS packets: of 188 bytes (TV's .ts), or of 192 with a
    4-byte time first (AVCHD's .mts, Blu-ray's .m2ts); True for what cannot be read, which is reported in its turn."""
    try:
        if not path.is_file():  # a FIFO would block the read
            return True
        with open(path, "rb") as file:
            head = file.read(2 * 192 + 4)
    except OSError:
        return True
    return any(len(head) > start and head[start] == SYNC and (len(head) <= start + size or head[start + size] == SYNC)
               for start, size in ((0, 188), (4, 192)))


def open_clip(path: str | Path, progress: bool = False) -> Clip:
    """Open a video or an animation (by its suffix; see ``is_moving``); every problem is a one-line LiifError.
    ``progress``: a bar while an animation's frames are read for their durations and transparency."""
    path = Path(path)
    check_regular_file(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoClip(path)
    return AnimationClip(path, progress)


class VideoClip(Clip):
    """The first video stream of a container that is not cover art, decoded by PyAV to RGB."""

    def __init__(self, path: Path) -> None:
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise LiifError(f"cannot read it as a video, it may be truncated or corrupt ({os_reason(exc)})") from None
        try:
            stream = main_video(self.container)
            if stream is None:
                kinds = sorted({stream_kind(s) for s in self.container.streams}) or ["no stream at all"]
                raise LiifError(f"no video stream in it (it holds {', '.join(kinds)})")
            self.stream = stream
            stream.thread_type = "AUTO"  # frame threads: decoding keeps up with a GPU renderer
            self.alpha = stream_has_alpha(stream)
            self.decoder = av.CodecContext.create(ALPHA_DECODERS[stream.codec_context.name], "r") if self.alpha \
                else stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate or DEFAULT_RATE
            # The display matrix is frame side data: the first frame tells it, and that it decodes at all.
            self.cut_short = False
            self.decoded = self.decode()
            try:
                self.first = next(self.decoded)
            except StopIteration:
                raise LiifError("its video stream has no frame that decodes") from None
            except av.error.FFmpegError as exc:
                raise LiifError(f"cannot decode its first frame, it may be corrupt ({os_reason(exc)})") from None
            self.orientation = display_orientation(self.first)
            width, height = self.first.width, self.first.height
            self.declared_end = declared_end(stream)
            time_base = Fraction(stream.time_base or 1 / rate)
            self.start = round(timeline_start(self.container) / time_base)  # in the time base
            count = stream.frames or (round(self.declared_end * rate) if self.declared_end else None)
            size = (height, width) if swaps_sides(self.orientation) else (width, height)
            deep = is_deep(self.first.format.name)
            # frames of a format with alpha carry it too: FFV1's bgra, ProRes 4444's, PNG's in a MOV
            self.alpha = self.alpha or has_alpha(self.first.format.name)
            self.rgb_format = RGB_FORMATS[2 if deep else 1, 4 if self.alpha else 3]
            # anamorphic video (DVD, HDV) stores non-square pixels; a quarter turn swaps their sides too
            aspect = Fraction(stream.sample_aspect_ratio or 1)
            aspect = 1 / aspect if swaps_sides(self.orientation) else aspect
            self.info = ClipInfo("video", size, Fraction(rate), time_base, count,
                                 pixel_aspect=aspect, timecode=start_timecode(stream),
                                 primaries=declared_colour(self.first.color_primaries),
                                 transfer=declared_colour(self.first.color_trc), bits=16 if deep else 8,
                                 alpha=self.alpha)
        except BaseException:
            self.container.close()
            raise

    def decode(self) -> Iterator[av.VideoFrame]:
        """The stream's frames, noting whether its last packet is cut short: frame threads drop the decoder's
        error on it, and the frames it held back go unsaid."""
        for packet in self.container.demux(self.stream):
            if packet.size:
                self.cut_short = packet.is_corrupt
            yield from self.decoder.decode(packet)

    def frames(self) -> Iterator[ClipFrame]:
        info, index, end = self.info, 0, None
        step = 1 / info.rate / info.time_base  # one frame, in the time base: for frames with no pts or duration
        held = None  # a frame shows until the next one's pts (variable frame rates): each waits for the next
        try:
            for frame in self.progressive():
                pts = frame.pts if frame.pts is not None else round(index * step)
                if held is not None and pts <= held[1]:  # a repeated or missing timestamp: the encoder needs order
                    pts = held[1] + max(1, round(step))
                if held is not None:
                    yield self.clip_frame(*held[:2], pts - held[1])
                # a stream whose size changes midway keeps the first frame's (the output was planned from it)
                pixels = frame.to_ndarray(format=self.rgb_format, width=self.first.width, height=self.first.height)
                pixels = orient(pixels, self.orientation)
                held = (pixels, pts, frame.duration or step)  # the duration in the time base
                index += 1
                end = (pts - self.start + held[2]) * info.time_base  # on the timeline, as the messages say
        except av.error.FFmpegError as exc:
            if held is not None:
                yield self.clip_frame(*held)
            raise DecodeStopped(f"decoding stopped at frame {index}{seconds_at(end)}: {os_reason(exc)}") from None
        # A cut file often just ends: only its declared duration tells (give or take a few frames' rounding),
        # or the demuxer's flag on a last packet that the file's end cut short.
        declared = None if self.declared_end is None else self.declared_end - self.start * info.time_base
        if self.cut_short or declared is not None and (end or 0) < declared - max(3 / info.rate, Fraction(1, 4)):
            yield self.clip_frame(*held)
            of = f" of {float(declared):.2f} s" if declared is not None else ""
            raise DecodeStopped(f"the video is truncated: decoding stopped at frame {index}{seconds_at(end)}{of}")
        # A whole video's last frame shows until its declared end: the decoder gives a frame the duration of the
        # packet it came in, which B-frames make another frame's.
        pixels, pts, duration = held
        if declared is not None and declared > (pts - self.start) * info.time_base:
            duration = declared / info.time_base - (pts - self.start)
        yield self.clip_frame(pixels, pts, duration)

    def progressive(self) -> Iterator[av.VideoFrame]:
        """The decoded frames, deinterlaced from the first interlaced one (TV, DVD, a camcorder's 1080i; a recording may
        begin progressive): upscaled as they are, the rows of their two fields, a moment apart, comb every moving edge.
        A progressive frame passes as is."""
        frames = itertools.chain([self.first], self.decoded)
        for frame in frames:
            if frame.interlaced_frame:
                yield from self.deinterlaced(itertools.chain([frame], frames))
                return
            yield frame

    def deinterlaced(self, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        """``frames`` through FFmpeg's bwdif, as its users deinterlace: each interlaced frame made of its first field,
        keeping its time; a progressive one passes as is."""
        first = self.first  # the filter's size and format are fixed: the first frame's, as the output's
        graph = av.filter.Graph()
        graph.link_nodes(graph.add_buffer(width=first.width, height=first.height, format=first.format.name,
                                          time_base=first.time_base or self.stream.time_base),
                         graph.add("bwdif", "mode=send_frame:deint=interlaced"), graph.add("buffersink")).configure()
        # each frame's pts and duration, given back to the frame the filter makes of it (which counts in its own units)
        times: collections.deque[tuple[int | None, int]] = collections.deque()
        for frame in itertools.chain(frames, [None]):  # None: the end, which gives the last frame
            if frame is not None:
                if (frame.width, frame.height, frame.format.name) != (first.width, first.height, first.format.name):
                    frame = frame.reformat(first.width, first.height, first.format.name)
                times.append((frame.pts, frame.duration))
            graph.push(frame)
            while True:
                try:
                    made = graph.pull()
                except (av.error.BlockingIOError, av.error.EOFError):  # it needs the next frame, or has ended
                    break
                made.pts, made.duration = times.popleft()
                yield made

    def clip_frame(self, pixels: np.ndarray, pts: int, duration: float) -> ClipFrame:
        """A frame whose ``pts`` and ``duration`` are in the time base, its pts counted from the timeline's start."""
        return ClipFrame(pixels, pts - self.start, float(duration * self.info.time_base * 1000))

    def close(self) -> None:
        self.container.close()


def display_orientation(frame: av.VideoFrame) -> int:
    """How a frame is shown, from its display matrix, as FFmpeg's command turns it (its autorotate), as the EXIF
    orientation ``imageio.orient`` undoes: the rotation to the nearest quarter turn, and a mirroring (a phone's front
    camera, an edit's flip), which the rotation alone reads as a half turn."""
    side_data = frame.side_data.get("DISPLAYMATRIX")
    if side_data is None:
        return 1
    matrix = struct.unpack("=9i", bytes(side_data))
    turn = round(-(frame.rotation or 0) / 90) % 4  # clockwise quarter turns, as FFmpeg names them
    if turn == 1:  # transpose=cclock_flip (EXIF 5: transposed), or transpose=clock (6)
        return 5 if matrix[3] > 0 else 6
    if turn == 3:  # transpose=clock_flip (7: transversed), or transpose=cclock (8)
        return 7 if matrix[3] < 0 else 8
    # rows reversed (vflip) and columns (hflip): 4, 2, both (a half turn) 3, neither 1
    return {(False, False): 1, (False, True): 2, (True, True): 3, (True, False): 4}[matrix[4] < 0,
                                                                                    turn == 2 and matrix[0] < 0]


def main_video(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video of a container: its first video stream that is not cover art; None if it has none."""
    return next((s for s in container.streams.video if stream_kind(s) == "video"), None)


def has_alpha(pix_fmt: str) -> bool:
    """Whether ``pix_fmt`` holds transparency."""
    return any(c.is_alpha for c in av.VideoFormat(pix_fmt, 4, 4).components)


def is_deep(pix_fmt: str) -> bool:
    """Whether ``pix_fmt`` holds more than 8 bits a channel (10-bit HDR)."""
    return max(c.bits for c in av.VideoFormat(pix_fmt, 4, 4).components) > 8


def stream_has_alpha(stream: av.video.stream.VideoStream) -> bool:
    """Whether a video stream's frames carry alpha: a WebM's VP8 or VP9 with its alpha_mode tag (a sticker, an
    overlay), which a decoder of libvpx's gives."""
    tags = {key.lower(): value for key, value in stream.metadata.items()}  # a Matroska tag may be upper case
    return stream.codec_context.name in ALPHA_DECODERS and tags.get("alpha_mode") == "1"


def stream_kind(stream: av.stream.Stream) -> str:
    """A stream's type, or "cover art" for an attached picture: a video stream of one still, such as an MP4's
    cover, which is not the video."""
    return "cover art" if stream.disposition & av.stream.Disposition.attached_pic else stream.type


def start_timecode(stream: av.video.stream.VideoStream) -> str | None:
    """The video's start timecode, where FFmpeg's demuxers put it: on the video stream (MOV's and MP4's from the
    tmcd track it refers to, Matroska's TIMECODE tag) or on the container (a tmcd track no video refers to, a
    Matroska file's own tag); None if it has none, or none FFmpeg could write again."""
    for metadata in (stream.metadata, stream.container.metadata):
        for key, value in metadata.items():
            if key.lower() == "timecode" and TIMECODE.fullmatch(value):  # Matroska's tags are upper case
                return value
    return None


def timeline_start(container: av.container.InputContainer) -> Fraction:
    """Where a video's timeline starts, in seconds: when its earliest stream starts, where that is after 0 (a
    recording's clock: a TV recording's runs hours in), else 0. Its frames' pts and the streams copied with them count
    from there, so that an output starts at 0, as FFmpeg's would, not after an hour of nothing."""
    return max(Fraction(container.start_time or 0, 1_000_000), Fraction(0))


def declared_colour(value: int) -> int | None:
    """A colour primaries or transfer number as a frame carries it; None for FFmpeg's reserved and unspecified."""
    return None if value in UNDECLARED_COLOUR else value


def seconds_at(end: Fraction | None) -> str:
    """Where decoding stopped, for a message: " (12.34 s)", or nothing when the time is unknown."""
    return f" ({float(end):.2f} s)" if end is not None else ""


# A timecode as FFmpeg writes and reads one: hours:minutes:seconds, then ":", ";" (drop-frame) or "." and the frame.
# A muxer drops one it cannot read without a word.
TIMECODE = re.compile(r"-?\d{2,}:[0-5]\d:[0-5]\d[:;.]\d{2,}")
DURATION_TAG = re.compile(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def declared_end(stream: av.video.stream.VideoStream) -> Fraction | None:
    """When the stream says its frames end, in seconds: Matroska's DURATION tag, or its duration; None if it
    does not say. (A Matroska track holds no duration: FFmpeg gives it the file's, which a longer audio or subtitle
    track makes.)"""
    start = (stream.start_time or 0) * (stream.time_base or 0)
    match = DURATION_TAG.fullmatch(stream.metadata.get("DURATION", "") or "")
    if match:
        hours, minutes, seconds = match.groups()
        tag = Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
        # FFmpeg's muxer tags the end of the last frame, mkvmerge the time from the first frame to it
        by_ffmpeg = str(stream.container.metadata.get("ENCODER", "")).startswith("Lavf")
        return tag if by_ffmpeg else start + tag
    if stream.duration and stream.time_base and "matroska" not in stream.container.format.name:
        return start + stream.duration * stream.time_base
    return None


def animation_plays(image_format: str, loop: int | None) -> int:
    """How many times an animation plays (0: forever), from Pillow's ``loop``: a GIF's count (its NETSCAPE block)
    is the repeats after the first play, as browsers read it; WebP's and APNG's count every play. An animation
    with no count (a GIF without the block) plays once."""
    if loop is None:
        return 1
    return loop + 1 if image_format == "GIF" and loop else loop


def frame_duration(image_format: str, stored_ms: float) -> float:
    """How long an animation's frame shows, in ms, from the duration it stores: none, 100 ms; a GIF's delay of 0 or 1
    hundredth is 100 ms too, as browsers and FFmpeg play it (such a GIF would otherwise run ten times as fast)."""
    if not stored_ms or image_format == "GIF" and stored_ms < SHORTEST_GIF_DELAY_MS:
        return DEFAULT_FRAME_MS
    return stored_ms


class AnimationClip(Clip):
    """An animated GIF, WebP or PNG through Pillow; pts and durations in milliseconds."""

    def __init__(self, path: Path, progress: bool = False) -> None:
        self.path = path
        try:
            with self.open() as image:
                count = getattr(image, "n_frames", 1)
                durations, alpha = [], False
                # every frame is decoded (WebP's durations come with its pixels): a long animation takes a while
                with tqdm(total=count, desc=f"reading {path.name}", unit="frame", disable=not progress, leave=False,
                          file=sys.stderr, dynamic_ncols=True) as bar:
                    for index in range(count):
                        image.seek(index)
                        image.load()
                        durations.append(frame_duration(image.format, float(image.info.get("duration") or 0)))
                        alpha = alpha or image.has_transparency_data and \
                            np.asarray(image.convert("RGBA"))[:, :, 3].min() < 255
                        bar.update()
                plays = animation_plays(image.format, image.info.get("loop"))
                size = image.size
        except UnidentifiedImageError:
            raise LiifError("not an animation, or not one of the formats read (GIF, WebP, PNG)") from None
        except ANIMATION_ERRORS as exc:
            raise LiifError(f"cannot read the animation, it may be truncated or corrupt ({one_line(exc)})") from None
        self.durations = durations
        rate = Fraction(1000 * len(durations)) / Fraction(sum(durations)).limit_denominator(1000)
        self.info = ClipInfo("animation", size, rate.limit_denominator(1000), MS, count, plays, bool(alpha))

    def open(self) -> Image.Image:
        return Image.open(self.path, formats=ANIMATION_FORMATS)

    def frames(self) -> Iterator[ClipFrame]:
        mode = "RGBA" if self.info.alpha else "RGB"
        index, pts = 0, 0.0
        try:
            with self.open() as image:
                for index, duration in enumerate(self.durations):
                    image.seek(index)
                    yield ClipFrame(np.asarray(image.convert(mode)), round(pts), duration)
                    pts += duration
        except ANIMATION_ERRORS as exc:
            raise DecodeStopped(f"decoding stopped at frame {index} ({pts / 1000:.2f} s): {one_line(exc)}") from None
