"""The training loop (reference train_liif.py): L1 in the normalised space, Adam, MultiStepLR per epoch,
validation on random patches, ``epoch-last``/``epoch-best``/``epoch-N`` checkpoints, exact resume, DDP."""

from __future__ import annotations

import itertools
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from liif.checkpoint import load_model, meta_build, read_checkpoint
from liif.data import build_dataset
from liif.data.order import EpochOrder
from liif.bounds import COUNT, flag
from liif.errors import LiifError, OutputExists, one_line, option, os_reason
from liif.evaluation import evaluate
from liif.evaluation.metrics import psnr
from liif.evaluation.runner import plan
from liif.fileio import write_text
from liif.normalization import DataNorm
from liif.registry import make
from liif.renderer import render
from liif.runtime import autocast, available_memory, check_precision, has_cpp_compiler, torch_settings
from liif.distributed import Processes, alike, global_mean, joined_processes, local_processes, main_work
from liif.training.config import OPTIMIZERS, load_config
from liif.training.monitor import RunLog
from liif.training.state import check_data_norm, check_resumable, restore, write_checkpoint
from liif_entry import Terminated

MAX_MODEL_TENSORS = 10_000  # RDN-LIIF has 306; past this a spec asks for a block count no one trains
TRAINING_BYTES_PER_WEIGHT = 16  # fp32 weight, gradient and Adam's two moments
# DataLoader workers per CPU: loading waits on the disk as well as on decoding, so a few per CPU can pay (the
# DIV2K configs' 8 still run on 2 CPUs); past that they only crowd the machine.
WORKERS_PER_CPU = 4

Batch = dict[str, torch.Tensor]
CHECKPOINTS = "epoch-*.pth"  # what makes a folder a run's


class TrainingDiverged(LiifError):
    """The loss became NaN or infinite: training stops and keeps the last good checkpoint."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class SampleFailure:
    """What a batch that could not be made becomes, so that its one-line error reaches the main process: raised
    in a DataLoader worker, a LiifError arrives there holding the worker's whole traceback."""

    message: str


class Guarded(torch.utils.data.Dataset):
    """``dataset`` whose samples that fail with a LiifError come back as a SampleFailure naming ``where``."""

    def __init__(self, dataset: torch.utils.data.Dataset, where: str):
        self.dataset, self.where = dataset, where

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> Batch | SampleFailure:
        try:
            return self.dataset[index]
        except LiifError as exc:
            return SampleFailure(f"{self.where}: {exc}")


def collate(samples: list[Batch | SampleFailure], where: str) -> Batch | SampleFailure:
    """The samples stacked into a batch; the first failure instead, or one saying which entries differ in size."""
    failure = next((sample for sample in samples if isinstance(sample, SampleFailure)), None)
    if failure is not None:
        return failure
    for key, value in samples[0].items():
        other = next((s[key].shape for s in samples if s[key].shape != value.shape), None)
        if other is not None:
            return SampleFailure(f"{where}: samples of different sizes cannot share a batch ({key} "
                                 f"{tuple(value.shape)} and {tuple(other)}): whole images (no inp_size) need "
                                 f"batch_size 1")
    return torch.utils.data.default_collate(samples)


def checked(batch: Batch | SampleFailure) -> Batch:
    """``batch``, or the LiifError of a batch that could not be made."""
    if isinstance(batch, SampleFailure):
        raise LiifError(batch.message)
    return batch


def first_batch(loader: torch.utils.data.DataLoader) -> Batch:
    """The loader's first batch of its current epoch, made in this process (no worker started, no global random
    draw, which a DataLoader's iterator takes for its workers' seeds); the LiifError of one that cannot be made."""
    indices = itertools.islice(iter(loader.sampler), loader.batch_size)
    return checked(loader.collate_fn([loader.dataset[index] for index in indices]))


