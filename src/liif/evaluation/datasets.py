"""Evaluation sets: a folder of HR images, the EDSR benchmark layout, or the DIV2K layout, with their LR files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from liif.errors import LiifError, option, os_reason
from liif.evaluation.degrade import hr_crop_size, lr_size, matlab_lr_size, pairs_at
from liif.imageio import IMAGE_SUFFIXES, picture_size, read_picture, rgb8
from liif.resize import from_uint8


@dataclass(frozen=True)
class EvalDataset:
    """An HR folder, where its layout keeps LR files (``<lr_root>/X{s}/<stem>x{s}.png``, whether or not they are
    there; None for a plain folder), and its sorted image names."""

    name: str
    layout: str  # "folder", "benchmark" or "div2k"
    hr_dir: Path
    lr_root: Path | None
    images: tuple[str, ...]

    def lr_dir(self, scale: float) -> Path | None:
        """The folder of LR files for ``scale``, or None when this set has none."""
        if self.lr_root is None or not float(scale).is_integer():
            return None
        folder = self.lr_root / f"X{int(scale)}"
        return folder if folder.is_dir() else None

    def lr_path(self, image: str, scale: float) -> Path:
        """Where the LR file of HR ``image`` at integer ``scale`` is (whether or not it exists)."""
        folder = self.lr_root / f"X{int(scale)}"
        return folder / f"{Path(image).stem}x{int(scale)}.png"


def open_dataset(path: str | Path) -> EvalDataset:
    """Recognise the layout of ``path`` and list its HR images; raise a LiifError naming what is wrong."""
    root = Path(path)
    if not root.is_dir():
        raise LiifError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    if root.name.endswith("LR_bicubic") or root.parent.name.endswith("LR_bicubic"):
        # its images would be scored as HR images: plausible numbers for the wrong task
        raise LiifError(f"{root}: a folder of LR images; name the HR folder, or the set's folder that holds it")
    if root.name == "HR" and (root.parent / "LR_bicubic").is_dir():  # a benchmark's HR folder named itself
        root = root.parent  # its LR files, and its name in the results, are the set's
    if (root / "HR").is_dir():  # EDSR benchmark: <Set>/HR, <Set>/LR_bicubic/X{s}/<name>x{s}.png
        layout, hr_dir, lr_root = "benchmark", root / "HR", root / "LR_bicubic"
    elif root.name.endswith("_HR") and (root.parent / f"{root.name[:-3]}_LR_bicubic").is_dir():
        layout, hr_dir, lr_root = "div2k", root, root.parent / f"{root.name[:-3]}_LR_bicubic"
    elif (root / "DIV2K_valid_HR").is_dir():  # the DIV2K download folder itself
        layout, hr_dir, lr_root = "div2k", root / "DIV2K_valid_HR", root / "DIV2K_valid_LR_bicubic"
    else:
        layout, hr_dir, lr_root = "folder", root, None
    images = list_hr_images(hr_dir)
    if not images:
        raise LiifError(f"{hr_dir}: no images in this folder{sets_hint(hr_dir)}")
    return EvalDataset(root.name, layout, hr_dir, lr_root, tuple(images))


def sets_hint(folder: Path) -> str:
    """For a folder without images: the folders in it, which may be the sets meant, as the end of its error."""
    names = [entry.name for entry in list_folder(folder) if entry.is_dir() and not entry.name.startswith(".")]
    if not names:
        return ""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f", only folders ({shown}): name each set to score with {option('data')}"


def list_folder(folder: Path) -> list[Path]:
    """The sorted entries of ``folder``, or a LiifError naming it when it cannot be listed."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise LiifError(f"{folder}: cannot list this folder ({os_reason(exc)})") from None


