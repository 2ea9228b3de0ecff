"""Video upscaling speed as users get it: ``liif.upscale_video`` end to end (decode, render, encode, audio-free
H.264 in and out), in frames per second, on a synthetic clip made here with PyAV.

    python benchmarks/video_speed.py                                   # CPU: 320x240 -> x2 (640x480), 24 frames
    python benchmarks/video_speed.py --size 1440x1080 --to 3840x2160 --device cuda --precisions fp16,bf16 --batches 1,4
    python benchmarks/video_speed.py --size 64x48 --frames 3           # a smoke run

Prints a markdown table: frames per second end to end, and of the render alone (``render_pictures`` on the same
frames, no decoding or encoding), so the cost of the video plumbing shows. The first frame of each case warms up
kernels and is not timed.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from common import run_script
import liif
from liif.imageio import Picture
from liif.runtime import pick_device
from liif.upscale import render_pictures
from liif.video.writer import open_frame_writer


def synthetic_frame(index: int, width: int, height: int) -> np.ndarray:
    """A frame with edges, ramps and texture that moves: something like footage for the encoder and the model."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shift = 3.0 * index
    red = 127 + 100 * np.sin((x + shift) / 17) * np.cos(y / 23)
    green = 255 * ((x // 16 + (y + shift) // 16) % 2) * 0.6 + 50
    blue = (x + y + 2 * shift) % 256
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def make_clip(path: Path, width: int, height: int, frames: int, rate: int = 24) -> Path:
    """An H.264 clip of ``frames`` synthetic frames, at crf 16 (close to lossless, like a good source)."""
    with open_frame_writer(path, (width, height), Fraction(rate), crf=16, preset="veryfast",
                           pix_fmt="yuv420p" if width % 2 == height % 2 == 0 else "yuv444p") as writer:
        for index in range(frames):
            writer.write(synthetic_frame(index, width, height))
    return path


def measure(model, source: Path, destination: Path, size: tuple[int, int], device: torch.device, precision: str,
            batch: int, codec: str | None) -> dict:
    """Frames per second of one ``upscale_video`` call, less its first (warm-up) batch: timed by the frames
    written after it."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stamps = []
    import liif.video.upscale as video_upscale

    real = video_upscale.render_pictures

    def timed(*args, **kwargs):  # the time each batch leaves the renderer
        out = real(*args, **kwargs)
        sync()
        stamps.append((time.perf_counter(), len(out)))
        return out

    video_upscale.render_pictures = timed
    try:
        start = time.perf_counter()
        result = liif.upscale_video(source, destination, size=size, model=model, precision=precision, batch=batch,
                                    codec=codec, overwrite=True)
        total = time.perf_counter() - start
    finally:
        video_upscale.render_pictures = real
    frames_after_first = sum(n for _, n in stamps[1:])
    steady = (stamps[-1][0] - stamps[0][0]) if len(stamps) > 1 else float("nan")
    return {"frames": result.frames, "total_s": total, "fps": frames_after_first / steady if len(stamps) > 1
            else result.frames / total, "fps_with_warmup": result.frames / total}


def render_only(model, frame: np.ndarray, size: tuple[int, int], device: torch.device, precision: str,
                batch: int, repeats: int = 2) -> float:
    """Frames per second of ``render_pictures`` alone on ``batch`` copies of a frame, best of ``repeats``."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    target = liif.Geometry(size=size).target(frame.shape[:2])
    pictures = [Picture(frame)] * batch
    best = float("inf")
    for i in range(repeats + 1):
        sync()
        start = time.perf_counter()
        render_pictures(model, pictures, target, precision=precision)
        sync()
        if i:
            best = min(best, time.perf_counter() - start)
    return batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="320x240", help="input WxH (default 320x240)")
    parser.add_argument("--scale", type=float, default=2, help="output = input x scale (default 2)")
    parser.add_argument("--to", help="output WxH instead of --scale (e.g. 3840x2160)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default="fp32")
    parser.add_argument("--batches", default="1", help="comma-separated frames per model call")
    parser.add_argument("--codec", default=None, help="output codec (default h264)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-render-only", action="store_true", help="skip the render-alone column")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    size = tuple(int(v) for v in args.to.lower().split("x")) if args.to else \
        (round(width * args.scale), round(height * args.scale))
    model = liif.load_model("edsr-baseline-liif", device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    print(f"# liif.upscale_video {width}x{height} -> {size[0]}x{size[1]}, {args.frames} frames, {where}, "
          f"torch {torch.__version__}, PyAV {av.__version__}")
    print("| precision | batch | frames/s end to end | frames/s render alone | seconds (all frames) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="video_speed_") as folder:
        source = make_clip(Path(folder) / "in.mp4", width, height, args.frames)
        frame = synthetic_frame(0, width, height)
        for precision in args.precisions.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                stats = measure(model, source, Path(folder) / "out.mp4", size, device, precision, batch, args.codec)
                alone = "-" if args.no_render_only else \
                    f"{render_only(model, frame, size, device, precision, batch):.3g}"
                print(f"| {precision} | {batch} | {stats['fps']:.3g} | {alone} | {stats['total_s']:.1f} |", flush=True)


if __name__ == "__main__":
    run_script(main)
