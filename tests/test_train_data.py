"""The training data follows the reference (spec 5): folders, caching, the implicit-downsampled and paired samplers."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import liif.data.folders
from conftest import BENCHMARKS, shared_file
from liif.distributed import Processes
from liif.geometry import make_coord
from liif.data import build_dataset
from liif.data.folders import ImageFolder, decode
from liif.data.order import EpochOrder
from liif.errors import LiifError
from liif.evaluation.datasets import read_rgb
from liif.evaluation.degrade import lr_geometry, make_lr
from liif.imageio import picture_size, read_picture, rgb8
from liif.registry import DATASETS
from liif.resize import from_uint8, pil_bicubic
from liif.training.loop import build_loader


@pytest.fixture(scope="module")
def set5() -> Path:
    return shared_file(BENCHMARKS / "Set5")


def downsampled(root: Path, **wrapper) -> torch.utils.data.Dataset:
    return build_dataset({"dataset": {"name": "image-folder", "args": {"root_path": str(root), "cache": "in_memory"}},
                          "wrapper": {"name": "sr-implicit-downsampled", "args": wrapper}}, seed=3)


def find_crop(image: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """Where ``crop`` (h, w, 3) sits in ``image``, found by exact match."""
    h, w = crop.shape[:2]
    for y in range(image.shape[0] - h + 1):
        for x in np.flatnonzero((image[y, : image.shape[1] - w + 1] == crop[0, 0]).all(-1)):
            if np.array_equal(image[y:y + h, x:x + w], crop):
                return y, x
    raise AssertionError("crop not found in the image")


def test_training_sample_is_a_bicubic_lr_of_an_hr_crop_at_a_drawn_scale(set5):
    dataset = downsampled(set5, inp_size=48, scale_min=1, scale_max=4)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(set5.glob("*.png"))]
    sides = []
    for idx in range(len(dataset)):
        sample = dataset[(idx, 7)]
        side = round(2 / sample["cell"][0, 0].item())
        sides.append(side)
        assert 48 <= side <= 192
        assert sample["inp"].shape == (3, 48, 48)
        assert torch.all(sample["cell"] == torch.tensor([2 / side, 2 / side]))
        # without sample_q every HR pixel comes back in raster order: the crop itself
        hr = sample["gt"].view(side, side, 3)
        assert torch.allclose(sample["coord"], make_coord((side, side)))
        crop = (hr * 255).round().to(torch.uint8).numpy()
        find_crop(images[idx], crop)
        assert torch.equal(sample["inp"], pil_bicubic(hr.permute(2, 0, 1), (48, 48)))
    assert len(set(sides)) > 1


def test_sample_q_pixels_are_distinct_and_drawn_from_the_crop(set5):
    """Each sampled colour is the crop's pixel at its coordinate (the crop: the same sample without sample_q, whose
    draws come first)."""
    dataset = downsampled(set5, inp_size=48, scale_max=4, augment=True, sample_q=2304)
    sample = dataset[(2, 0)]
    side = round(2 / sample["cell"][0, 0].item())
    assert sample["coord"].shape == (2304, 2) and sample["gt"].shape == (2304, 3)
    assert len({tuple(c) for c in sample["coord"].tolist()}) == 2304
    grid = make_coord((side, side))
    rows = torch.cdist(sample["coord"], grid).argmin(dim=1)
    assert torch.allclose(grid[rows], sample["coord"])
    crop = downsampled(set5, inp_size=48, scale_max=4, augment=True)[(2, 0)]
    assert torch.equal(crop["inp"], sample["inp"]) and crop["gt"].shape == (side * side, 3)
    assert torch.equal(sample["gt"], crop["gt"][rows])


def test_augmentation_flips_lr_and_hr_together(set5):
    dataset = downsampled(set5, inp_size=48, scale_min=2, scale_max=2, augment=True)
    for idx in range(len(dataset)):
        sample = dataset[(idx, 1)]
        hr = sample["gt"].view(96, 96, 3).permute(2, 0, 1)
        # flips and transposes commute with PIL's symmetric bicubic kernel up to 8-bit rounding
        assert (sample["inp"] - pil_bicubic(hr, (48, 48))).abs().max() <= 1 / 255 + 1e-6


def test_augmentation_draws_the_flips_and_transposes_of_the_crop(set5):
    """With the same seed, epoch and index, the augmented crop is one of the 8 flips/transposes of the plain one,
    drawn by three coin flips: over 20 samples, more than one of them, transposes included."""
    def transformed(hr: torch.Tensor, flip_y: bool, flip_x: bool, transpose: bool) -> torch.Tensor:
        dims = [d for d, flip in ((0, flip_y), (1, flip_x)) if flip]
        hr = hr.flip(dims) if dims else hr
        return hr.transpose(0, 1) if transpose else hr

    plain = downsampled(set5, inp_size=16, scale_min=2, scale_max=2)
    augmented = downsampled(set5, inp_size=16, scale_min=2, scale_max=2, augment=True)
    symmetries = [(fy, fx, t) for fy in (False, True) for fx in (False, True) for t in (False, True)]
    seen = set()
    for epoch in range(4):
        for idx in range(len(plain)):
            hr = plain[(idx, epoch)]["gt"].view(32, 32, 3)
            got = augmented[(idx, epoch)]["gt"].view(32, 32, 3)
            matches = [sym for sym in symmetries if torch.equal(got, transformed(hr, *sym))]
            assert matches, (idx, epoch)
            seen.update(matches)
    assert len(seen) >= 4 and any(t for _, _, t in seen)


def test_samples_are_repeatable_by_seed_epoch_and_index(set5):
    dataset = downsampled(set5, inp_size=48, scale_max=4, augment=True, sample_q=2304)
    a, b, c = dataset[(1, 5)], dataset[(1, 5)], dataset[(1, 6)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["coord"], c["coord"])


def test_test_mode_matches_the_evaluation_degradation(set5):
    dataset = downsampled(set5, scale_min=3.3)
    sample = dataset[0]
    hr_full = from_uint8(np.array(Image.open(sorted(set5.glob("*.png"))[0]).convert("RGB")))
    hr, lr = make_lr(hr_full, 3.3, "pil")
    assert torch.equal(sample["inp"], lr)
    assert torch.equal(sample["gt"], hr.reshape(3, -1).t())
    assert sample["inp"].shape[-2:] == (math.floor(hr_full.shape[1] / 3.3 + 1e-9), math.floor(hr_full.shape[2] / 3.3 + 1e-9))


def write_png(path: Path, size: tuple[int, int], seed: int) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def test_folder_is_recursive_sorted_repeated_and_cached_alike(tmp_path):
    root = tmp_path / "imgs"
    arrays = {name: write_png(root / name, (40, 50), i) for i, name in enumerate(["b.png", "a/c.png", "a.png"])}
    Image.fromarray(arrays["a.png"]).save(root / "d.jpg", quality=95)
    spec = {"name": "image-folder", "args": {"root_path": str(root), "repeat": 2}}
    plain = DATASETS.make(spec)
    assert [p.relative_to(root).as_posix() for p in plain.files] == ["a.png", "a/c.png", "b.png", "d.jpg"]
    assert len(plain) == 8
    assert len(DATASETS.make(spec, {"first_k": 2})) == 4
    for cache in ("in_memory", "bin"):
        cached = DATASETS.make(spec, {"cache": cache})
        for i in range(len(plain)):
            assert torch.equal(cached[i], plain[i])
    bins = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "_bin_imgs").rglob("*"))
    assert bins == ["_bin_imgs/a", "_bin_imgs/a.png.npy", "_bin_imgs/a/c.png.npy", "_bin_imgs/b.png.npy",
                    "_bin_imgs/d.jpg.npy"]
    assert np.array_equal(np.load(tmp_path / "_bin_imgs" / "b.png.npy", allow_pickle=False), arrays["b.png"])
    assert torch.equal(plain[1], from_uint8(arrays["a/c.png"]))


def test_bin_cache_keeps_images_that_differ_only_in_suffix_apart(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (20, 20), (0, 0, 0)).save(root / "x.png")
    Image.new("RGB", (20, 20), (128, 128, 128)).save(root / "x.bmp")
    for _ in range(2):  # the first pass writes the cache, the second reads it back
        dataset = DATASETS.make({"name": "image-folder", "args": {"root_path": str(root), "cache": "bin"}})
        assert [p.name for p in dataset.files] == ["x.bmp", "x.png"]
        assert [float(dataset[i].mean()) for i in range(2)] == pytest.approx([128 / 255, 0.0])


def test_a_read_only_dataset_mount_reads_its_bin_cache_and_names_the_one_it_cannot_write(tmp_path):
    mount, root = tmp_path / "mount", tmp_path / "mount" / "imgs"
    write_png(root / "a.png", (30, 30), 0)
    spec = {"name": "image-folder", "args": {"root_path": str(root), "cache": "bin"}}
    DATASETS.make(spec)  # the cache built while the mount was writable
    write_png(root / "b.png", (30, 30), 1)  # an image added since
    bins = mount / "_bin_imgs"
    for folder in (mount, bins):
        folder.chmod(0o555)
    try:
        try:
            (bins / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("this user writes in read-only folders (root, with its capabilities)")
        # its images were skipped as unreadable, and the run stopped at "no readable images" or trained on the rest
        with pytest.raises(LiifError) as info:
            DATASETS.make(spec)
        assert str(info.value) == (f"{root}: cannot write its bin cache in {bins} (Permission denied): use cache: "
                                   "in_memory or none, or set cache_dir to a folder that can be written")
        (root / "b.png").unlink()
        assert len(DATASETS.make(spec)) == 1  # nothing to write: the cache is read as it is
    finally:
        for folder in (mount, bins):
            folder.chmod(0o755)


def test_a_cache_dir_keeps_folders_of_the_same_name_apart(tmp_path):
    lr, hr = (write_png(tmp_path / side / "x" / "0.png", size, i) for i, (side, size) in
              enumerate((("lr", (20, 20)), ("hr", (40, 40)))))
    args = {"root_path_1": str(tmp_path / "lr" / "x"), "root_path_2": str(tmp_path / "hr" / "x"), "cache": "bin",
            "cache_dir": str(tmp_path / "cache")}
    for _ in range(2):  # the first pass writes the cache, the second reads it back
        pair = DATASETS.make({"name": "paired-image-folders", "args": args})
        assert np.array_equal(pair.array(0)[0], lr) and np.array_equal(pair.array(0)[1], hr)
    assert len([*(tmp_path / "cache").glob("_bin_x-*")]) == 2 and not [*tmp_path.glob("*/_bin_x")]


def test_folders_read_pictures_as_eval_and_upscale_do(tmp_path, set5):
    # the benchmark PNGs (and DIV2K's, without EXIF) come out byte for byte as PIL's RGB conversion gives them
    paths = sorted(set5.glob("*.png")) + sorted(shared_file(BENCHMARKS / "Set14").glob("*.png"))
    assert len(paths) == 19
    for path in paths:
        with Image.open(path) as img:
            assert np.array_equal(decode(path), np.asarray(img.convert("RGB"))), path
    rgb = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "turned.png", exif=exif)
    Image.fromarray(np.array([[0, 32896], [65535, 257]], dtype=np.uint16)).save(tmp_path / "grey16.png")
    for cache in ("none", "in_memory"):
        dataset = DATASETS.make({"name": "image-folder", "args": {"root_path": str(tmp_path), "cache": cache}})
        assert [p.name for p in dataset.files] == ["grey16.png", "turned.png"]
        assert np.array_equal(dataset.array(0), np.repeat([[[0], [128]], [[255], [1]]], 3, axis=2))
        assert np.array_equal(dataset.array(1), np.rot90(rgb, -1))
        assert all(dataset.array(i).dtype == np.uint8 for i in range(2))


def test_training_and_evaluation_read_every_layout_through_one_conversion(tmp_path):
    """Training folders and eval sets once converted pictures to RGB each their own way; both are rgb8 now."""
    rgba = np.random.default_rng(7).integers(0, 256, (6, 9, 4), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8  # shown turned 90 degrees counter-clockwise
    images = {"L": Image.fromarray(rgba[:, :, 0]), "LA": Image.fromarray(rgba[:, :, :2], "LA"),
              "RGB": Image.fromarray(rgba[:, :, :3]), "RGBA": Image.fromarray(rgba),
              "P": Image.fromarray(rgba[:, :, :3]).quantize(8)}
    for mode, img in images.items():
        img.save(tmp_path / f"{mode}.png", exif=exif)
        expected = np.rot90(np.asarray(img.convert("RGB")), 1)
        pixels = read_picture(tmp_path / f"{mode}.png").pixels
        assert np.array_equal(rgb8(pixels), expected) and rgb8(pixels).flags.c_contiguous, mode
        assert np.array_equal(decode(tmp_path / f"{mode}.png"), expected), mode
        assert torch.equal(read_rgb(tmp_path / f"{mode}.png"), from_uint8(expected)), mode
    deep = np.array([[0, 32896], [65535, 257]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "grey16.png")
    assert np.array_equal(decode(tmp_path / "grey16.png"), rgb8(deep[:, :, None]))
    with pytest.raises(LiifError, match="a 16-bit image; the evaluation protocol scores 8-bit images"):
        read_rgb(tmp_path / "grey16.png")


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    write_png(tmp_path / "good.png", (30, 30), 0)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for cache in ("none", "in_memory"):
        with pytest.warns(UserWarning, match="skipping unreadable image"):
            dataset = DATASETS.make({"name": "image-folder", "args": {"root_path": str(tmp_path), "cache": cache}})
        assert dataset.skipped == 2 and len(dataset) == 1


def test_empty_or_missing_folders_are_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(LiifError, match="no readable images"):
        DATASETS.make({"name": "image-folder", "args": {"root_path": str(tmp_path)}})
    with pytest.raises(LiifError, match="no such image folder"):
        DATASETS.make({"name": "image-folder", "args": {"root_path": str(tmp_path / "absent")}})
    # a file is there: it is not missing
    with pytest.raises(LiifError, match=re.escape(f"{tmp_path / 'notes.txt'}: not a folder (root_path is a folder of "
                                                  "images)")):
        DATASETS.make({"name": "image-folder", "args": {"root_path": str(tmp_path / "notes.txt")}})


def test_images_smaller_than_the_largest_crop_are_skipped(tmp_path):
    write_png(tmp_path / "big.png", (200, 210), 0)
    write_png(tmp_path / "small.png", (100, 300), 1)
    with pytest.warns(UserWarning, match="smaller than the largest HR crop"):
        dataset = downsampled(tmp_path, inp_size=48, scale_max=4)
    assert len(dataset) == 1 and dataset.too_small == 1
    with warnings.catch_warnings(), pytest.raises(LiifError, match="every image is smaller"):
        warnings.simplefilter("ignore")
        downsampled(tmp_path, inp_size=96, scale_max=4)


def test_whole_image_sample_q_above_an_hr_crop_is_refused_when_built(tmp_path):
    """Without inp_size the HR crop is the whole image's at the drawn scale: a sample_q above it stopped the run at
    the batch that met it; the pictures' headers now refuse it when the sampler is built."""
    write_png(tmp_path / "a.png", (60, 80), 0)
    write_png(tmp_path / "b.png", (31, 40), 1)
    # the least crop of b.png that a scale drawn in [2, 4] makes, found by trying scales densely
    least = min(math.prod(lr_geometry((31, 40), s)[1]) for s in np.linspace(2, 4, 20001))
    for wrapper, pixels, crop in (({"scale_min": 3, "sample_q": 30 * 39 + 1}, 30 * 39, "39x30 at x3"),
                                  ({"scale_min": 2, "scale_max": 4, "sample_q": least + 1}, least, "")):
        with pytest.raises(LiifError) as info:
            downsampled(tmp_path, **wrapper)
        assert f"sample_q={wrapper['sample_q']} is more than the {pixels} pixels of the HR crop of " \
               f"{tmp_path / 'b.png'} ({crop}" in str(info.value)
        wrapper["sample_q"] -= 1
        dataset = downsampled(tmp_path, **wrapper)
        for epoch in range(20):
            assert dataset[(1, epoch)]["gt"].shape[0] == wrapper["sample_q"]


