"""The fast query path computes the reference path's function and gradients, ties and borders included."""

from __future__ import annotations

import copy

import pytest
import torch

import liif
import liif.models.implicit
import liif.runtime
from conftest import BENCHMARKS, TINY, both_paths_training_step, shared_file
from facts import CONFIGS, SMALL
from liif.geometry import make_cell, make_coord
from liif.imageio import read_picture


def both_paths(model, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    outputs = []
    for path in ("reference", "fast"):
        model.query_path = path
        outputs.append(model(inp, coord, cell))
    return outputs[0], outputs[1]


@pytest.fixture(scope="module")
def released():
    return liif.load_model("edsr-baseline-liif")


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 5.5])
def test_integer_scales_cell_boundaries_and_borders(released, scale: float) -> None:
    """Integer scales put queries exactly on shifted cell boundaries, where nearest lookups tie."""
    torch.manual_seed(1)
    inp = torch.rand(1, 3, 6, 7) * 2 - 1
    size = (round(6 * scale), round(7 * scale))
    grid = make_coord(size).unsqueeze(0)
    # Latent boundaries -1 + 2k/n and the exact borders +-1, every combination of rows and columns.
    rows = torch.linspace(-1, 1, 6 + 1)
    cols = torch.linspace(-1, 1, 7 + 1)
    boundaries = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).view(1, -1, 2)
    coord = torch.cat([grid, boundaries], dim=1)
    cell = make_cell(coord, size)
    with torch.no_grad():
        expected, fast = both_paths(released, inp, coord, cell)
    assert (fast - expected).abs().max() <= 1e-5


def test_gradients_match_on_a_training_batch(released) -> None:
    """16 inputs of 48x48, 2304 sampled queries each, as the reference training recipe."""
    _, grads = both_paths_training_step(released, batch=16, side=48, queries=2304, seed=2)
    assert grads["fast"].keys() == grads["reference"].keys()
    assert len(grads["fast"]) == 78  # every tensor but the 4 frozen MeanShift ones
    worst = max(float((grads["fast"][n] - grads["reference"][n]).abs().max()) for n in grads["fast"])
    assert worst <= 1e-5


def test_windowed_latents_answer_like_the_whole_grid() -> None:
    """Latents of a feature window (for tiled rendering) give the whole grid's outputs for queries inside it."""
    model = liif.load_model(shared_file(TINY))
    torch.manual_seed(3)
    inp = torch.rand(1, 3, 12, 10) * 2 - 1
    size = (36, 30)
    coord = make_coord(size).unsqueeze(0)
    cell = make_cell(coord, size)
    with torch.no_grad():
        feat = model.encode(inp)
        expected = model.query(model.latents(feat), coord, cell)
        # Rows 3..9 of the grid (latent rows 4..8 remain after trimming) serve output rows whose lookups stay inside.
        window = model.latents(feat[:, :, 3:10], grid_shape=(12, 10), origin=(3, 0))
        assert window.window.origin == (4, 0) and window.window.shape == (5, 10)
        out_rows = slice(3 * 5 + 3, 3 * 8 - 2)
        inner = coord.view(1, 36, 30, 2)[:, out_rows].reshape(1, -1, 2)
        got = model.query(window, inner, make_cell(inner, size))
        assert (got - expected.view(1, 36, 30, 3)[:, out_rows].reshape(1, -1, 3)).abs().max() <= 1e-6
        with pytest.raises(ValueError, match="outside the window"):
            model.query(window, coord, cell)


@pytest.mark.parametrize("name", ["edsr-baseline-liif-u", "edsr-baseline-liif-e", "edsr-baseline-liif-c",
                                  "edsr-baseline-x2"])
def test_both_paths_agree_on_every_variant(name: str) -> None:
    torch.manual_seed(0)
    model = liif.make(CONFIGS[name][0]).eval()
    inp = torch.rand(1, 3, 9, 13) * 2 - 1
    coord = make_coord((23, 31)).unsqueeze(0)
    with torch.no_grad():
        expected, fast = both_paths(model, inp, coord, make_cell(coord, (23, 31)))
    assert (fast - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["liif", "lte"])
def test_a_decoder_without_hidden_layers_answers_alike_on_both_paths(name: str) -> None:
    """An MLP with ``hidden_list: []`` is one Linear: its first layer is the output, with no ReLU after it."""
    torch.manual_seed(0)
    spec = copy.deepcopy(SMALL[name])
    spec["args"]["imnet_spec"]["args"]["hidden_list"] = []
    model = liif.make(spec).eval()
    inp = torch.rand(1, 3, 9, 13) * 2 - 1
    coord = make_coord((23, 31)).unsqueeze(0)
    with torch.no_grad():
        expected, fast = both_paths(model, inp, coord, make_cell(coord, (23, 31)))
    assert expected.min() < 0  # the output is not clipped by a ReLU on either path
    assert (fast - expected).abs().max() <= 1e-5


