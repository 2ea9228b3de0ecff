"""Frames to a file, written under a temporary name and renamed when complete.

The kind follows the output path: ``.mp4`` ``.mkv`` ``.mov`` ``.webm`` are encoded through PyAV (H.264, VP9,
AV1 through SVT-AV1, FFV1 lossless), with audio and subtitle streams copied packet for packet from another
container; ``.gif`` ``.webp`` ``.png``/``.apng`` are animations (GIF through Pillow, WebP and APNG through PyAV), with
per-frame durations and a play count; a path with no suffix, or an existing folder, gets a folder of PNG frames.
Leaving the ``with`` block normally renames the temporary output to the path; leaving it by an exception removes it.
"""

from __future__ import annotations

import io
import os
import struct
import types
import zlib
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import GifImagePlugin, Image

from liif.bounds import Number, flag
from liif.errors import LiifError, OutputExists, option, os_reason
from liif.fileio import remove_path, temporary_name
from liif.imageio import LOSSY_QUALITY, Picture, check_encodable, eight_bit, encode_picture
from liif.video.reader import (MS, RGB_FORMATS, SHORTEST_GIF_DELAY_MS, TIMECODE, has_alpha, main_video,
                               stream_kind, timeline_start)

# suffix -> FFmpeg muxer name (the temporary name has no meaningful suffix, so the muxer is named)
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
# MP4's and MOV's index (the moov box) before the frames, as FFmpeg's -movflags +faststart puts it: a browser plays
# such a file as it downloads, where FFmpeg's default, the index last, waits for all of it
FASTSTART = {"movflags": "+faststart"}
# suffix -> Pillow format of an animation
ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP", ".png": "PNG", ".apng": "PNG"}
DEFAULT_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                  ".webm": "libvpx-vp9"}
# the names people use -> the FFmpeg encoder
CODEC_ALIASES = {"h264": "libx264", "x264": "libx264", "avc": "libx264", "vp9": "libvpx-vp9", "vp8": "libvpx",
                 "av1": "libsvtav1", "svt-av1": "libsvtav1", "svtav1": "libsvtav1", "hevc": "libx265",
                 "h265": "libx265", "x265": "libx265"}
DEFAULT_PIX_FMT = "yuv420p"
# RGB, lossless from the rendered RGB unlike any YUV, by the frames' (alpha, bits): their transparency and depth kept
LOSSLESS_PIX_FMTS = {"ffv1": {(False, 8): "bgr0", (True, 8): "bgra", (False, 16): "gbrp16le", (True, 16): "gbrap16le"}}
FRAME_BITS = (8, 16)  # uint8 or uint16 frames
RATE_DENOMINATOR = 1001  # of a frame rate given as a float: NTSC's 30000/1001 is the finest in use
# An upscaled video deserves better than the encoders' defaults (x264 23, VP9 constant bitrate).
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libvpx": 10, "libsvtav1": 28}
# The presets x264 and x265 know (in any case): x264 prints its refusal of another straight to the terminal, so
# an unknown one is refused here first, in one line.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
FRAME_NAME = "frame_{:05d}.png"
GIF_TRANSPARENT = 255  # the GIF palette index of transparent pixels
# The most plays each animation format counts: GIF's 16 bits count the repeats after the first play, WebP's 16
# bits every play, APNG's PNG number every play, of which FFmpeg's apng muxer writes 16 bits.
MOST_PLAYS = {"GIF": 2 ** 16, "WEBP": 2 ** 16 - 1, "PNG": 2 ** 16 - 1}
# The longest each animation format shows a frame, in ms: a GIF's 16 bits of hundredths (less the hundredth that
# rounding on the running time may add, and the two of a shorter frame dropped before it), WebP's 24 bits of ms, APNG's
# fraction of 16-bit terms.
LONGEST_FRAME_MS = {"GIF": 655_320, "WEBP": 2 ** 24 - 1, "PNG": 65_535_000}
# Lossy WebP at quality 95 takes pixels within about 2 levels for unchanged (measured: 3 levels keep a frame): a frame
# that near the one before gets one pixel this far from it
WEBP_NUDGE = 4
# A WebP's RIFF size is 32 bits: libwebp holds no more encoded frames than that before it fails to assemble them
LARGEST_WEBP = 2**32
WEBP_ALPHA_FLAG = 0x10  # in a WebP's VP8X flags: some pixel is transparent
WEBP_CANVASES = 4  # the RGBA canvases libwebp's animation encoder keeps (the frame, the one before, their blends)
# The colour matrix of the YUV written (and tagged), and the primaries and transfer of frames whose source declares
# none: BT.709, what players assume for anything HD.
BT709 = 1  # AVCOL_SPC_BT709 = AVCOL_PRI_BT709 = AVCOL_TRC_BT709
MPEG_RANGE = 1  # AVCOL_RANGE_MPEG: limited (16-235), as every delivery format
FULL_RANGE = 2  # AVCOL_RANGE_JPEG: 0-255, the only range swscale writes gray planes in
COPIED_TYPES = ("audio", "subtitle")
# Tags that describe how the source's video was encoded (mkvmerge's statistics, the encoder, the length, whether
# VP9 carries alpha), not what it holds: the re-encoded video and the muxer have their own. (The timecode is written
# from the reader's.)
ENCODING_TAGS = ("encoder", "duration", "bps", "number_of_frames", "number_of_bytes", "timecode", "_statistics",
                 "alpha_mode")
MAX_ASPECT_TERM = 65535  # H.264's and HEVC's VUI hold a sample aspect ratio in 16-bit terms
# Codecs whose bitstream holds the sample aspect ratio: Matroska keeps it only there, for PyAV cannot set the
# stream's own, which its muxer writes as the display size
ASPECT_IN_BITSTREAM = ("h264", "hevc", "mpeg2video", "mpeg4")


def output_kind(path: Path) -> str:
    """'video', 'animation' or 'folder', by the path's suffix (a folder: no suffix, or an existing folder)."""
    if path.is_dir() or not path.suffix:
        return "folder"
    suffix = path.suffix.lower()
    if suffix in VIDEO_CONTAINERS:
        return "video"
    if suffix in ANIMATION_FORMATS:
        return "animation"
    raise LiifError(f"{path}: unknown video output {path.suffix!r}; use one of "
                    f"{', '.join(sorted([*VIDEO_CONTAINERS, *ANIMATION_FORMATS]))}, or a folder for PNG frames")


