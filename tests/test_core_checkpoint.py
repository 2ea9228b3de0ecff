"""Checkpoints: safe loading, strict keys with clear errors, and a round trip in the reference format."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import liif
from conftest import REFERENCE, shared_file
from liif.checkpoint import read_checkpoint
from liif.errors import CheckpointError


class RunsCode:
    """Unpickling this would call os.system: a checkpoint must never get that far."""

    def __reduce__(self):
        import os
        return (os.system, ("touch pwned-by-checkpoint",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle-2", "pickle-4"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, monkeypatch, writer: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    payload = {"model": RunsCode()}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    with pytest.raises(CheckpointError, match="refused to load"):
        liif.load_model(path)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "photo.pth"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        liif.load_model(path)


def test_a_tensor_file_without_a_model_spec(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a LIIF checkpoint"):
        liif.load_model(path)


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        liif.load_model("no/such/model.pth")
    with pytest.raises(CheckpointError, match="unknown model 'edsr-liif-9000'"):
        liif.load_model("edsr-liif-9000")


def tampered(tmp_path: Path, change) -> Path:
    ckpt = torch.load(shared_file(REFERENCE / "tiny-edsr-liif.pth"), weights_only=True)
    change(ckpt["model"]["sd"])
    path = tmp_path / "tampered.pth"
    torch.save(ckpt, path)
    return path


def test_missing_extra_and_misshaped_keys_are_named(tmp_path: Path) -> None:
    missing = tampered(tmp_path, lambda sd: sd.pop("imnet.layers.2.bias"))
    with pytest.raises(CheckpointError, match=r"missing: imnet\.layers\.2\.bias"):
        liif.load_model(missing)
    extra = tampered(tmp_path, lambda sd: sd.__setitem__("module.extra", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected: module\.extra"):
        liif.load_model(extra)
    misshaped = tampered(tmp_path, lambda sd: sd.__setitem__("imnet.layers.0.weight", torch.zeros(32, 10)))
    with pytest.raises(CheckpointError, match=r"wrong shape: imnet\.layers\.0\.weight \(32, 10\)"):
        liif.load_model(misshaped)


def test_an_unknown_encoder_name_in_a_checkpoint(tmp_path: Path) -> None:
    ckpt = torch.load(shared_file(REFERENCE / "tiny-edsr-liif.pth"), weights_only=True)
    ckpt["model"]["args"]["encoder_spec"]["name"] = "swinir-xl"
    path = tmp_path / "unknown.pth"
    torch.save(ckpt, path)
    with pytest.raises(liif.LiifError, match="unknown model 'swinir-xl'"):
        liif.load_model(path)


def test_save_and_load_round_trip_in_the_reference_format(tmp_path: Path) -> None:
    source = shared_file(REFERENCE / "tiny-rdn-liif.pth")
    original = torch.load(source, weights_only=True)
    model = liif.load_model(source)
    path = tmp_path / "saved.pth"
    liif.save_checkpoint(model, path, optimizer=original["optimizer"], epoch=original["epoch"])
    saved = read_checkpoint(path)
    assert set(saved) == {"model", "data_norm", "optimizer", "epoch"} and saved["epoch"] == 7
    assert saved["model"]["name"] == "liif" and saved["model"]["args"] == original["model"]["args"]
    assert list(saved["model"]["sd"]) == list(original["model"]["sd"])
    assert all(torch.equal(saved["model"]["sd"][k], v) for k, v in original["model"]["sd"].items())
    reloaded = liif.load_model(path)
    inp = torch.rand(1, 3, 7, 9)
    coord = torch.rand(1, 50, 2) * 2 - 1
    cell = torch.full_like(coord, 0.1)
    with torch.no_grad():
        assert torch.equal(model(inp, coord, cell), reloaded(inp, coord, cell))


def test_load_model_puts_the_model_on_the_device_in_eval_mode() -> None:
    model = liif.load_model("edsr-baseline-liif", device="cpu")
    assert not model.training
    assert {p.device.type for p in model.parameters()} == {"cpu"}
