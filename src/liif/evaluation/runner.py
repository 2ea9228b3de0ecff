"""Evaluation runs (spec 6): per dataset and scale, read or make the LR, render, score against HR and bicubic."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from tqdm import tqdm

from liif.bounds import COUNT, Number, flag
from liif.distributed import share_label
from liif.errors import LiifError, OutputExists, option, os_reason
from liif.evaluation.datasets import (EvalDataset, check_lr_names, check_lr_size, image_size, open_dataset,
                                      read_pair, read_rgb)
from liif.evaluation.degrade import DEGRADATIONS, hr_crop_size, lr_geometry, make_lr
from liif.evaluation.metrics import PROTOCOLS, check_scorable, psnr, psnr_on_y, shave_for, ssim_y
from liif.fileio import write_texts
from liif.models.implicit import ImplicitModel, renderable
from liif.pretrained import weights_file
from liif.renderer import render
from liif.resize import pil_bicubic
from liif.runtime import autocast, pick_device
from liif.upscale import configure_model, resolve_model

LR_SOURCES = ("auto", "files") + DEGRADATIONS
FILE_SCALES = (2, 3, 4)  # the reference reads these scales from LR files in the benchmark and DIV2K layouts
SCALE_PRESETS = {"benchmark": (2, 3, 4, 6, 8), "div2k": (2, 3, 4, 6, 12, 18, 24, 30)}
METRICS = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
OUTPUT_FILES = ("per_image.csv", "results.json")  # what EvalResults.write puts in the folder: the table, the means
PARTIAL_FILES = ("per_image.partial.csv", "results.partial.json")  # the same, of a run stopped before its end
SETTINGS_KEY = "settings"  # results.json's key for how the scores were made, beside the datasets' names


@dataclass(frozen=True)
class ImageScore:
    """One image at one scale: the model's and bicubic's PSNR and SSIM, and where its LR came from."""

    dataset: str
    scale: float
    image: str
    lr_source: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float


def scale_text(scale: float) -> str:
    """A scale as the results write it: ``2``, ``2.5``, and every digit it needs (``2.0000001``, where ``:g``
    would give ``2``), so that two scales never share a key."""
    short = f"{scale:g}"
    return short if float(short) == scale else repr(float(scale))


def scale_key(scale: float) -> str:
    """The results key of a scale: ``x2``, ``x2.5``."""
    return f"x{scale_text(scale)}"


def lr_source(dataset: EvalDataset, scale: float, degrade_method: str) -> str:
    """Where the LR of ``scale`` comes from: ``files``, ``pil`` or ``matlab``; a LiifError when files are needed
    but absent. ``auto`` follows the reference: LR files when present, and required at x2-x4 in the benchmark and
    DIV2K layouts; PIL bicubic from the HR otherwise."""
    if degrade_method in DEGRADATIONS:
        return degrade_method
    needs_files = degrade_method == "files" or (dataset.layout != "folder" and scale in FILE_SCALES)
    if dataset.lr_dir(scale) is not None:
        check_lr_names(dataset, scale)
        return "files"
    if not needs_files:
        return "pil"
    where = dataset.lr_root / f"X{scale:g}" if dataset.lr_root else dataset.hr_dir
    why = option("degrade", "files") if degrade_method == "files" else f"the {dataset.layout} protocol at x2-x4"
    raise LiifError(f"{where}: no LR files for x{scale:g}, which {why} requires; pass {option('degrade', 'pil')} "
                    f"or {option('degrade', 'matlab')} to make the LR images from the HR")


def hr_lr_pair(dataset: EvalDataset, image: str, scale: float, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR, LR) of one image: from the LR files, or the HR cropped and downscaled as the reference test does."""
    if source == "files":
        return read_pair(dataset, image, scale)
    return make_lr(read_rgb(dataset.hr_dir / image), scale, source)


def score(sr: torch.Tensor, hr: torch.Tensor, protocol: str, scale: float) -> tuple[float, float]:
    """(PSNR, SSIM) by ``protocol``: benchmark = Y, shave scale; div2k = RGB, shave scale + 6 (SSIM on Y)."""
    border = shave_for(protocol, scale)
    return psnr(sr, hr, border, on_y=psnr_on_y(protocol)), ssim_y(sr, hr, border)


