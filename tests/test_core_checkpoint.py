"""Checkpoints: safe loading, strict keys with clear errors, the model's data_norm, and a reference-format round trip."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import liif
from conftest import BENCHMARKS, DECODERS, REFERENCE, ROOT, TINY, comic_crop, shared_file
from liif.checkpoint import read_checkpoint
from liif.cli import main
from liif.errors import CheckpointError
from liif.geometry import make_cell, make_coord


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


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize("kept", [0.0, 0.01, 0.5, 0.999])
def test_a_truncated_checkpoint_is_called_truncated(tmp_path: Path, legacy: bool, kept: float) -> None:
    """A download cut short, in torch.save's zip format or the pickle format of PyTorch before 1.6: neither
    "not a PyTorch checkpoint" nor a file that "could run code"."""
    whole = tmp_path / "whole.pth"
    torch.save(torch.load(shared_file(DECODERS / "tiny-edsr-lte.pth"), weights_only=True), whole,
               _use_new_zipfile_serialization=not legacy)
    assert liif.load_model(whole)
    cut = tmp_path / "cut.pth"
    data = whole.read_bytes()
    cut.write_bytes(data[:int(len(data) * kept)])
    with pytest.raises(CheckpointError) as error:
        liif.load_model(cut)
    assert str(error.value) == f"{cut}: the checkpoint is truncated, its data ends early (an interrupted download " \
                               f"or copy?)"


@pytest.mark.parametrize("layout,found", [
    (lambda sd: sd, "it holds a bare state dict of 22 tensors, without the model's name and args"),
    (lambda sd: {"model": sd, "epoch": 3}, "its 'model' holds a bare state dict of 22 tensors, without the model's "
                                           "name and args"),
    (lambda sd: {"state_dict": sd, "epoch": 3}, "its keys are 'state_dict', 'epoch'"),
    (lambda sd: list(sd.values()), "it holds a list"),
], ids=["bare", "under-model", "lightning", "list"])
def test_a_file_without_a_model_spec_says_what_it_holds(tmp_path: Path, layout, found: str) -> None:
    """torch.save(model.state_dict()) and its kin: the weights alone do not say which model to build."""
    path = tmp_path / "weights.pth"
    torch.save(layout(torch.load(shared_file(TINY), weights_only=True)["model"]["sd"]), path)
    with pytest.raises(CheckpointError) as error:
        liif.load_model(path)
    assert str(error.value) == f"{path}: not a LIIF checkpoint ({found}; expected a dict whose 'model' holds " \
                               f"'name', 'args' and 'sd')"


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        liif.load_model("no/such/model.pth")
    with pytest.raises(CheckpointError, match="unknown model 'edsr-liif-9000'"):
        liif.load_model("edsr-liif-9000")
    with pytest.raises(CheckpointError) as error:  # a built-in name taken for a file, as in the reference's commands
        liif.load_model("edsr-baseline-liif.pth")
    assert str(error.value) == "edsr-baseline-liif.pth: no such checkpoint file (the built-in model is named " \
                               "edsr-baseline-liif, without .pth)"


def tampered(tmp_path: Path, change) -> Path:
    ckpt = torch.load(shared_file(TINY), weights_only=True)
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


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_a_state_dict_saved_from_a_wrapped_model_loads_without_the_wrapper_s_prefix(tmp_path: Path,
                                                                                     prefix: str) -> None:
    """DataParallel and DDP save keys as ``module.<key>``, torch.compile as ``_orig_mod.<key>``: the same weights."""
    source = shared_file(DECODERS / "tiny-edsr-lte.pth")
    ckpt = torch.load(source, weights_only=True)
    ckpt["model"]["sd"] = {prefix + k: v for k, v in ckpt["model"]["sd"].items()}
    torch.save(ckpt, tmp_path / "wrapped.pth")
    wrapped, plain = liif.load_model(tmp_path / "wrapped.pth"), liif.load_model(source)
    assert wrapped.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in wrapped.state_dict().items())


@pytest.mark.parametrize("wrap", [torch.compile, torch.nn.DataParallel,
                                  lambda m: torch.compile(torch.nn.DataParallel(m))],
                         ids=["compiled", "data-parallel", "compiled-data-parallel"])
def test_a_wrapped_model_saves_the_model_it_wraps(tmp_path: Path, wrap) -> None:
    """A compiled model's state dict prefixes every key by ``_orig_mod.``, and the wrapper is no image model: the
    checkpoint must hold the reference keys and the model's own data_norm all the same."""
    model = liif.load_model(shared_file(DECODERS / "tiny-edsr-lte.pth"))
    model.data_norm = liif.DataNorm((0.4,), (0.3,), (0.6,), (0.2,))
    liif.save_checkpoint(wrap(model), tmp_path / "saved.pth")
    saved = read_checkpoint(tmp_path / "saved.pth")
    assert list(saved["model"]["sd"]) == list(model.state_dict())
    assert liif.load_model(tmp_path / "saved.pth").data_norm == model.data_norm


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    """The reference's checkpoints were saved from CUDA tensors (spec 3.1), which torch.load restores on CUDA."""
    ckpt = torch.load(shared_file(DECODERS / "tiny-edsr-metasr.pth"), weights_only=True)
    with monkeypatch.context() as patched:
        patched.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ckpt, tmp_path / "cuda.pth")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the file really names the GPU
            torch.load(tmp_path / "cuda.pth", weights_only=True)
    model = liif.load_model(tmp_path / "cuda.pth", device="cpu")
    assert all(torch.equal(v, ckpt["model"]["sd"][k]) for k, v in model.state_dict().items())


