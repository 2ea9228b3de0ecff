"""MetaSR and LTE: both query paths reproduce their reference implementations' outputs on the reference checkpoints
(../shared/fixtures/decoders), the paths agree on gradients, and LTE's test-time cell clipping is LTE's."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

import liif
from conftest import (DECODERS, REFERENCE, SHARED, TINY_FIXTURES, both_paths_training_step, comic_crop, comic_patch,
                      max_errors, shared_file)
from facts import CONFIGS, IMPLICIT
from liif.geometry import make_cell

FIXTURES = ["tiny-edsr-metasr", "tiny-edsr-lte"]


def fixture_model(name: str):
    return liif.load_model(shared_file(DECODERS / f"{name}.pth"))


def test_every_registered_decoder_is_tested_against_a_fixture_of_its_reference() -> None:
    """A decoder registered (IMPLICIT is the registry's decoders, test_core_models) without a fixture made by its
    reference implementation would go unchecked against it: this fails until one is added to the lists."""
    checkpoints = [REFERENCE / f"{name}.pth" for name in TINY_FIXTURES]
    checkpoints += [DECODERS / f"{name}.pth" for name in FIXTURES]
    tested = {torch.load(shared_file(path), weights_only=True)["model"]["name"] for path in checkpoints}
    assert tested == set(IMPLICIT)


@pytest.mark.parametrize("query_path", ["fast", "reference"])
@pytest.mark.parametrize("name", FIXTURES)
def test_both_paths_reproduce_the_reference_on_every_query_set(name: str, query_path: str) -> None:
    model = fixture_model(name)
    model.query_path = query_path
    errors = max_errors(model, np.load(shared_file(DECODERS / f"{name}.npz")))
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_checkpoints_load_unchanged_and_save_in_their_format(tmp_path, name: str) -> None:
    index = json.loads(shared_file(DECODERS / "index.json").read_text())[name]
    model = fixture_model(name)
    assert model.spec == index["spec"]
    assert len(model.state_dict()) == index["keys"]
    assert sum(p.numel() for p in model.parameters()) == index["params"]
    liif.save_checkpoint(model, tmp_path / "saved.pth")
    original = torch.load(DECODERS / f"{name}.pth", weights_only=True)["model"]
    saved = torch.load(tmp_path / "saved.pth", weights_only=True)["model"]
    assert (saved["name"], saved["args"]) == (original["name"], original["args"])
    assert list(saved["sd"]) == list(original["sd"])
    assert all(torch.equal(saved["sd"][k], v) for k, v in original["sd"].items())


def test_lte_keys_after_the_encoder_are_the_reference_s() -> None:
    """Spec Appendix B: EDSR-baseline-LTE's non-encoder keys, in order, with their shapes."""
    model = liif.make(CONFIGS["edsr-baseline-lte"][0])
    tail = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.startswith("encoder.")]
    assert tail == [("coef.weight", (256, 64, 3, 3)), ("coef.bias", (256,)), ("freq.weight", (256, 64, 3, 3)),
                    ("freq.bias", (256,)), ("phase.weight", (128, 2)),
                    ("imnet.layers.0.weight", (256, 256)), ("imnet.layers.0.bias", (256,)),
                    ("imnet.layers.2.weight", (256, 256)), ("imnet.layers.2.bias", (256,)),
                    ("imnet.layers.4.weight", (256, 256)), ("imnet.layers.4.bias", (256,)),
                    ("imnet.layers.6.weight", (3, 256)), ("imnet.layers.6.bias", (3,))]


def test_metasr_mlp_is_the_reference_s() -> None:
    model = liif.make(CONFIGS["edsr-baseline-metasr"][0])
    assert [tuple(linear.weight.shape) for linear in model.imnet.linears] == [(256, 3), (1728, 256)]


@pytest.mark.parametrize("name", FIXTURES)
def test_gradients_agree_between_the_paths_on_a_training_batch(name: str) -> None:
    """4 inputs of 24x24, 600 sampled queries each at scales in [1, 4], as a small training step."""
    outputs, grads = both_paths_training_step(fixture_model(name).train(), batch=4, side=24, queries=600, seed=3)
    assert (outputs["fast"] - outputs["reference"]).abs().max() <= 1e-5
    assert grads["fast"].keys() == grads["reference"].keys()
    for key, expected in grads["reference"].items():
        assert expected.abs().max() > 0, key  # every weight takes part
        assert (grads["fast"][key] - expected).abs().max() <= 1e-5, key


def test_lte_cell_clipping_decodes_large_scales_with_the_x4_cell() -> None:
    """cell x max(scale / 4, 1), as LTE's test.py: at x12 the model sees the x4 cell, up to x4 the true one."""
    model = fixture_model("tiny-edsr-lte")
    assert model.test_cell_clip == 4 and model.cell_clip is None
    inp = torch.from_numpy(np.load(shared_file(DECODERS / "tiny-edsr-lte.npz"))["inp"])
    torch.manual_seed(4)
    coord = torch.rand(1, 3000, 2) * 2 - 1
    for path in ("fast", "reference"):
        model.query_path = path
        for scale, seen in ((12, 4), (3, 3)):
            cell = make_cell(coord, (20 * scale, 28 * scale))
            with torch.no_grad():
                model.cell_clip = None
                expected = model(inp, coord, cell * scale / seen)
                plain = model(inp, coord, cell)
                model.cell_clip = 4.0
                clipped = model(inp, coord, cell)
            assert (clipped - expected).abs().max() <= 1e-6
            assert ((clipped - plain).abs().max() > 1e-3) == (scale > 4)
    model.cell_clip = None


