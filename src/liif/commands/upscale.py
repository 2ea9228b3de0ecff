"""Upscale pictures, videos and animations to any scale, size or region with a LIIF model, in bounded memory.

Inputs are files, folders or globs: pictures (PNG, JPEG, WebP, BMP, TIFF, read by their content), videos
(MP4, MKV, WebM, MOV, AVI, MPEG-TS, MPEG, FLV: every frame, sound and subtitles copied, timestamps kept) and
animations (GIF, animated WebP and PNG: every frame, durations, loop and transparency kept). Folders and globs
skip the tool's own earlier outputs (names ending in the suffix). The output format follows the output extension (a name
with no extension: a folder of PNG frames). An input is never written over, and inputs that would share an
output all fail. Output size = round(input size x scale) per axis, halves rounded up. --region x0,y0,x1,y1
is in input pixels (floats allowed; the whole picture is 0,0,W,H) and renders only that part of the image.

examples:
  liif upscale photo.jpg --scale 3.5 -o photo_x3.5.png
  liif upscale photo.jpg --scale 2,3 -o wide.png          (SY,SX: 2x taller, 3x wider)
  liif upscale photo.jpg --size 640x480 -o exact.webp
  liif upscale photo.jpg --region 100,80,164,144 --scale 30 -o detail.png
  liif upscale pictures/ 'more/*.jpg' --width 2000 -o out/ --suffix _big
  liif upscale shots/ --scale 2 -o out/ --skip-existing          (finish an interrupted batch)
  liif upscale clip.mp4 --size 3840x2160 -o clip_4k.mp4 --crf 18 --preset slow
  liif upscale clip.mkv --scale 2 -o archive.mkv --codec ffv1    (lossless)
  liif upscale loop.gif --scale 3 -o loop_x3.gif
  torchrun --standalone --nproc-per-node 4 -m liif upscale shots/ --scale 2 -o out/   (one GPU per process)
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from liif.commands import add_encoder_options, add_model_options, add_threads_option, set_threads
from liif.bounds import COUNT
from liif.distributed import Processes, alike, global_sum, joined_processes, share_label
from liif.errors import LiifError, option, os_reason, printable
from liif.fileio import file_id
from liif.geometry import Geometry, Target
from liif.imageio import (FORMATS, IMAGE_SUFFIXES, Picture, check_output, depth_note, output_format, read_picture,
                          write_picture)
from liif.pipeline import Background, prefetch
from liif.renderer import checked_tile
from liif.upscale import (ALPHA_MODES, DEFAULT_MAX_PIXELS, check_target, checked_max_pixels, model_on,
                          render_picture)
from liif.video.reader import CLIP_SUFFIXES, SHARED_SUFFIXES, is_moving, looks_like_transport_stream
from liif.video.upscale import VideoOptions, upscale_clip
from liif.video.upscale import output_suffix as clip_output_suffix
from liif.video.writer import ANIMATION_FORMATS, VIDEO_CONTAINERS

INPUT_SUFFIXES = (*IMAGE_SUFFIXES, *CLIP_SUFFIXES)  # what folders and globs give
OUTPUT_SUFFIXES = {*FORMATS, *VIDEO_CONTAINERS, *ANIMATION_FORMATS}  # what the outputs may be written as
MOVING_ONLY_SUFFIXES = (set(VIDEO_CONTAINERS) | set(ANIMATION_FORMATS)) - set(FORMATS) - {".gif"}  # .gif: its own word
# What fails one input and lets the batch go on.
FILE_ERRORS = (LiifError, OSError, MemoryError, torch.OutOfMemoryError)
# Pictures read ahead of the renderer, and rendered pictures waiting to be written: each stage holds one more
# in hand, so at most two pictures are in flight on either side of the one rendering.
READ_AHEAD = 1
WRITE_BEHIND = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`liif upscale`'s options."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="picture, video or animation files, folders "
                        "or globs")
    parser.add_argument("-o", "--output", help="output file (one input) or folder (created if needed; for one "
                        "input, a folder that exists or a name ending in /); default: beside each input, with the "
                        "suffix")
    geometry = parser.add_argument_group("output geometry (give one of --scale, --size, --width, --height)")
    geometry.add_argument("--scale", help="S or SY,SX: output = round(input x scale); below 1 downscales")
    geometry.add_argument("--size", metavar="WxH", help="exact output size in pixels")
    geometry.add_argument("--width", help="output width, keeping the aspect ratio")
    geometry.add_argument("--height", help="output height, keeping the aspect ratio")
    geometry.add_argument("--region", metavar="X0,Y0,X1,Y1",
                          help="render only this window of the input (input pixels, floats allowed)")
    add_model_options(parser)
    add_threads_option(parser)
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the 8 flips and transposes (8x slower, a little sharper)")
    parser.add_argument("--alpha", default="model", choices=ALPHA_MODES,
                        help="how alpha is resized: through the model as gray (default) or PIL bicubic")
    parser.add_argument("--suffix", help="added to output names (default '_liif' beside the input, '' in -o "
                        "folder); folders and globs skip files whose name already ends with it")
    parser.add_argument("--format", choices=sorted(suffix.lstrip(".") for suffix in OUTPUT_SUFFIXES),
                        help="format of outputs named after their inputs (default: the input's); "
                        "with -o FILE its extension decides")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="leave outputs that exist alone (every existing output is complete: writes are atomic), "
                             "e.g. to finish an interrupted batch")
    parser.add_argument("--max-pixels", type=float, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse outputs larger than this many pixels (default {DEFAULT_MAX_PIXELS}, "
                             f"{DEFAULT_MAX_PIXELS / 1e6:g} MP)")
    parser.add_argument("--tile", type=int, help="render tile side in input pixels (default: auto, from the "
                        "device: 256 on a CPU, up to 1024 on a GPU with the free memory for it)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars and no summary")
    video = parser.add_argument_group("videos (.mp4 .mkv .mov .webm out; -o NAME without a suffix: a folder of PNG "
                                      "frames)")
    add_encoder_options(video, "rounded up, with a note")
    video.add_argument("--batch", type=int, help="frames per model call (default 1 on a CPU, 4 on a GPU)")


@dataclass
class Failure:
    """Inputs that fail together, and why: one line on stderr."""

    names: list[str]
    reason: str

    @classmethod
    def of(cls, source: Path, exc: BaseException) -> Failure:
        """The failure of ``source`` by ``exc``, its reason in a few words."""
        reason = "out of memory" if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) else os_reason(exc)
        return cls([str(source)], reason)

    def report(self) -> None:
        """Print the failure as one line on stderr."""
        # tqdm.write keeps a progress bar drawn by the rendering thread whole
        tqdm.write(printable(f"liif upscale: error: {', '.join(self.names)}: {self.reason}"), file=sys.stderr)


def expand_inputs(patterns: list[str], own_suffix: str) -> tuple[list[Path], list[Failure], bool]:
    """Input files in order, each once (by resolved path); the patterns that could not be listed or, beside
    others that found files, list nothing (a typo in one glob of several); and whether this is a batch
    (several inputs, a folder or a glob)."""
    files: dict[str, Path] = {}
    failures, empty = [], []
    batch = len(patterns) > 1
    for pattern in patterns:
        try:
            found, listed = expand_pattern(pattern, own_suffix)
        except OSError as exc:
            failures.append(Failure([pattern], f"cannot list it: {os_reason(exc)}"))
            continue
        batch = batch or listed
        if listed and not found:
            empty.append(pattern)
        for path in found:
            files.setdefault(os.path.realpath(path), path)
    if files:
        failures += [Failure([pattern], "no picture or video to upscale in this folder" if os.path.isdir(pattern)
                             else "matches no picture or video") for pattern in empty]
    return list(files.values()), failures, batch


def expand_pattern(pattern: str, own_suffix: str) -> tuple[list[Path], bool]:
    """The files one INPUT names, and whether it is a folder or a glob; folders and globs give their image
    files, less the tool's own earlier outputs (stems ending in ``own_suffix``)."""
    if os.path.isdir(pattern):
        found = Path(pattern).iterdir()
    elif glob.has_magic(pattern) and not os.path.lexists(pattern):
        found = map(Path, glob.glob(pattern))
    else:
        return [Path(pattern)], False  # a missing or unreadable file fails in its turn, with the others going on
    # Non-folders are kept whatever they are, so that a FIFO or a broken link is reported, not skipped; a .ts
    # that is TypeScript is no video.
    return sorted(p for p in found if p.suffix.lower() in INPUT_SUFFIXES and not os.path.isdir(p)
                  and not (own_suffix and p.stem.endswith(own_suffix))
                  and (p.suffix.lower() not in SHARED_SUFFIXES or looks_like_transport_stream(p))), True