def test_forward_is_chunked_in_inference_and_one_pass_in_training(released, monkeypatch) -> None:
    calls = []
    query = type(released).query
    monkeypatch.setattr(type(released), "query", lambda self, latents, coord, cell: calls.append(coord.shape[1])
                        or query(self, latents, coord, cell))
    monkeypatch.setattr(liif.runtime, "CPU_CHUNK", 1000)
    torch.manual_seed(5)
    inp = torch.rand(1, 3, 10, 12) * 2 - 1
    coord = torch.rand(1, 2500, 2) * 2 - 1
    cell = torch.full_like(coord, 2 / 37)
    with torch.no_grad():
        bounded = released(inp, coord, cell)
    assert calls == [1000, 1000, 500]
    calls.clear()
    trained = released(inp, coord, cell)
    assert calls == [2500] and trained.requires_grad
    # float32 rounding apart (inference fuses each Linear with its ReLU): up to 1.3e-6 over 40 seeds, 1e-5 as above
    assert (trained.detach() - bounded).abs().max() <= 1e-5


def test_chunked_queries_equal_one_call(released) -> None:
    """Each chunk takes its own queries' cells: every query has another cell (scales 1 to 4 on each axis)."""
    torch.manual_seed(4)
    inp = torch.rand(2, 3, 10, 12) * 2 - 1
    coord = (torch.rand(2, 5000, 2) * 2 - 1)
    cell = 2 / (torch.tensor([10, 12]) * torch.empty(2, 5000, 2).uniform_(1, 4))
    with torch.no_grad():
        latents = released.latents(released.encode(inp))
        whole = released.query(latents, coord, cell)
        chunked = released.query_chunked(latents, coord, cell, chunk_size=777)
    assert torch.equal(whole, chunked)


@pytest.mark.parametrize("coord_shape,cell_shape,message", [
    ((1, 10), (1, 10, 2), "coord must be a"),
    ((1, 10, 3), (1, 10, 3), "coord must be a"),
    ((1, 10, 2), (1, 9, 2), "cell must have the shape"),
])
def test_wrong_query_shapes_are_clear_errors(released, coord_shape, cell_shape, message) -> None:
    inp = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=message):
        released(inp, torch.zeros(coord_shape), torch.zeros(cell_shape))
    with pytest.raises(ValueError, match="pass cell"):
        released(inp, torch.zeros(1, 10, 2), None)


@pytest.mark.parametrize("name", ["liif", "metasr"])
def test_reference_path_keeps_coordinates_in_float32_under_bf16(released, name: str) -> None:
    """Under bf16 autocast the encoder's features are bf16; the reference path must not round the latent
    centres to bf16 with them (that tripled its error over the fast path's).

    The 48x48 latents rendered x3, queried on the top quarter of the output's rows alone: coordinates in [-1, -0.5],
    where bf16 spaces numbers farthest apart and both paths' largest errors fall (the whole grid gives the same
    maxima). The features of each precision are encoded once and queried by both paths, as ``forward`` does."""
    picture = read_picture(shared_file(BENCHMARKS / "Set5" / "baby.png"))
    inp = torch.from_numpy(picture.pixels[200:248, 200:248].astype("float32") / 255).permute(2, 0, 1)[None]
    torch.manual_seed(0)
    model = released if name == "liif" else liif.make(CONFIGS["edsr-baseline-metasr"][0]).eval()
    coord = make_coord((144, 144)).unsqueeze(0)
    cell = make_cell(coord, (144, 144))
    coord, cell = coord[:, :36 * 144], cell[:, :36 * 144]
    assert coord[..., 0].max() < -0.5
    errors = {}
    with torch.no_grad():
        fp32_feat = model.encode(inp * 2 - 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16_feat = model.encode(inp * 2 - 1)
        for path in ("reference", "fast"):
            model.query_path = path
            fp32 = model.query_chunked(model.latents(fp32_feat), coord, cell)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = model.query_chunked(model.latents(bf16_feat), coord, cell).float()
            errors[path] = (bf16 - fp32).abs().max().item()
    model.query_path = "fast"
    assert errors["reference"] < 1.5 * errors["fast"] + 1e-3, errors


def test_under_bf16_autocast_the_hidden_layers_run_in_bf16_and_the_blend_in_fp32(released, monkeypatch) -> None:
    """Reduced precision where it is cheap to lose: the MLP's GEMMs; index maths, coordinates and the ensemble
    blend stay fp32, so the answer comes back fp32."""
    import liif.models.liif as liif_module

    released.query_path = "fast"
    layer_inputs, blend_inputs = [], []
    hooks = [linear.register_forward_hook(lambda m, args, out: layer_inputs.append(args[0].dtype))
             for linear in released.imnet.linears[1:]]
    plain_weights = liif_module.blend_weights

    def recorded_weights(areas, local_ensemble):
        blend_inputs.extend(area.dtype for area in areas)
        return plain_weights(areas, local_ensemble)

    monkeypatch.setattr(liif_module, "blend_weights", recorded_weights)
    coord = make_coord((40, 40)).unsqueeze(0)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = released(torch.rand(1, 3, 12, 12) * 2 - 1, coord, make_cell(coord, (40, 40)))
    finally:
        for hook in hooks:
            hook.remove()
    assert layer_inputs and set(layer_inputs) == {torch.bfloat16}
    assert blend_inputs and set(blend_inputs) == {torch.float32}
    assert out.dtype == torch.float32


def test_the_default_chunk_is_sized_for_the_whole_batch(released, monkeypatch) -> None:
    """A GPU's chunk comes from free memory shared by every picture of the batch: query_chunked asks for it so."""
    asked = []

    def chunk_for(device, batch=1):
        asked.append(batch)
        return 100

    monkeypatch.setattr(liif.models.implicit, "query_chunk", chunk_for)
    inp = torch.rand(3, 3, 6, 7) * 2 - 1
    coord = make_coord((13, 17)).unsqueeze(0).expand(3, -1, -1)
    with torch.no_grad():
        latents = released.latents(released.encode(inp))
        whole = released.query(latents, coord, make_cell(coord, (13, 17)))
        chunked = released.query_chunked(latents, coord, make_cell(coord, (13, 17)))
    assert asked == [3]
    assert (chunked - whole).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["edsr-baseline-liif", "edsr-baseline-metasr", "edsr-baseline-lte"])