def check_workers(workers: int) -> None:
    """Refuse more DataLoader workers than ``WORKERS_PER_CPU`` per CPU this process may use, shared among
    torchrun's processes on this machine: a thousand hung a machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = local_processes()
    limit = max(1, WORKERS_PER_CPU * cpus // processes)
    if workers > limit:
        shared = f", shared by {processes} processes" if processes > 1 else ""
        raise LiifError(f"num_workers {workers} is more than this machine runs: at most {limit} here "
                        f"({WORKERS_PER_CPU} per CPU, {cpus} CPUs{shared})")


def leave_stopping_to_the_main_process(worker_id: int) -> None:
    """A DataLoader worker's start: it ignores Ctrl-C, which reaches the main process too (a terminal's reaches the
    whole process group), and that ends its workers; SIGTERM, from the main process or multiprocessing ending its
    workers, or from SLURM's scancel, which reaches every process of the job, ends it at once with status 0: one
    killed by the signal made torch raise "DataLoader worker is killed by signal" below the command's one line. A
    batch's transfer that the main process cut short by stopping is not reported here either."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, end_worker)
    sys.excepthook = partial(unless_cut_short, sys.excepthook)


def end_worker(signum: int, frame: object) -> NoReturn:
    """End a DataLoader worker at once, with the status torch takes for a worker that finished."""
    os._exit(0)


def unless_cut_short(excepthook: Callable[..., object], kind: type[BaseException], value: BaseException,
                     traceback: Any) -> None:
    """``excepthook``, which multiprocessing's thread that passes a worker's tensors calls, but for a connection
    the main process closed (reset, or ended before its request: EOFError): it stopped, and says why."""
    if not isinstance(value, (ConnectionError, EOFError)):
        excepthook(kind, value, traceback)


