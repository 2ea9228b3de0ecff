"""Upscale a video or an animation frame by frame: read (``reader``), plan the output once, render batches
of frames with ``liif.upscale.render_pictures``, write (``writer``), as a stream with a bounded number of frames
in flight. Timestamps, rate, play count, durations and a video's start timecode are kept; its audio and
subtitles are copied, not its cover art (of FFmpeg's muxers only MP4's keeps a copied one as a cover: Matroska's
makes it a video track), its data tracks or another video, which a note names.

``upscale_video(src, dst, scale=2)`` is the whole job; ``upscale_clip`` is the same for a loaded model and a
``Geometry`` (the CLI's path).
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch.nn as nn
from tqdm import tqdm

from liif.bounds import COUNT, flag
from liif.errors import LiifError, option
from liif.geometry import Geometry, Target
from liif.imageio import Picture
from liif.pretrained import DEFAULT_MODEL
from liif.runtime import check_precision, render_tile
from liif.upscale import (DEFAULT_MAX_PIXELS, check_target, checked_alpha, checked_max_pixels, model_on,
                          render_pictures)
from liif.pipeline import Background, prefetch
from liif.video.reader import (VIDEO_SUFFIXES, Clip, ClipFrame, ClipInfo, DecodeStopped, has_alpha, is_deep,
                               open_clip)
from liif.video.writer import (ANIMATION_FORMATS, MOST_PLAYS, VIDEO_CONTAINERS, chroma_halved, full_chroma_format,
                               open_frame_writer, output_kind, video_format)

GPU_BATCH = 4  # frames per model call on a GPU; a CPU gains nothing from batching


@dataclass(frozen=True)
class VideoOptions:
    """How frames are rendered and encoded (see ``upscale_video``)."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    batch: int | None = None
    self_ensemble: bool = False
    alpha: str = "model"
    precision: str = "fp32"
    tile: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("self_ensemble", "overwrite"):  # before the model loads
            object.__setattr__(self, name, flag(getattr(self, name), name, LiifError))
        object.__setattr__(self, "max_pixels", checked_max_pixels(self.max_pixels))
        checked_alpha(self.alpha)
        if self.batch is not None:  # "4" would fail in a comparison, 2.5 gather every frame into one batch
            object.__setattr__(self, "batch", COUNT.check(self.batch, option("batch"), LiifError))


@dataclass(frozen=True)
class VideoResult:
    """What was written: the path, the frame count (of the output: a GIF drops frames it cannot show) and the frame
    size (width, height)."""

    path: Path
    frames: int
    size: tuple[int, int]


def output_suffix(source: Path) -> str:
    """The suffix of an output named after ``source``: its own, or .mkv for a container only read (.avi, .mts)."""
    suffix = source.suffix.lower()
    return ".mkv" if suffix in VIDEO_SUFFIXES and suffix not in VIDEO_CONTAINERS else source.suffix


def plan_clip(info: ClipInfo, geometry: Geometry, destination: Path, options: VideoOptions
              ) -> tuple[Target, list[str]]:
    """The output of every frame, checked before any rendering, and notes on what a video output changes: 4:2:0
    video halves the colour resolution, so its sides must be even (an odd one is rounded up), a pixel format
    without alpha leaves an animation's transparency out, and one of 8 bits the depth of a 10-bit source."""
    width, height = info.size
    target = geometry.target((height, width))
    notes = []
    if output_kind(destination) == "video":
        encoder, pix_fmt = video_format(destination, options.codec, options.pix_fmt, info.alpha, info.bits)
        halved = chroma_halved(pix_fmt)
        even = tuple(side + (side % 2 if half else 0) for side, half in zip(target.size, halved[::-1]))
        if even != target.size:
            notes.append(f"the output {target.size[1]}x{target.size[0]} is rounded to {even[1]}x{even[0]}: "
                         f"{pix_fmt} needs even sides (a 4:4:4 {option('pix_fmt')} such as "
                         f"{full_chroma_format(encoder)} keeps odd ones)")
            target = Target(even, target.region)
        if info.alpha and not has_alpha(pix_fmt):
            notes.append(f"its transparency is left out: {pix_fmt} has no alpha (VP9 keeps it with {option('pix_fmt')} "
                         f"yuva420p, and {option('codec')} ffv1, an animation or PNG frames keep it)")
        if info.bits > 8 and not is_deep(pix_fmt):  # HDR in 8 bits bands
            notes.append(f"its depth of more than 8 bits a channel is cut to 8: {pix_fmt} holds 8 ({option('pix_fmt')} "
                         f"yuv420p10le keeps 10 with H.264, HEVC or AV1, and {option('codec')} ffv1 keeps them all)")
    channels = 4 if info.alpha else 3
    check_target(target, Picture(np.empty((1, 1, channels), np.uint16 if info.bits > 8 else np.uint8)),
                 options.max_pixels)
    return target, notes