def output_suffix(args: argparse.Namespace) -> str:
    """The suffix of output names: --suffix, else '_liif' beside the inputs and '' in an -o folder."""
    return args.suffix if args.suffix is not None else ("" if args.output else "_liif")


def output_folder(args: argparse.Namespace, batch: bool) -> bool:
    """Whether -o names the folder of outputs named after their inputs: for a batch, or a path ending in a slash."""
    return bool(args.output) and (batch or args.output.endswith(("/", "\\")))


def single_output(args: argparse.Namespace, batch: bool) -> Path | None:
    """The file -o names for a single input, or None when outputs are named after their inputs."""
    if not args.output or output_folder(args, batch) or os.path.isdir(args.output):
        return None
    output = Path(args.output)
    if args.format and format_name(f".{args.format}") != format_name(output.suffix):
        raise LiifError(f"--format {args.format} contradicts -o {args.output}: "
                        f"a single output's format follows its extension")
    return output


def format_name(suffix: str) -> str:
    """What a suffix writes: the picture format (.jpg and .jpeg are one), else the suffix itself."""
    return FORMATS.get(suffix.lower(), suffix.lower())


def output_path(source: Path, args: argparse.Namespace, suffix: str) -> Path:
    """The output of ``source`` named after it: in the -o folder, or beside the input."""
    folder = Path(args.output) if args.output else source.parent
    extension = f".{args.format}" if args.format else clip_output_suffix(source)
    return folder / f"{source.stem}{suffix}{extension}"


