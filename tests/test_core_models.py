"""Every reference configuration builds from its spec with the reference's keys and parameter counts."""

from __future__ import annotations

import pytest
import torch

import liif
from liif.geometry import make_cell, make_coord

EDSR = {"name": "edsr-baseline", "args": {"no_upsampling": True}}
RDN = {"name": "rdn", "args": {"no_upsampling": True}}
MLP = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}}

# (spec, number of state-dict keys, number of parameters), from spec sections 2.5-2.7
CONFIGS = {
    "edsr-baseline-liif": ({"name": "liif", "args": {"encoder_spec": EDSR, "imnet_spec": MLP}}, 82, 1_567_323),
    "edsr-baseline-liif-c": ({"name": "liif", "args": {"encoder_spec": EDSR, "imnet_spec": MLP,
                                                       "cell_decode": False}}, 82, 1_566_811),
    "edsr-baseline-liif-u": ({"name": "liif", "args": {"encoder_spec": EDSR, "imnet_spec": MLP,
                                                       "feat_unfold": False}}, 82, 1_436_251),
    "edsr-baseline-liif-e": ({"name": "liif", "args": {"encoder_spec": EDSR, "imnet_spec": MLP,
                                                       "local_ensemble": False}}, 82, 1_567_323),
    "edsr-baseline-liif-d": ({"name": "liif", "args": {"encoder_spec": EDSR, "imnet_spec": {
        "name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256]}}}}, 78, 1_435_739),
    "edsr-baseline-x2": ({"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline", "args": {}}}},
                         76, 1_369_883),
    "rdn-liif": ({"name": "liif", "args": {"encoder_spec": RDN, "imnet_spec": MLP}}, 306, 22_320_835),
    "rdn-x2": ({"name": "liif", "args": {"encoder_spec": {"name": "rdn", "args": {}}}}, 300, 22_123_395),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_with_reference_keys_and_sizes(name: str) -> None:
    spec, n_keys, n_params = CONFIGS[name]
    model = liif.make(spec)
    assert len(model.state_dict()) == n_keys
    assert sum(p.numel() for p in model.state_dict().values()) == n_params
    assert model.spec == spec


@pytest.mark.parametrize("name", ["edsr-baseline-liif-u", "edsr-baseline-liif-e", "edsr-baseline-x2"])
def test_fast_and_reference_paths_agree_on_every_variant(name: str) -> None:
    torch.manual_seed(0)
    model = liif.make(CONFIGS[name][0]).eval()
    inp = torch.rand(1, 3, 9, 13) * 2 - 1
    coord = make_coord((23, 31)).unsqueeze(0)
    cell = make_cell(coord, (23, 31))
    with torch.no_grad():
        model.query_path = "reference"
        expected = model(inp, coord, cell)
        model.query_path = "fast"
        assert (model(inp, coord, cell) - expected).abs().max() <= 1e-5


def test_mean_shift_is_stored_but_not_applied() -> None:
    torch.manual_seed(0)
    encoder = liif.make(EDSR)
    assert torch.allclose(encoder.sub_mean.bias, -torch.tensor([0.4488, 0.4371, 0.4040]))
    x = torch.rand(1, 3, 8, 8)
    head = encoder.head(x)
    assert torch.allclose(encoder(x), encoder.body(head) + head)