def frame_groups(frames: Iterable[ClipFrame], size: int) -> Iterator[list[ClipFrame]]:
    """Frames in lists of ``size``; when decoding stops early, the frames before it, then the error."""
    group: list[ClipFrame] = []
    try:
        for frame in frames:
            group.append(frame)
            if len(group) == size:
                yield group
                group = []
    except DecodeStopped:
        if group:
            yield group
        raise
    if group:
        yield group


def upscale_clip(model: nn.Module, source: str | os.PathLike, destination: str | os.PathLike,
                 geometry: Geometry, options: VideoOptions = VideoOptions(), progress: bool = False,
                 note: Callable[[str], object] = warnings.warn) -> VideoResult:
    """Read ``source``, plan, render every frame with ``model`` (on its device), write ``destination``.
    A clip whose decoding stops early is written up to there, then a LiifError says where it stopped."""
    source, destination = Path(source), Path(destination)
    device = next(model.parameters()).device
    check_precision(device, options.precision, model)
    batch = options.batch if options.batch is not None else 1 if device.type == "cpu" else GPU_BATCH
    if options.tile is None:  # chosen once, so that every frame is cut into the same tiles
        options = replace(options, tile=render_tile(device, batch))
    with open_clip(source, progress) as clip:
        target, notes = plan_clip(clip.info, geometry, destination, options)
        for line in notes:
            note(line)
        written = render_clip(model, clip, source, destination, target, options, batch, progress, note)
    return VideoResult(destination, written, target.size[::-1])


def render_clip(model: nn.Module, clip: Clip, source: Path, destination: Path, target: Target,
                options: VideoOptions, batch: int, progress: bool, note: Callable[[str], object]) -> int:
    """Decode, render and encode ``clip`` as a stream (``note`` says which streams are left out); the number of
    frames written."""
    info = clip.info
    writer = open_frame_writer(destination, target.size[::-1], info.rate, overwrite=options.overwrite,
                               **writer_options(info, target, source, destination, options))
    for line in writer.left_out:
        note(line)
    stopped = None
    # leave=None: kept when alone, cleared when nested under a batch's files bar (as render_pictures' pixel bar)
    bar = tqdm(total=info.frames, desc=source.name, unit="frame", disable=not progress, leave=None,
               file=sys.stderr, dynamic_ncols=True)
    with bar, writer:
        encoder = Background(lambda item: writer.write(*item), depth=2 * batch)
        try:
            for group in frame_groups(prefetch(clip.frames(), depth=2 * batch), batch):
                pictures = render_pictures(model, [Picture(frame.pixels) for frame in group], target,
                                           options.self_ensemble, options.alpha, options.precision, options.tile)
                for frame, picture in zip(group, pictures):
                    encoder.put((picture.pixels, frame.pts, frame.duration_ms))
                bar.update(len(group))
        except DecodeStopped as exc:
            stopped = exc
        except BaseException:
            encoder.stop()  # the writer is removed next: its thread must be done with it
            raise
        encoder.join()
        if stopped is None and bar.total != bar.n:  # the count was an estimate (from the duration) or unknown
            bar.total = bar.n
            bar.refresh()
    if stopped is not None:
        raise LiifError(f"{stopped}; the {writer.frames_kept} frames before it were written to {destination}")
    return writer.frames_kept


