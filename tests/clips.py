"""Small synthetic clips for the video tests, made with PyAV: moving colour ramps, a tone, variable timing."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 8000


def frame_pixels(index: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``index`` of a clip, (height, width, 3) uint8: ramps that move with the index."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // max(width - 1, 1) + 9 * index) % 256
    green = (y * 255 // max(height - 1, 1) + 5 * index) % 256
    blue = ((x + y) * 3 + 17 * index) % 256
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def make_clip(path: Path, frames: int = 12, size: tuple[int, int] = (64, 48), rate: int = 24,
              audio: bool = True, durations_ms: list[int] | None = None, codec: str = "libx264",
              pix_fmt: str = "yuv420p", rotation: int = 0, subtitles: bool = False,
              pixel_aspect: Fraction | None = None, start: int = 0) -> Path:
    """Write a clip: ``frames`` frames of ``size`` (w, h) at ``rate`` fps (or each lasting ``durations_ms``,
    a variable frame rate in a 1/1000 time base), with a mono AAC tone when ``audio``, and two SubRip
    subtitles when ``subtitles`` (Matroska); ``pixel_aspect`` is the sample aspect ratio (anamorphic video),
    ``start`` the first frame's time in frames (the sound still starts at 0)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = size[0], size[1], pix_fmt
        if durations_ms:
            video.codec_context.time_base = video.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(rotation)
        if pixel_aspect:
            video.codec_context.sample_aspect_ratio = pixel_aspect
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        cues = subtitle_cues(path.with_suffix(".srt")) if subtitles else None
        cue_stream = container.add_stream_from_template(cues.streams[0]) if cues else None
        pts = 0
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, size), format="rgb24")
            if durations_ms:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += durations_ms[index % len(durations_ms)]
            else:
                frame.pts = start + index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            seconds = pts / 1000 if durations_ms else (start + frames) / rate
            samples = int(seconds * SAMPLE_RATE)
            tone = (np.sin(np.arange(samples) * 2 * math.pi * 440 / SAMPLE_RATE) * 0.3).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[None, start:start + 1024]
                block = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                block.sample_rate, block.pts = SAMPLE_RATE, start
                container.mux(sound.encode(block))
            container.mux(sound.encode(None))
        if cues is not None:
            with cues:
                for packet in cues.demux(cues.streams[0]):
                    if packet.dts is not None:
                        packet.stream = cue_stream
                        container.mux(packet)
    return path


def subtitle_cues(srt: Path) -> av.container.InputContainer:
    """Two SubRip cues, written to ``srt`` and opened (PyAV demuxes SubRip files)."""
    srt.write_text("1\n00:00:00,000 --> 00:00:00,200\nHello\n\n2\n00:00:00,300 --> 00:00:00,450\nWorld\n")
    return av.open(str(srt))


def packets(path: Path, kind: str) -> list[bytes]:
    """The payload of every packet of the first ``kind`` stream ('audio', 'video'), in order."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [bytes(p) for p in container.demux(stream) if p.size]


def decoded_frames(path: Path) -> list[tuple[np.ndarray, float]]:
    """Every frame of the first video stream as rgb24, with its time in seconds."""
    with av.open(str(path)) as container:
        return [(f.to_ndarray(format="rgb24"), float(f.pts * f.time_base)) for f in container.decode(video=0)]