def plan_outputs(destinations: dict[Path, Path]) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """The (input, output) pairs to render, in order, and the inputs refused before any rendering: inputs
    that would share an output all fail (one line per clash), and an input of the run is never written over."""
    sharing: dict[str, list[Path]] = {}
    for source, destination in destinations.items():
        sharing.setdefault(os.path.realpath(destination), []).append(source)
    input_paths = {os.path.realpath(source) for source in destinations}
    input_files = {file_id(source) for source in destinations} - {None}
    jobs, failures = [], []
    for source, destination in destinations.items():
        shared = sharing[os.path.realpath(destination)]
        if len(shared) > 1:
            if source == shared[0]:
                failures.append(Failure([str(s) for s in shared], f"all would be written to {destination}; "
                                        f"none of them is"))
        elif os.path.realpath(destination) in input_paths or file_id(destination) in input_files:
            failures.append(Failure([str(source)], f"its output {destination} is an input of this run, "
                                    f"which is never written over"))
        else:
            jobs.append((source, destination))
    return jobs, failures


def prepare_output_folder(args: argparse.Namespace, batch: bool) -> None:
    """Create the -o folder where it is one (``output_folder``); a LiifError when it cannot be, or when its name is
    an output file's (out.png for several inputs: a mistake, not a folder to make; out.png/ makes it)."""
    if output_folder(args, batch):
        named_as_folder = args.output.endswith(("/", "\\")) or os.path.isdir(args.output)
        if Path(args.output).suffix.lower() in OUTPUT_SUFFIXES and not named_as_folder:
            raise LiifError(f"-o {args.output} names one output file, but the inputs are several (a folder or a "
                            f"glob counts): give a folder (end the name with / to make this one)")
        try:
            Path(args.output).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LiifError(f"cannot create output folder {args.output}: {os_reason(exc)}") from None


