"""What a run reports: a log file in the run folder, stdout lines, and TensorBoard when it is installed."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from liif.errors import LiifError, os_reason


class RunLog:
    """Appends to ``RUN/log.txt`` (and prints unless quiet); writes TensorBoard scalars and images if it can, by
    global step. TensorBoard hides the points an earlier session of the folder wrote at ``first_step`` or later (an
    interrupted epoch's, or those of the epochs a resume from an earlier checkpoint discarded), so that the curves
    show one history."""

    def __init__(self, run_dir: Path, quiet: bool = False, tensorboard: bool = True, first_step: int = 1):
        self.path = run_dir / "log.txt"
        self.quiet = quiet
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # an optional extra: the config's default asks for it, so say why there is none
                self.line("no TensorBoard events: tensorboard is not installed (pip install 'liif[tensorboard]', or "
                          "set tensorboard: false)")
                return
            try:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_step)
            except OSError as exc:  # a file of that name, a full disk
                raise LiifError(f"cannot write {run_dir / 'tensorboard'}: {os_reason(exc)}") from None

    def line(self, text: str, echo: bool = True) -> None:
        """``text``, time-stamped, at the end of log.txt, and on stdout unless quiet or not ``echo``."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.path, "a") as f:
                f.write(f"{stamp} {text}\n")
        except OSError as exc:
            raise LiifError(f"cannot write {self.path}: {os_reason(exc)}") from None
        if echo and not self.quiet:
            tqdm.write(text)

    def scalars(self, step: int, **values: float) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def image(self, name: str, image: torch.Tensor, step: int) -> None:
        """A (3, H, W) image in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(name, image, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