def test_an_unknown_encoder_name_in_a_checkpoint(tmp_path: Path) -> None:
    ckpt = torch.load(shared_file(TINY), weights_only=True)
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


def test_save_checkpoint_refuses_a_folder_a_missing_path_and_a_model_without_a_spec(tmp_path: Path) -> None:
    model = liif.load_model(shared_file(TINY))
    folder = tmp_path / "run"
    (folder / "kept.txt").parent.mkdir()
    (folder / "kept.txt").write_text("a run's file")
    with pytest.raises(liif.LiifError, match=f"^could not write checkpoint {folder}: Is a directory$"):
        liif.save_checkpoint(model, folder)
    assert [p.name for p in folder.iterdir()] == ["kept.txt"] and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(liif.LiifError, match="^save_checkpoint takes a file path, not a NoneType$"):
        liif.save_checkpoint(model, None)
    # a checkpoint rebuilds its model from the spec liif keeps on it: a plain torch module has none
    with pytest.raises(liif.LiifError, match="^can only save a model built by liif .*, not a Linear$"):
        liif.save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "linear.pth")
    assert not (tmp_path / "linear.pth").exists()


def test_save_checkpoint_refuses_what_load_model_could_not_read_back(tmp_path: Path) -> None:
    """An optimizer object (not its state dict) was pickled as it was, and load_model, reading with weights_only,
    then refused the file as one that could run code; a lambda escaped as pickle's traceback."""
    model = liif.load_model(shared_file(TINY))
    path = tmp_path / "epoch-1.pth"
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(liif.LiifError, match=r"^the checkpoint would hold .*torch\.optim\.adam\.Adam.*, which loading "
                                             r"refuses \(weights_only\): .* optimizer\.state_dict\(\)\)$"):
        liif.save_checkpoint(model, path, optimizer=optimizer)
    with pytest.raises(liif.LiifError, match="^cannot save the checkpoint: Can't pickle local object '.*<lambda>'$"):
        liif.save_checkpoint(model, path, schedule=lambda epoch: 0.5)
    assert not path.exists() and not list(tmp_path.iterdir())
    liif.save_checkpoint(model, path, optimizer={"name": "adam", "args": {}, "sd": optimizer.state_dict()}, epoch=1)
    assert read_checkpoint(path)["optimizer"]["sd"]["param_groups"][0]["lr"] == 1e-3