def test_an_image_that_shrank_since_the_run_began_is_a_one_line_error(tmp_path):
    # an uncached folder reads each image at each use: a file replaced by a smaller picture gave numpy's raw
    # "high <= 0" (or the degradation's ValueError for whole images), a traceback from the training loop
    write_png(tmp_path / "a.png", (200, 210), 0)
    crops, whole = (build_dataset({"dataset": {"name": "image-folder", "args": {"root_path": str(tmp_path)}},
                                   "wrapper": {"name": "sr-implicit-downsampled", "args": args}})
                    for args in ({"inp_size": 48, "scale_max": 4}, {"scale_min": 3}))
    write_png(tmp_path / "a.png", (20, 30), 1)
    with pytest.raises(LiifError, match=re.escape(f"{tmp_path / 'a.png'}: 30x20 is now smaller than an HR crop of ")):
        crops[(0, 1)]
    write_png(tmp_path / "a.png", (2, 2), 1)
    with pytest.raises(LiifError, match=re.escape(f"{tmp_path / 'a.png'}: a 2x2 image is too small for x3")):
        whole[0]


def paired_folders(tmp_path: Path, hr_size: tuple[int, int], lr_size: tuple[int, int], wrapper_args: dict
                   ) -> tuple[np.ndarray, np.ndarray, dict]:
    """An HR of ``hr_size`` (H, W) in hr/ and its PIL bicubic LR of ``lr_size`` (W, H) in lr/: both pictures, and
    the spec of the sr-implicit-paired set over them."""
    hr = write_png(tmp_path / "hr" / "x.png", hr_size, 0)
    lr = np.asarray(Image.fromarray(hr).resize(lr_size, Image.BICUBIC))
    (tmp_path / "lr").mkdir()
    Image.fromarray(lr).save(tmp_path / "lr" / "x.png")
    return hr, lr, {"dataset": {"name": "paired-image-folders",
                                "args": {"root_path_1": str(tmp_path / "lr"), "root_path_2": str(tmp_path / "hr")}},
                    "wrapper": {"name": "sr-implicit-paired", "args": wrapper_args}}