def run(args: argparse.Namespace) -> int:
    """Upscale every input (this process's share under torchrun); 1 if any failed."""
    geometry = Geometry.parse(args.scale, args.size, args.width, args.height, args.region)
    args.max_pixels = checked_max_pixels(args.max_pixels)
    set_threads(args.threads)
    checked_tile(args.tile)
    if args.batch is not None:  # checked again per clip by VideoOptions; here before any model loads
        COUNT.check(args.batch, option("batch"), LiifError)
    if args.skip_existing and args.overwrite:
        raise LiifError("give --skip-existing or --overwrite, not both")
    if args.output == "":  # -o "$OUT" with OUT unset, in a script: not a wish to write beside the inputs
        raise LiifError("-o is empty: name an output file or folder, or leave -o out to write beside the inputs")
    with joined_processes(args.device) as procs:
        return upscale_batch(args, geometry, procs)


def upscale_batch(args: argparse.Namespace, geometry: Geometry, procs: Processes) -> int:
    """Plan every output, skip existing ones if asked, then upscale this process's share (rank r of W takes
    jobs r, r+W, ...); rank 0 reports planning failures and the summary of all processes."""
    device = procs.device
    suffix = output_suffix(args)
    # Every process plans from the same files, and none writes before all have planned (one that did would
    # change what another finds existing); a mistake met by all is said once, by rank 0.
    with alike(procs):
        files, failures, batch = expand_inputs(args.inputs, suffix)
        if not files and not failures:
            raise LiifError(f"no input files match {' '.join(args.inputs)}")
        single = single_output(args, batch)
        model = model_on(args.model, str(device), args.precision, args.kernel, args.compile)
        prepare_output_folder(args, batch)
        destinations = {source: single or output_path(source, args, suffix) for source in files}
        # Existing outputs are left alone before clashes are looked for: a rerun into its input folder lists its
        # earlier outputs among the inputs, each the output of itself and of another input.
        existing = {source for source, destination in destinations.items()
                    if args.skip_existing and destination.exists()}
        jobs, refused = plan_outputs({source: destinations[source] for source in files if source not in existing})
    skipped = len({os.path.realpath(destinations[source]) for source in existing})
    jobs = jobs[procs.rank::procs.world_size]

    started, failed = time.perf_counter(), 0
    for failure in failures + refused if procs.is_main else []:
        failure.report()
        failed += len(failure.names)
    # Only rank 0 draws, and its files bar counts its own share (jobs 0, W, 2W, ...): about 1/W of the batch,
    # so its time left is about the batch's. Skipped and refused inputs are settled already: the bar leaves them out.
    files_bar = share_label("files", procs.rank, procs.world_size) if len(files) > 1 and jobs else None
    outcomes = upscale_files(model, jobs, geometry, args, progress=not args.quiet and procs.is_main,
                             files_bar=files_bar)
    written, failed = global_sum([outcomes.written, failed + outcomes.failed], procs)
    if not args.quiet and procs.is_main:
        where = f"{procs.world_size} processes" if procs.distributed else str(device)
        skip = f"{skipped} skipped (existing), " if args.skip_existing else ""
        print(f"liif upscale: {written} written, {skip}{failed} failed, {time.perf_counter() - started:.1f} s "
              f"on {where}", file=sys.stderr)
    return 1 if failed else 0


@dataclass
class Outcomes:
    """The inputs written and failed so far, each advancing ``bar``; one barrier per input: whatever fails it,
    the batch goes on."""

    overwrite: bool
    bar: tqdm
    written: int = 0
    failed: int = 0

    def finish(self, job: tuple[Path, Path, Picture | BaseException | None]) -> None:
        """Write a rendered picture, count a clip written (None), or report a failure: in input order."""
        source, destination, outcome = job
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                write_picture(outcome, destination, self.overwrite)
                if text := depth_note(outcome, output_format(destination)):
                    note(source, text)
            self.written += 1
        except FILE_ERRORS as exc:
            self.failed += 1
            Failure.of(source, exc).report()
            self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
        self.bar.update()