def evaluate_image(model: ImplicitModel, hr: torch.Tensor, lr: torch.Tensor, protocol: str, scale: float,
                   quantize: bool = False, chunk_size: int | None = None, self_ensemble: bool = False,
                   precision: str = "fp32") -> tuple[float, float, float, float]:
    """(psnr, ssim, bicubic_psnr, bicubic_ssim) of one HR/LR pair; bicubic is PIL bicubic of the same LR. Both
    render the LR's grid at ``scale``, cropped to the HR where the LR's last pixels overhang it (an LR of
    ceil(H/s), as MATLAB's imresize makes it)."""
    quantize = flag(quantize, "quantize", LiifError)  # before the render
    size = tuple(hr.shape[-2:])
    grid = tuple(max(side, full) for side, full in zip(size, hr_crop_size(tuple(lr.shape[-2:]), scale)))
    device = next(model.parameters()).device
    with autocast(device, precision, model):
        sr = render(model, lr[None].to(device), grid, chunk_size=chunk_size, self_ensemble=self_ensemble)[0].cpu()
    if quantize:
        sr = torch.round(sr * 255) / 255
    bicubic = pil_bicubic(lr, grid)
    return score(sr[:, :size[0], :size[1]], hr, protocol, scale) + \
        score(bicubic[:, :size[0], :size[1]], hr, protocol, scale)


@dataclass
class EvalResults:
    """Per-image scores of a run, with their dataset means, a markdown table and the CSV/JSON files; ``partial``
    where the run was stopped before its end (the scores it finished); ``settings``, where known, go into the
    JSON file under ``SETTINGS_KEY``."""

    model_name: str
    scores: list[ImageScore]
    partial: bool = False
    settings: dict[str, object] | None = None  # how the scores were made (``run_settings``), for results.json

    @property
    def files(self) -> tuple[str, str]:
        """The names ``write`` gives the table and the means: ``PARTIAL_FILES`` for partial results."""
        return PARTIAL_FILES if self.partial else OUTPUT_FILES

    def means(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{dataset: {"x2": {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}}}``, means over images."""
        groups: dict[str, dict[str, list[ImageScore]]] = {}
        for s in self.scores:
            groups.setdefault(s.dataset, {}).setdefault(scale_key(s.scale), []).append(s)
        return {name: {key: {m: sum(getattr(s, m) for s in rows) / len(rows) for m in METRICS}
                       for key, rows in by_scale.items()}
                for name, by_scale in groups.items()}

    def count(self) -> str:
        """How many scores these are, in words: ``1 image score``, ``37 image scores``."""
        return f"{len(self.scores)} image score{'' if len(self.scores) == 1 else 's'}"

    def markdown(self) -> str:
        """One table per dataset: the model's and bicubic's PSNR (4 decimals) and SSIM at each scale, after a line
        saying so where the results are partial."""
        lines = [f"Partial results: the run was stopped; means over the {self.count()} it finished.", ""] \
            if self.partial else []
        for name, by_scale in self.means().items():
            keys = list(by_scale)
            lines += [f"| {name} | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            for label, metric in ((f"{self.model_name} PSNR", "psnr"), ("bicubic PSNR", "bicubic_psnr"),
                                  (f"{self.model_name} SSIM", "ssim"), ("bicubic SSIM", "bicubic_ssim")):
                lines.append(f"| {label} | " + " | ".join(f"{by_scale[k][metric]:.4f}" for k in keys) + " |")
            lines.append("")
        return "\n".join(lines)

    def json_means(self) -> dict[str, dict[str, dict[str, object]]]:
        """``means()`` as strict JSON allows: a mean that is not a finite number is ``None`` (JSON ``null``), and
        the entry's ``non_finite`` maps each such metric to its value, ``"inf"``, ``"-inf"`` or ``"nan"``.

        PSNR is +inf for an exact reconstruction (flat areas, x1), so the mean is too; NaN comes from a model that
        outputs NaN. JSON has no number for either, so they are never written as ``Infinity`` or ``NaN``."""
        out: dict[str, dict[str, dict[str, object]]] = {}
        for name, by_scale in self.means().items():
            for key, values in by_scale.items():
                entry: dict[str, object] = {m: v if math.isfinite(v) else None for m, v in values.items()}
                odd = {m: str(v) for m, v in values.items() if not math.isfinite(v)}
                if odd:
                    entry["non_finite"] = odd
                out.setdefault(name, {})[key] = entry
        return out

    def write(self, out_dir: str | Path, overwrite: bool = False) -> None:
        """``out_dir/per_image.csv`` (one row per image and scale; ``inf`` and ``nan`` as Python writes them) and
        ``out_dir/results.json`` (the means, strict JSON: see ``json_means`` for non-finite values; the settings),
        or, for partial results, ``PARTIAL_FILES``, written as a pair. An earlier run's results there are refused
        unless ``overwrite``, which replaces them: the folder then holds this run's alone."""
        out_dir = Path(out_dir)
        check_out_files(out_dir, overwrite)
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=[f.name for f in fields(ImageScore)], lineterminator="\n")
        writer.writeheader()
        for s in self.scores:
            writer.writerow({**asdict(s), "scale": scale_text(s.scale)})
        means = {**self.json_means(), **({SETTINGS_KEY: self.settings} if self.settings is not None else {})}
        per_image, results = (out_dir / name for name in self.files)
        write_texts({per_image: table.getvalue(), results: json.dumps(means, indent=2, allow_nan=False) + "\n"})
        for name in PARTIAL_FILES if not self.partial else OUTPUT_FILES:
            try:
                (out_dir / name).unlink(missing_ok=True)
            except OSError as exc:
                raise LiifError(f"cannot remove {out_dir / name}: {os_reason(exc)}") from None