def test_load_model_puts_the_model_on_the_device_in_eval_mode() -> None:
    model = liif.load_model("edsr-baseline-liif", device="cpu")
    assert not model.training
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_a_model_trained_with_another_data_norm_upscales_with_it(tmp_path: Path, capsys) -> None:
    """Trained on [0, 1] values as they are (sub 0, div 1), the model must be fed and read back the same way."""
    set14 = shared_file(BENCHMARKS / "Set14")
    plain = ["--set", "data_norm.inp.sub=[0.0]", "--set", "data_norm.inp.div=[1.0]",
             "--set", "data_norm.gt.sub=[0.0]", "--set", "data_norm.gt.div=[1.0]"]
    with pytest.raises(SystemExit) as trained:
        main(["train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path / "run"), "--quiet",
              "--set", "epoch_max=1", "--set", "threads=1", *plain,
              "--set", f"train_dataset.dataset.args.root_path={set14}",
              "--set", f"val_dataset.dataset.args.root_path={set14}"])
    assert trained.value.code == 0, capsys.readouterr().err
    checkpoint = tmp_path / "run" / "epoch-last.pth"
    assert read_checkpoint(checkpoint)["data_norm"] == {"inp": {"sub": [0.0], "div": [1.0]},
                                                       "gt": {"sub": [0.0], "div": [1.0]}}

    crop = comic_crop()
    Image.fromarray(crop).save(tmp_path / "in.png")
    with pytest.raises(SystemExit) as upscaled:
        main(["upscale", str(tmp_path / "in.png"), "--scale", "2", "-o", str(tmp_path / "out.png"),
              "--model", str(checkpoint), "--device", "cpu", "--quiet"])
    assert upscaled.value.code == 0
    got = np.array(Image.open(tmp_path / "out.png")).astype(int)

    model = liif.load_model(checkpoint)
    pixels = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    coord = make_coord((40, 56)).unsqueeze(0)
    cell = make_cell(coord, (40, 56))

    def by_hand(sub: float, div: float) -> np.ndarray:
        with torch.no_grad():
            out = model(((pixels - sub) / div), coord, cell) * div + sub
        return (out.clamp(0, 1) * 255).to(torch.uint8).view(40, 56, 3).numpy().astype(int)

    assert np.abs(got - by_hand(0.0, 1.0)).max() <= 1
    assert np.abs(got - by_hand(0.5, 0.5)).max() > 10  # the reference's 0.5/0.5 would give another picture


def test_reference_checkpoints_keep_the_reference_data_norm() -> None:
    model = liif.load_model(shared_file(TINY))
    assert model.data_norm == liif.DataNorm((0.5,), (0.5,), (0.5,), (0.5,))


def test_model_outputs_beyond_the_colour_range_are_clamped_to_it() -> None:
    """0.5/0.5 maps outputs -1 and 1 to colours 0 and 1; overshoot past them, as a model's can, is cut there."""
    output = torch.tensor([[-1.5, -1.0, 0.0], [0.5, 1.0, 1.5]])
    colours = liif.DataNorm().to_pixels(output)
    assert torch.equal(colours, torch.tensor([[0.0, 0.0, 0.5], [0.75, 1.0, 1.0]]))


def test_pixels_that_are_not_floats_are_refused_by_the_conversions_that_take_them() -> None:
    """8-bit pixels met 0.5 cast to uint8, 0: (x - 0) / 0 gave infinities as the model's input, without a word."""
    eight_bit = torch.full((1, 3, 2, 2), 128, dtype=torch.uint8)
    for convert in (liif.DataNorm().to_model, liif.DataNorm().to_target):
        with pytest.raises(liif.LiifError, match=r"^pixels must be floats in \[0, 1\], got torch.uint8 \(divide"):
            convert(eight_bit)
        with pytest.raises(liif.LiifError, match=r"^pixels must be a float tensor in \[0, 1\], got a ndarray$"):
            convert(eight_bit.numpy())
    assert torch.equal(liif.DataNorm().to_model(eight_bit / 255), (eight_bit / 255 - 0.5) / 0.5)


def test_a_checkpoint_s_own_data_norm_comes_before_its_training_config_s(tmp_path: Path) -> None:
    """The data_norm of a checkpoint is its own entry, else its training config's, else the reference's 0.5/0.5."""
    ckpt = torch.load(shared_file(TINY), weights_only=True)
    own = {"inp": {"sub": [0.4], "div": [0.3]}, "gt": {"sub": [0.6], "div": [0.2]}}
    configured = {"inp": {"sub": [0.0], "div": [1.0]}, "gt": {"sub": [0.1], "div": [0.9]}}
    torch.save({**ckpt, "config": {"data_norm": configured}}, tmp_path / "config.pth")
    assert liif.load_model(tmp_path / "config.pth").data_norm == liif.DataNorm((0.0,), (1.0,), (0.1,), (0.9,))
    torch.save({**ckpt, "config": {"data_norm": configured}, "data_norm": own}, tmp_path / "both.pth")
    assert liif.load_model(tmp_path / "both.pth").data_norm == liif.DataNorm((0.4,), (0.3,), (0.6,), (0.2,))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, value: float) -> None:
    path = tampered(tmp_path, lambda sd: sd["imnet.layers.0.bias"].__setitem__(3, value))
    with pytest.raises(liif.CheckpointError, match="weight imnet.layers.0.bias holds NaN or infinite values"):
        liif.load_model(path)