def upscale_files(model: nn.Module, jobs: list[tuple[Path, Path]], geometry: Geometry, args: argparse.Namespace,
                  progress: bool, files_bar: str | None = None) -> Outcomes:
    """Upscale each (input, output) of ``jobs``: pictures are read in a thread ahead of the renderer and written
    in a thread behind it, so the device does not wait for the disk; outcomes are reported in input order.
    ``files_bar`` labels a bar of the jobs done (written or failed), each file's own bar cleared beneath it."""
    bar = tqdm(total=len(jobs), desc=files_bar, unit="file", disable=not progress or files_bar is None,
               file=sys.stderr, dynamic_ncols=True)
    outcomes = Outcomes(args.overwrite, bar)
    with bar:
        finisher = Background(outcomes.finish, depth=WRITE_BEHIND)
        loads = prefetch(read_jobs(jobs, geometry, args), depth=READ_AHEAD)
        try:
            for source, destination, loaded in loads:
                try:
                    if isinstance(loaded, BaseException):
                        raise loaded
                    if loaded is None:
                        upscale_moving(model, source, destination, geometry, args, progress)
                        result = None
                    else:
                        picture, target = loaded
                        result = render_picture(model, picture, target, args.self_ensemble, args.alpha,
                                                args.precision, args.tile, progress=progress, label=source.name)
                except FILE_ERRORS as exc:
                    result = exc
                finisher.put((source, destination, result))
        except BaseException:
            finisher.stop()  # pictures already rendered are written whole (atomically) before leaving
            raise
        finally:
            loads.close()  # the reading thread stops
        finisher.join()
    return outcomes


def read_jobs(jobs: Iterable[tuple[Path, Path]], geometry: Geometry, args: argparse.Namespace
              ) -> Iterator[tuple[Path, Path, tuple[Picture, Target] | BaseException | None]]:
    """(input, output, what to render) per job: the picture read and its output checked, None for a clip
    (read as it renders), or the error that fails the input."""
    for source, destination in jobs:
        try:
            loaded = None if is_moving(source) else read_planned(source, destination, geometry, args)
        except FILE_ERRORS as exc:
            loaded = exc
        yield source, destination, loaded


def read_planned(source: Path, destination: Path, geometry: Geometry, args: argparse.Namespace
                 ) -> tuple[Picture, Target]:
    """Read a picture, plan its output and check the output path: everything that can refuse it before rendering."""
    picture = read_picture(source)
    target = geometry.target(picture.pixels.shape[:2])
    check_target(target, picture, args.max_pixels)
    if (suffix := destination.suffix.lower()) in MOVING_ONLY_SUFFIXES:
        raise LiifError(f"{destination}: {suffix} is a video format, for video inputs; write a picture as one of "
                        f"{', '.join(sorted(FORMATS))}")
    check_output(destination, (*target.size, picture.pixels.shape[2]), args.overwrite)
    return picture, target


def upscale_moving(model: nn.Module, source: Path, destination: Path, geometry: Geometry, args: argparse.Namespace,
                   progress: bool) -> None:
    """Upscale a video or an animation: it streams through its own reading and writing threads."""
    options = VideoOptions(args.codec, args.crf, args.preset, args.pix_fmt, args.batch, args.self_ensemble,
                           args.alpha, args.precision, args.tile, args.max_pixels, args.overwrite)
    upscale_clip(model, source, destination, geometry, options, progress, note=lambda text: note(source, text))


def note(source: Path, text: str) -> None:
    """Say one line about how ``source`` was written, on stderr (above the progress bars)."""
    tqdm.write(printable(f"liif upscale: note: {source}: {text}"), file=sys.stderr)