def held_bytes(path: Path, size: tuple[int, int], frames: int) -> int:
    """The most memory ``frames`` RGB frames of ``size`` take in a writer to ``path`` until it is finished: a WebP
    keeps them all, encoded (libwebp assembles it at the end), which the file's size bounds as well as their pixels,
    and its canvases; an APNG, a GIF, a video or a folder none."""
    if output_kind(path) != "animation" or ANIMATION_FORMATS[path.suffix.lower()] != "WEBP":
        return 0
    pixels = size[0] * size[1]
    return min(frames * pixels * 3, LARGEST_WEBP) + WEBP_CANVASES * pixels * 4


def encoder_name(codec: str | None, suffix: str) -> str:
    """The FFmpeg encoder for ``codec`` (an alias such as h264, vp9, av1, ffv1, or an encoder name) in a
    ``suffix`` container; a LiifError naming it where this PyAV build cannot encode it."""
    name = CODEC_ALIASES.get(codec.lower(), codec.lower()) if codec else DEFAULT_CODECS[suffix]
    try:
        found = av.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        found = None
    if found is None or found.type != "video":
        usable = [c for c in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "ffv1") if can_encode(c)]
        raise LiifError(f"this PyAV build (FFmpeg {av.ffmpeg_version_info}) cannot encode video with codec "
                        f"{codec!r}; it can use {', '.join(usable)}")
    return name


def can_encode(name: str) -> bool:
    """Whether this PyAV build has a video encoder called ``name``."""
    try:
        return av.Codec(name, "w").type == "video"
    except (av.error.FFmpegError, ValueError):
        return False


def video_format(path: Path, codec: str | None, pix_fmt: str | None, alpha: bool = False,
                 bits: int = 8) -> tuple[str, str]:
    """The encoder and pixel format a video ``path`` gets for ``codec`` and ``pix_fmt`` (None: the defaults; a
    lossless codec's keeps the frames' ``alpha`` and ``bits``; an encoder that takes no yuv420p, such as ProRes, gets
    its own first format, one with alpha for frames with ``alpha``), checked against what this PyAV build encodes."""
    encoder = encoder_name(codec, path.suffix.lower())
    formats = [f.name for f in av.Codec(encoder, "w").video_formats or []]
    if not pix_fmt and encoder in LOSSLESS_PIX_FMTS:
        pix_fmt = LOSSLESS_PIX_FMTS[encoder][alpha, bits]
    elif not pix_fmt:
        own = [name for name in formats if has_alpha(name)] if alpha else []
        pix_fmt = DEFAULT_PIX_FMT if not formats or DEFAULT_PIX_FMT in formats else (own or formats)[0]
    if formats and pix_fmt not in formats:
        raise LiifError(f"{encoder} cannot encode pixel format {pix_fmt!r}; it takes {', '.join(formats[:12])}")
    return encoder, pix_fmt


def chroma_halved(pix_fmt: str) -> tuple[bool, bool]:
    """Whether ``pix_fmt`` halves the colour resolution across the width, and down the height (4:2:0 both)."""
    chroma = [c for c in av.VideoFormat(pix_fmt, 4, 4).components[1:] if not c.is_alpha]
    return any(c.width < 4 for c in chroma), any(c.height < 4 for c in chroma)


def is_gray(pix_fmt: str) -> bool:
    """Whether ``pix_fmt`` holds one colour plane: gray, with or without alpha."""
    return sum(not c.is_alpha for c in av.VideoFormat(pix_fmt, 4, 4).components) == 1


def full_chroma_format(encoder: str) -> str:
    """A pixel format ``encoder`` takes at full colour resolution (4:4:4), which odd sides need: its first in colour
    (x264's and VP9's yuv444p, ProRes's yuv444p10le)."""
    formats = [f.name for f in av.Codec(encoder, "w").video_formats or []]
    return next((name for name in formats if not any(chroma_halved(name)) and not is_gray(name)), "yuv444p")


def check_even(encoder: str, pix_fmt: str, size: tuple[int, int]) -> None:
    """Refuse an odd side where the pixel format halves the colour resolution along it."""
    width, height = size
    for side, halved, name in zip(size, chroma_halved(pix_fmt), ("width", "height")):
        if side % 2 and halved:
            raise LiifError(f"{pix_fmt} halves the colour resolution, so the {name} must be even; the frames "
                            f"are {width}x{height} (choose an even size, or a 4:4:4 pixel format such as "
                            f"{full_chroma_format(encoder)})")


@contextmanager
def write_errors(failure: str) -> Iterator[None]:
    """The disk's and FFmpeg's errors inside, as a one-line LiifError: ``failure``, then why."""
    try:
        yield
    except (av.error.FFmpegError, OSError) as exc:
        raise LiifError(f"{failure}: {os_reason(exc)}") from None


