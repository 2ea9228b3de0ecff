"""Score a model on SR test sets by the LIIF/EDSR protocol, with bicubic beside it.

Protocol (as the reference's test.py): the LR of scale s comes from the set's LR files where they exist
(EDSR benchmark <Set>/LR_bicubic/X{s}, DIV2K *_LR_bicubic/X{s}; required at x2-x4 in those layouts), otherwise
from the HR: h = floor(H/s + 1e-9), HR cropped top-left to round(h*s), then bicubic to (h, w) on 8-bit images
(--degrade pil, the reference; or matlab, MATLAB's imresize). The model renders the HR grid (cell 2/H, 2/W);
its output is not quantised unless --quantize. PSNR in float64: benchmark = Y (EDSR weights), shave s;
div2k = RGB, shave s + 6. SSIM on Y (11x11 Gaussian, sigma 1.5), same shave. Bicubic = PIL bicubic of the
same LR. Scores are per image, then the dataset mean. LTE models are tested as LTE's test.py tests them: above
x4 they decode the x4 cell (cell x max(s/4, 1)); --no-cell-clip gives them the true cell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liif.bounds import COUNT
from liif.commands import add_model_options, add_threads_option, set_threads
from liif.distributed import (Processes, alike, gather_sharded, joined_processes, main_work, peer_stopped,
                              publish, published_shares, share_label)
from liif.errors import LiifError, option, printable
from liif.evaluation.datasets import open_dataset
from liif.evaluation.metrics import PROTOCOLS
from liif.evaluation.runner import (LR_SOURCES, SCALE_PRESETS, EvalResults, ImageScore, plan, prepare_out_dir,
                                   protocol_scales, run_settings, score_runs)
from liif.upscale import model_on


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`liif eval`'s options."""
    add_model_options(parser)
    parser.add_argument("--data", action="append", required=True, metavar="DIR",
                        help="HR folder, EDSR benchmark set (<Set>/HR) or DIV2K_valid_HR; repeat for several")
    parser.add_argument("--scales", default=None,
                        help="comma-separated scales, each at least 1 (2,3,4,2.5), or a preset: "
                             "benchmark = 2,3,4,6,8, div2k = 2,3,4,6,12,18,24,30 (default: the protocol's preset)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="benchmark",
                        help="benchmark: PSNR on Y, shave s; div2k: PSNR on RGB, shave s+6 (default benchmark)")
    parser.add_argument("--degrade", choices=LR_SOURCES, default="auto",
                        help="LR source: auto (files where present, else PIL), files (require them), "
                             "pil or matlab (make every LR from the HR) (default auto)")
    parser.add_argument("--quantize", action="store_true", help="round the model output to 8 bits before scoring")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips and transposes")
    parser.add_argument("--no-cell-clip", dest="cell_clip", action="store_false",
                        help="decode the true cell at every scale; by default a model tested with cell clipping "
                             "by its authors (LTE) gets the cell of x4 at scales above x4")
    parser.add_argument("--out", metavar="DIR",
                        help="write DIR/per_image.csv and DIR/results.json (the means, and the run's settings; a "
                             "stopped run: the scores it finished, to DIR/per_image.partial.csv and "
                             "DIR/results.partial.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's results in --out")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="queries per model call (default: 4096 on the CPU, from free memory on a GPU)")
    add_threads_option(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def parse_scales(text: str) -> list[float]:
    """Scales from ``2,3,4`` or a preset name; a LiifError for anything else."""
    if text in SCALE_PRESETS:
        return list(SCALE_PRESETS[text])
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LiifError(f"--scales {text!r}: expected numbers like 2,3,4 or a preset "
                        f"({', '.join(SCALE_PRESETS)})") from None
    if not scales:
        raise LiifError(f"--scales {text!r}: give at least one scale")
    return scales


def run(args: argparse.Namespace) -> int:
    """Score the model on each --data set at each scale; rank 0 prints the table (and writes --out). Stopped by
    Ctrl-C, SIGTERM or a picture it cannot read, on any process, rank 0 reports the scores every process finished
    as partial results."""
    set_threads(args.threads)
    if args.chunk_size is not None:  # checked before the --out folder is made
        COUNT.check(args.chunk_size, option("chunk_size"), LiifError)
    if args.overwrite and not args.out:
        raise LiifError("--overwrite replaces an earlier run's results in --out, and there is no --out: "
                        "give --out DIR, or leave --overwrite out")
    scales = protocol_scales(args.protocol, None if args.scales is None else parse_scales(args.scales))
    with joined_processes(args.device) as procs:
        with alike(procs):  # a mistake met by every process is said once, by rank 0
            if args.out:
                prepare_out_dir(args.out, args.overwrite)
            runs = plan([open_dataset(folder) for folder in args.data], scales, args.degrade, args.protocol)
            model = model_on(args.model, str(procs.device), args.precision, args.kernel, args.compile)
        model_name = Path(args.model).stem
        settings = run_settings(args.model, model_name, model, runs, args.protocol, args.degrade, args.quantize,
                                args.self_ensemble, args.cell_clip, args.precision, args.compile,
                                procs.world_size) if procs.is_main else None
        scores: list[ImageScore] = []
        try:
            for image_score in score_runs(model, runs, args.protocol, args.quantize, args.self_ensemble,
                                          args.chunk_size, args.precision, (procs.rank, procs.world_size),
                                          args.cell_clip, progress=not args.quiet and procs.is_main):
                scores.append(image_score)
                publish(image_score, len(scores) - 1, procs)  # rank 0 keeps it if this process stops
            gathered = gather_sharded(scores, procs)
        # a picture found unreadable only once its turn came; at the gather, another process that stopped
        except (KeyboardInterrupt, LiifError, RuntimeError) as stop:
            peer = peer_stopped() if procs.distributed and isinstance(stop, RuntimeError) else None
            if not procs.is_main or (isinstance(stop, RuntimeError) and peer is None):
                raise
            kept = keep_stopped_run(args, model_name, settings, scores, procs)
            if not kept and peer is None:
                raise
            if isinstance(stop, KeyboardInterrupt):
                raise type(stop)(kept) from None
            raise LiifError(f"{peer or stop}; {kept}" if kept else peer) from None
        results = EvalResults(model_name, gathered, settings=settings)
        with main_work(procs, "to report the results"):
            if procs.is_main:
                written = report(results, args.out, args.overwrite)
                if written:
                    print(f"wrote {written}", file=sys.stderr)
    return 0


def report(results: EvalResults, out: str | None, overwrite: bool) -> str:
    """Print the results' table and write their files into ``out`` when given; the files written, in words."""
    print(results.markdown(), flush=True)
    if not out:
        return ""
    results.write(out, overwrite)
    return " and ".join(f"{out}/{name}" for name in results.files)


def keep_stopped_run(args: argparse.Namespace, model_name: str, settings: dict | None, scores: list[ImageScore],
                     procs: Processes) -> str:
    """Report, as partial results, the scores every process of a stopped run finished (this process's own
    ``scores`` alone where the run's store has gone: its progress bar's words then say so); what became of them,
    for the line saying that it stopped ("" where none was finished)."""
    everyone = published_shares(procs) if procs.distributed else None
    partial = EvalResults(model_name, scores if everyone is None else everyone, partial=True, settings=settings)
    if not partial.scores:
        return ""
    finished = f"the {partial.count()} finished"
    if everyone is None:
        finished = share_label(finished, procs.rank, procs.world_size)
    return printable(keep_partial(partial, args.out, args.overwrite, finished))


def keep_partial(results: EvalResults, out: str | None, overwrite: bool, finished: str) -> str:
    """Report the scores a stopped run ``finished`` (words naming them); what became of them, for the line saying
    that it stopped."""
    try:
        written = report(results, out, overwrite)
    except LiifError as exc:
        return f"{finished} not kept: {exc}"
    return f"kept {finished} in {written or 'the table above'}"
