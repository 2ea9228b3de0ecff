"""Train a LIIF, MetaSR or LTE model from a YAML config (the reference's keys), resume a run, or fine-tune
released weights.

examples:
  liif train --config configs/smoke.yaml --out runs/smoke --set train_dataset.dataset.args.root_path=DIR
  liif train --config configs/train-div2k/edsr-baseline-liif.yaml --out runs/edsr --set optimizer.args.lr=2e-4
  liif train --resume runs/edsr/epoch-last.pth --out runs/edsr
  torchrun --standalone --nproc_per_node 4 -m liif train --config configs/train-div2k/rdn-liif.yaml --out runs/rdn
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from liif.distributed import launch_rank
from liif.errors import printable
from liif.training import resume_config, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`liif train`'s options."""
    parser.add_argument("--config", help="YAML config (optional with --resume: the checkpoint's own config)")
    parser.add_argument("--out", help="run folder for checkpoints, log.txt and config.yaml "
                                      "(default: runs/<config name>; with --resume, the checkpoint's folder)")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue exactly from this epoch-*.pth")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an --out folder that holds another run, deleting its checkpoints "
                             "and log, or resume a run from an earlier epoch, deleting the checkpoints of the later "
                             "ones (without it, either is refused)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. optimizer.args.lr=2e-4 (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-epoch lines on stdout")


def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """A warning (a skipped image) as one line in the command's style, not Python's file, line and source; under
    torchrun from rank 0 alone, as every process builds the same training set and meets the same images."""
    if launch_rank() == 0:  # above the bar of the folder being read, not across it
        tqdm.write(printable(f"liif train: warning: {message}"), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Train from --config (or continue --resume) into the run folder; print the best validation PSNR."""
    config, resume, ckpt = resume_config(args.resume, args.config, args.overrides)
    out = args.out or (Path(args.resume).parent if args.resume else Path("runs") / Path(args.config).stem)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        summary = train(config, out, ckpt, quiet=args.quiet, resume=resume, overwrite=args.overwrite)
    if not args.quiet and summary.get("best_val") is not None:
        print(f"done: epoch {summary['epoch']}, best validation PSNR {summary['best_val']:.4f}, run folder {out}")
    return 0
