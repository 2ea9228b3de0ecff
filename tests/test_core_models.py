"""Every reference configuration builds with the reference's keys and sizes; every registered model round-trips."""

from __future__ import annotations

import pytest
import torch

import liif
from conftest import comic_patch
from facts import CONFIGS, EDSR, IMPLICIT, SMALL
from liif.geometry import make_cell, make_coord
from liif.models import ImplicitModel
from liif.registry import MODELS


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_with_reference_keys_and_sizes(name: str) -> None:
    spec, n_keys, n_params = CONFIGS[name]
    model = liif.make(spec)
    assert len(model.state_dict()) == n_keys
    assert sum(p.numel() for p in model.state_dict().values()) == n_params
    assert model.spec == spec


def test_the_implicit_models_are_the_registered_image_decoders() -> None:
    decoders = {name for name in MODELS.names() if isinstance(liif.make(SMALL[name]), ImplicitModel)}
    assert decoders == set(IMPLICIT)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_builds_and_round_trips_a_checkpoint(tmp_path, name: str) -> None:
    torch.manual_seed(0)
    model = liif.make(SMALL[name]).eval()
    assert model.spec == SMALL[name]
    liif.save_checkpoint(model, tmp_path / f"{name}.pth")
    loaded = liif.load_model(tmp_path / f"{name}.pth")
    if name in IMPLICIT:
        coord = make_coord((9, 7)).unsqueeze(0)
        args = (torch.rand(1, 3, 5, 4), coord, make_cell(coord, (9, 7)))
    else:
        args = (torch.rand(2, 6) if name == "mlp" else torch.rand(1, 3, 5, 4),)
    with torch.no_grad():
        assert torch.equal(model(*args), loaded(*args))


def test_mean_shift_is_stored_but_not_applied() -> None:
    torch.manual_seed(0)
    encoder = liif.make(EDSR)
    assert torch.allclose(encoder.sub_mean.bias, -torch.tensor([0.4488, 0.4371, 0.4040]))
    x = torch.rand(1, 3, 8, 8)
    head = encoder.head(x)
    assert torch.allclose(encoder(x), encoder.body(head) + head)


@pytest.mark.parametrize("hidden", [[0], [-4], [2.5], [True]])
def test_mlp_layer_sizes_must_be_positive_whole_numbers(hidden) -> None:
    with pytest.raises(liif.LiifError, match="bad arguments for model 'mlp': layer sizes must be whole numbers"):
        liif.make({"name": "mlp", "args": {"in_dim": 6, "out_dim": 3, "hidden_list": hidden}})


ENCODERS = [name for name in MODELS.names() if name != "mlp" and name not in IMPLICIT]


@pytest.mark.parametrize("name", [*ENCODERS, *IMPLICIT])
def test_channels_last_encoding_equals_contiguous_encoding(name: str) -> None:
    torch.manual_seed(0)
    model = liif.make(SMALL[name]).eval()
    patch = comic_patch() * 2 - 1  # the model's space
    inp = torch.cat([patch, patch.flip(-1)])
    encoder = model if name in ENCODERS else model.encoder
    seen = []
    encoder.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    with torch.no_grad():
        plain = model(inp) if name in ENCODERS else model.encode(inp)
        if name in ENCODERS:
            model.to(memory_format=torch.channels_last)
            fast = model(inp.contiguous(memory_format=torch.channels_last))
        else:
            assert model.use_channels_last() is model and model.channels_last
            fast = model.encode(inp)
    convs = [m.weight for m in encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    assert seen == [False, True]
    torch.testing.assert_close(fast.contiguous(), plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", IMPLICIT)
def test_a_channels_last_model_renders_the_same_picture(name: str) -> None:
    torch.manual_seed(0)
    model = liif.make(SMALL[name]).eval()
    image = comic_patch()
    plain = liif.render(model, image, (45, 61), tile=8)
    fast = liif.render(model.use_channels_last(), image, (45, 61), tile=8)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