def prepare_out_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Create ``out_dir`` if needed and make sure the results can be written there (``check_out_files``), before a
    long run starts."""
    out_dir = Path(out_dir)
    check_out_name(out_dir)  # before a folder of that name is made
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LiifError(f"{out_dir}: cannot create the output folder ({os_reason(exc)})") from None
    if not os.access(out_dir, os.W_OK):
        raise LiifError(f"{out_dir}: output folder is not writable")
    check_out_files(out_dir, overwrite)


def check_out_files(out_dir: Path, overwrite: bool) -> None:
    """Refuse a folder for the results that holds a folder by one of their names, or, unless ``overwrite``, the
    results of an earlier run, complete or partial."""
    overwrite = flag(overwrite, "overwrite", LiifError)  # "no" would replace the results
    check_out_name(out_dir)
    for name in OUTPUT_FILES + PARTIAL_FILES:
        if (out_dir / name).is_dir():
            raise LiifError(f"{out_dir / name}: is a folder, where the results go")
        if (out_dir / name).exists() and not overwrite:
            raise OutputExists(f"{out_dir / name} exists (an earlier run's results)")


def check_out_name(out_dir: Path) -> None:
    """Refuse a results file's name where the folder of the results goes (``--out results.json`` made a folder of
    that name), unless that folder is there already."""
    if out_dir.suffix.lower() in (".json", ".csv") and not out_dir.is_dir():
        raise LiifError(f"{out_dir}: a file's name, where the folder for {' and '.join(OUTPUT_FILES)} goes; "
                        "name a folder")


def protocol_scales(protocol: str, scales: Sequence[float] | float | None = None) -> Sequence[float] | float:
    """The scales a run by ``protocol`` scores: ``scales`` when given, else the protocol's ``SCALE_PRESETS``; a
    LiifError for an unknown protocol. ``liif eval`` plans with it before the model loads, as ``evaluate`` does."""
    if protocol not in PROTOCOLS:
        raise LiifError(f"unknown {option('protocol')} {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    return SCALE_PRESETS[protocol] if scales is None else scales


def plan(data: Iterable[str | Path | EvalDataset], scales: Sequence[float], degrade_method: str,
         protocol: str = "benchmark") -> list[tuple[EvalDataset, float, str]]:
    """Every (dataset, scale, LR source) of a run, checked before any work so that bad input fails at once: each
    image too, by its header (and its LR file's), for the LR, the shave and the SSIM window of ``protocol``."""
    if degrade_method not in LR_SOURCES:
        raise LiifError(f"unknown {option('degrade')} {degrade_method!r} (choose from {', '.join(LR_SOURCES)})")
    datasets = [d if isinstance(d, EvalDataset) else open_dataset(d) for d in data]
    if not datasets:
        raise LiifError("no dataset given")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise LiifError(f"two datasets share a folder name ({', '.join(names)}); results are keyed by it")
    if SETTINGS_KEY in names:
        raise LiifError(f"{next(d.hr_dir for d in datasets if d.name == SETTINGS_KEY)}: a set named "
                        f"{SETTINGS_KEY!r}, the key of the run's settings in results.json, where sets are keyed by "
                        "their folder's name; rename the folder")
    if isinstance(scales, numbers.Real) or not isinstance(scales, Iterable) or isinstance(scales, (str, bytes)):
        scales = [scales]
    scales = list(scales)
    if not scales:
        raise LiifError("no scale given")
    for scale in scales:
        # below 1 the "LR" would be larger than the HR (x1e-300 asks for an LR of 1e300 pixels a side)
        number = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
        if not number or not 1 <= scale < math.inf:
            shown = f"{float(scale):g}" if number else repr(scale)
            raise LiifError(f"each of {option('scales')} must be a finite number of at least 1, got {shown}")
    scales = list(dict.fromkeys(float(s) for s in scales))  # a scale named twice is scored once
    runs = [(d, s, lr_source(d, s, degrade_method)) for d in datasets for s in scales]
    for dataset in datasets:
        check_images(dataset, [(s, source) for d, s, source in runs if d is dataset], protocol)
    return runs


def check_images(dataset: EvalDataset, runs: Sequence[tuple[float, str]], protocol: str) -> None:
    """Raise a LiifError naming the first image of ``dataset`` that a (scale, LR source) of ``runs`` cannot score:
    too small for an LR pixel, the shave or the SSIM window, or an LR file of the wrong size; by headers alone."""
    for image in dataset.images:
        hr_size = image_size(dataset.hr_dir / image)
        for scale, source in runs:
            if source == "files":
                check_lr_size(dataset, image, scale, hr_size, image_size(dataset.lr_path(image, scale)))
            try:
                check_scorable(lr_geometry(hr_size, scale)[1], shave_for(protocol, scale))
            except ValueError as exc:
                raise LiifError(f"{dataset.hr_dir / image} at {scale_key(scale)}: {exc}") from None


def evaluate(model: ImplicitModel | str, data: Iterable[str | Path | EvalDataset] | str | Path,
             scales: Sequence[float] | None = None, protocol: str = "benchmark",
             degrade: str = "auto", quantize: bool = False, self_ensemble: bool = False,
             chunk_size: int | None = None, device: str | torch.device = "auto", progress: bool = True,
             model_name: str | None = None, precision: str = "fp32", shard: tuple[int, int] = (0, 1),
             cell_clip: bool = True, kernel: str | None = None, compile: str = "none",
             keep_bar: bool = True) -> EvalResults:
    """Score ``model`` (a model, or a name/path that ``load_model`` puts on ``device``) on datasets (folders) at
    ``scales`` (None: the protocol's ``SCALE_PRESETS``, as ``liif eval`` without ``--scales``) by ``protocol``; ``degrade`` picks the LR source (see ``lr_source``). ``shard`` = (r, W) scores
    only the r-th of every W (dataset, scale, image) items, for W processes sharing the work. ``cell_clip``
    applies the test-time cell clipping of models whose authors test with it (LTE: beyond x4, the x4 cell).
    ``kernel`` and ``compile`` set the query kernel and compile mode (``liif.upscale.configure_model``).
    ``keep_bar``: the ``progress`` bar stays once done (training's, between its epoch bars, is cleared).

    Every dataset, scale and image (by its header) is checked before the model loads, so bad input fails at once.
    """
    scales = protocol_scales(protocol, scales)
    runs = plan([data] if isinstance(data, (str, Path, EvalDataset)) else data, scales, degrade, protocol)
    for value, name in ((self_ensemble, "self_ensemble"), (quantize, "quantize"), (cell_clip, "cell_clip"),
                        (progress, "progress"), (keep_bar, "keep_bar")):
        flag(value, name, LiifError)  # before the model loads
    if chunk_size is not None:
        COUNT.check(chunk_size, option("chunk_size"), LiifError)
    check_shard(shard)
    if model_name is None:
        model_name = Path(str(model)).stem if isinstance(model, (str, os.PathLike)) else "model"
    # a model given stays where it is (liif.upscale's moves to ``device``): training scores its model in place
    source = model
    model = resolve_model(model, pick_device(device)) if isinstance(model, (str, os.PathLike)) else renderable(model)
    model = configure_model(model, precision, kernel, compile)
    settings = run_settings(source, model_name, model, runs, protocol, degrade, quantize, self_ensemble, cell_clip,
                            precision, compile, shard[1])
    scores = score_runs(model, runs, protocol, quantize, self_ensemble, chunk_size, precision, shard, cell_clip,
                        progress, keep_bar)
    return EvalResults(model_name, list(scores), settings=settings)


def run_settings(source: object, model_name: str, model: ImplicitModel,
                 runs: Sequence[tuple[EvalDataset, float, str]], protocol: str, degrade: str, quantize: bool,
                 self_ensemble: bool, cell_clip: bool, precision: str, compile: str,
                 processes: int = 1) -> dict[str, object]:
    """How a run's scores are made, for results.json: the model (``source``, and the sha256 of the file it was
    loaded from, where it was), the protocol of each dataset and scale, what else changes the scores, the
    versions and the date."""
    from liif import __version__  # liif's __init__ imports this module before it sets its version
    file = weights_file(source).resolve() if isinstance(source, (str, os.PathLike)) else None
    scales = list(dict.fromkeys(scale for _, scale, _ in runs))
    datasets: dict[str, dict[str, object]] = {}
    for dataset, scale, lr in runs:
        entry = datasets.setdefault(dataset.name, {"folder": str(dataset.hr_dir.resolve()), "layout": dataset.layout,
                                                   "images": len(dataset.images), "lr": {}})
        entry["lr"][scale_key(scale)] = lr
    return {"model": {"name": model_name, "file": str(file) if file else None, "sha256": file_sha256(file)},
            "protocol": protocol, "psnr_on": "Y" if psnr_on_y(protocol) else "RGB", "ssim_on": "Y",
            "scales": scales, "shave": {scale_key(scale): shave_for(protocol, scale) for scale in scales},
            "degrade": degrade, "datasets": datasets, "quantize": quantize, "self_ensemble": self_ensemble,
            "cell_clip": cell_clip, "precision": precision, "device": str(next(model.parameters()).device),
            "kernel": getattr(model, "query_kernel", None), "compile": compile, "processes": processes,
            "liif_version": __version__, "torch_version": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def file_sha256(path: Path | None) -> str | None:
    """The sha256 of the file at ``path`` in hex; None without a path, or where the file cannot be read."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def check_shard(shard: object) -> None:
    """Refuse a ``shard`` that is not (rank, processes) with 0 <= rank < processes: (4, 4) scored a share that
    overlaps rank 0's, and (0, 0) failed in slicing."""
    pair = isinstance(shard, (tuple, list)) and len(shard) == 2
    if not pair or not COUNT.fits(shard[1]) or not Number(int, 0, shard[1] - 1).fits(shard[0]):
        raise LiifError(f"shard must be (rank, processes), whole numbers with 0 <= rank < processes, got {shard!r}")


def score_runs(model: ImplicitModel, runs: Sequence[tuple[EvalDataset, float, str]], protocol: str = "benchmark",
               quantize: bool = False, self_ensemble: bool = False, chunk_size: int | None = None,
               precision: str = "fp32", shard: tuple[int, int] = (0, 1), cell_clip: bool = True,
               progress: bool = True, keep_bar: bool = True) -> Iterator[ImageScore]:
    """The score of each image of ``plan``'s ``runs`` by ``model`` (configured: ``configure_model``), yielded once
    made, so that a caller keeps those finished when the run is stopped; ``evaluate``'s other arguments."""
    items = [(dataset, scale, source, image) for dataset, scale, source in runs for image in dataset.images]
    mine = items[shard[0]::shard[1]]
    own_clip = model.cell_clip
    model.cell_clip = model.test_cell_clip if cell_clip else None
    try:
        with tqdm(total=len(mine), disable=not progress, unit="img", dynamic_ncols=True, leave=keep_bar) as bar:
            for dataset, scale, source, image in mine:
                bar.set_description(share_label(f"{dataset.name} {scale_key(scale)}", *shard))
                try:
                    hr, lr = hr_lr_pair(dataset, image, scale, source)
                    values = evaluate_image(model, hr, lr, protocol, scale, quantize, chunk_size, self_ensemble,
                                            precision)
                except ValueError as exc:  # an image too small for this scale or its shave
                    raise LiifError(f"{dataset.hr_dir / image} at {scale_key(scale)}: {exc}") from None
                bar.update()
                yield ImageScore(dataset.name, scale, image, source, *values)
    finally:
        model.cell_clip = own_clip