def build_loader(section: dict[str, Any], config: dict[str, Any], procs: Processes,
                 train: bool, progress: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over a config section; the training one is shuffled per epoch and sharded by rank. Its
    batches may be SampleFailures (``checked`` raises them). ``progress``: a bar while the folders are read."""
    where = "train_dataset" if train else "val_dataset"
    try:  # each of torchrun's processes holds a training set of its own; rank 0 alone the validation set
        dataset = build_dataset(section, seed=config["seed"] + (0 if train else 1), progress=progress,
                                copies=local_processes() if train else 1)
    except LiifError as exc:
        raise LiifError(f"{where}: {exc}") from None
    batch = section["batch_size"]
    if train and batch % procs.world_size:
        raise LiifError(f"batch_size {batch} must divide evenly among {procs.world_size} processes")
    if train and len(dataset) < batch:
        raise LiifError(f"the training set has {len(dataset)} samples, fewer than one batch of {batch}")
    order = EpochOrder(len(dataset), shuffle=train, seed=config["seed"],
                       rank=procs.rank if train else 0, world_size=procs.world_size if train else 1,
                       global_batch=batch if train else None)
    workers = config["num_workers"]
    return torch.utils.data.DataLoader(Guarded(dataset, where), collate_fn=partial(collate, where=where),
                                       batch_size=batch // procs.world_size if train else batch, sampler=order,
                                       num_workers=workers, pin_memory=procs.device.type == "cuda",
                                       persistent_workers=workers > 0,
                                       worker_init_fn=leave_stopping_to_the_main_process)


def new_model(spec: dict[str, Any]) -> nn.Module:
    """``spec`` built with fresh weights, once a build on the meta device shows a sane number of tensors and a
    size whose training state fits in memory."""
    shape = meta_build(spec, MAX_MODEL_TENSORS, f"the model spec builds more than {MAX_MODEL_TENSORS} weight "
                                                "tensors; check its block and layer counts")
    weights = sum(p.numel() for p in shape.parameters())
    needed, free = weights * TRAINING_BYTES_PER_WEIGHT, available_memory()
    if free is not None and needed > free:
        raise LiifError(f"the model has {weights:,} weights; training them needs {needed / 2**30:.1f} GiB, "
                        f"only {free / 2**30:.1f} GiB is available")
    return make(spec)


def initial_model(config: dict[str, Any], ckpt: dict[str, Any] | None = None) -> nn.Module:
    """The model of ``config['model']``, or the weights of ``init_from`` (whose spec then replaces it), with the
    config's ``data_norm``, which its checkpoints carry. Resuming (``ckpt``) a fine-tuning run builds the
    checkpoint's model, whose weights the resume brings: the ``init_from`` file may be gone by then."""
    norm = DataNorm.from_config(config["data_norm"])
    if config["init_from"] and ckpt is not None:
        config["model"] = {"name": ckpt["model"]["name"], "args": ckpt["model"]["args"]}
        model = new_model(config["model"])
    elif config["init_from"]:
        model = load_model(config["init_from"]).train()
        config["model"] = {"name": model.spec["name"], "args": model.spec["args"]}
        check_data_norm(model.data_norm, config, f"init_from {config['init_from']}", "the model's")
    else:
        model = new_model(config["model"])
    model.data_norm = norm
    return model


def skipped_images(loader: torch.utils.data.DataLoader) -> tuple[int, int]:
    """How many images the loader's dataset skipped: (unreadable, smaller than a crop)."""
    wrapper = loader.dataset.dataset
    return getattr(wrapper.dataset, "skipped", 0), getattr(wrapper, "too_small", 0)


def device_optimizer_args(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The arguments the optimizer of ``spec`` is built with on ``device``. On a GPU, Adam updates every tensor in
    one fused kernel unless the spec picks an implementation (``fused``, or ``foreach`` true or false, which torch
    does not take beside a fused one): the small LIIF step is bound by kernel launches there, and the fused update
    computes the same thing."""
    args = dict(spec.get("args") or {})
    if spec["name"] == "adam" and device.type == "cuda" and args.get("foreach") is None:
        args.setdefault("fused", True)
    return args


def build_optimizer(model: nn.Module, spec: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer a spec names, its arguments checked when the config loaded (``config.check_optimizer``), with
    those its device adds (``device_optimizer_args``)."""
    args = device_optimizer_args(spec, next(model.parameters()).device)
    try:
        return OPTIMIZERS[spec["name"]](model.parameters(), **args)
    except Exception as exc:  # what only the device refuses (a fused update where it has none)
        raise LiifError(f"bad optimizer.args for {spec['name']!r} on {next(model.parameters()).device}: "
                        f"{one_line(exc)}") from None


def take_base_lr(optimizer: torch.optim.Optimizer, scheduler: Any, lr: float) -> None:
    """The config's learning rate wins over a resumed optimizer's (--set on resume), keeping the decay the
    schedule has reached."""
    for group in optimizer.param_groups:
        base = group.setdefault("initial_lr", group["lr"])  # none where the checkpoint was trained without a schedule
        if lr != base:
            group["lr"], group["initial_lr"] = lr * (group["lr"] / base), lr
    if scheduler is not None:
        scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]


def build_scheduler(optimizer: torch.optim.Optimizer, spec: dict[str, Any] | None) -> Any:
    if spec is None:
        return None
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=spec["milestones"],
                                                gamma=spec.get("gamma") or 0.1)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def amp_precision(amp: str) -> str:
    """The ``runtime`` precision a config's ``amp`` trains in (``none``: fp32)."""
    return "fp32" if amp == "none" else amp


def train_step(model: nn.Module, batch: Batch, norm: DataNorm, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, amp: str, procs: Processes) -> float:
    """One optimisation step; returns the loss (mean over processes), raising if it is not finite."""
    with autocast(procs.device, amp_precision(amp)):
        pred = model(norm.to_model(batch["inp"]), batch["coord"], batch["cell"])
    loss = F.l1_loss(pred.float(), norm.to_target(batch["gt"]))
    value = global_mean(loss.detach(), procs).item()
    if not math.isfinite(value):
        raise TrainingDiverged(f"the loss is {value}")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return value


@torch.no_grad()
def validate(model: nn.Module, loader: Iterable[Batch], norm: DataNorm, device: torch.device,
             progress: bool = False) -> float:
    """The reference's training-time proxy: PSNR (``metrics.psnr``) on the sampled pixels, RGB, no shave, per
    batch, averaged over samples; infinite when every batch matches exactly. ``progress``: a ``val`` bar, cleared
    at the end, as the reference shows."""
    model.eval()
    total, count = 0.0, 0
    for batch in tqdm(loader, desc="val", leave=False, dynamic_ncols=True, disable=not progress):
        batch = to_device(checked(batch), device)
        pred = norm.to_pixels(model(norm.to_model(batch["inp"]), batch["coord"], batch["cell"]))
        total += psnr(pred, batch["gt"], border=0, on_y=False) * batch["inp"].shape[0]
        count += batch["inp"].shape[0]
    model.train()
    return total / count


