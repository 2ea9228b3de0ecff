"""Small synthetic clips for the video tests, made with PyAV: moving colour ramps, a tone, variable timing."""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SAMPLE_RATE = 8000
CUES = [(0, 200, "Hello"), (300, 150, "World")]  # start and duration in ms, text
ASS_HEADER = (b"[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize\n"
              b"Style: Default,Arial,16\n\n[Events]\nFormat: Layer, Start, End, Style, Text\n")


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
              pix_fmt: str = "yuv420p", rotation: int = 0, mirrored: bool = False, subtitles: bool = False,
              pixel_aspect: Fraction | None = None, start: int = 0, cover: bool = False, video: bool = True,
              timecode: str | None = None, file_timecode: str | None = None,
              colour: tuple[int, int, int] | None = None, audio_codec: str = "aac", clock: int = 0,
              klv: bool = False) -> Path:
    """Write a clip: ``frames`` frames of ``size`` (w, h) at ``rate`` fps (or each lasting ``durations_ms``,
    a variable frame rate in a 1/1000 time base), with a mono tone when ``audio`` (AAC, or ``audio_codec``), and
    two SubRip subtitles when ``subtitles`` (Matroska; in MP4 and MOV, their own mov_text); ``pixel_aspect`` is the
    sample aspect ratio (anamorphic video), ``rotation`` turns the display counter-clockwise, then ``mirrored`` flips
    it left to right (a phone's front camera), ``start`` the first frame's time in frames (the sound still starts at 0);
    ``cover``: an MP4 cover picture that FFmpeg lists as the first stream (see ``cover_first``); no video stream at
    all without ``video``;
    ``timecode``: the start timecode ("01:02:03:04") of the video stream, a tmcd track in a MOV or MP4, as cameras
    write it; ``file_timecode``: one of the whole file, as ``ffmpeg -timecode`` tags a Matroska file; ``colour``: the
    (primaries, transfer, matrix) the video declares, as FFmpeg numbers them (a phone's HDR: (9, 18, 9), BT.2020 with
    HLG); ``clock``: whole seconds added to every stream's times (a TV recording's clock runs hours in); ``klv``: a KLV
    data packet with every frame, as a drone's MPEG-TS carries its telemetry."""
    with av.open(str(path), "w") as container:
        if file_timecode:
            container.metadata["timecode"] = file_timecode
        art = container.add_stream("png", rate=1) if cover else None
        if art is not None:
            art.width, art.height, art.pix_fmt = 32, 32, "rgb24"
            art.disposition = av.stream.Disposition.attached_pic
        if video:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
            if durations_ms:
                stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
            if rotation or mirrored:
                stream.set_display_rotation(rotation, hflip=mirrored)
            if pixel_aspect:
                stream.codec_context.sample_aspect_ratio = pixel_aspect
            if timecode:
                stream.metadata["timecode"] = timecode
            if colour:
                context = stream.codec_context
                context.color_primaries, context.color_trc, context.colorspace = colour
        sound = container.add_stream(audio_codec, rate=SAMPLE_RATE, layout="mono") if audio else None
        telemetry = container.add_data_stream("klv") if klv else None
        mov_text = subtitles and path.suffix in (".mp4", ".mov")
        cues = subtitle_cues(path.with_suffix(".srt")) if subtitles and not mov_text else None
        cue_stream = container.add_stream_from_template(cues.streams[0]) if cues else None
        if mov_text:
            cue_stream = container.add_stream("mov_text")
            cue_stream.codec_context.subtitle_header = ASS_HEADER  # the encoder's need; the packets are made here
            cue_stream.time_base = Fraction(1, 1000)
        if art is not None:
            still = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
            container.mux(art.encode(still) + art.encode(None))
        pts = 0
        for index in range(frames if video else 0):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, size), format="rgb24")
            if durations_ms:
                frame.pts, frame.time_base = clock * 1000 + pts, Fraction(1, 1000)
                pts += durations_ms[index % len(durations_ms)]
            else:
                frame.pts = clock * rate + start + index
            container.mux(stream.encode(frame))
            if telemetry is not None:  # a KLV key (SMPTE's prefix), then a length and a value
                packet = av.Packet(bytes.fromhex("060e2b34020b01010e01030101000000") + bytes([1, index]))
                packet.pts = packet.dts = frame.pts
                packet.time_base, packet.stream = Fraction(1, rate), telemetry
                container.mux(packet)
        if video:
            container.mux(stream.encode(None))
        if sound is not None:
            seconds = pts / 1000 if durations_ms else (start + frames) / rate
            samples = int(seconds * SAMPLE_RATE)
            tone = (np.sin(np.arange(samples) * 2 * math.pi * 440 / SAMPLE_RATE) * 0.3).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[None, start:start + 1024]
                block = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                block.sample_rate, block.pts = SAMPLE_RATE, clock * SAMPLE_RATE + start
                container.mux(sound.encode(block))
            container.mux(sound.encode(None))
        if mov_text:
            for start, duration, text in CUES:
                packet = av.Packet(struct.pack(">H", len(text)) + text.encode())  # mov_text: length, then text
                packet.pts = packet.dts = start
                packet.duration, packet.time_base, packet.stream = duration, Fraction(1, 1000), cue_stream
                container.mux(packet)
        if cues is not None:
            with cues:
                for packet in cues.demux(cues.streams[0]):
                    if packet.dts is not None:
                        packet.stream = cue_stream
                        container.mux(packet)
    if cover:
        cover_first(path)
    return path