def list_hr_images(folder: Path) -> list[str]:
    """Sorted names of the image files in ``folder``; any other file (hidden ones aside) is an error."""
    names = []
    for entry in list_folder(folder):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if entry.suffix.lower() not in IMAGE_SUFFIXES:
            raise LiifError(f"{entry}: not an image file (expected {', '.join(IMAGE_SUFFIXES)}); "
                            f"move it out of {folder}")
        names.append(entry.name)
    return names


def read_rgb(path: Path) -> torch.Tensor:
    """An 8-bit image file as a (3, H, W) float tensor in [0, 1] (gray repeated, alpha dropped: ``rgb8``), or a
    LiifError; a 16-bit one is refused, where training rounds it to 8 bits."""
    try:
        picture = read_picture(path)
    except LiifError as exc:
        raise LiifError(f"{path}: {exc}") from None
    if picture.pixels.dtype != np.uint8:
        raise LiifError(f"{path}: a 16-bit image; the evaluation protocol scores 8-bit images")
    return from_uint8(rgb8(picture.pixels))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file as ``read_rgb`` reads it, from its header alone; a LiifError naming the
    file when it is no picture."""
    try:
        return picture_size(path)
    except LiifError as exc:
        raise LiifError(f"{path}: {exc}") from None


def check_lr_size(dataset: EvalDataset, image: str, scale: float, hr_size: tuple[int, int],
                  lr_size_read: tuple[int, int]) -> None:
    """Raise a LiifError when the LR file of ``image`` is not a size its HR makes at ``scale``: floor(H/s) on a
    side, as the reference makes it, or ceil(H/s), as MATLAB's imresize(hr, 1/s) makes it where s does not divide
    that side (its last LR pixel overhangs the HR)."""
    if not pairs_at(hr_size, lr_size_read, scale):
        floor, ceil = lr_size(hr_size, scale), matlab_lr_size(hr_size, scale)
        rounded_up = f", or {ceil[1]}x{ceil[0]} as MATLAB's imresize rounds up" if ceil != floor else ""
        raise LiifError(f"{dataset.lr_path(image, scale)}: LR is {lr_size_read[1]}x{lr_size_read[0]}, but HR "
                        f"{dataset.hr_dir / image} ({hr_size[1]}x{hr_size[0]}) at x{scale:g} needs "
                        f"{floor[1]}x{floor[0]}{rounded_up}")


def check_lr_names(dataset: EvalDataset, scale: float) -> None:
    """Raise a LiifError when the LR folder of ``scale`` lacks a file for an HR image or has an unpaired one."""
    folder = dataset.lr_dir(scale)
    expected: dict[str, str] = {}
    for image in dataset.images:
        lr = dataset.lr_path(image, scale)
        if lr.name in expected:  # baby.png and baby.jpg: both would be scored against babyx2.png
            raise LiifError(f"{dataset.hr_dir / expected[lr.name]} and {dataset.hr_dir / image} would share the LR "
                            f"file {lr}; keep one of them in {dataset.hr_dir}")
        expected[lr.name] = image
        if not lr.is_file():
            raise LiifError(f"{lr}: missing, the LR file for HR image {dataset.hr_dir / image} at x{scale:g}")
    for entry in list_folder(folder):
        if not entry.name.startswith(".") and entry.name not in expected:
            raise LiifError(f"{entry}: LR file with no matching HR image in {dataset.hr_dir} "
                            f"(expected names like <hr-name>x{int(scale)}.png)")


def read_pair(dataset: EvalDataset, image: str, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR cropped to LR size x scale, LR) read from the files, as the reference's paired test (spec 5.3); an HR
    that an LR of ceil(H/s) overhangs is kept whole."""
    hr = read_rgb(dataset.hr_dir / image)
    lr = read_rgb(dataset.lr_path(image, scale))
    check_lr_size(dataset, image, scale, tuple(hr.shape[1:]), tuple(lr.shape[1:]))
    crop = hr_crop_size(tuple(lr.shape[1:]), scale)
    return hr[:, :crop[0], :crop[1]], lr