@torch.no_grad()
def sample_image(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """The first validation input rendered at its HR crop size, (3, H, W) in [0, 1], for TensorBoard."""
    model.eval()
    out = render(model, batch["inp"][:1].to(device), tuple(batch["hr_size"][0].tolist()))
    model.train()
    return out[0]


def benchmark_psnr(model: nn.Module, spec: dict[str, Any], device: torch.device,
                   progress: bool = False) -> dict[str, tuple[float, float]]:
    """(model, bicubic) Y-PSNR on a benchmark folder at each scale, by ``liif.evaluation`` (``liif eval``'s
    protocol). ``progress``: ``liif eval``'s bar, cleared at the end, as the epoch's is."""
    model.eval()
    means = evaluate(model, spec["root"], scales=spec["scales"], device=device, progress=progress,
                     keep_bar=False).means()
    model.train()
    return {f"{name}/{key}": (row["psnr"], row["bicubic_psnr"])
            for name, by_scale in means.items() for key, row in by_scale.items()}


def resume_config(resume: str | None, config_path: str | None,
                  overrides: list[str]) -> tuple[dict[str, Any], Path | None, dict[str, Any] | None]:
    """The config (the given file, else the checkpoint's own), and the path and contents of the checkpoint to
    resume from (``resume``, else the config's own ``resume``), if any."""
    ckpt = read_checkpoint(resume) if resume else None
    if config_path is None and ckpt is None:
        raise LiifError(f"give {option('config_path', flag='config')}, or {option('resume')} a checkpoint that "
                        "holds its config")
    if config_path is None and not isinstance(ckpt.get("config"), dict):
        raise LiifError(f"{resume} holds no config: give {option('config_path', flag='config')} too")
    config = load_config(config_path, overrides, base=None if config_path else ckpt["config"])
    if ckpt is None and config["resume"]:
        resume, ckpt = config["resume"], read_checkpoint(config["resume"])
    return config, Path(resume) if resume else None, ckpt


def replaces_a_run(run_dir: Path, resume: Path | None, overwrite: bool) -> bool:
    """Whether training into ``run_dir`` replaces another run's checkpoints: refused (a LiifError naming the
    folder) unless ``overwrite``; resuming from one of the folder's own checkpoints continues its run."""
    overwrite = flag(overwrite, "overwrite", LiifError)  # "no" would delete the run's checkpoints
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise LiifError(f"{run_dir}: not a folder (the run folder for checkpoints and the log)")
        if not any(run_dir.glob(CHECKPOINTS)) or (resume is not None
                                                  and resume.resolve().parent == run_dir.resolve()):
            return False
    except OSError as exc:  # a name too long for the file system
        raise LiifError(f"{run_dir}: cannot use this run folder ({os_reason(exc)})") from None
    if not overwrite:
        raise OutputExists(f"{run_dir} already holds a run's checkpoints (resume from {run_dir / 'epoch-last.pth'}, "
                           "or choose another folder)")
    return True


def saved_epoch(path: Path) -> int:
    """The epoch checkpoint ``path`` of a run folder was written at: epoch-N.pth's N, else the one it holds (0 where
    it cannot be read)."""
    numbered = re.fullmatch(r"epoch-(\d+)\.pth", path.name)
    if numbered:
        return int(numbered.group(1))
    try:
        epoch = read_checkpoint(path).get("epoch")
    except LiifError:
        return 0
    return epoch if COUNT.fits(epoch) else 0


def later_checkpoints(run_dir: Path, resume: Path | None, ckpt: dict[str, Any] | None, overwrite: bool) -> list[Path]:
    """Resuming ``run_dir``'s run from ``resume``, one of its checkpoints older than its epoch-last.pth, the
    checkpoints of the epochs after it: they would outlive the resumed run's own beside them (epoch-best.pth, or an
    epoch-N.pth the new run does not reach), and epoch-last.pth would resume them. Refused (a LiifError naming them)
    unless ``overwrite``, which deletes them. None where epoch-last.pth is not later: a run stopped between its
    checkpoint writes writes the later ones again."""
    epoch = None if ckpt is None else ckpt.get("epoch")
    last = run_dir / "epoch-last.pth"
    # a damaged epoch is refused with the rest of the training state; epoch-last.pth itself (the usual resume) has
    # none later, and is not read again
    if (resume is None or not COUNT.fits(epoch) or resume.resolve().parent != run_dir.resolve()
            or resume.resolve() == last.resolve()):
        return []
    saved = {path: saved_epoch(path) for path in run_dir.glob(CHECKPOINTS)}  # each read once
    if saved.get(last, 0) <= epoch:
        return []
    later = sorted((path for path, saved_at in saved.items() if saved_at > epoch), key=saved.get)
    if not overwrite:
        raise LiifError(f"{run_dir} holds checkpoints of epochs after {resume.name} (epoch {epoch}): "
                        f"{', '.join(path.name for path in later)}; resume from {run_dir / 'epoch-last.pth'} to go "
                        f"on from the last, give another folder ({option('run_dir', flag='out')}) to branch off, or pass "
                        f"{option('overwrite', True)} to delete them")
    return later


def make_run_dir(run_dir: Path, replace: bool, later: list[Path]) -> None:
    """Create ``run_dir``; when the new run replaces the one there, delete that run's files first, and when it
    resumes it from an earlier epoch, the ``later`` checkpoints."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if replace:  # its checkpoints would outlive it beside the new run's, and its log would run on
            later = [*run_dir.glob(CHECKPOINTS), *run_dir.glob("tensorboard/events.out.tfevents.*"),
                     run_dir / "log.txt", run_dir / "config.yaml"]
        for path in later:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise LiifError(f"{run_dir}: cannot prepare the run folder ({os_reason(exc)})") from None


def train(config: dict[str, Any], run_dir: str | Path, ckpt: dict[str, Any] | None = None,
          quiet: bool = False, resume: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train as ``config`` says, writing checkpoints and the log into ``run_dir``; the last epoch's summary.

    ``ckpt`` (read from ``resume``, or from the config's ``resume``, when not given) continues a run. A ``run_dir``
    holding another run's checkpoints, or, resuming its own run from an earlier epoch, those of the later epochs, is
    refused unless ``overwrite``, which deletes them; every input is checked before the folder is
    created. The config's ``threads`` and ``deterministic`` hold for the run only: torch's settings are given back
    when train returns or raises. Python's, numpy's and torch's global random generators are seeded from ``seed``
    (or a resumed checkpoint's states), as the reference seeds them, and left where the run took them.
    """
    if not isinstance(config, dict):
        raise LiifError(f"train takes a config mapping (as load_config returns), not a {type(config).__name__}")
    # a mapping made or edited in Python gets the checks and defaults of a config file
    config = load_config(None, base=config)
    for name, value in (("run_dir", run_dir), ("resume", resume)):
        if not isinstance(value, (str, os.PathLike)) and (name == "run_dir" or value is not None):
            raise LiifError(f"train's {name} must be a path, not a {type(value).__name__}")
    if ckpt is not None and not isinstance(ckpt, dict):
        raise LiifError(f"train's ckpt must be a checkpoint's contents (read_checkpoint's), not a "
                        f"{type(ckpt).__name__}")
    quiet = flag(quiet, "quiet", LiifError)
    check_workers(config["num_workers"])
    if ckpt is None and (resume or config["resume"]):  # the path alone would otherwise start a new run
        resume = resume or config["resume"]
        ckpt = read_checkpoint(resume)
    run_dir, resume = Path(run_dir), Path(resume) if resume is not None else None
    replace = replaces_a_run(run_dir, resume if ckpt is not None else None, overwrite)
    later = later_checkpoints(run_dir, resume, ckpt, overwrite)
    with joined_processes(config["device"]) as procs, torch_settings(config["threads"], config["deterministic"]):
        try:
            run = Run(config, run_dir, ckpt, quiet, procs, str(resume or "the checkpoint"), replace, later)
        except KeyboardInterrupt as stop:  # reading the folders may take minutes
            again = f"resumes from {resume} again" if ckpt is not None else "starts the run again"
            raise type(stop)(f"stopped while setting up, before any step: no checkpoint was written; the same "
                             f"command {again}") from None
        try:
            for epoch in range(run.epoch_start, config["epoch_max"] + 1):
                start = time.time()
                losses = run.train_epoch(epoch)
                run.finish_epoch(epoch, losses, time.time() - start)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM from the command (liif_entry.Terminated)
            raise type(stop)(run.stopped(stop)) from None
        finally:  # a failed run's TensorBoard writer is flushed and its thread ended too
            run.close()
        return run.summary


class Run:
    """One training run's live objects: model, optimiser, schedule, data, log; the loop drives it epoch by epoch."""

    def __init__(self, config: dict[str, Any], run_dir: Path, ckpt: dict[str, Any] | None, quiet: bool,
                 procs: Processes, source: str, replace: bool, later: list[Path]):
        seed_everything(config["seed"])
        self.config, self.run_dir, self.quiet, self.procs = config, run_dir, quiet, procs

        # Build and check everything before the run folder is touched: a mistake leaves nothing behind, and one
        # that every process meets is said once, by rank 0.
        with alike(procs):
            self.model = initial_model(config, ckpt).to(procs.device)
            self.optimizer = build_optimizer(self.model, config["optimizer"])
            self.scheduler = build_scheduler(self.optimizer, config["multi_step_lr"])
            check_precision(procs.device, amp_precision(config["amp"]))
            if config["compile"] and procs.device.type == "cpu" and not has_cpp_compiler():  # else a traceback
                raise LiifError("compile: true builds the training step's CPU kernels with torch.compile, which "
                                "needs a C++ compiler (g++, or the one $CXX names); none found: install one, or set "
                                "compile: false")
            self.per_iter = (config["multi_step_lr"] or {}).get("unit") == "iter"
            self.scaler = torch.amp.GradScaler(procs.device.type, enabled=config["amp"] == "fp16")
            self.epoch_start, self.step, self.best = 1, 0, None
            if ckpt is not None:
                check_resumable(ckpt, source, self.model, self.optimizer, config)
                schedule = self.scheduler and (self.scheduler.milestones, self.scheduler.gamma)
                self.epoch_start, self.step, self.best = restore(ckpt, self.model, self.optimizer, self.scheduler,
                                                                 source, self.scaler)
                if schedule:  # the config's schedule wins over the checkpoint's (--set on resume)
                    self.scheduler.milestones, self.scheduler.gamma = schedule
                    # counted from the run's start: a checkpoint trained without a schedule, or stepping it in the
                    # other unit, holds no count or another one
                    self.scheduler.last_epoch = self.step if self.per_iter else self.epoch_start - 1
                optimizer_args = config["optimizer"]["args"] or {}  # null in the config: the optimizer's defaults
                if "lr" in optimizer_args:
                    take_base_lr(self.optimizer, self.scheduler, optimizer_args["lr"])
            progress = not quiet and procs.is_main  # every process reads the training set: rank 0 shows it
            self.train_loader = build_loader(config["train_dataset"], config, procs, True, progress)
            self.val_loader = (build_loader(config["val_dataset"], config, procs, False, progress)
                               if config.get("val_dataset") and procs.is_main else None)
            # a batch that cannot be made (whole images of several sizes) would otherwise stop the run once its
            # folder is made (and a run it replaces deleted), or, in validation, once its first epoch has trained
            self.train_loader.sampler.set_epoch(self.epoch_start)  # the one the run takes first
            for loader in (self.train_loader, self.val_loader):
                if loader is not None:
                    first_batch(loader)
            if config["benchmark_eval"] and procs.is_main:
                try:
                    plan([config["benchmark_eval"]["root"]], config["benchmark_eval"]["scales"], "auto")
                except LiifError as exc:
                    raise LiifError(f"benchmark_eval: {exc}") from None

            self.log = None
            if procs.is_main:
                make_run_dir(run_dir, replace, later)
                self.log = RunLog(run_dir, quiet, config["tensorboard"], first_step=self.step + 1)
                if later:
                    self.log.line(f"deleted the checkpoints of the epochs after {self.epoch_start - 1}: "
                                  f"{', '.join(path.name for path in later)}; the lines above of epoch "
                                  f"{self.epoch_start} on are the discarded run's")
                for name, loader in (("train", self.train_loader), ("val", self.val_loader)):
                    skipped, too_small = skipped_images(loader) if loader is not None else (0, 0)
                    if skipped or too_small:
                        self.log.line(f"{name} data: {skipped} unreadable and {too_small} too-small image(s) skipped")
                write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
                params = sum(p.numel() for p in self.model.parameters())
                self.log.line(f"model {config['model']['name']}: {params / 1e6:.3f} M parameters; "
                              f"{len(self.train_loader)} iterations per epoch on {procs.world_size} process(es), "
                              f"{procs.device}; " + (f"resuming at epoch {self.epoch_start} from {source}" if ckpt
                                                      else "starting at epoch 1"))

        self.norm = self.model.data_norm
        self.net: nn.Module = self.model  # what the training step calls: DDP-wrapped and compiled when asked
        if procs.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[procs.device.index] if procs.device.type == "cuda" else None)
        if config["compile"]:
            self.net = torch.compile(self.net)
        self.last_good = run_dir / "epoch-last.pth"
        self.epoch = self.epoch_start  # the epoch in progress
        # the checkpoint a stopped run goes on from, its epoch, and whether it holds another config than the run's
        # (one resumed with --set epoch_max=...: config.yaml holds the run's): the one resumed, then each
        # epoch-last.pth written
        self.resume_point = (source if ckpt is not None else None, self.epoch_start - 1,
                             ckpt is not None and ckpt.get("config") != config)
        self.summary: dict[str, Any] = {"epoch": self.epoch_start - 1, "global_step": self.step, "best_val": self.best}
        self.lr: float = self.optimizer.param_groups[0]["lr"]  # the rate the last step trained at

    def train_epoch(self, epoch: int) -> list[float]:
        """One pass over this process's share of the training set; the losses of its steps."""
        self.epoch = epoch
        self.train_loader.sampler.set_epoch(epoch)
        losses = []
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}/{self.config['epoch_max']}", leave=False,
                   dynamic_ncols=True, disable=self.quiet or not self.procs.is_main)
        for batch in bar:
            self.lr = self.optimizer.param_groups[0]["lr"]  # read before the schedule steps past it
            try:
                loss = train_step(self.net, to_device(checked(batch), self.procs.device), self.norm, self.optimizer,
                                  self.scaler, self.config["amp"], self.procs)
            except TrainingDiverged as exc:
                checkpoint, saved_at, _ = self.resume_point
                kept = (f"the last good checkpoint is {checkpoint} (epoch {saved_at})" if checkpoint is not None
                        else "no checkpoint was written yet")
                raise TrainingDiverged(f"{exc} at epoch {epoch}, step {self.step + 1}: training stopped; "
                                       f"{kept}") from None
            losses.append(loss)
            self.step += 1
            if self.per_iter:
                self.scheduler.step()
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.lr:.2e}", refresh=False)
            if self.log is not None and self.step % self.config["log_every"] == 0:
                self.log.scalars(self.step, **{"train/loss": loss, "train/lr": self.lr})
        if self.scheduler is not None and not self.per_iter:
            self.scheduler.step()
        return losses

    def finish_epoch(self, epoch: int, losses: list[float], seconds: float) -> None:
        """Validate, log and write the checkpoints (rank 0) while the other processes wait; where that fails,
        they stop too."""
        self.summary = {"epoch": epoch, "global_step": self.step, "train_loss": sum(losses) / len(losses),
                        "it_per_s": len(losses) / seconds, "best_val": self.best}
        with main_work(self.procs, f"at the end of epoch {epoch}"):
            if self.procs.is_main:
                self.write_epoch(epoch, seconds)
        self.resume_point = (str(self.last_good), epoch, False)  # rank 0 has written it

    def write_epoch(self, epoch: int, seconds: float) -> None:
        """Rank 0's end of an epoch: validation and benchmark_eval when due, the log line, the checkpoints. A
        validation or benchmark that fails raises its one-line error once the epoch's checkpoints are written."""
        text = (f"epoch {epoch}/{self.config['epoch_max']}: loss {self.summary['train_loss']:.4f}, "
                f"lr {self.lr:.2e}, {self.summary['it_per_s']:.2f} it/s, "
                f"{seconds:.0f} s")
        improved, failure = False, None  # failure: (what failed, the section to correct, its error)
        every = self.config["epoch_val"]
        if self.val_loader is not None and every and epoch % every == 0:
            previous = self.best
            try:
                text += self.validate()
            except LiifError as exc:  # an image that can no longer be read: the epoch's training is kept first
                failure = ("validation", "val_dataset", exc)
            else:
                improved = previous is None or self.best > previous
        bench = self.config["benchmark_eval"]
        if bench and epoch % (bench.get("every") or 1) == 0:
            try:
                scores = benchmark_psnr(self.model, bench, self.procs.device, progress=not self.quiet)
            except LiifError as exc:  # a picture too small for a scale: the epoch's training is kept first
                failure = failure or ("benchmark_eval", "benchmark_eval", exc)
            else:
                self.summary["benchmark"] = scores
                text += ", " + ", ".join(f"{k} {v:.4f} (bicubic {b:.4f})" for k, (v, b) in scores.items())
                self.log.scalars(self.step, **{f"benchmark/{k}": v for k, (v, _) in scores.items()})
        self.log.line(text)
        state = (self.model, self.optimizer, self.config, self.scheduler, epoch, self.step, self.best, self.scaler)
        if self.config["epoch_save"] and epoch % self.config["epoch_save"] == 0:
            write_checkpoint(self.run_dir / f"epoch-{epoch}.pth", *state)
        if improved:
            write_checkpoint(self.run_dir / "epoch-best.pth", *state)
        # last: a run stopped before it resumes at this epoch and writes the others again, where epoch-last
        # first would leave epoch-best behind the best score the resumed run then compares with
        write_checkpoint(self.last_good, *state)
        self.resume_point = (str(self.last_good), epoch, False)
        if failure is not None:
            what, section, exc = failure
            raise LiifError(f"{what} at epoch {epoch}: {exc}; the epoch's checkpoints are written: correct "
                            f"{section} and resume from {self.last_good}")

    def validate(self) -> str:
        """The validation proxy on the unwrapped model (no collective calls: only rank 0 runs it); a log fragment."""
        val = validate(self.model, self.val_loader, self.norm, self.procs.device, progress=not self.quiet)
        self.best = val if self.best is None else max(val, self.best)
        self.summary.update(val_psnr=val, best_val=self.best)
        self.log.scalars(self.step, **{"val/psnr": val})
        if self.log.writer is not None:
            self.log.image("val/sample", sample_image(self.model, first_batch(self.val_loader), self.procs.device),
                           self.step)
        return f", val PSNR {val:.4f} (best {self.best:.4f})"

    def stopped(self, stop: KeyboardInterrupt) -> str:
        """Where a run that ``stop`` ended goes on from, for its one line, and with the step it reached, in the log
        (the steps of the epoch in progress are lost: checkpoints are written per epoch, as the reference's)."""
        checkpoint, epoch, other_config = self.resume_point
        text = (f"resume from {checkpoint}{self.resume_options(checkpoint, other_config)} to go on at epoch "
                f"{epoch + 1}" if checkpoint is not None else "no checkpoint was written yet, nothing to resume")
        if self.log is not None:
            self.log.line(f"stopped by {'SIGTERM' if isinstance(stop, Terminated) else 'Ctrl-C'} in epoch "
                          f"{self.epoch} at step {self.step}; {text}", echo=False)
        return text

    def resume_options(self, checkpoint: str, other_config: bool) -> str:
        """What a resume from ``checkpoint`` needs besides it to go on with this run: the run folder, where the
        checkpoint is in another (``--out`` defaults to the checkpoint's), and the run's config where the
        checkpoint holds another (``other_config``)."""
        options = []
        if Path(checkpoint).resolve().parent != self.run_dir.resolve():
            options.append(f"{option('run_dir', flag='out')} {self.run_dir}")
        if other_config:
            options.append(f"{option('config_path', flag='config')} {self.run_dir / 'config.yaml'}")
        return f" with {' and '.join(options)}" if options else ""

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