class FrameWriter:
    """Frames in, one file (or folder) out: a context manager; ``write`` each (H, W, 3|4) uint8 or uint16 frame."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, overwrite: bool) -> None:
        self.path, self.size, self.rate = path, size, Fraction(rate)
        self.frames_written = 0
        # what the output leaves out, and why, one line each: streams or attached files of a video's copy_streams_from
        # not copied, a pixel aspect ratio the container cannot hold
        self.left_out: list[str] = []
        # the folders made for the output, removed again should it be dropped
        self.created_folders = check_destination(path, overwrite, isinstance(self, FolderWriter))
        self.temporary = temporary_name(path)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: types.TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray, pts: int | None = None, duration_ms: float | None = None) -> None:
        """Add one frame: (height, width, 3 or 4) uint8, or uint16 (a video's pixel format or PNG frames keep what
        they hold of its 16 bits, an APNG all; a GIF or WebP takes 8); ``pts`` in the time base (videos),
        ``duration_ms`` how long it shows (default: one frame at the rate)."""
        width, height = self.size
        if frame.dtype not in (np.uint8, np.uint16) or frame.ndim != 3 or frame.shape[:2] != (height, width) or \
                frame.shape[2] not in (3, 4):
            raise LiifError(f"a frame for {self.path} must be ({height}, {width}, 3 or 4) uint8 or uint16, "
                            f"got {frame.shape} {frame.dtype}")
        self._write(frame, pts, duration_ms)
        self.frames_written += 1

    @property
    def frames_kept(self) -> int:
        """The frames the output holds: every frame written, but those a GIF drops (``GifWriter``)."""
        return self.frames_written

    def close(self) -> None:
        """Finish the output and rename it to the path."""
        try:
            self._finish()
            if not self.frames_written:
                raise LiifError(f"no frame was written to {self.path}; nothing is left there")
            with write_errors(f"cannot write {self.path}"):  # the path became a folder for a file, or so
                self._rename()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the output: nothing is left under the path, nor under the temporary name, nor the folders made
        for it."""
        try:
            self._discard()
        finally:
            remove_path(self.temporary)
            remove_empty_folders(self.created_folders)

    def _rename(self) -> None:
        os.replace(self.temporary, self.path)

    def _write(self, frame: np.ndarray, pts: int | None, duration_ms: float | None) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        pass


def check_destination(path: Path, overwrite: bool, folder: bool) -> list[Path]:
    """Refuse an existing output unless ``overwrite``, a file where a ``folder`` of frames goes (or a folder where
    a file goes), and an unwritable folder; create a missing one. Returns the folders it created, innermost first."""
    overwrite = flag(overwrite, "overwrite", LiifError)  # "no" would replace the output
    if path.name in ("", ".."):  # "." or "/": no temporary name can sit beside it, nor be renamed to it
        raise LiifError(f"cannot write {path}: name the output (such as {path / 'frames'} or {path / 'zoom.mp4'})")
    created: list[Path] = []
    try:
        if path.exists() and path.is_dir() != folder:
            raise LiifError(f"{path} is a {'file' if folder else 'folder'}: it cannot be replaced by a "
                            f"{'folder of frames' if folder else 'file'}; choose another output")
        if path.is_dir():
            if any(path.iterdir()) and not overwrite:
                raise OutputExists(f"{path} exists and is not empty")
            if not is_frame_folder(path):
                raise LiifError(f"{path} holds files other than {FRAME_NAME.format(0)}, ...: it is never replaced")
        elif path.exists() and not overwrite:
            raise OutputExists(f"{path} exists")
        created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # as atomic_write does
        except (FileExistsError, NotADirectoryError):  # whichever mkdir met first: name the file in the way
            blocker = next(folder for folder in (path.parent, *path.parent.parents) if folder.exists())
            raise LiifError(f"cannot write {path}: {blocker} is a file, not a folder") from None
        if not os.access(path.parent, os.W_OK):
            raise LiifError(f"cannot write {path}: permission denied")
    except OSError as exc:
        remove_empty_folders(created)
        raise LiifError(f"cannot write {path}: {os_reason(exc)}") from None
    return created


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty: those made for an output that was dropped."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # something else was put there since: it and the folders above it stay
            return


def is_frame_folder(path: Path) -> bool:
    """Whether the folder holds nothing but frame_NNNNN.png files (an earlier output, safe to replace)."""
    return all(p.is_file() and p.name.startswith("frame_") and p.suffix == ".png" for p in path.iterdir())


