"""Upscale pictures to any scale, size or region with a LIIF model, in bounded memory.

Inputs are files, folders or globs (PNG, JPEG, WebP, BMP, TIFF); the output format follows the output
extension. Output size = round(input size x scale) per axis, halves rounded up. --region x0,y0,x1,y1 is in
input pixels (floats allowed; the whole picture is 0,0,W,H) and renders only that part of the image.

examples:
  liif upscale photo.jpg --scale 3.5 -o photo_x3.5.png
  liif upscale photo.jpg --scale 2,3 -o wide.png          (SY,SX: 2x taller, 3x wider)
  liif upscale photo.jpg --size 640x480 -o exact.webp
  liif upscale photo.jpg --region 100,80,164,144 --scale 30 -o detail.png
  liif upscale pictures/ 'more/*.jpg' --width 2000 -o out/ --suffix _big
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import time
from pathlib import Path

import torch

from liif.errors import LiifError
from liif.geometry import Geometry
from liif.imageio import FORMATS, IMAGE_SUFFIXES, check_writable, read_picture, write_picture
from liif.pretrained import DEFAULT_MODEL
from liif.runtime import PRECISIONS, check_precision, pick_device
from liif.upscale import DEFAULT_MAX_PIXELS, check_target, render_picture, resolve_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    parser.add_argument("-o", "--output", help="output file (one input) or folder (created if needed); "
                        "default: beside each input, with the suffix")
    geometry = parser.add_argument_group("output geometry (give one of --scale, --size, --width, --height)")
    geometry.add_argument("--scale", help="S or SY,SX: output = round(input x scale); below 1 downscales")
    geometry.add_argument("--size", metavar="WxH", help="exact output size in pixels")
    geometry.add_argument("--width", help="output width, keeping the aspect ratio")
    geometry.add_argument("--height", help="output height, keeping the aspect ratio")
    geometry.add_argument("--region", metavar="X0,Y0,X1,Y1",
                          help="render only this window of the input (input pixels, floats allowed)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"built-in name or .pth path (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="bf16 or fp16 on a GPU; bf16 on a CPU with native bf16 (default fp32)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the 8 flips and transposes (8x slower, a little sharper)")
    parser.add_argument("--alpha", default="model", choices=("model", "bicubic"),
                        help="how alpha is resized: through the model as gray (default) or PIL bicubic")
    parser.add_argument("--suffix", help="added to output names (default '_liif' beside the input, '' in -o folder)")
    parser.add_argument("--format", choices=sorted({ext.lstrip('.') for ext in FORMATS}),
                        help="output format for folder outputs (default: the input's)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--max-pixels", type=float, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse outputs larger than this many pixels (default {DEFAULT_MAX_PIXELS:.0e})")
    parser.add_argument("--tile", type=int, default=256, help="encoder tile side in input pixels (default 256)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no summary")


def expand_inputs(patterns: list[str]) -> tuple[list[Path], bool]:
    """Input files in order, and whether this is a batch (several files, a folder or a glob)."""
    files: list[Path] = []
    batch = len(patterns) > 1
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            batch = True
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif glob.has_magic(pattern) and not path.exists():
            batch = True
            files += [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).is_file()]
        else:
            files.append(path)  # missing files fail in their turn, with the others going on
    return files, batch


def output_path(source: Path, args: argparse.Namespace, batch: bool) -> Path:
    """Where the output of ``source`` goes: -o itself for one input, else a name in -o or beside the input."""
    output = Path(args.output) if args.output else None
    if output is not None and not batch and not output.is_dir() and not args.output.endswith(("/", "\\")):
        return output
    folder = output if output is not None else source.parent
    suffix = args.suffix if args.suffix is not None else ("" if output is not None else "_liif")
    extension = f".{args.format}" if args.format else source.suffix
    return folder / f"{source.stem}{suffix}{extension}"


def prepare_output_folder(args: argparse.Namespace, batch: bool) -> None:
    if args.output and (batch or args.output.endswith(("/", "\\"))):
        try:
            Path(args.output).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LiifError(f"cannot create output folder {args.output}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    geometry = Geometry.parse(args.scale, args.size, args.width, args.height, args.region)
    if not (math.isfinite(args.max_pixels) and args.max_pixels >= 1):
        raise LiifError(f"--max-pixels must be a number >= 1, got {args.max_pixels:g}")
    if args.threads is not None:
        if args.threads < 1:
            raise LiifError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.tile < 1:
        raise LiifError(f"--tile must be at least 1, got {args.tile}")
    device = pick_device(args.device)
    check_precision(device, args.precision)
    files, batch = expand_inputs(args.inputs)
    if not files:
        raise LiifError(f"no input files match {' '.join(args.inputs)}")
    prepare_output_folder(args, batch)
    model = resolve_model(args.model, device)

    started, written, failed = time.perf_counter(), 0, 0
    for source in files:
        try:
            upscale_file(model, source, output_path(source, args, batch), geometry, args)
            written += 1
        except LiifError as exc:
            failed += 1
            print(f"liif upscale: error: {source}: {exc}", file=sys.stderr)
    if not args.quiet:
        print(f"liif upscale: {written} written, {failed} failed, {time.perf_counter() - started:.1f} s "
              f"on {device}", file=sys.stderr)
    return 1 if failed else 0


def upscale_file(model, source: Path, destination: Path, geometry: Geometry, args: argparse.Namespace) -> None:
    """Read, plan, check the output path, render, write: one file."""
    picture = read_picture(source)
    target = geometry.target(picture.pixels.shape[:2])
    check_target(target, picture, int(args.max_pixels))
    check_writable(destination, args.overwrite)
    result = render_picture(model, picture, target, args.self_ensemble, args.alpha, args.precision, args.tile,
                            progress=not args.quiet, label=source.name)
    write_picture(result, destination, args.overwrite)