@pytest.mark.parametrize("size", [(7, 10), (4, 5)])
def test_metasr_renders_a_tiled_downscale_as_it_renders_it_whole(size: tuple[int, int]) -> None:
    """Downscaling 2.8x, the query moves 1.4 latents up and left of its own, within the two latents every tile
    reaches; downscaling 5x, it moves 2.5 latents, and the tile's latents reach as far (once refused)."""
    model = fixture_model("tiny-edsr-metasr")
    image = comic_patch()  # 20x28 of Set14 comic
    # an output norm that keeps the colours inside [0.1, 0.9], where the renderer's clamp hides nothing
    model.data_norm = liif.DataNorm(gt_sub=(0.5,), gt_div=(1e-6,))
    peak = float((liif.render(model, image, size, tile=10_000) - 0.5).abs().max()) / 1e-6
    model.data_norm = liif.DataNorm(gt_sub=(0.5,), gt_div=(0.4 / peak,))
    whole = liif.render(model, image, size, tile=10_000)
    assert whole.std() > 0.05 and 0.05 < whole.min() and whole.max() < 0.95
    tiled = liif.render(model, image, size, tile=4)
    assert (tiled - whole).abs().max().item() <= 1e-5


def test_eval_clips_lte_cells_by_default_and_the_switch_turns_it_off(tmp_path, capsys) -> None:
    """``liif eval`` scores LTE as LTE's test.py does (x6 decoded with the x4 cell); --no-cell-clip gives it the
    true cell; up to x4 nothing changes."""
    from liif.cli import main

    (tmp_path / "hr").mkdir()
    Image.open(shared_file(SHARED / "data" / "benchmarks" / "Set14" / "comic.png")).convert("RGB") \
        .crop((60, 40, 108, 88)).save(tmp_path / "hr" / "comic.png")
    checkpoint = shared_file(DECODERS / "tiny-edsr-lte.pth")
    scores = {}
    for switch in ([], ["--no-cell-clip"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", "--quiet", "--model", str(checkpoint), "--data", str(tmp_path / "hr"), "--scales", "3,6",
                  "--device", "cpu", "--out", str(tmp_path / f"out{len(switch)}"), *switch])
        assert exit_info.value.code == 0, capsys.readouterr().err
        scores[bool(switch)] = json.loads((tmp_path / f"out{len(switch)}" / "results.json").read_text())["hr"]
    assert scores[False]["x3"] == scores[True]["x3"]
    assert abs(scores[False]["x6"]["psnr"] - scores[True]["x6"]["psnr"]) > 1e-3

    model = fixture_model("tiny-edsr-lte")
    clipped = liif.evaluate(model, tmp_path / "hr", scales=[6], device="cpu", progress=False).means()
    assert model.cell_clip is None  # evaluate restores the model's own setting
    model.cell_clip = 4.0
    assert liif.evaluate(model, tmp_path / "hr", scales=[6], device="cpu", progress=False,
                         cell_clip=False).means() != clipped  # cell_clip=False really switches it off
    assert model.cell_clip == 4.0


@pytest.mark.parametrize("name", ["metasr", "lte"])
def test_liif_train_trains_each_decoder_into_a_reference_format_checkpoint(tmp_path, name: str) -> None:
    """configs/smoke.yaml with the decoder's SMALL model: the second epoch moves every part, and the checkpoints
    are the reference format that builds the decoder."""
    import yaml

    from conftest import ROOT
    from facts import SMALL
    from liif.cli import main

    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config["model"] = SMALL[name]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    set14 = shared_file(SHARED / "data" / "benchmarks" / "Set14")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--quiet", "--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "run"),
              "--set", f"train_dataset.dataset.args.root_path={set14}",
              "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=1"])
    assert exit_info.value.code == 0
    ckpt = torch.load(tmp_path / "run" / "epoch-last.pth", weights_only=True)
    assert (ckpt["model"]["name"], ckpt["model"]["args"]) == (name, SMALL[name]["args"])
    assert ckpt["epoch"] == 2
    first = liif.load_model(tmp_path / "run" / "epoch-1.pth").state_dict()
    last = liif.load_model(tmp_path / "run" / "epoch-last.pth").state_dict()
    moved = {k.split(".")[0] for k, v in first.items() if not torch.equal(v, last[k])}
    assert moved == {"encoder", "imnet"} | ({"coef", "freq", "phase"} if name == "lte" else set())


def test_lte_with_an_encoder_that_upsamples_is_a_one_line_error(tmp_path, capsys) -> None:
    """LTE's skip rides in the latent grid, so its encoder must keep the input's size: a checkpoint whose encoder
    upsamples fails each picture on one line, not with a traceback."""
    from facts import SMALL
    from liif.cli import main

    spec = copy.deepcopy(SMALL["lte"])
    spec["args"]["encoder_spec"]["args"]["no_upsampling"] = False
    liif.save_checkpoint(liif.make(spec), tmp_path / "lte-x2.pth")
    Image.fromarray(comic_crop()).save(tmp_path / "in.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(tmp_path / "in.png"), "--scale", "2", "--model", str(tmp_path / "lte-x2.pth"),
              "-o", str(tmp_path / "out.png"), "--device", "cpu", "--quiet"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (f"liif upscale: error: {tmp_path / 'in.png'}: LTE needs an encoder that keeps "
                                       f"the input's size (no_upsampling), got (40, 56) from (20, 28)\n")
    assert not (tmp_path / "out.png").exists()