def interlaced_clip(path: Path, frames: int = 4, size: tuple[int, int] = (64, 48), progressive: int = 0) -> Path:
    """An interlaced H.264 clip (lossless), as TV and camcorders record: a white bar moving right on black, each
    frame's even rows (its second field: x264 takes the field order of the frames, which PyAV cannot mark top first)
    a moment after its odd rows, so that the frame combs. Its first ``progressive`` frames are encoded progressive
    (a TV recording that begins with a film), the others by an encoder of their own, whose headers are in its stream."""
    width, height = size
    interlacing = {"flags": "+ilme+ildct", "qp": "0"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"} if progressive else interlacing)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        encoder = stream.codec_context
        for index in range(frames):
            if index == progressive and progressive:
                container.mux(stream.encode(None))
                encoder = av.CodecContext.create("libx264", "w")
                encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
                encoder.time_base, encoder.framerate, encoder.options = Fraction(1, 25), 25, interlacing
            pixels = np.zeros((height, width, 3), np.uint8)
            for row in range(height):
                left = 8 * index + 4 * (1 - row % 2)
                pixels[row, left:left + 8] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in [*encoder.encode(frame), *(encoder.encode(None) if index == frames - 1 else [])]:
                packet.stream = stream
                container.mux(packet)
    return path


def cover_first(path: Path) -> None:
    """Move an MP4's udta box, which holds its cover, ahead of its tracks, as some taggers write it: FFmpeg's
    demuxer then lists the cover as stream 0. (FFmpeg writes the moov box last, so no sample offset moves.)"""
    data = path.read_bytes()
    start, end = box_spans(data, 0, len(data))[-1]
    assert data[start + 4:start + 8] == b"moov" and end == len(data)
    children = box_spans(data, start + 8, end)
    children.sort(key=lambda span: data[span[0] + 4:span[0] + 8] not in (b"mvhd", b"udta"))  # then the tracks
    path.write_bytes(data[:start + 8] + b"".join(data[a:b] for a, b in children))


def box_spans(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """The (start, end) of each ISO media box from ``start`` to ``end``."""
    spans = []
    while start < end:
        size = struct.unpack(">I", data[start:start + 4])[0]
        spans.append((start, start + size))
        start += size
    return spans


def subtitle_cues(srt: Path) -> av.container.InputContainer:
    """Two SubRip cues, written to ``srt`` and opened (PyAV demuxes SubRip files)."""
    def time(ms: int) -> str:
        return f"00:00:00,{ms:03d}"  # the cues are all within the first second
    srt.write_text("\n".join(f"{index}\n{time(start)} --> {time(start + duration)}\n{text}\n"
                             for index, (start, duration, text) in enumerate(CUES, 1)))
    return av.open(str(srt))


def retagged(source: Path, destination: Path, tags: dict[str, str], stream_tags: dict[int, dict[str, str]],
             dispositions: dict[int, int]) -> Path:
    """``source`` remuxed to ``destination`` with the file's ``tags``, and each stream's tags and disposition by
    index (languages, titles, the default and forced flags of a film's tracks)."""
    with av.open(str(source)) as container, av.open(str(destination), "w") as output:
        streams = [output.add_stream_from_template(stream) for stream in container.streams]
        output.metadata.update(tags)
        for index, stream in enumerate(streams):
            stream.metadata.update(stream_tags.get(index, {}))
            stream.disposition = dispositions.get(index, 0)
        for packet in container.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                output.mux(packet)
    return destination


def attached(source: Path, destination: Path, name: str, mimetype: str, data: bytes) -> Path:
    """``source`` remuxed to the Matroska ``destination`` with a file attached (a font of its subtitles)."""
    with av.open(str(source)) as container, av.open(str(destination), "w") as output:
        streams = [output.add_stream_from_template(stream) for stream in container.streams]
        output.add_attachment(name, mimetype, data)
        for packet in container.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                output.mux(packet)
    return destination


def packets(path: Path, kind: str) -> list[bytes]:
    """The payload of every packet of the first ``kind`` stream ('audio', 'video'), in order."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [bytes(p) for p in container.demux(stream) if p.size]


def decoded_frames(path: Path, rgb_format: str = "rgb24") -> list[tuple[np.ndarray, float]]:
    """Every frame of the first video stream as ``rgb_format`` (rgb48le: 16 bits), with its time in seconds."""
    with av.open(str(path)) as container:
        return [(f.to_ndarray(format=rgb_format), float(f.pts * f.time_base)) for f in container.decode(video=0)]