def writer_options(info: ClipInfo, target: Target, source: Path, destination: Path, options: VideoOptions
                   ) -> dict:
    """The writer's keywords: codec settings for every output (an animation or a folder of frames refuses them, rather
    than leave them unused without a word); timestamps, pixel aspect, timecode, colour primaries and transfer (the
    frames' RGB is rendered in the source's) and copied streams for a video output (every frame keeps its time, so the
    source's start timecode still names the first); the play count for an animation (beyond what the output's format
    counts, tens of thousands, the most it counts)."""
    kind = output_kind(destination)
    encoding = {"codec": options.codec, "crf": options.crf, "preset": options.preset, "pix_fmt": options.pix_fmt}
    if kind == "video":
        return {**encoding, "time_base": info.time_base,
                "copy_streams_from": source if info.kind == "video" else None,
                "pixel_aspect": pixel_aspect(info, target), "timecode": info.timecode,
                "primaries": info.primaries, "transfer": info.transfer, "alpha": info.alpha, "bits": info.bits}
    if kind == "animation":
        plays = info.plays if info.kind == "animation" else 0
        most = MOST_PLAYS[ANIMATION_FORMATS[destination.suffix.lower()]]
        return {**encoding, "plays": min(plays, most) if plays else 0}
    return encoding


def pixel_aspect(info: ClipInfo, target: Target) -> Fraction | None:
    """The output's sample aspect ratio: an anamorphic input's display shape kept, as FFmpeg's scale filter
    keeps it; None (square) for square input pixels, which an explicit size stretches as it does pictures."""
    if info.pixel_aspect == 1:
        return None
    x0, y0, x1, y1 = target.region
    height, width = target.size
    return info.pixel_aspect * Fraction(x1 - x0) * height / (Fraction(y1 - y0) * width)


def upscale_video(src: str | os.PathLike, dst: str | os.PathLike, scale: float | Sequence[float] | None = None,
                  *, size: tuple[int, int] | None = None, width: int | None = None, height: int | None = None,
                  region: Sequence[float] | None = None, model: str | os.PathLike | nn.Module = DEFAULT_MODEL,
                  device: str = "auto", precision: str = "fp32", self_ensemble: bool = False, alpha: str = "model",
                  max_pixels: int = DEFAULT_MAX_PIXELS, tile: int | None = None, batch: int | None = None,
                  codec: str | None = None, crf: int | None = None, preset: str | None = None,
                  pix_fmt: str | None = None, overwrite: bool = False, progress: bool = False,
                  kernel: str | None = None, compile: str = "none") -> VideoResult:
    """Upscale the video or animation ``src`` into ``dst`` (its suffix picks the kind: .mp4 .mkv .mov .webm,
    .gif .webp .png, or a folder of PNG frames). ``size`` is (W, H) per frame; ``region`` x0,y0,x1,y1 crops
    every frame; ``codec`` h264 (default), vp9 (.webm default), av1 or ffv1 (lossless); ``batch`` frames per
    model call (default 1 on a CPU, 4 on a GPU); ``kernel`` and ``compile`` as ``liif.upscale.model_on``."""
    geometry = Geometry(scale, size, width, height, region)
    options = VideoOptions(codec, crf, preset, pix_fmt, batch, self_ensemble, alpha, precision, tile, max_pixels,
                           overwrite)
    flag(progress, "progress", LiifError)  # before the model loads
    net = model_on(model, device, precision, kernel, compile)
    return upscale_clip(net, src, dst, geometry, options, progress)
