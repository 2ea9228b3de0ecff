"""Training configs: the shipped YAML files read like the reference's and build; overrides and errors name keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from facts import CONFIGS, TRAINED
from liif.data import build_dataset
from liif.errors import LiifError
from liif.training.config import load_config
from liif.training.loop import device_optimizer_args

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


def test_a_fraction_overrides_a_whole_number_in_free_form_args(tmp_path):
    # configs write the scale range as `scale_max: 4`, which YAML reads as an int: x3.5 was refused
    config = load_config(ROOT / "configs" / "smoke.yaml", ["train_dataset.wrapper.args.scale_max=3.5",
                                                          "train_dataset.wrapper.args.scale_min=1.5"])
    assert config["train_dataset"]["wrapper"]["args"] == {"inp_size": 24, "scale_min": 1.5, "scale_max": 3.5,
                                                          "augment": True, "sample_q": 576}
    # where a whole number is needed, the dataset or model refuses the fraction when it is built
    section = load_config(ROOT / "configs" / "smoke.yaml", ["train_dataset.dataset.args.repeat=2.5",
                                                           f"train_dataset.dataset.args.root_path={tmp_path}"])
    with pytest.raises(LiifError, match="repeat must be an int >= 1, got 2.5"):
        build_dataset(section["train_dataset"])


@pytest.mark.parametrize("override, message", [
    ("epoch_maxx=3", "overrides epoch_maxx: unknown config key"),
    ("train_dataset.batchsize=3", "overrides train_dataset.batchsize: unknown config key"),
    ("epoch_max=true", "config key 'epoch_max' must be an int >= 1, got True"),
    ("multi_step_lr.gamma=half", "config key 'multi_step_lr.gamma' must be"),
    ("amp=fp8", "config key 'amp' must be one of none, bf16, fp16"),
    ("optimizer.args.lr=[1]", "overrides optimizer.args.lr: expected float"),
    ("lr", "overrides takes KEY=VALUE"),
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


@pytest.mark.parametrize("override, message", [
    # ranges, checked once when the config loads
    ("train_dataset.batch_size=0", "config key 'train_dataset.batch_size' must be an int >= 1, got 0"),
    ("val_dataset.batch_size=-2", "config key 'val_dataset.batch_size' must be an int >= 1, got -2"),
    ("epoch_val=0", "config key 'epoch_val' must be an int >= 1 or null, got 0"),
    ("epoch_max=0", "config key 'epoch_max' must be an int >= 1, got 0"),
    ("log_every=0", "config key 'log_every' must be an int >= 1"),
    ("threads=0", "config key 'threads' must be an int in [1, 1024] or null"),
    ("num_workers=-1", "config key 'num_workers' must be an int >= 0, got -1"),
    ("seed=-1", "config key 'seed' must be an int in [0, 4294967295]"),
    ("seed=10000000000000000000000", "config key 'seed' must be an int in [0, 4294967295]"),
    ("seed=1" + "0" * 400, "config key 'seed' must be an int in [0, 4294967295], got 1000"),
    ("multi_step_lr.gamma=-1", "config key 'multi_step_lr.gamma' must be a number > 0 or null"),
    ("multi_step_lr.milestones=[a]", "config key 'multi_step_lr.milestones[0]' must be an int >= 1, got 'a'"),
    ("multi_step_lr.milestones=5", "config key 'multi_step_lr.milestones' must be a list, got 5"),
    ("epoch_max=[1]", "config key 'epoch_max' must be an int >= 1, got [1]"),
    ("data_norm.inp.sub=[0.5, 0.5]", "data_norm inp.sub must be a list of 1 or 3 finite numbers"),
    ("data_norm.gt.div=[0]", "data_norm gt.div must not hold 0"),
    # NaN, infinities and numbers too large for a float, in the schema and in free-form args
    ("multi_step_lr.gamma=.nan", "config key 'multi_step_lr.gamma' must be a finite number, got nan"),
    ("optimizer.args.lr=.inf", "config key 'optimizer.args.lr' must be a finite number, got inf"),
    ("optimizer.args.lr=1e400", "config key 'optimizer.args.lr' must be a finite number, got inf"),
    ("optimizer.args.lr=100000000000000000000" + "0" * 300, "overrides optimizer.args.lr: 1000"),
    ("model.args.encoder_spec.args.n_feats=[8]", "overrides model.args.encoder_spec.args.n_feats: expected int like 8"),
    # paths that are not keys, values YAML cannot read or a config cannot hold
    ("=", "overrides takes KEY=VALUE"),
    ("a..b=1", "overrides takes KEY=VALUE"),
    ("model.name.x=1", "overrides model.name.x: unknown config key"),
    ("model.args.encoder_spec.name.x=1", "overrides model.args.encoder_spec.name.x: model.args.encoder_spec.name "
                                         "holds 'edsr-baseline', not a mapping"),
    ("model.args.imnet_spec.args.hidden_list.0=5", "hidden_list holds [16, 16], not a mapping"),
    ("optimizer=null", "config key 'optimizer' is required (a mapping)"),
    ("multi_step_lr={gamma: 0.5}", "config key 'multi_step_lr.milestones' is required (a list)"),
    ("train_dataset.wrapper=null", "config key 'train_dataset.wrapper' is required"),
    ("seed=[1", "overrides seed, line 1, column 3: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("seed=!!int 1.5", "overrides seed: not valid YAML: invalid literal for int()"),
    ("seed=" + "[" * 3000, "overrides seed: not valid YAML: nested too deep"),
    ("model.args.x=&a [*a]", "config key 'model.args.x[0][0]"),
    ("model.args.x=!!set {a}", "config key 'model.args.x' holds a set, which a config cannot hold"),
    ("model.args.x=!!binary AAAA", "config key 'model.args.x' holds a bytes"),
    ("epoch\nmax=1", r"overrides 'epoch\nmax': unknown config key"),
    # the optimizer's arguments: the kind of torch's default, then torch's ranges, each alone and all together
    ("optimizer.args.betas=[0.9]", "config key 'optimizer.args.betas' must be a list of 2 numbers, got [0.9]"),
    ("optimizer.args.betas=[0.9, 0.99, 0.5]", "config key 'optimizer.args.betas' must be a list of 2 numbers"),
    ("optimizer.args.betas=[0.9, 1.5]", "config key 'optimizer.args.betas': Invalid beta parameter at index 1: 1.5"),
    ("optimizer.args.betas=[1e300, 0.5]", "config key 'optimizer.args.betas' holds [1e+300, 0.5], beyond the float32"),
    ("optimizer.args.weight_decay=heavy", "config key 'optimizer.args.weight_decay' must be a number, got 'heavy'"),
    ("optimizer.args.amsgrad='yes'", "config key 'optimizer.args.amsgrad' must be true or false, got 'yes'"),
    ("optimizer.args.fused='no'", "config key 'optimizer.args.fused' must be true or false or null, got 'no'"),
    ("optimizer.args.lrr=1", "unknown config key 'optimizer.args.lrr'; adam takes lr, betas, eps, weight_decay, "
                             "amsgrad,"),
    # CUDA graphs' state: its first step on a CPU failed in a traceback
    ("optimizer.args.capturable=true", "unknown config key 'optimizer.args.capturable'"),
    ("optimizer.args={lr: 1.e-3, fused: true, foreach: true}",
     "config key 'optimizer.args': `fused` and `foreach` cannot be `True` together"),
    ("optimizer={name: sgd, args: {lr: 0.1, momentum: -1}}", "config key 'optimizer.args.momentum': Invalid momentum"),
    ("optimizer={name: sgd, args: {lr: 0.1, nesterov: true}}",
     "config key 'optimizer.args.nesterov': Nesterov momentum requires a momentum and zero dampening"),
])
def test_out_of_range_and_malformed_values_are_one_line_errors_naming_the_key(override: str, message: str):
    with pytest.raises(LiifError) as info:
        load_config(ROOT / "configs" / "smoke.yaml", [override])
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_dates_stay_strings_and_null_sections_are_optional():
    config = load_config(ROOT / "configs" / "smoke.yaml", ["train_dataset.dataset.args.split_key=2001-12-14",
                                                           "val_dataset=null", "epoch_save=null", "epoch_val=null"])
    assert config["train_dataset"]["dataset"]["args"]["split_key"] == "2001-12-14"
    assert config["val_dataset"] is None and config["epoch_save"] is None


def test_config_files_that_cannot_be_read_are_one_line_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  name: liif\n  args: {a: [1, 2}\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    for path, message in ((tmp_path, f"{tmp_path}: is a folder, not a config file"),
                          (tmp_path / "bad.yaml", f"{tmp_path / 'bad.yaml'}, line 3, column 18: not valid YAML: "),
                          (tmp_path / "binary.yaml", "not a text file")):
        with pytest.raises(LiifError) as info:
            load_config(path)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_more_workers_than_the_machine_runs_are_refused_before_the_run_folder(tmp_path, monkeypatch):
    """At most 4 per CPU this process may use, shared by torchrun's processes on the machine: 1000 hung one."""
    from liif.training import loop

    monkeypatch.setattr(loop, "Run", lambda *args: pytest.fail("the run started"))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # 2 CPUs, whatever is here
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for workers, processes, limit in ((1000, "1", "at most 8 here (4 per CPU, 2 CPUs)"),
                                      (9, "1", "at most 8 here (4 per CPU, 2 CPUs)"),
                                      (5, "2", "at most 4 here (4 per CPU, 2 CPUs, shared by 2 processes)")):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
        with pytest.raises(LiifError) as error:
            loop.train(load_config(ROOT / "configs" / "smoke.yaml", [f"num_workers={workers}"]), tmp_path / "run")
        assert str(error.value) == f"num_workers {workers} is more than this machine runs: {limit}"
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    loop.check_workers(8)  # the DIV2K configs' 8 runs on 2 CPUs


@pytest.mark.parametrize("args, picked", [
    ({"lr": 1e-4}, {"lr": 1e-4, "fused": True}),
    ({"foreach": None}, {"foreach": None, "fused": True}),  # null: torch decides
    # an implementation the config picks stays alone: foreach: true beside the fused default failed on a GPU with
    # torch's "`fused` and `foreach` cannot be `True` together"
    ({"foreach": True}, {"foreach": True}),
    ({"foreach": False}, {"foreach": False}),
    ({"fused": False}, {"fused": False})])
def test_adam_on_a_gpu_is_fused_unless_the_config_picks_its_implementation(args, picked):
    spec = load_config(ROOT / "configs" / "smoke.yaml", [f"optimizer.args={json.dumps(args)}"])["optimizer"]
    assert device_optimizer_args(spec, torch.device("cuda")) == picked
    assert device_optimizer_args(spec, torch.device("cpu")) == args
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], **picked)  # torch takes them together (a CPU does too)