def test_a_spec_far_larger_than_its_weights_fails_before_allocating(tmp_path: Path) -> None:
    ckpt = torch.load(shared_file(TINY), weights_only=True)
    ckpt["model"]["args"]["encoder_spec"]["args"]["n_feats"] = 100_000  # 360 GB of float32 if it were built
    torch.save(ckpt, tmp_path / "huge.pth")
    with pytest.raises(liif.CheckpointError, match="wrong shape: encoder.head.0.weight"):
        liif.load_model(tmp_path / "huge.pth")


@pytest.mark.parametrize("change,message", [
    (lambda m: m.__setitem__("args", [1, 2]), "a model spec must be a dict with a 'name' and a dict of 'args'"),
    (lambda m: m.__setitem__("sd", [1, 2]), "'sd' must map parameter names to tensors"),
    (lambda m: m["sd"].__setitem__("imnet.layers.0.bias", 3), "'sd' must map parameter names to tensors"),
    (lambda m: m["args"]["encoder_spec"]["args"].__setitem__("n_feats", -16),
     "bad arguments for model 'edsr-baseline': Trying to create tensor with negative dimension"),
])
def test_malformed_checkpoints_are_one_line_errors_naming_the_file(tmp_path: Path, change, message: str) -> None:
    ckpt = torch.load(shared_file(TINY), weights_only=True)
    change(ckpt["model"])
    torch.save(ckpt, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as error:
        liif.load_model(tmp_path / "bad.pth")
    assert str(error.value).startswith(f"{tmp_path / 'bad.pth'}: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_spec_asking_for_a_billion_blocks_stops_at_once(tmp_path: Path) -> None:
    ckpt = torch.load(shared_file(TINY), weights_only=True)
    ckpt["model"]["args"]["encoder_spec"]["args"]["n_resblocks"] = 10**9
    torch.save(ckpt, tmp_path / "deep.pth")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'deep.pth'}: the spec builds far more weights than the 22"):
        liif.load_model(tmp_path / "deep.pth")


def test_load_model_takes_the_device_names_of_the_commands():
    """``auto`` and a misspelt device were handed to torch as they were (a RuntimeError listing its backends)."""
    assert next(liif.load_model(shared_file(TINY), "auto").parameters()).device.type in ("cpu", "cuda", "mps")
    with pytest.raises(liif.LiifError, match="unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"):
        liif.load_model(shared_file(TINY), "gpu")


def test_make_with_load_sd_builds_a_checkpoint_s_model_with_its_weights_as_the_reference_does() -> None:
    """The reference's test.py: ``models.make(torch.load(path)['model'], load_sd=True)``."""
    source = shared_file(REFERENCE / "tiny-edsr-liif.pth")
    spec = torch.load(source, weights_only=True)["model"]
    model = liif.make(spec, load_sd=True).eval()
    assert model.spec == {"name": spec["name"], "args": spec["args"]}
    inp, coord = torch.rand(1, 3, 7, 9), torch.rand(1, 50, 2) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(inp, coord, make_cell(coord, (14, 18))),
                           liif.load_model(source)(inp, coord, make_cell(coord, (14, 18))))
    with pytest.raises(liif.LiifError, match=r"^load_sd=True loads the spec's 'sd'.* this spec has none$"):
        liif.make({"name": spec["name"], "args": spec["args"]}, load_sd=True)
    with pytest.raises(CheckpointError, match=r"^spec: state dict does not fit the model; missing: encoder\.head"):
        liif.make({**spec, "sd": {k: v for k, v in spec["sd"].items() if "head" not in k}}, load_sd=True)
