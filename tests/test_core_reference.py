"""The model core reproduces the reference implementation's outputs on its own checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

import liif
from conftest import REFERENCE, TINY_FIXTURES, max_errors, shared_file
from facts import CONFIGS


@pytest.mark.parametrize("query_path", ["fast", "reference"])
@pytest.mark.parametrize("name", TINY_FIXTURES)
def test_fixture_checkpoints_reproduce_reference_outputs(name: str, query_path: str) -> None:
    model = liif.load_model(shared_file(REFERENCE / f"{name}.pth"))
    model.query_path = query_path
    errors = max_errors(model, np.load(shared_file(REFERENCE / f"{name}.npz")))
    assert max(errors.values()) <= 1e-5, errors


@pytest.mark.parametrize("name", TINY_FIXTURES)
def test_fixture_checkpoints_have_the_indexed_sizes(name: str) -> None:
    index = json.loads(shared_file(REFERENCE / "index.json").read_text())[name]
    model = liif.load_model(shared_file(REFERENCE / f"{name}.pth"))
    assert len(model.state_dict()) == index["keys"]
    assert sum(p.numel() for p in model.parameters()) == index["params"]


@pytest.mark.parametrize("query_path", ["fast", "reference"])
def test_builtin_release_weights_reproduce_reference_outputs(query_path: str, monkeypatch) -> None:
    fixture = np.load(shared_file(REFERENCE / "edsr-baseline-liif-release.npz"))
    # No network: any attempt to open a socket fails the test.
    monkeypatch.setattr("socket.socket.connect", lambda *a, **k: pytest.fail("network used"))
    model = liif.load_model("edsr-baseline-liif")
    model.query_path = query_path
    errors = max_errors(model, fixture)
    assert max(errors.values()) <= 1e-5, errors


def test_builtin_release_weights_are_the_full_model() -> None:
    model = liif.load_model("edsr-baseline-liif")
    spec, n_keys, n_params = CONFIGS["edsr-baseline-liif"]
    assert model.spec == spec
    assert len(model.state_dict()) == n_keys and sum(p.numel() for p in model.parameters()) == n_params