def test_float64_inputs_coordinates_and_cells_answer_as_float32_ones(name: str) -> None:
    """Coordinates made in numpy are float64: they met the float32 weights deep in torch as a dtype error."""
    torch.manual_seed(0)
    model = liif.make(CONFIGS[name][0]).eval()
    inp = torch.rand(1, 3, 8, 8) * 2 - 1
    coord = make_coord((12, 12)).unsqueeze(0)
    cell = make_cell(coord, (12, 12))
    for path in ("reference", "fast"):
        model.query_path = path
        trained = model(inp.double(), coord.double(), cell.double())
        assert trained.dtype == torch.float32 and torch.equal(trained, model(inp, coord, cell))
        with torch.no_grad():
            latents = model.latents(model.encode(inp))
            pairs = [(model(inp.double(), coord, cell.double()), model(inp, coord, cell)),
                     (model.encode(inp.double()), model.encode(inp)),
                     (model.query(latents, coord.double(), cell), model.query(latents, coord, cell)),
                     (model.query_chunked(latents, coord, cell.double(), chunk_size=50),
                      model.query_chunked(latents, coord, cell, chunk_size=50))]
        for got, expected in pairs:
            assert got.dtype == torch.float32 and torch.equal(got, expected)
    with pytest.raises(ValueError, match="coord must hold floats, got torch.int64"):
        model(inp, coord.long(), cell)
    with pytest.raises(ValueError, match="cell must hold floats, got torch.bool"):
        model(inp, coord, cell > 0)


@pytest.mark.parametrize("name", ["edsr-baseline-liif", "edsr-baseline-metasr", "edsr-baseline-lte"])
def test_each_step_refuses_what_it_cannot_take_in_words(name: str) -> None:
    """An array, one picture without its batch, queries for another number of pictures than the latents hold: a
    ValueError saying so, where torch gave conv2d's argument list, unbatched features or 'index out of range'."""
    model = liif.make(CONFIGS[name][0]).eval()
    inp = torch.rand(2, 3, 8, 8) * 2 - 1
    coord = make_coord((12, 12)).expand(2, -1, -1)
    cell = make_cell(coord, (12, 12))
    for path in ("reference", "fast"):
        model.query_path = path
        for step in (model.encode, lambda x: model(x, coord, cell)):
            with pytest.raises(ValueError, match=r"^inp must be a \(B, 3, h, w\) tensor, got a ndarray$"):
                step(inp.numpy())
            with pytest.raises(ValueError, match=r"^inp must be .* got shape \(3, 8, 8\) \(one picture: inp\[None\]\)$"):
                step(inp[0])
        with torch.no_grad():
            latents = model.latents(model.encode(inp))
            with pytest.raises(ValueError, match="^coord holds queries of 1 pictures, the latents are of 2$"):
                model.query(latents, coord[:1], cell[:1])
            with pytest.raises(ValueError, match=r"^coord must be a \(B, Q, 2\) tensor, got a ndarray$"):
                model.query(latents, coord.numpy(), cell)
            with pytest.raises(ValueError, match=r"^cell must be a \(B, Q, 2\) tensor, got a ndarray$"):
                model.query(latents, coord, cell.numpy())
            with pytest.raises(ValueError, match=r"^coord must be a \(B, Q, 2\) tensor, got a ndarray$"):
                model.query_chunked(latents, coord.numpy(), cell)
            with pytest.raises(ValueError, match=r"^coord must be a \(B, Q, 2\) tensor, got shape \(144, 2\)$"):
                model.query_chunked(latents, coord[0], cell[0], chunk_size=100)