def test_paired_sampler_crops_aligned_lr_and_hr(tmp_path):
    hr, lr, spec = paired_folders(tmp_path, (120, 90), (30, 40), {"inp_size": 10})
    sample = build_dataset(spec)[(0, 4)]
    crop_lr = (sample["inp"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    y, x = find_crop(lr, crop_lr)
    expected_hr = from_uint8(hr[y * 3:(y + 10) * 3, x * 3:(x + 10) * 3])
    assert torch.equal(sample["gt"], expected_hr.reshape(3, -1).t())
    assert torch.allclose(sample["cell"], torch.full((900, 2), 2 / 30))
    whole = build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": {}}})[0]
    assert whole["inp"].shape == (3, 40, 30) and whole["gt"].shape == (120 * 90, 3)
    # an HR a little larger than 3x its LR is cropped top-left to LR size x 3
    Image.fromarray(np.pad(hr, ((0, 2), (0, 2), (0, 0)), constant_values=255)).save(tmp_path / "hr" / "x.png")
    whole = build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": {}}})[0]
    assert torch.equal(whole["gt"], from_uint8(hr).reshape(3, -1).t())
    with pytest.raises(LiifError, match="augment must be True or False, got 'no'"):
        build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": {"augment": "no"}}})
    # an LR smaller than a crop: refused when built, not by the sample that meets it in the middle of an epoch
    with pytest.raises(LiifError, match=re.escape(f"{tmp_path / 'lr' / 'x.png'} (30x40) is smaller than an LR crop "
                                                  "of inp_size=31")):
        build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": {"inp_size": 31}}})


def test_paired_sampler_takes_an_lr_rounded_up_as_liif_eval_does(tmp_path):
    """MATLAB's imresize makes an LR of ceil(HR / s) where s does not divide a side, which liif eval takes: training
    refused it (121 // 41 = 2, not its x3); it now trains on the LR pixels the HR covers whole."""
    hr, lr, spec = paired_folders(tmp_path, (121, 88), (30, 41), {})
    whole = build_dataset(spec)[0]
    assert torch.equal(whole["inp"], from_uint8(lr[:40, :29]))
    assert torch.equal(whole["gt"], from_uint8(hr[:120, :87]).reshape(3, -1).t())
    for seed in range(8):  # a crop never reaches the overhanging last row or column
        sample = build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": {"inp_size": 29}}})[(0, seed)]
        y, x = find_crop(lr, (sample["inp"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
        assert y + 29 <= 40 and x == 0
        assert torch.equal(sample["gt"], from_uint8(hr[y * 3:(y + 29) * 3, :87]).reshape(3, -1).t())
    with pytest.raises(LiifError, match=re.escape("(30x41, its HR covering 29x40) is smaller than an LR crop of "
                                                  "inp_size=30")):
        build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": {"inp_size": 30}}})


def test_paired_sample_q_above_an_hr_crop_is_refused_when_built(tmp_path):
    # it stopped the run at its first batch, the run folder made, or mid-epoch at the first pair of a lower scale
    hr = write_png(tmp_path / "hr" / "x.png", (120, 90), 0)
    (tmp_path / "lr").mkdir()
    Image.fromarray(hr).resize((30, 40), Image.BICUBIC).save(tmp_path / "lr" / "x.png")
    spec = {"dataset": {"name": "paired-image-folders",
                        "args": {"root_path_1": str(tmp_path / "lr"), "root_path_2": str(tmp_path / "hr")}},
            "wrapper": {"name": "sr-implicit-paired", "args": {}}}
    for args, pixels, crop in (({"inp_size": 10, "sample_q": 901}, 900, "30x30"),
                               ({"sample_q": 120 * 90 + 1}, 120 * 90, "90x120")):
        with pytest.raises(LiifError) as error:
            build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": args}})
        assert str(error.value) == (f"sample_q={args['sample_q']} is more than the {pixels} pixels of the HR crop of "
                                    f"{tmp_path / 'hr' / 'x.png'} ({crop} at x3)")
        args["sample_q"] -= 1
        assert build_dataset({**spec, "wrapper": {"name": "sr-implicit-paired", "args": args}})[0]["gt"].shape == (
            pixels, 3)


def test_paired_folders_that_do_not_pair_at_an_integer_scale_are_refused_when_built(tmp_path):
    # the sampler takes s = H_hr // H_lr and crops LR x s of the HR: folders out of step trained on misaligned crops
    hr = write_png(tmp_path / "hr" / "a.png", (120, 90), 0)
    write_png(tmp_path / "hr" / "b.png", (110, 120), 1)
    (tmp_path / "lr").mkdir()
    Image.fromarray(hr).resize((30, 40), Image.BICUBIC).save(tmp_path / "lr" / "a.png")
    Image.fromarray(hr).resize((50, 40), Image.BICUBIC).save(tmp_path / "lr" / "b.png")  # x2.4 by x2.75
    spec = {"dataset": {"name": "paired-image-folders",
                        "args": {"root_path_1": str(tmp_path / "lr"), "root_path_2": str(tmp_path / "hr")}},
            "wrapper": {"name": "sr-implicit-paired", "args": {"inp_size": 10}}}
    with pytest.raises(LiifError) as info:
        build_dataset(spec)
    assert str(info.value) == (f"{tmp_path / 'lr' / 'b.png'} (50x40) and {tmp_path / 'hr' / 'b.png'} (120x110) do not "
                               "pair at an integer scale (x2 takes an LR of 60x55): the folders must hold the same "
                               "pictures in the same sorted order")
    # LR = floor(HR / s) on both sides pairs, whatever the HR's remainder
    Image.fromarray(np.zeros((55, 60, 3), np.uint8)).save(tmp_path / "lr" / "b.png")
    assert len(build_dataset(spec)) == 2
    # sizes as the pictures are decoded: an HR stored on its side with an EXIF turn pairs with its upright LR
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(np.zeros((120, 110, 3), np.uint8)).save(tmp_path / "hr" / "b.png", exif=exif)
    pairs = build_dataset(spec).dataset
    assert pairs.hr.size(1) == decode(tmp_path / "hr" / "b.png").shape[:2] == (110, 120)


def test_two_ranks_split_each_global_batch_of_one_process():
    single = list(EpochOrder(50, shuffle=True, seed=1, global_batch=8))
    ranks = [list(EpochOrder(50, shuffle=True, seed=1, rank=r, world_size=2, global_batch=8)) for r in range(2)]
    assert len(single) == 48 and all(len(r) == 24 for r in ranks)
    for step in range(6):
        together = ranks[0][step * 4:(step + 1) * 4] + ranks[1][step * 4:(step + 1) * 4]
        assert sorted(together) == sorted(single[step * 8:(step + 1) * 8])
    order = EpochOrder(50, shuffle=True, seed=1)
    order.set_epoch(2)
    assert list(order) != list(EpochOrder(50, shuffle=True, seed=1)) and list(order)[0][1] == 2


def test_reading_a_folder_shows_a_progress_bar_when_asked(set5, capsys):
    """Decoding DIV2K's 800 pictures for cache: in_memory takes minutes on a CPU, before the first step: silent."""
    section = {"dataset": {"name": "image-folder", "args": {"root_path": str(set5), "cache": "in_memory"}},
               "wrapper": {"name": "sr-implicit-downsampled", "args": {"inp_size": 8}}}
    build_dataset(section, progress=True)
    err = capsys.readouterr().err
    assert err.startswith(f"\rreading {set5.name}:") and "/5 [" in err and err.split("\r")[-2].strip() == "", err
    build_dataset(section)
    assert capsys.readouterr().err == ""


def test_an_in_memory_cache_that_would_not_fit_is_refused_before_a_picture_is_decoded(set5, tmp_path, monkeypatch):
    """cache: in_memory decoded the whole folder with no check of the memory, in each of torchrun's processes (each
    holds its own copy), until the machine swapped or a process was killed."""
    held = sum(h * w * 3 for h, w in map(picture_size, set5.glob("*.png")))
    monkeypatch.setattr(liif.data.folders, "available_memory", lambda: 2 * held - 1)  # one copy's room, not two
    decoded = []
    monkeypatch.setattr(liif.data.folders, "decode", lambda path: decoded.append(path) or decode(path))
    assert len(ImageFolder(str(set5), cache="in_memory").arrays) == 5 and len(decoded) == 5
    decoded.clear()
    with pytest.raises(LiifError, match=re.escape(f"{set5}: cache: in_memory would hold {held / 2**30:.1f} GiB of "
                                                  "decoded images in each of 2 processes, only ")):
        ImageFolder(str(set5), cache="in_memory", copies=2)
    assert decoded == []
    assert len(ImageFolder(str(set5), cache="bin", cache_dir=str(tmp_path), copies=2).arrays) == 5  # memory-mapped
    decoded.clear()
    # liif train under torchrun: the training set is held by every process of the machine
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    section = {"dataset": {"name": "image-folder", "args": {"root_path": str(set5), "cache": "in_memory"}},
               "wrapper": {"name": "sr-implicit-downsampled", "args": {"inp_size": 8}}, "batch_size": 1}
    with pytest.raises(LiifError, match=re.escape(f"train_dataset: {set5}: cache: in_memory would hold")):
        build_loader(section, {"seed": 0, "num_workers": 0}, Processes(0, 1, torch.device("cpu")), train=True)
    assert decoded == []


class FirstTwo(ImageFolder):
    """A dataset over an image folder, as a user registers one, that takes no ``progress``."""

    def __init__(self, root_path: str):
        super().__init__(root_path, first_k=2)


class WholeImages(torch.utils.data.Dataset):
    """A reference-style wrapper that takes no ``seed``."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return {"inp": self.dataset[idx]}


def test_registered_datasets_that_take_no_progress_bar_or_seed_are_built(set5):
    """Every dataset was given ``progress`` and every wrapper ``seed``: one without them was refused ("has no
    argument 'progress'")."""
    DATASETS.register("test-first-two")(FirstTwo)
    DATASETS.register("test-whole-images")(WholeImages)
    try:
        dataset = build_dataset({"dataset": {"name": "test-first-two", "args": {"root_path": str(set5)}},
                                 "wrapper": {"name": "test-whole-images"}}, seed=3, progress=True)
    finally:
        del DATASETS.constructors["test-first-two"], DATASETS.constructors["test-whole-images"]
    assert len(dataset) == 2 and dataset.dataset.files == sorted(set5.glob("*.png"))[:2]
    assert torch.equal(dataset[1]["inp"], from_uint8(decode(dataset.dataset.files[1])))


def test_unknown_dataset_argument_is_named(tmp_path):
    with pytest.raises(LiifError, match="no argument 'root'"):
        DATASETS.make({"name": "image-folder", "args": {"root": str(tmp_path)}})


@pytest.mark.parametrize("wrapper, message", [
    ({"inp_size": 0}, "inp_size must be an int >= 1 or null, got 0"),
    ({"inp_size": 48, "sample_q": 0}, "sample_q must be an int >= 1 or null, got 0"),
    ({"inp_size": 48, "scale_min": 2, "sample_q": 96 * 96 + 1}, "sample_q=9217 is more than the 9216 pixels"),
    ({"scale_min": 0.5}, "scale_min must be a number >= 1, got 0.5"),
    ({"scale_min": 3, "scale_max": 2}, "scale_max (2) must not be below scale_min (3)"),
    # a quoted YAML value is a string, which would read as True
    ({"augment": "false"}, "augment must be True or False, got 'false'"),
])
def test_sampler_arguments_out_of_range_fail_when_built(set5, wrapper, message):
    with pytest.raises(LiifError, match="bad arguments for dataset 'sr-implicit-downsampled'") as info:
        downsampled(set5, **wrapper)
    assert message in str(info.value)


def test_folder_arguments_out_of_range_or_unreadable_fail_when_built(set5, tmp_path):
    (tmp_path / "split.json").write_text('{"train": ["baby.png"], "bad": 3}')
    split = {"root_path": str(set5), "split_file": str(tmp_path / "split.json"), "split_key": "train"}
    assert DATASETS.make({"name": "image-folder", "args": split}).files == [set5 / "baby.png"]
    for args, message in (({"repeat": 0}, "repeat must be an int >= 1, got 0"),
                          ({"first_k": -1}, "first_k must be an int >= 1 or null, got -1"),
                          ({"cache": "bin", "cache_dir": 3}, "cache_dir must be a folder's path or null, got 3"),
                          ({"cache_dir": str(tmp_path)}, "cache_dir is where cache: bin writes; this folder's "
                                                         "cache is none"),
                          ({"split_file": str(tmp_path)}, f"{tmp_path}: cannot read the split file (Is a directory)"),
                          ({"split_file": str(tmp_path / "split.json"), "split_key": "bad"},
                           "split.json: no list of image names under split_key 'bad'")):
        with pytest.raises(LiifError) as info:
            DATASETS.make({"name": "image-folder", "args": {"root_path": str(set5), **args}})
        assert message in str(info.value)
