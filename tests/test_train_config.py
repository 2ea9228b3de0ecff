"""Training configs: the shipped YAML files read like the reference's and build; overrides and errors name keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from facts import CONFIGS, TRAINED
from liif.errors import LiifError
from liif.training.config import load_config

SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


def test_every_reference_variant_is_shipped_with_its_model():
    shipped = {p.stem: p for p in (ROOT / "configs" / "train-div2k").glob("*.yaml")}
    assert set(shipped) == set(TRAINED)
    for name in TRAINED:
        config = load_config(shipped[name])
        assert config["model"] == CONFIGS[name][0], name
        # the reference recipe (spec 5.5)
        assert config["optimizer"] == {"name": "adam", "args": {"lr": 1e-4}} and config["epoch_max"] == 1000
        assert config["multi_step_lr"] == {"milestones": [200, 400, 600, 800], "gamma": 0.5}
        assert config["train_dataset"]["wrapper"]["args"] == {"inp_size": 48, "scale_max": 4, "augment": True,
                                                              "sample_q": 2304}
        assert config["train_dataset"]["batch_size"] == 16


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(ROOT / "configs").as_posix() for p in SHIPPED])
def test_shipped_configs_load(path: Path):
    config = load_config(path)
    assert config["data_norm"]["inp"] == {"sub": [0.5], "div": [0.5]}


def test_overrides_parse_yaml_values_and_floats_without_a_dot():
    config = load_config(ROOT / "configs" / "smoke.yaml", ["optimizer.args.lr=2e-4", "model.args.cell_decode=false",
                                                           "multi_step_lr.milestones=[3, 6]", "seed=7"])
    assert config["optimizer"]["args"]["lr"] == 2e-4 and isinstance(config["optimizer"]["args"]["lr"], float)
    assert config["model"]["args"]["cell_decode"] is False
    assert config["multi_step_lr"]["milestones"] == [3, 6] and config["seed"] == 7


@pytest.mark.parametrize("override, message", [
    ("epoch_maxx=3", "--set epoch_maxx: unknown config key"),
    ("train_dataset.batchsize=3", "--set train_dataset.batchsize: unknown config key"),
    ("epoch_max=true", "config key 'epoch_max' must be int, got True"),
    ("multi_step_lr.gamma=half", "config key 'multi_step_lr.gamma' must be"),
    ("amp=fp8", "config key 'amp' must be one of none, bf16, fp16"),
    ("optimizer.args.lr=[1]", "--set optimizer.args.lr: expected float"),
    ("lr", "--set takes KEY=VALUE"),
])
def test_bad_overrides_name_the_key(override: str, message: str):
    with pytest.raises(LiifError, match=None) as info:
        load_config(ROOT / "configs" / "smoke.yaml", [override])
    assert message in str(info.value)


def test_unknown_keys_in_a_file_are_named(tmp_path):
    text = (ROOT / "configs" / "smoke.yaml").read_text().replace("epoch_val: 1", "epoch_vall: 1")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(LiifError, match="unknown config key 'epoch_vall'"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(LiifError, match="a config must be a YAML mapping"):
        load_config(tmp_path / "list.yaml")
