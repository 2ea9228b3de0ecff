"""Training samplers over image datasets (reference section 5): implicit-downsampled and paired.

Every random draw of a sample comes from a generator seeded by (seed, epoch, index), so a sample does
not depend on the worker that builds it, the number of processes, or where a run was resumed.
An index is an int (epoch 0) or an ``(index, epoch)`` pair, as ``liif.data.order.EpochOrder`` yields.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from liif.bounds import flag
from liif.data.checks import check_count, check_scales
from liif.data.folders import PairedImageFolders
from liif.geometry import make_cell, to_pixel_samples
from liif.errors import LiifError
from liif.evaluation.degrade import hr_crop_size, lr_geometry, lr_size, make_lr, paired_scale
from liif.registry import DATASETS
from liif.resize import from_uint8, pil_bicubic

Index = int | tuple[int, int]


def sample_rng(seed: int, index: Index) -> tuple[int, np.random.Generator]:
    """The dataset index and the generator for one sample."""
    idx, epoch = (index, 0) if isinstance(index, (int, np.integer)) else index
    return int(idx), np.random.default_rng([seed, epoch, int(idx)])


def augment(images: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
    """The reference's three coin flips (flip H, flip W, transpose), applied alike to every image."""
    flip_h, flip_w, transpose = rng.random(3) < 0.5
    out = []
    for x in images:
        if flip_h:
            x = x.flip(-2)
        if flip_w:
            x = x.flip(-1)
        if transpose:
            x = x.transpose(-2, -1)
        out.append(x)
    return out