class VideoWriter(FrameWriter):
    """A video container through PyAV, optionally with the audio and subtitle streams of another file."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, overwrite: bool, codec: str | None,
                 crf: int | None, preset: str | None, pix_fmt: str | None, time_base: Fraction | None,
                 copy_streams_from: str | os.PathLike | None, pixel_aspect: Fraction | None = None,
                 timecode: str | None = None, primaries: int | None = None, transfer: int | None = None,
                 alpha: bool = False, bits: int = 8) -> None:
        encoder, pix_fmt = video_format(path, codec, pix_fmt, alpha, bits)  # refusals before the destination is made
        check_even(encoder, pix_fmt, size)
        options = encoder_options(encoder, crf, preset)
        super().__init__(path, size, rate, overwrite)
        suffix = path.suffix.lower()
        self.time_base = Fraction(time_base) if time_base else 1 / self.rate
        self.step = max(1, round(1 / (self.rate * self.time_base)))  # one frame, in the time base
        self.next_pts = 0
        self.durations: dict[int, int] = {}  # each frame's duration in the time base, by its pts, until muxed
        self.first_pts = self.first_dts = None  # of the first frame written and the first packet encoded
        self.last_packet: av.Packet | None = None  # the latest encoded, muxed once the next one comes
        self.yuv = pix_fmt.startswith(("yuv", "nv"))
        # the range the frames are converted to and tagged with: a gray one untagged reads as limited, its
        # contrast stretched (black at 16 shown as 0, 235 as 255)
        self.color_range = MPEG_RANGE if self.yuv else FULL_RANGE if is_gray(pix_fmt) else None
        self.container = self.source = None
        try:
            with write_errors(f"cannot write {path}"):
                muxer = VIDEO_CONTAINERS[suffix]
                self.container = av.open(str(self.temporary), "w", format=muxer,
                                         options=FASTSTART if muxer in ("mp4", "mov") else {})
            unsupported = f"a {suffix} file cannot hold {encoder} video; choose another codec or container"
            if encoder not in self.container.supported_codecs:
                raise LiifError(unsupported)
            settings = "".join(f", {name} {value}" for name, value in options.items())
            with write_errors(f"cannot encode {path} with {encoder} ({size[0]}x{size[1]} {pix_fmt}{settings})"):
                self.stream = self.container.add_stream(encoder, rate=self.rate, options=options)
                context = self.stream.codec_context
                context.width, context.height, context.pix_fmt = size[0], size[1], pix_fmt
                context.time_base = self.time_base
                self.stream.time_base = self.time_base
                if pixel_aspect is not None:
                    context.sample_aspect_ratio = pixel_aspect
                    if suffix in (".mkv", ".webm") and av.Codec(encoder, "w").canonical_name not in ASPECT_IN_BITSTREAM:
                        self.left_out.append(f"its pixel aspect ratio {pixel_aspect} is left out: a {suffix} file "
                                             f"keeps it only in H.264 or HEVC video; write .mp4 to keep it with "
                                             f"{encoder}")
                if av.Codec(encoder, "w").canonical_name == "hevc" and VIDEO_CONTAINERS[suffix] in ("mp4", "mov"):
                    context.codec_tag = "hvc1"  # Apple's players refuse FFmpeg's default hev1, as FFmpeg's users know
                context.color_primaries, context.color_trc = primaries or BT709, transfer or BT709
                if self.yuv:
                    context.colorspace = BT709
                if self.color_range:
                    context.color_range = self.color_range
                if timecode:  # MOV's and MP4's muxers write a tmcd track from it, Matroska's a TIMECODE tag
                    self.stream.metadata["timecode"] = timecode
                self.copies = self._add_copies(copy_streams_from) if copy_streams_from else {}
                try:
                    self.container.start_encoding()
                except av.error.FFmpegError as exc:
                    if isinstance(exc, OSError):  # opening the file: a folder that takes none (/proc), a full disk
                        raise LiifError(f"cannot write {path}: {os_reason(exc)}") from None
                    if exc.filename == str(self.temporary):  # the muxer refused the stream as it wrote the header
                        raise LiifError(unsupported) from None
                    raise
            check_options_taken(encoder, context.options)
        except BaseException:
            self.abort()
            raise
        self.pending = None  # the next packet to copy, read ahead of the video

    def _add_copies(self, source_path: str | os.PathLike) -> dict:
        """Output streams for the audio and subtitle streams of ``source_path``, by input stream index, with their
        tags (language, title) and dispositions (default, forced), as the file's tags and its video's are kept.
        A stream no video container holds is left out (``left_out``); one another container holds is refused.
        Its attached files (a Matroska file's subtitle fonts) are attached to a Matroska output, left out of others."""
        with write_errors(f"cannot read the streams of {source_path}"):
            self.source = av.open(str(source_path))
        self.container.metadata.update(content_tags(self.source.metadata))
        video = main_video(self.source)
        if video is not None:
            self.stream.metadata.update(content_tags(video.metadata))
        copies = {}
        supported = self.container.supported_codecs
        attachments = [stream for stream in self.source.streams if stream.type == "attachment"]
        if attachments and self.container.format.name != "matroska":
            names = ", ".join(stream.metadata.get("filename", f"#{stream.index}") for stream in attachments)
            self.left_out.append(f"its attached files ({names}) are left out: only .mkv holds them")
        for stream in attachments if self.container.format.name == "matroska" else []:
            attached = self.container.add_attachment(stream.metadata.get("filename", f"attachment{stream.index}"),
                                                     stream.mimetype or "application/octet-stream", stream.data)
            attached.metadata.update(stream.metadata)  # its title, as the file's name and type
        for stream in self.source.streams:
            if stream.type not in COPIED_TYPES:
                self._note_left_out(stream, video)
                continue
            name = stream.codec_context.name if stream.codec_context else "?"
            what = f"its {stream.type} stream #{stream.index} ({name})"
            holders = [] if name in supported else containers_holding(name)
            if name not in supported and not holders:  # no choice of output would keep it: the video goes on
                self.left_out.append(f"{what} is left out: none of {', '.join(VIDEO_CONTAINERS)} holds it without "
                                     f"re-encoding")
                continue
            if name not in supported:
                hint = f"{', '.join(holders[:-1])} or {holders[-1]}" if len(holders) > 1 else holders[0]
                raise LiifError(f"{what} cannot be copied into {self.path.suffix} without re-encoding; write {hint}")
            copy = copies[stream.index] = self.container.add_stream_from_template(stream)
            copy.metadata.update(stream.metadata)  # the same packets: every tag still holds
            copy.disposition = stream.disposition
        self.packets = self.source.demux(*[self.source.streams[i] for i in copies]) if copies else iter(())
        self.source_start = timeline_start(self.source)  # seconds: the frames' pts count from it (open_clip's)
        return copies

    def _note_left_out(self, stream: av.stream.Stream, video: av.video.stream.VideoStream | None) -> None:
        """Say that a stream of the source other than its video, audio and subtitles is left out (``left_out``): data
        (a drone's KLV, timed ID3), another video, cover art. Not the video itself, nor its attached files (said
        apart), nor a timecode track where the output writes the timecode again."""
        if video is not None and stream.index == video.index or stream.type == "attachment":
            return
        if stream.type == "data" and "timecode" in stream.metadata and "timecode" in self.stream.metadata:
            return
        name = stream.codec_context.name if stream.codec_context else getattr(stream, "name", None) or "?"
        what = "cover art" if stream_kind(stream) == "cover art" else f"{stream.type} stream"
        self.left_out.append(f"its {what} #{stream.index} ({name}) is left out: the output holds its video, audio "
                             f"and subtitles")

    def _write(self, frame: np.ndarray, pts: int | None, duration_ms: float | None) -> None:
        if pts is None:
            pts = self.next_pts
        step = self.step if duration_ms is None else max(1, round(Fraction(duration_ms) / 1000 / self.time_base))
        self.next_pts = pts + step
        self.durations[pts] = step
        if self.first_pts is None:
            self.first_pts = pts
        with write_errors(f"cannot write {self.path}"):
            video_frame = av.VideoFrame.from_ndarray(frame, format=RGB_FORMATS[frame.dtype.itemsize, frame.shape[2]])
            context = self.stream.codec_context
            video_frame = video_frame.reformat(format=context.pix_fmt,
                                               dst_colorspace="itu709" if self.yuv else None,
                                               dst_color_range=self.color_range)
            video_frame.pts, video_frame.time_base = pts, self.time_base
            self._mux_video(self.stream.encode(video_frame))
        self._copy_until(float(pts * self.time_base))

    def _mux_video(self, packets: list[av.Packet], end: bool = False) -> None:
        """Mux encoded packets, each with its frame's duration (an encoder gives every packet one frame at the
        mean rate, which would cut or stretch the last frame of a variable rate: a GIF's closing pause). The last
        packet in decoding order waits for the ``end``: MP4 and MOV end the track there, so where B-frames put
        another frame last, that packet lasts until the last frame has shown."""
        self._repair_decoding_times(packets)
        for packet in packets:
            packet.duration = self.durations.pop(packet.pts, packet.duration)
            if self.first_dts is None:
                self.first_dts = packet.dts
            if self.last_packet is not None:
                self.container.mux(self.last_packet)
            self.last_packet = packet
        if end and self.last_packet is not None:
            last, self.last_packet = self.last_packet, None
            shown = self.next_pts - self.first_pts  # the frames' span, the last frame's duration included
            last.duration = max(last.duration, shown - (last.dts - self.first_dts))
            self.container.mux(last)

    def _repair_decoding_times(self, packets: list[av.Packet]) -> None:
        """Give ``packets`` decoding times again where the encoder's cannot be: x265 leaves those of a clip of one or
        two frames unset, whatever its memory held, and the muxer then refused the video at random ("Not yet
        implemented in FFmpeg"). No decoder waits for more frames than were written: the packets' display times in
        order, moved back by their reordering, are theirs."""
        if not packets:  # none to repair (and no first_pts before the first frame)
            return
        earliest = 2 * self.first_pts - self.next_pts  # the first frame's time, less that of every frame written
        if any(p.dts is None or not earliest <= p.dts <= p.pts for p in packets):
            times = sorted(p.pts for p in packets)
            delay = max(time - p.pts for time, p in zip(times, packets))
            for time, packet in zip(times, packets):
                packet.dts = time - delay

    def _copy_until(self, seconds: float | None) -> None:
        """Copy the source's packets up to ``seconds`` (all of them for None), so that the muxer interleaves
        them with the video. A source that ends in damage stops the copy there: the video is the work."""
        if not self.copies:
            return
        try:
            while True:
                packet = self.pending or next(self.packets, None)
                self.pending = None
                if packet is None:
                    return
                if packet.dts is None:  # the demuxer's empty flush packet
                    continue
                if seconds is not None and packet.pts is not None and \
                        packet.pts * packet.time_base - self.source_start > seconds:
                    self.pending = packet
                    return
                shift = round(self.source_start / packet.time_base)
                packet.dts -= shift
                if packet.pts is not None:
                    packet.pts -= shift
                packet.stream = self.copies[packet.stream.index]
                self.container.mux(packet)
        except av.error.FFmpegError:
            self.copies = {}

    def _finish(self) -> None:
        with write_errors(f"cannot write {self.path}"):
            self._mux_video(self.stream.encode(None), end=True)
            self._copy_until(None)
            self._close_files()
            with open(self.temporary, "rb+") as f:  # what PyAV wrote, on the disk before the rename
                os.fsync(f.fileno())

    def _close_files(self) -> None:
        for container in (self.source, self.container):
            if container is not None:
                container.close()
        self.source = self.container = None

    def _discard(self) -> None:
        try:
            self._close_files()
        except av.error.FFmpegError:
            pass  # a container that cannot even close: it is removed below


def check_options_taken(encoder: str, unused: dict[str, str]) -> None:
    """Refuse a quality or speed the opened ``encoder`` left ``unused`` (ProRes has neither): it would be ignored."""
    given = [option(name) for name, keys in (("crf", ("crf",)), ("preset", ("preset", "cpu-used")))
             if any(key in unused for key in keys)]
    if given:
        one = len(given) == 1
        raise LiifError(f"{encoder} takes no {' or '.join(given)}: leave {'it' if one else 'them'} out")


def containers_holding(codec: str) -> list[str]:
    """The video outputs' suffixes whose container holds a stream of ``codec`` as it is (copied, not re-encoded)."""
    holding = []
    for suffix, muxer in VIDEO_CONTAINERS.items():
        with av.open(io.BytesIO(), "w", format=muxer) as container:
            if codec in container.supported_codecs:
                holding.append(suffix)
    return holding


def content_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` less those of the source's encoding (``ENCODING_TAGS``; mkvmerge's "BPS-eng" and such included)."""
    return {key: value for key, value in tags.items()
            if not key.lower().split("-")[0].startswith(ENCODING_TAGS)}


def encoder_options(encoder: str, crf: int | None, preset: str | None) -> dict[str, str]:
    """FFmpeg options for a quality (crf) and speed (preset) on each encoder that has them."""
    if encoder == "ffv1":
        if crf is not None:
            raise LiifError(f"ffv1 is lossless: {option('crf')} does not apply to it")
        if preset:
            raise LiifError(f"ffv1 has no presets: {option('preset')} does not apply to it")
        return {"level": "3", "slicecrc": "1"}
    options = {}
    crf = DEFAULT_CRF.get(encoder) if crf is None else crf
    if crf is not None:
        if not Number(low=0, high=63).fits(crf):  # "18" would fail in the comparison, True pass as "True"
            raise LiifError(f"{option('crf')} must be 0 to 63 (lower is better quality), got {crf}")
        options["crf"] = str(crf)
        if encoder.startswith("libvpx"):
            options["b"] = "0"  # VP9's constant-quality mode: crf with no bitrate target
    if preset and encoder in ("libx264", "libx265") and preset.lower() not in X264_PRESETS:
        raise LiifError(f"{option('preset')} {preset!r}: {encoder} takes {', '.join(X264_PRESETS)}")
    if preset:
        options["cpu-used" if encoder.startswith("libvpx") else "preset"] = preset
    if encoder == "libx265":
        options["x265-params"] = "log-level=error"  # x265 prints its settings and a summary to stderr otherwise
    if encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints its settings to stderr otherwise
    return options


def check_frame_duration(path: Path, duration_ms: float, why: str = "") -> None:
    """Refuse a frame's duration an animation to ``path`` cannot hold (Pillow overflows, or fails, once every frame is
    made); ``why`` follows it in the message."""
    longest = LONGEST_FRAME_MS[ANIMATION_FORMATS[path.suffix.lower()]]
    if not Number(low=0, high=longest).fits(duration_ms):
        raise LiifError(f"a {path.suffix} frame shows for at most {longest / 1000:g} s, got {duration_ms / 1000:g} "
                        f"s{why}")


class AnimationWriter(FrameWriter):
    """An animation's checks and running time, common to a GIF (``GifWriter``) and a WebP or APNG
    (``EncodedAnimationWriter``): its play count, its size and a frame's duration, refused before the destination is
    made."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, overwrite: bool, plays: int) -> None:
        self.format = ANIMATION_FORMATS[path.suffix.lower()]
        if not Number(int, low=0, high=MOST_PLAYS[self.format]).fits(plays):
            raise LiifError(f"the play count of a {path.suffix} must be 0 (forever) to {MOST_PLAYS[self.format]}, "
                            f"got {plays!r}")
        check_encodable(self.format, (size[1], size[0], 3))
        check_frame_duration(path, float(1000 / Fraction(rate)), f", one frame at {float(rate):g} frames per second")
        super().__init__(path, size, rate, overwrite)  # refusals before the destination is made
        self.plays = plays
        self.shown_ms = 0.0  # the running time

    def frame_duration(self, duration_ms: float | None) -> float:
        """How long a frame given ``duration_ms`` shows, checked: one frame at the rate where it is None."""
        duration_ms = float(1000 / self.rate) if duration_ms is None else duration_ms
        check_frame_duration(self.path, duration_ms)
        return duration_ms


class EncodedAnimationWriter(AnimationWriter):
    """An animated WebP or PNG (APNG) through FFmpeg's libwebp_anim or apng encoder, with each frame's duration (its
    start rounded to the ms on the running time) and the play count. An APNG is written frame by frame; libwebp keeps
    the WebP's frames encoded (a fraction of their pixels) until it assembles them at the end.

    libwebp folds a frame equal to the one before into it (one frame, the durations summed), lossy one within a few
    levels of it too: one pixel of such a repeat is four levels from the one before instead. FFmpeg gives the last
    frame the mean duration (WebP) or the one before's (APNG): its own is written into the file's last frame."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, overwrite: bool, plays: int) -> None:
        super().__init__(path, size, rate, overwrite, plays)
        self.stream: av.video.stream.VideoStream | None = None  # added with the first frame, which says its channels
        self.last: np.ndarray | None = None  # the last frame as written
        self.last_packet: av.Packet | None = None  # muxed once it is known not to be the last
        self.last_ms = 0  # the last frame's duration, in whole ms on the running time
        self.transparent = False  # whether any frame has a pixel less than opaque
        self.container: av.container.OutputContainer | None = None
        webp = self.format == "WEBP"
        try:
            with write_errors(f"cannot write {path}"):
                self.container = av.open(str(self.temporary), "w", format="webp" if webp else "apng",
                                         options={"loop" if webp else "plays": str(plays)})
        except LiifError:
            self.abort()
            raise

    def _write(self, frame: np.ndarray, pts: int | None, duration_ms: float | None) -> None:
        if self.format == "WEBP":  # libwebp holds 8 bits; FFmpeg's apng encoder takes 16 (rgb48be, rgba64be)
            frame = eight_bit(frame)
        duration_ms = self.frame_duration(duration_ms)
        if self.format == "WEBP" and self.last is not None and \
                np.abs(frame.astype(np.int16) - self.last).max() < WEBP_NUDGE:  # lossy: near is the same
            frame = nudged(frame, self.last)
        self.last = frame
        self.transparent = self.transparent or (frame.shape[2] == 4 and bool((frame[:, :, 3] < 255).any()))
        rgb_format = RGB_FORMATS[frame.dtype.itemsize, frame.shape[2]]
        with write_errors(f"cannot write {self.path}"):
            if self.stream is None:
                self.stream = self.container.add_stream(
                    "libwebp_anim" if self.format == "WEBP" else "apng",
                    options={"quality": str(LOSSY_QUALITY)} if self.format == "WEBP" else {})
                self.stream.width, self.stream.height = self.size
                # libwebp takes RGB as BGRA; the apng encoder 16 bits big-endian only
                self.stream.pix_fmt = "bgra" if self.format == "WEBP" else rgb_format.replace("le", "be")
                self.stream.codec_context.time_base = self.stream.time_base = MS
            video_frame = av.VideoFrame.from_ndarray(frame, format=rgb_format)
            if video_frame.format.name != self.stream.pix_fmt:
                video_frame = video_frame.reformat(format=self.stream.pix_fmt)
            video_frame.pts, video_frame.time_base = round(self.shown_ms), MS
            self.shown_ms += duration_ms
            self.last_ms = round(self.shown_ms) - video_frame.pts
            self._mux(self.stream.encode(video_frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if self.last_packet is not None:
                self.container.mux(self.last_packet)
            self.last_packet = packet

    def _finish(self) -> None:
        if self.stream is None:
            return
        with write_errors(f"cannot write {self.path}"):
            self._mux(self.stream.encode(None))
            # in place: the packet's side data (an APNG's headers, on its first) goes with it
            time_last = set_webp_last_duration if self.format == "WEBP" else set_apng_delay
            time_last(memoryview(self.last_packet), max(1, self.last_ms))
            if self.format == "WEBP" and self.transparent:
                mark_webp_transparent(memoryview(self.last_packet))
            self.container.mux(self.last_packet)
            self._close_container()
            with open(self.temporary, "rb+") as f:
                os.fsync(f.fileno())

    def _close_container(self) -> None:
        if self.container is not None:
            container, self.container = self.container, None
            container.close()

    def _discard(self) -> None:
        try:
            self._close_container()
        except av.error.FFmpegError:
            pass  # a container that cannot even close: it is removed next


def nudged(frame: np.ndarray, last: np.ndarray) -> np.ndarray:
    """``frame`` with one value WEBP_NUDGE levels from ``last``'s: the red of its most opaque pixel (libwebp ignores
    the colour of a fully transparent one), or that pixel's alpha in a frame with no pixel more than transparent."""
    y, x = np.unravel_index(np.argmax(frame[:, :, 3]), frame.shape[:2]) if frame.shape[2] == 4 else (0, 0)
    channel = 3 if frame.shape[2] == 4 and frame[y, x, 3] == 0 else 0
    before = int(last[y, x, channel])
    frame = frame.copy()
    frame[y, x, channel] = before + WEBP_NUDGE if before < 128 else before - WEBP_NUDGE
    return frame


def set_webp_last_duration(data: memoryview, duration_ms: int) -> None:
    """Make the last frame (ANMF chunk) of an animated WebP (RIFF) ``data`` show for ``duration_ms``; a still one
    stays as it is."""
    at, last = 12, None  # after "RIFF", the size and "WEBP"
    while at + 8 <= len(data):
        if data[at:at + 4] == b"ANMF":
            last = at + 8 + 12  # the duration follows the frame's offsets and size
        at += 8 + (int.from_bytes(data[at + 4:at + 8], "little") + 1) // 2 * 2
    if last is not None:
        data[last:last + 3] = duration_ms.to_bytes(3, "little")


def mark_webp_transparent(data: memoryview) -> None:
    """Set the alpha flag of the animated WebP (RIFF) ``data``: libwebp leaves it out where each frame it stores is
    opaque, a frame's transparent border cropped off (to the canvas, transparent), so decoders showed it all opaque."""
    if data[12:16] == b"VP8X":
        data[20] |= WEBP_ALPHA_FLAG


def set_apng_delay(data: memoryview, duration_ms: int) -> None:
    """Make the APNG frame ``data`` (its fcTL chunk) show for ``duration_ms``, as the apng muxer writes a delay: the
    seconds as a fraction of 16-bit terms; a still PNG's (no fcTL) stays as it is."""
    at = bytes(data).find(b"fcTL")
    if at < 4:
        return
    delay = Fraction(duration_ms, 1000)
    while delay.numerator > 0xFFFF:  # a frame of more than 65 s: coarser than the ms
        delay = delay.limit_denominator(max(1, delay.denominator // 2))
    data[at + 24:at + 28] = struct.pack(">HH", delay.numerator, delay.denominator)
    data[at + 30:at + 34] = struct.pack(">I", zlib.crc32(data[at:at + 30]))  # over its type and 26 bytes of data


class GifWriter(AnimationWriter):
    """An animated GIF, written frame by frame as they come (Pillow's save_all keeps every frame until the end, and
    folds a repeated frame into the one before): each frame with its own palette, dithered, and its delay, in the format's
    whole hundredths of a second, rounded on the running time, so that the animation keeps its length and rate (24
    fps: 40, 40, 40, 50, ... ms, where cutting each 41.7 ms to 40 would play 25 fps). A frame that would show for
    less than 20 ms (beyond 50 frames per second), which browsers stretch to 100 ms, is dropped: the next one shows
    from its start."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, overwrite: bool, plays: int) -> None:
        super().__init__(path, size, rate, overwrite, plays)
        # the latest frame and its start in ms (whole hundredths): written once the next one's start gives its delay
        self.held: tuple[Image.Image, int] | None = None
        self.dropped = 0
        with write_errors(f"cannot write {path}"):
            self.file = open(self.temporary, "wb")

    def _write(self, frame: np.ndarray, pts: int | None, duration_ms: float | None) -> None:
        start = round(self.shown_ms / 10) * 10
        self.shown_ms += self.frame_duration(duration_ms)
        image = gif_frame(eight_bit(frame))
        if self.held is not None:
            held, held_start = self.held
            if start - held_start >= SHORTEST_GIF_DELAY_MS:
                self._put(held, start - held_start)
            else:
                start = held_start
                self.dropped += 1
        self.held = image, start

    @property
    def frames_kept(self) -> int:
        return self.frames_written - self.dropped

    def _put(self, image: Image.Image, delay_ms: int) -> None:
        """Write a frame that shows for ``delay_ms``; the file's header before the first."""
        params = {"duration": delay_ms}
        if "transparency" in image.info:  # each frame cleared, or the one before shows through its transparency
            params.update(transparency=GIF_TRANSPARENT, disposal=2)
        with write_errors(f"cannot write {self.path}"):
            if self.file.tell():
                params["include_color_table"] = True
            else:  # the first frame's palette is the global one
                image.info["version"] = b"89a"  # frame delays and the play count need GIF89a
                header, _ = GifImagePlugin.getheader(image, None, {"loop": gif_loop(self.plays)})
                self.file.write(b"".join(header))
            self.file.write(b"".join(GifImagePlugin.getdata(image, **params)))

    def _finish(self) -> None:
        if self.held is None:
            return
        image, start = self.held
        self._put(image, max(round(self.shown_ms / 10) * 10 - start, SHORTEST_GIF_DELAY_MS))
        with write_errors(f"cannot write {self.path}"):
            self.file.write(b";")  # the trailer
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def _discard(self) -> None:
        self.file.close()


def gif_loop(plays: int) -> int | None:
    """The NETSCAPE count of a GIF that plays ``plays`` times (0: forever): the repeats after the first play, as
    browsers read it; one play has no count at all (None)."""
    return None if plays == 1 else max(plays - 1, 0)


def gif_frame(frame: np.ndarray) -> Image.Image:
    """A frame as a GIF palette frame: 255 colours (median cut, Floyd-Steinberg dithered), and index 255
    transparent where alpha is below half. (Pillow's own RGBA conversion loses the transparency of some frames.)"""
    rgb = Image.fromarray(frame[:, :, :3])
    # Pillow dithers only onto a palette given: without it a smooth gradient (most of a zoom's frames) bands
    quantised = rgb.quantize(palette=rgb.quantize(GIF_TRANSPARENT), dither=Image.Dither.FLOYDSTEINBERG)
    indices = np.asarray(quantised).copy()
    palette = quantised.getpalette()[:3 * GIF_TRANSPARENT]
    palette += [0] * (3 * GIF_TRANSPARENT - len(palette))
    if frame.shape[2] == 4:
        indices[frame[:, :, 3] < 128] = GIF_TRANSPARENT
    image = Image.fromarray(indices, "P")
    image.putpalette(palette + [0, 0, 0])
    if frame.shape[2] == 4:
        image.info["transparency"] = GIF_TRANSPARENT
    return image


class FolderWriter(FrameWriter):
    """A folder of frame_00000.png, frame_00001.png, ...: written in a temporary folder, then renamed."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, overwrite: bool) -> None:
        super().__init__(path, size, rate, overwrite)
        try:
            with write_errors(f"cannot write {path}"):  # a full disk, or a folder that takes no new entries (/proc)
                self.temporary.mkdir()
        except LiifError:
            self.abort()
            raise

    def _write(self, frame: np.ndarray, pts: int | None, duration_ms: float | None) -> None:
        with write_errors(f"cannot write {self.path}"):
            with open(self.temporary / FRAME_NAME.format(self.frames_written), "wb") as f:
                encode_picture(Picture(frame), "PNG", f)
                f.flush()
                os.fsync(f.fileno())

    def _finish(self) -> None:
        pass

    def _rename(self) -> None:
        if self.path.is_dir() and any(self.path.iterdir()):  # an earlier output, checked to hold only frames
            old = temporary_name(self.path)
            os.replace(self.path, old)
            try:
                os.replace(self.temporary, self.path)
            except OSError:
                os.replace(old, self.path)  # the earlier output stays as it was
                raise
            remove_path(old)
        else:
            os.replace(self.temporary, self.path)  # over an empty folder, if there is one


def frame_rate(rate: Fraction | float | str) -> Fraction:
    """``rate`` frames per second as a Fraction above 0, a float as the nearest one over at most 1001 (29.97 is
    2997/100: its exact binary value overflows FFmpeg's rational); a LiifError for anything else."""
    try:
        exact = Fraction(rate)  # "30000/1001" too
    except (TypeError, ValueError, OverflowError):  # NaN, infinity, what is no number
        exact = None
    if exact is None or exact <= 0:
        raise LiifError(f"the frame rate must be a number above 0, got {rate!r}")
    return exact.limit_denominator(RATE_DENOMINATOR) if isinstance(rate, float) else exact


def open_frame_writer(path: str | os.PathLike, size: tuple[int, int], rate: Fraction, *,
                      codec: str | None = None, crf: int | None = None, preset: str | None = None,
                      pix_fmt: str | None = None, plays: int = 0, overwrite: bool = False,
                      time_base: Fraction | None = None, copy_streams_from: str | os.PathLike | None = None,
                      pixel_aspect: Fraction | None = None, timecode: str | None = None, primaries: int | None = None,
                      transfer: int | None = None, alpha: bool = False, bits: int = 8) -> FrameWriter:
    """A writer of ``size`` (width, height) frames at ``rate`` frames per second to ``path``, whose suffix picks
    the kind (see the module). Videos: ``codec`` (h264, vp9, av1, ffv1 or an FFmpeg encoder), ``crf``, ``preset``,
    ``pix_fmt`` (default yuv420p; for ffv1 RGB as the frames are: bgr0, bgra with ``alpha``, gbrp16le or gbrap16le
    for 16 ``bits``), ``time_base`` of the ``pts`` given to ``write`` (default
    1/rate), ``copy_streams_from``: a file whose audio and subtitle streams are copied, timed as ``open_clip`` times its
    frames (from its ``timeline_start``; one no video container holds is left out and named in the writer's
    ``left_out``), and ``pixel_aspect``: the
    sample aspect ratio, a pixel's width over its height as displayed (default square), ``timecode``: the first
    frame's, as FFmpeg writes it ("01:02:03:04"; "01:02:03;04" drop-frame), ``primaries`` and ``transfer``: the colour
    primaries and transfer characteristic of the frames' RGB (FFmpeg's AVCOL_PRI and AVCOL_TRC numbers; default
    BT.709: an HDR source's BT.2020 and HLG or PQ are kept this way). Animations: ``plays``,
    how many times it plays (0: forever; 1: once), whatever the format counts."""
    path = Path(path)
    width, height = size
    if not (isinstance(width, int) and isinstance(height, int) and width >= 1 and height >= 1):
        raise LiifError(f"frame size must be two whole numbers >= 1 (width, height), got {size!r}")
    rate = frame_rate(rate)
    kind = output_kind(path)
    if bits not in FRAME_BITS:
        raise LiifError(f"bits must be {' or '.join(map(str, FRAME_BITS))} (uint8 or uint16 frames), got {bits!r}")
    if timecode is not None and not (isinstance(timecode, str) and TIMECODE.fullmatch(timecode)):  # else dropped
        raise LiifError(f"a timecode is hours:minutes:seconds:frames (\"01:02:03:04\", drop-frame \"01:02:03;04\"), "
                        f"got {timecode!r}")
    if pixel_aspect is not None:
        pixel_aspect = Fraction(pixel_aspect).limit_denominator(MAX_ASPECT_TERM)
        if pixel_aspect <= 0:
            raise LiifError(f"the pixel aspect ratio must be above 0, got {pixel_aspect}")
    if kind != "video" and (codec or crf is not None or preset or pix_fmt or copy_streams_from or
                            pixel_aspect not in (None, 1) or timecode or primaries or transfer):
        given = [option(name) for name, value in (("codec", codec), ("crf", crf), ("preset", preset),
                                                  ("pix_fmt", pix_fmt)) if value is not None]
        what = f"a {path.suffix.lower()} animation" if kind == "animation" else "a folder of PNG frames"
        if given:  # the caller's own settings, which it would otherwise believe applied
            one = len(given) == 1
            raise LiifError(f"{path}: {' and '.join(given)} {'is' if one else 'are'} for video outputs "
                            f"({', '.join(VIDEO_CONTAINERS)}), not {what}: leave {'it' if one else 'them'} out")
        raise LiifError(f"{path}: pixel aspect, colour primaries and transfer, timecode and copied streams are for "
                        f"video outputs ({', '.join(VIDEO_CONTAINERS)}), not {what}")
    if kind == "video":
        return VideoWriter(path, (width, height), rate, overwrite, codec, crf, preset, pix_fmt, time_base,
                           copy_streams_from, pixel_aspect, timecode, primaries, transfer, alpha, bits)
    if kind == "animation":
        writer = GifWriter if ANIMATION_FORMATS[path.suffix.lower()] == "GIF" else EncodedAnimationWriter
        return writer(path, (width, height), rate, overwrite, plays)
    return FolderWriter(path, (width, height), rate, overwrite)
