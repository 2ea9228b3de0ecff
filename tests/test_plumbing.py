"""Shared plumbing: the model and dataset registries, and atomic writes with ordinary file permissions."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import liif.data  # noqa: F401  (registers the dataset names)
from liif.checkpoint import save_checkpoint
from liif.errors import LiifError
from liif.evaluation.runner import EvalResults, ImageScore
from liif.fileio import atomic_write, write_text
from liif.imageio import Picture, read_picture, write_picture
from liif.registry import DATASETS, MODELS, Registry
from liif.training.monitor import RunLog

MLP = {"name": "mlp", "args": {"in_dim": 4, "out_dim": 3, "hidden_list": [8]}}
TINY_LIIF = {"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline", "args": {
    "n_resblocks": 1, "n_feats": 4, "no_upsampling": True}}, "imnet_spec": MLP}}


@pytest.mark.parametrize("registry, name", [(MODELS, "edsr"), (DATASETS, "image-folder")])
def test_a_taken_name_is_refused_and_the_first_constructor_kept(registry: Registry, name: str) -> None:
    assert name in registry
    before = dict(registry.constructors)
    with pytest.raises(ValueError, match=f"'{name}' is already registered"):
        registry.register(name)(SimpleNamespace)
    assert registry.constructors == before


@pytest.mark.parametrize("registry, spec, message", [
    (MODELS, {"name": "mlp", "args": {**MLP["args"], "depth": 2}}, "model 'mlp' has no argument 'depth'"),
    (MODELS, {"name": "mlp", "args": {"in_dim": 4, "out_dim": 3}}, "model 'mlp' needs the argument 'hidden_list'"),
    (MODELS, {"name": "swinir"}, "unknown model 'swinir'"),
    (MODELS, "edsr", "a model spec must be a dict"),
    (DATASETS, {"name": "image-folder", "args": {"root": "x"}}, "dataset 'image-folder' has no argument 'root'"),
    (DATASETS, {"name": "image-folder", "args": None}, "dataset 'image-folder' needs the argument 'root_path'"),
    (DATASETS, {"name": "image-folder", "args": ["x"]}, "a dataset spec must be a dict"),
])
def test_a_bad_spec_is_a_liif_error_naming_the_problem(registry: Registry, spec: object, message: str) -> None:
    with pytest.raises(LiifError, match=re.escape(message)):
        registry.make(spec)


def test_make_keeps_the_given_spec_and_open_constructors_take_any_argument() -> None:
    model = MODELS.make({"name": "mlp", "args": {"out_dim": 3, "hidden_list": [8]}}, {"in_dim": 4})
    assert model.spec == {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [8]}}
    things = Registry("thing")
    things.register("open")(lambda **kwargs: SimpleNamespace(**kwargs))
    assert things.make({"name": "open", "args": {"anything": 1}}).anything == 1
    assert "open" in things and things.names() == ["open"]


def test_a_constructor_type_error_is_a_liif_error(tmp_path: Path) -> None:
    spec = {"name": "paired-image-folders", "args": {"root_path_1": str(tmp_path), "root_path_2": str(tmp_path),
                                                     "colour": "red"}}
    with pytest.raises(LiifError, match="bad arguments for dataset 'paired-image-folders'.*'colour'"):
        DATASETS.make(spec)


def test_outputs_are_readable_by_all_and_leave_no_temporary_file(tmp_path: Path, umask_022) -> None:
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(images / "a.png")
    out.mkdir()
    write_picture(Picture(np.zeros((4, 5, 3), np.uint8)), out / "picture.png")
    save_checkpoint(MODELS.make(TINY_LIIF), out / "model.pth")
    EvalResults("m", [ImageScore("Set5", 2.0, "a.png", "pil", 30.0, 0.9, 28.0, 0.8)]).write(out)
    DATASETS.make({"name": "image-folder", "args": {"root_path": str(images), "cache": "bin"}})
    written = sorted(out.iterdir()) + [tmp_path / "_bin_images" / "a.png.npy"]
    assert [(p.name, oct(stat.S_IMODE(p.stat().st_mode))) for p in written] == [
        (p.name, "0o644") for p in written]
    assert [p.name for p in written] == ["model.pth", "per_image.csv", "picture.png", "results.json", "a.png.npy"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_long_legal_output_name_can_be_written(tmp_path: Path) -> None:
    path = tmp_path / ("a" * 241 + ".png")
    pixels = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    write_picture(Picture(pixels), path)
    assert np.array_equal(read_picture(path).pixels, pixels)


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def interrupted(f) -> None:
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_text(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(LiifError, match=f"^cannot write {re.escape(str(target))}: {os.strerror(errno.ENOSPC)}$"):
        write_text(target, "new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_a_run_log_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "log.txt").mkdir()
    with pytest.raises(LiifError, match="^cannot write .*log.txt: Is a directory$"):
        RunLog(tmp_path, quiet=True, tensorboard=False).line("epoch 1")