def pixel_samples(hr: torch.Tensor, sample_q: int | None, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Coordinates, colours and cells of ``sample_q`` HR pixels drawn without replacement (all if None), and the
    HR size (H, W) they come from."""
    coord, gt = to_pixel_samples(hr.contiguous())
    if sample_q is not None:
        if sample_q > coord.shape[0]:
            raise LiifError(f"sample_q={sample_q} is more than the {coord.shape[0]} pixels of an HR crop")
        keep = torch.from_numpy(rng.choice(coord.shape[0], sample_q, replace=False))
        coord, gt = coord[keep], gt[keep]
    return {"coord": coord, "cell": make_cell(coord, hr.shape[-2:]), "gt": gt, "hr_size": torch.tensor(hr.shape[-2:])}


def smallest_crop(size: tuple[int, int], scale_min: float, scale_max: float) -> tuple[float, tuple[int, int]]:
    """The scale in [scale_min, scale_max] at which ``lr_geometry`` crops the least of an image of ``size``, and
    that crop; a ValueError when the image is too small for an LR pixel at some of those scales."""
    # a crop's sides grow with the scale except where a side's LR loses a pixel (at side / k): the least crop is at
    # scale_min or just above one of those scales
    scales = [scale_min] + [s for side in size for k in range(1, side + 1)
                            if scale_min < (s := side / k * (1 + 1e-7)) <= scale_max]
    crops = [(s, lr_geometry(size, s)[1]) for s in scales]
    return min(crops, key=lambda scale_crop: scale_crop[1][0] * scale_crop[1][1])


def check_whole_images(images: Any, scale_min: float, scale_max: float, sample_q: int) -> None:
    """A LiifError naming the first image, read by its header, whose HR crop at some scale that may be drawn has
    fewer pixels than ``sample_q``, which sampling would meet in the middle of an epoch."""
    for i, file in enumerate(images.files):
        size = images.size(i)
        if (size[0] - scale_max - 0.5) * (size[1] - scale_max - 0.5) >= sample_q:
            continue  # a crop's sides are above side - scale - 0.5 at any scale: this one is large enough
        try:
            scale, crop = smallest_crop(size, scale_min, scale_max)
        except ValueError as exc:  # an image too small for the scale
            raise LiifError(f"{file}: {exc}") from None
        if sample_q > crop[0] * crop[1]:
            raise LiifError(f"sample_q={sample_q} is more than the {crop[0] * crop[1]} pixels of the HR crop of "
                            f"{file} ({crop[1]}x{crop[0]} at x{scale:.4g})")


@DATASETS.register("sr-implicit-downsampled")
class SRImplicitDownsampled(torch.utils.data.Dataset):
    """LR made on the fly by PIL bicubic from an HR image, at a scale drawn from U(scale_min, scale_max).

    Training (``inp_size`` set): an HR crop of side round(inp_size * s) at a uniform random corner, its
    inp_size x inp_size LR, optional flips, ``sample_q`` pixels. Images smaller than the largest crop,
    round(inp_size * scale_max), are skipped at construction with a warning (counted in ``too_small``).
    Test (no ``inp_size``): as ``degrade.make_lr``, an LR of h x w = floor(H/s + 1e-9) x floor(W/s + 1e-9) and
    the HR cropped top-left to round(h*s) x round(w*s) (s need not be an integer).
    """

    def __init__(self, dataset: Any, inp_size: int | None = None, scale_min: float = 1,
                 scale_max: float | None = None, augment: bool = False, sample_q: int | None = None,
                 seed: int = 0):
        scale_max = scale_min if scale_max is None else scale_max
        augment = flag(augment, "augment")  # a quoted "false" in a config would augment
        check_count("inp_size", inp_size)
        check_count("sample_q", sample_q)
        check_scales(scale_min, scale_max)
        if inp_size is not None and sample_q is not None and sample_q > round(inp_size * scale_min) ** 2:
            raise ValueError(f"sample_q={sample_q} is more than the {round(inp_size * scale_min) ** 2} pixels "
                             f"of the smallest HR crop (inp_size {inp_size} at scale_min {scale_min})")
        self.dataset, self.inp_size, self.augment, self.sample_q, self.seed = dataset, inp_size, augment, sample_q, seed
        self.scale_min, self.scale_max = scale_min, scale_max
        self.indices = list(range(len(dataset)))
        self.too_small = 0
        if inp_size is not None:
            crop = round(inp_size * self.scale_max)
            small = {i for i in range(len(dataset.files)) if min(dataset.size(i)) < crop}
            if small:
                self.too_small = len(small)
                warnings.warn(f"skipping {len(small)} image(s) smaller than the largest HR crop ({crop} px), "
                              f"e.g. {dataset.files[min(small)]}", stacklevel=2)
                self.indices = [i for i in self.indices if i % len(dataset.files) not in small]
            if not self.indices:
                raise LiifError(f"every image is smaller than the largest HR crop ({crop} px)")
        elif sample_q is not None:
            check_whole_images(dataset, scale_min, scale_max, sample_q)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Index) -> dict[str, torch.Tensor]:
        idx, rng = sample_rng(self.seed, index)
        image_index = self.indices[idx]
        image = self.dataset.array(image_index)
        s = rng.uniform(self.scale_min, self.scale_max)
        if self.inp_size is None:
            try:
                hr, lr = make_lr(from_uint8(image), s, "pil")
            except ValueError as exc:  # an image too small for the scale
                raise LiifError(f"{self.dataset.file(image_index)}: {exc}") from None
        else:
            side = round(self.inp_size * s)
            if min(image.shape[:2]) < side:  # read again at each use: the file was replaced since the run began
                raise LiifError(f"{self.dataset.file(image_index)}: {image.shape[1]}x{image.shape[0]} is now smaller "
                                f"than an HR crop of {side} px")
            y0 = int(rng.integers(0, image.shape[0] - side + 1))
            x0 = int(rng.integers(0, image.shape[1] - side + 1))
            hr = from_uint8(image[y0:y0 + side, x0:x0 + side])
            lr = pil_bicubic(hr, (self.inp_size, self.inp_size))
        if self.augment:
            lr, hr = augment([lr, hr], rng)
        return {"inp": lr, **pixel_samples(hr, self.sample_q, rng)}


def check_pairs(pairs: PairedImageFolders, inp_size: int | None, sample_q: int | None) -> None:
    """A LiifError naming the first pair that does not pair at an integer scale as ``liif eval`` takes pairs
    (``paired_scale``): paired by sorted order, folders that do not match would otherwise train on misaligned crops.
    And the first LR whose part its HR covers is smaller than a crop of ``inp_size``, or whose HR crop has fewer
    pixels than ``sample_q``, which sampling would meet in the middle of an epoch."""
    for i, (lr_file, hr_file) in enumerate(zip(pairs.lr.files, pairs.hr.files)):
        (h, w), (big_h, big_w) = pairs.lr.size(i), pairs.hr.size(i)
        s = paired_scale((big_h, big_w), (h, w))
        if s is None:
            s = big_h // h
            expected = f"x{s} takes an LR of {big_w // s}x{big_h // s}" if s >= 1 else "the LR is the larger"
            raise LiifError(f"{lr_file} ({w}x{h}) and {hr_file} ({big_w}x{big_h}) do not pair at an integer scale "
                            f"({expected}): the folders must hold the same pictures in the same sorted order")
        covered = lr_size((big_h, big_w), s)
        if inp_size is not None and min(covered) < inp_size:
            overhang = f", its HR covering {covered[1]}x{covered[0]}" if covered != (h, w) else ""
            raise LiifError(f"{lr_file} ({w}x{h}{overhang}) is smaller than an LR crop of inp_size={inp_size}")
        crop_h, crop_w = (inp_size * s, inp_size * s) if inp_size is not None else hr_crop_size(covered, s)
        if sample_q is not None and sample_q > crop_h * crop_w:
            raise LiifError(f"sample_q={sample_q} is more than the {crop_h * crop_w} pixels of the HR crop of "
                            f"{hr_file} ({crop_w}x{crop_h} at x{s})")


@DATASETS.register("sr-implicit-paired")
class SRImplicitPaired(torch.utils.data.Dataset):
    """Given LR/HR pairs at an integer scale s (``paired_scale``: LR = floor(HR / s), or ceil(HR / s) as MATLAB's
    imresize makes it, whose overhanging last row or column is left out); aligned crops of ``inp_size`` when set."""

    def __init__(self, dataset: Any, inp_size: int | None = None, augment: bool = False,
                 sample_q: int | None = None, seed: int = 0):
        augment = flag(augment, "augment")
        check_count("inp_size", inp_size)
        check_count("sample_q", sample_q)
        if isinstance(dataset, PairedImageFolders):
            check_pairs(dataset, inp_size, sample_q)
        self.dataset, self.inp_size, self.augment, self.sample_q, self.seed = dataset, inp_size, augment, sample_q, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Index) -> dict[str, torch.Tensor]:
        idx, rng = sample_rng(self.seed, index)
        lr_img, hr_img = self.dataset.array(idx)
        s = paired_scale(hr_img.shape[:2], lr_img.shape[:2])
        if s is None:
            raise LiifError(f"pair {idx}: an LR of {lr_img.shape[1]}x{lr_img.shape[0]} and an HR of "
                            f"{hr_img.shape[1]}x{hr_img.shape[0]} do not pair at an integer scale")
        covered = lr_size(hr_img.shape[:2], s)
        lr_img = lr_img[:covered[0], :covered[1]]  # the LR pixels the HR covers whole
        if self.inp_size is None:
            lr = from_uint8(lr_img)
            crop = hr_crop_size(lr_img.shape[:2], s)
            hr = from_uint8(hr_img[:crop[0], :crop[1]])
        else:
            side = self.inp_size
            if min(lr_img.shape[:2]) < side:
                raise LiifError(f"LR image {idx} ({lr_img.shape[0]}x{lr_img.shape[1]}) is smaller than "
                                f"inp_size={side}")
            y0 = int(rng.integers(0, lr_img.shape[0] - side + 1))
            x0 = int(rng.integers(0, lr_img.shape[1] - side + 1))
            lr = from_uint8(lr_img[y0:y0 + side, x0:x0 + side])
            hr = from_uint8(hr_img[y0 * s:(y0 + side) * s, x0 * s:(x0 + side) * s])
        if self.augment:
            lr, hr = augment([lr, hr], rng)
        return {"inp": lr, **pixel_samples(hr, self.sample_q, rng)}
