"""Every reference configuration builds with the reference's keys and sizes; every registered model round-trips."""

from __future__ import annotations

import pytest
import torch

import liif
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
