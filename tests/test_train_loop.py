"""`liif train` end to end on a tiny model: reference-format checkpoints, exact resume, bad input, fine-tuning."""

from __future__ import annotations

import errno
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import liif
import liif.checkpoint
import liif.training.loop
from conftest import BENCHMARKS, ROOT, comic_crop, shared_file, start_group, wait_group
from liif.checkpoint import load_model, read_checkpoint
from liif.cli import main
from liif.distributed import Processes
from liif.evaluation import evaluate
from liif.geometry import make_coord
from liif.normalization import DataNorm
from liif.errors import LiifError
from liif.training import load_config, train
from liif.training.loop import (benchmark_psnr, build_scheduler, leave_stopping_to_the_main_process, train_step,
                                unless_cut_short, validate)
from liif.training.state import restore, write_checkpoint

SMOKE = ROOT / "configs" / "smoke.yaml"


def dataset_sets(key: str, value: object) -> list[str]:
    """The ``--set``s that give both datasets' args ``key: value``."""
    return [arg for section in ("train_dataset", "val_dataset")
            for arg in ("--set", f"{section}.dataset.args.{key}={value}")]


def folder_sets(folder: Path) -> list[str]:
    return [*dataset_sets("root_path", folder), "--set", "threads=1"]


@pytest.fixture(scope="module")
def set14() -> Path:
    return shared_file(BENCHMARKS / "Set14")


@pytest.fixture(scope="module")
def damaged_set5(tmp_path_factory) -> Path:
    """A benchmark folder whose one picture is cut off in its pixel data: its header reads, so the run starts,
    and benchmark_eval fails when the picture is read at the end of epoch 1."""
    folder = tmp_path_factory.mktemp("damaged") / "Set5"
    folder.mkdir()
    whole = shared_file(BENCHMARKS / "Set5" / "baby.png").read_bytes()
    (folder / "baby.png").write_bytes(whole[:len(whole) // 2])
    return folder


def liif_train(*argv: str) -> int:
    """Run ``liif train`` in this process; its exit code."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--quiet", *argv])
    return exit_info.value.code


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]["sd"]


def test_smoke_run_writes_reference_checkpoints_log_and_config(tmp_path, set14):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14)) == 0
    assert {p.name for p in run.iterdir()} >= {"epoch-1.pth", "epoch-2.pth", "epoch-last.pth", "epoch-best.pth",
                                               "config.yaml", "log.txt"}
    ckpt = read_checkpoint(run / "epoch-last.pth")
    # the reference's entries first (spec 3), then what an exact resume needs
    assert list(ckpt) == ["model", "data_norm", "optimizer", "epoch", "scheduler", "global_step", "best_val", "rng",
                          "config"]
    assert list(ckpt["model"]) == ["name", "args", "sd"] and list(ckpt["optimizer"]) == ["name", "args", "sd"]
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 14
    assert ckpt["optimizer"]["name"] == "adam" and set(ckpt["optimizer"]["sd"]) == {"state", "param_groups"}
    assert ckpt["model"]["name"] == "liif" and not any(k.startswith("module.") for k in ckpt["model"]["sd"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config == ckpt["config"] and config["train_dataset"]["dataset"]["args"]["root_path"] == str(set14)
    model = load_model(run / "epoch-last.pth")
    assert model.spec == {"name": ckpt["model"]["name"], "args": ckpt["model"]["args"]}
    log = (run / "log.txt").read_text()
    assert "val PSNR" in log
    # each epoch's line gives the rate it trained at: halved after epoch 1 (milestones [1])
    assert re.search(r"epoch 1/2: loss [0-9.]+, lr 1\.00e-03,", log) and re.search(r"epoch 2/2: loss [0-9.]+, lr 5\.00e-04,", log)
    # the weights moved, and the lr was halved after epoch 1
    assert not torch.equal(weights(run / "epoch-1.pth")["imnet.layers.0.weight"],
                           ckpt["model"]["sd"]["imnet.layers.0.weight"])
    assert ckpt["optimizer"]["sd"]["param_groups"][0]["lr"] == pytest.approx(5e-4)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, set14):
    common = ["--config", str(SMOKE), *folder_sets(set14), "--set", "epoch_max=3"]
    assert liif_train(*common, "--out", str(tmp_path / "whole")) == 0
    assert liif_train(*common, "--out", str(tmp_path / "cut"), "--set", "epoch_max=2") == 0
    # resume from the checkpoint alone (its own config), with a data-loading worker this time
    assert liif_train("--resume", str(tmp_path / "cut" / "epoch-last.pth"), "--set", "epoch_max=3",
                      "--set", "num_workers=1") == 0
    whole, resumed = read_checkpoint(tmp_path / "whole" / "epoch-last.pth"), read_checkpoint(tmp_path / "cut" / "epoch-last.pth")
    assert resumed["epoch"] == whole["epoch"] == 3 and resumed["global_step"] == whole["global_step"]
    for key, value in whole["model"]["sd"].items():
        assert torch.equal(resumed["model"]["sd"][key], value), key
    for key, state in whole["optimizer"]["sd"]["state"].items():
        assert torch.equal(resumed["optimizer"]["sd"]["state"][key]["exp_avg_sq"], state["exp_avg_sq"])
    assert resumed["scheduler"] == whole["scheduler"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, set14, capsys):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1") == 0
    before = (run / "epoch-last.pth").read_bytes()
    # at this rate the weights overflow at the first step, the loss at the next
    code = liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=2",
                      "--set", "optimizer.args.lr=1e38")
    err = capsys.readouterr().err
    assert code == 2 and "the loss is nan at epoch 2, step 9: training stopped" in err
    assert f"the last good checkpoint is {run / 'epoch-last.pth'} (epoch 1)" in err and "Traceback" not in err
    assert (run / "epoch-last.pth").read_bytes() == before
    # resumed from an earlier checkpoint, or into another folder, before writing one: the resumed one is the last good
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=2",
                      "--overwrite") == 0
    for out in ([], ["--out", str(tmp_path / "branch")]):
        assert liif_train("--resume", str(run / "epoch-1.pth"), *out, "--overwrite", "--set", "epoch_max=2",
                          "--set", "optimizer.args.lr=1e38") == 2
        assert (f"the loss is nan at epoch 2, step 9: training stopped; the last good checkpoint is "
                f"{run / 'epoch-1.pth'} (epoch 1)\n") in capsys.readouterr().err


class FailingFile:
    """A file whose writes fail with ``error`` once some bytes are in, as on a disk that fills up."""

    def __init__(self, f, error: OSError):
        self.f, self.error = f, error

    def write(self, data) -> int:
        if self.f.tell():
            raise self.error
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


@pytest.mark.parametrize("error, reason", [
    # torch.save's zip writer turns the failed write into RuntimeError("unexpected pos ...")
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), os.strerror(errno.ENOSPC)),
    (OSError(errno.EIO, os.strerror(errno.EIO)), os.strerror(errno.EIO)),
    # a failure with no OSError behind it: its first line
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed\nmore"), "PytorchStreamWriter failed writing file data/0: file write failed"),
])
def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, set14, capsys, monkeypatch, error, reason):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1") == 0
    before = (run / "epoch-last.pth").read_bytes()
    save = torch.save

    def failing_save(obj, f):
        if isinstance(error, OSError):
            save(obj, FailingFile(f, error))
        else:
            f.write(b"half a checkpoint")
            raise error

    monkeypatch.setattr(torch, "save", failing_save)
    # no epoch-N or epoch-best, which are written before epoch-last
    code = liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=2", "--set", "epoch_save=0",
                      "--set", "val_dataset=null")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"could not write checkpoint {run / 'epoch-last.pth'}: " in err
    assert f"{reason}; the previous epoch-last.pth is intact" in err
    assert (run / "epoch-last.pth").read_bytes() == before
    assert not list(run.glob(".*.tmp"))


def test_an_fp16_run_resumes_at_the_loss_scale_it_had_reached(tmp_path):
    # the scaler was left out of the checkpoint: a resumed fp16 run started again at 2**16 with a fresh growth
    # count, skipping steps to overflow where the run had backed off (CPU scalers: fp16 training needs a GPU)
    config = load_config(SMOKE)
    model = liif.make(config["model"])
    optimizer = torch.optim.Adam(model.parameters())
    reached = torch.amp.GradScaler("cpu")
    reached.load_state_dict({**reached.state_dict(), "scale": 512.0, "_growth_tracker": 37})
    write_checkpoint(tmp_path / "epoch-last.pth", model, optimizer, config, None, 3, 30, None, reached)
    resumed = torch.amp.GradScaler("cpu")
    restore(read_checkpoint(tmp_path / "epoch-last.pth"), model, optimizer, None, "epoch-last.pth", resumed)
    assert resumed.state_dict() == reached.state_dict()
    # fp32 and bf16 runs scale nothing, and their checkpoints hold no scaler
    write_checkpoint(tmp_path / "fp32.pth", model, optimizer, config, None, 3, 30, None,
                     torch.amp.GradScaler("cpu", enabled=False))
    assert "scaler" not in read_checkpoint(tmp_path / "fp32.pth")


def test_a_run_stopped_between_checkpoint_writes_resumes_to_the_same_files(tmp_path, set14, monkeypatch):
    run = tmp_path / "run"
    write = liif.training.loop.write_checkpoint

    def stopped_at_the_best_of_epoch_2(path, *state):
        if path.name == "epoch-best.pth" and state[4] == 2:
            raise KeyboardInterrupt  # Ctrl-C between two of the epoch's checkpoints
        write(path, *state)

    monkeypatch.setattr(liif.training.loop, "write_checkpoint", stopped_at_the_best_of_epoch_2)
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14)) == 130
    monkeypatch.undo()
    # epoch-last is still epoch 1's: the resume trains epoch 2 again and writes its best (the smoke run's
    # validation PSNR rises from epoch 1 to 2), where epoch-best stayed at epoch 1 under a best_val of epoch 2
    assert read_checkpoint(run / "epoch-last.pth")["epoch"] == 1
    assert liif_train("--resume", str(run / "epoch-last.pth")) == 0
    last, best = read_checkpoint(run / "epoch-last.pth"), read_checkpoint(run / "epoch-best.pth")
    assert last["epoch"] == best["epoch"] == 2 and best["best_val"] == last["best_val"]
    assert all(torch.equal(best["model"]["sd"][k], v) for k, v in last["model"]["sd"].items())


def test_resuming_from_an_earlier_epoch_is_refused_unless_the_later_checkpoints_are_deleted(tmp_path, set14, capsys):
    """A resume from epoch 1 of a run that reached 3 left epoch-2/3.pth (and an epoch-best.pth of epoch 3) beside
    the resumed run's files, and epoch-last.pth resuming epoch 3 until the resumed run wrote its own."""
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=3") == 0
    epochs = {p.name: read_checkpoint(p)["epoch"] for p in run.glob("epoch-*.pth")}
    later = sorted((name for name, epoch in epochs.items() if epoch > 1), key=epochs.get)
    assert {"epoch-2.pth", "epoch-3.pth", "epoch-last.pth"} <= set(later)
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    assert liif_train("--resume", str(run / "epoch-1.pth"), "--set", "epoch_max=2") == 2
    assert one_line_error(capsys) == (
        f"liif train: error: {run} holds checkpoints of epochs after epoch-1.pth (epoch 1): {', '.join(later)}; "
        f"resume from {run / 'epoch-last.pth'} to go on from the last, give another folder (--out) to branch off, or "
        f"pass --overwrite to delete them\n")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files
    # --overwrite deletes them: the folder holds one line of epochs, the resumed run's
    assert liif_train("--resume", str(run / "epoch-1.pth"), "--set", "epoch_max=2", "--overwrite") == 0
    resumed = {p.name: read_checkpoint(p)["epoch"] for p in run.glob("epoch-*.pth")}
    assert "epoch-3.pth" not in resumed and resumed["epoch-last.pth"] == 2 and max(resumed.values()) == 2
    assert f"deleted the checkpoints of the epochs after 1: {', '.join(later)}" in (run / "log.txt").read_text()


def test_a_resume_from_an_earlier_epoch_shows_one_history_in_tensorboard(tmp_path, set14):
    """The points of the epochs --overwrite discarded stayed beside the resumed run's: two curves on top of each
    other. Every point is at its global step, and the resumed run hides those past its checkpoint's."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    logged = ["--set", "tensorboard=true", "--set", "log_every=1"]
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), *logged,
                      "--set", "epoch_max=3") == 0
    assert liif_train("--resume", str(run / "epoch-1.pth"), "--overwrite", *logged, "--set", "epoch_max=2",
                      "--set", "optimizer.args.lr=4.e-3") == 0
    events = accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 15))
    assert [e.step for e in events.Scalars("val/psnr")] == [e.step for e in events.Images("val/sample")] == [7, 14]
    # the resumed epoch's points are the new run's: it trained at four times the rate
    assert [e.value for e in events.Scalars("train/lr")][6:8] == pytest.approx([1e-3, 4e-3 / 2])
    best = read_checkpoint(run / "epoch-last.pth")["best_val"]
    assert events.Scalars("val/psnr")[-1].value == pytest.approx(best)
    log = (run / "log.txt").read_text()
    assert f"resuming at epoch 2 from {run / 'epoch-1.pth'}\n" in log  # the branch point
    assert "deleted the checkpoints of the epochs after 1: " in log
    assert "the lines above of epoch 2 on are the discarded run's" in log


def one_line_error(capsys) -> str:
    """The error ``liif train`` printed: one line, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("liif train: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_config_keys_and_values_are_named(tmp_path, set14, capsys):
    base = ["--config", str(SMOKE), "--out", str(tmp_path / "run"), *folder_sets(set14)]
    for extra, message in ((["--set", "epoch_maxx=3"], "--set epoch_maxx: unknown config key"),
                           (["--set", "epoch_max=three"], "config key 'epoch_max' must be an int >= 1, got 'three'"),
                           (["--set", "optimizer.args.lr=fast"], "--set optimizer.args.lr: expected float"),
                           (["--set", "model.args.cell_decod=false"], "cell_decod"),
                           (["--set", "train_dataset.dataset.args.root_path=/nonexistent"],
                            "train_dataset: /nonexistent: no such image folder")):
        assert liif_train(*base, *extra) == 2
        assert message in one_line_error(capsys)
    assert liif_train("--config", str(tmp_path / "missing.yaml")) == 2
    assert "no such config file" in one_line_error(capsys)
    assert liif_train("--config", str(tmp_path), "--out", str(tmp_path / "run")) == 2
    assert f"{tmp_path}: is a folder, not a config file" in one_line_error(capsys)
    (tmp_path / "bad.yaml").write_text(SMOKE.read_text().replace("epoch_max: 2", "epoch_max: [2"))
    assert liif_train("--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "run")) == 2
    assert (f"{tmp_path / 'bad.yaml'}, line 55, column 14: not valid YAML: expected ',' or ']', but got ':'"
            in one_line_error(capsys))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("train_dataset.batch_size=0", "config key 'train_dataset.batch_size' must be an int >= 1, got 0"),
    ("epoch_val=0", "config key 'epoch_val' must be an int >= 1 or null, got 0"),
    ("data_norm.inp.sub=[0.5, 0.5]", "data_norm inp.sub must be a list of 1 or 3 finite numbers"),
    ("optimizer.args.lr=-1", "config key 'optimizer.args.lr': Invalid learning rate: -1"),
    # torch takes it, then overflows at the first step
    ("optimizer.args.lr=1e300", "config key 'optimizer.args.lr' holds 1e+300, beyond the float32 range of the "
                                "weights (±3.4e+38)"),
    # free-form constructor arguments, checked as the model and datasets are built
    ("model.args.encoder_spec.args.n_feats=-8", "bad arguments for model 'edsr-baseline': "),
    # sizes no machine trains: refused from a build on the meta device, in a moment and without the memory
    ("model.args.encoder_spec.args.n_resblocks=100000000", "the model spec builds more than 10000 weight tensors"),
    ("model.args.encoder_spec.args.n_feats=10000000", "GiB, only"),
    ("train_dataset.wrapper.args.inp_size=0", "train_dataset: bad arguments for dataset 'sr-implicit-downsampled': "
                                              "inp_size must be an int >= 1 or null, got 0"),
    ("val_dataset.wrapper.args.sample_q=1000", "val_dataset: bad arguments for dataset 'sr-implicit-downsampled': "
                                               "sample_q=1000 is more than the 576 pixels of the smallest HR crop"),
    ("benchmark_eval={root: /nonexistent, scales: [2]}", "benchmark_eval: /nonexistent: no such folder"),
    # whole training images of several sizes in a batch: the first step failed, once the run folder was made (and
    # a run it replaced with --overwrite deleted)
    ("train_dataset.wrapper.args={scale_max: 4}", "train_dataset: samples of different sizes cannot share a batch"),
    # an epoch whose sample order no memory holds: refused, not a MemoryError or the OOM killer
    ("train_dataset.dataset.args.repeat=1000000000000", "train_dataset: an epoch of 14,000,000,000,000 samples "
                                                        "(images x repeat) needs"),
])
def test_bad_values_fail_in_one_line_before_the_run_folder_exists(tmp_path, set14, capsys, override, message):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", override) == 2
    assert message in one_line_error(capsys)
    assert not run.exists()


def test_a_benchmark_that_cannot_be_scored_fails_before_the_run_folder_exists(tmp_path, set14, capsys):
    """Set5 has no picture large enough to shave 200 px per side: found from the headers at set-up, not by the
    evaluation at the end of the first epoch."""
    run, set5 = tmp_path / "run", shared_file(BENCHMARKS / "Set5")
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14),
                      "--set", f"benchmark_eval={{root: {set5}, scales: [200]}}") == 2
    assert (f"benchmark_eval: {set5 / 'baby.png'} at x200: a 400x400 image is too small to shave 200 px per "
            f"side\n") in one_line_error(capsys)
    assert not run.exists()


def test_a_precision_the_device_refuses_fails_before_an_overwritten_run_is_deleted(tmp_path, set14, capsys):
    run = tmp_path / "run"
    run.mkdir()
    old = {"epoch-last.pth": b"the last run", "log.txt": b"its log\n"}
    for name, data in old.items():
        (run / name).write_bytes(data)
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--overwrite",
                      "--set", "device=cpu", "--set", "amp=fp16") == 2
    assert "precision fp16 is for GPUs" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == old


def test_compiling_on_a_cpu_without_a_cpp_compiler_fails_before_the_run_folder_exists(tmp_path, set14, monkeypatch):
    """torch.compile found no compiler at the first step: InductorError's traceback, once the run folder was made."""
    import torch._inductor.config as inductor  # torch's compiler stack, loaded on first use

    monkeypatch.setattr(inductor.cpp, "cxx", ("no-such-c++",))  # the compilers it searches for
    with pytest.raises(LiifError, match=re.escape("compile: true builds the training step's CPU kernels with "
                                                  "torch.compile, which needs a C++ compiler")):
        train({**smoke_config(set14), "compile": True}, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path, set14, capsys):
    run, other = tmp_path / "run", tmp_path / "other"
    new_run = ["--config", str(SMOKE), *folder_sets(set14), "--set", "epoch_max=1"]
    assert liif_train(*new_run, "--out", str(run), "--set", "epoch_save=1") == 0
    shutil.copytree(run, other)
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for argv in ([*new_run, "--out", str(run)],  # a new run
                 ["--resume", str(other / "epoch-last.pth"), "--out", str(run), "--set", "epoch_max=2"]):  # another's
        assert liif_train(*argv) == 2
        assert (f"{run} already holds a run's checkpoints (resume from {run / 'epoch-last.pth'}, or choose another "
                f"folder); pass --overwrite to replace it") in one_line_error(capsys)
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    # --overwrite replaces the run: none of its files outlive it
    assert liif_train(*new_run, "--out", str(run), "--overwrite", "--set", "epoch_save=null",
                      "--set", "seed=1") == 0
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "epoch-best.pth", "epoch-last.pth", "log.txt"]
    assert (run / "log.txt").read_text().count("starting at epoch 1") == 1
    assert read_checkpoint(run / "epoch-last.pth")["config"]["seed"] == 1


def test_resume_with_a_changed_model_or_optimizer_is_refused_before_anything_is_written(tmp_path, set14, capsys):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1") == 0
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    last = str(run / "epoch-last.pth")
    for extra, message in (
            (["--set", "epoch_max=2", "--set", "model.args.encoder_spec.args.n_feats=16"],
             f"cannot resume: the config's model differs from the checkpoint's (model.args.encoder_spec.args.n_feats "
             f"is 8 in {last}, 16 in the config): set it to the checkpoint's"),
            (["--config", str(SMOKE), *folder_sets(set14), "--set", "model.args.imnet_spec.args.hidden_list=[16]"],
             "cannot resume: the config's model differs from the checkpoint's"),
            # switches that keep every weight's shape went on silently, training another model than the checkpoint's
            (["--set", "epoch_max=2", "--set", "model.args.local_ensemble=false",
              "--set", "model.args.encoder_spec.args.res_scale=0.5"],
             f"(model.args.local_ensemble is True in {last}, False in the config; "
             f"model.args.encoder_spec.args.res_scale is 1 in {last}, 0.5 in the config): set them to the "
             f"checkpoint's"),
            (["--set", "epoch_max=2", "--set", "optimizer.name=sgd", "--set", "optimizer.args={lr: 0.1}"],
             f"cannot resume: {last} was trained with optimizer 'adam', the config says 'sgd'"),
            # the weights expect the values they were trained on: it went on silently with shifted inputs
            (["--set", "epoch_max=2", "--set", "data_norm.inp.sub=[0.4]"],
             f"cannot resume: {last} was trained with data_norm {{'inp': {{'sub': [0.5], 'div': [0.5]}}, 'gt': "
             f"{{'sub': [0.5], 'div': [0.5]}}}}, the config says {{'inp': {{'sub': [0.4], 'div': [0.5]}}, 'gt': "
             f"{{'sub': [0.5], 'div': [0.5]}}}}: set data_norm to the checkpoint's"),
            ([], f"{last} is at epoch 1 and epoch_max is 1: nothing to train (raise epoch_max, e.g. to 2)")):
        assert liif_train("--resume", last, *extra) == 2
        assert message in one_line_error(capsys)
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    assert liif_train("--resume", last, "--out", str(tmp_path / "elsewhere"),
                      "--set", "model.args.encoder_spec.args.n_feats=16", "--set", "epoch_max=2") == 2
    assert "cannot resume" in one_line_error(capsys) and not (tmp_path / "elsewhere").exists()
    # a default written out is the same model
    assert liif_train("--resume", last, "--set", "epoch_max=2", "--set", "model.args.local_ensemble=true",
                      "--set", "model.args.encoder_spec.args.res_scale=1.0") == 0



def smoke_config(folder: Path) -> dict:
    """configs/smoke.yaml as a mapping, training and validating on ``folder``."""
    raw = yaml.safe_load(SMOKE.read_text())
    for section in ("train_dataset", "val_dataset"):
        raw[section]["dataset"]["args"]["root_path"] = str(folder)
    return raw


def test_the_python_api_checks_its_arguments_before_the_run_folder_exists(tmp_path, set14):
    raw = smoke_config(set14)
    run = tmp_path / "run"
    for args, kwargs, message in (
            # a mapping made in Python gets a file's checks: epoch_max 0 trained nothing and reported success
            (({**raw, "epoch_max": 0}, run), {}, "config key 'epoch_max' must be an int >= 1, got 0"),
            (({"epoch_max": 1}, run), {}, "config key 'train_dataset' is required (a mapping)"),
            ((str(SMOKE), run), {}, "train takes a config mapping (as load_config returns), not a str"),
            ((raw, None), {}, "train's run_dir must be a path, not a NoneType"),
            ((raw, run), {"resume": 3}, "train's resume must be a path, not a int"),
            ((raw, run), {"ckpt": "epoch-last.pth"}, "train's ckpt must be a checkpoint's contents"),
            ((raw, run), {"quiet": "no"}, "quiet must be True or False, got 'no'")):
        with pytest.raises(LiifError) as error:
            train(*args, **kwargs)
        assert str(error.value).startswith(message)
    assert not run.exists()
    # the mapping as a file holds it trains as the file does, with the defaults filled in
    summary = train({**raw, "epoch_max": 1}, run, quiet=True)
    assert summary["epoch"] == 1 and read_checkpoint(run / "epoch-last.pth")["config"] == load_config(
        None, ["epoch_max=1"], base=raw)
    # a resume path, given or in the config, continues that run: it started a new one from epoch 1
    last = str(run / "epoch-last.pth")
    for folder, kwargs, config in ((tmp_path / "given", {"resume": last}, raw),
                                   (tmp_path / "in-config", {}, {**raw, "resume": last})):
        assert train({**config, "epoch_max": 2}, folder, quiet=True, **kwargs)["epoch"] == 2
        assert "resuming at epoch 2" in (folder / "log.txt").read_text()
        assert read_checkpoint(folder / "epoch-last.pth")["global_step"] == 14



@pytest.mark.parametrize("fails", [False, True])
def test_the_python_api_gives_back_the_torch_settings_it_found(tmp_path, set14, damaged_set5, monkeypatch, fails):
    # a notebook that trains and then renders got the run's threads and deterministic algorithms
    config = {**smoke_config(set14), "epoch_max": 1, "threads": 1, "deterministic": True}
    if fails:  # a picture cut off: a one-line error at the end of epoch 1
        config["benchmark_eval"] = {"root": str(damaged_set5), "scales": [2]}
    during = []
    step = liif.training.loop.train_step
    monkeypatch.setattr(liif.training.loop, "train_step", lambda *args: during.append(
        (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())) or step(*args))
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        if fails:
            with pytest.raises(LiifError, match="benchmark_eval at epoch 1: "):
                train(config, tmp_path / "run", quiet=True)
        else:
            assert train(config, tmp_path / "run", quiet=True)["epoch"] == 1
        assert set(during) == {(1, True)}
        assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (3, False)
    finally:
        torch.set_num_threads(saved)
        torch.use_deterministic_algorithms(False)


def test_ctrl_c_ends_in_one_line_without_touching_the_settings_the_run_left_alone(tmp_path, set14, capsys,
                                                                                    monkeypatch):
    # torch's setter of deterministic algorithms imports its compiler stack (inductor, triton), which building a
    # model imports too: a Ctrl-C in that import leaves it broken, and restoring the setting the run never changed
    # turned the Ctrl-C into a traceback of the import
    def broken_import(*args, **kwargs):
        raise AttributeError("module 'triton.language' has no attribute 'core'")

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "use_deterministic_algorithms", broken_import)
    monkeypatch.setattr(liif.training.loop, "train_step", interrupt)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(SMOKE), "--out", str(tmp_path / "run"), *folder_sets(set14)])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.endswith("liif train: interrupted; no checkpoint was written yet, nothing to "
                                            "resume\n")


def test_a_run_stopped_while_setting_up_says_nothing_was_written(tmp_path, set14, capsys, monkeypatch):
    """Reading the folders may take minutes: a Ctrl-C then said only "interrupted"."""
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(liif.training.loop, "first_batch", interrupt)
    assert liif_train("--config", str(SMOKE), "--out", str(tmp_path / "run"), *folder_sets(set14)) == 130
    assert capsys.readouterr().err == ("liif train: interrupted; stopped while setting up, before any step: no "
                                       "checkpoint was written; the same command starts the run again\n")
    assert not (tmp_path / "run").exists()


def test_a_run_stopped_in_an_epoch_says_where_it_goes_on_and_the_log_keeps_the_step(tmp_path, set14, capsys,
                                                                                   monkeypatch):
    """The steps of an epoch in progress are lost (checkpoints are per epoch, as the reference's): the stop's line
    said only "interrupted", not which checkpoint and epoch the run goes on from."""
    run, step = tmp_path / "run", liif.training.loop.train_step
    steps, stop_at = [], [10]  # the third of epoch 2's 7

    def interrupted(*args):
        steps.append(None)
        if len(steps) == stop_at[0]:
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(liif.training.loop, "train_step", interrupted)
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14)) == 130
    assert capsys.readouterr().err == (f"liif train: interrupted; resume from {run / 'epoch-last.pth'} to go on at "
                                       f"epoch 2\n")
    assert read_checkpoint(run / "epoch-last.pth")["epoch"] == 1
    assert (run / "log.txt").read_text().splitlines()[-1].endswith(
        f" stopped by Ctrl-C in epoch 2 at step 9; resume from {run / 'epoch-last.pth'} to go on at epoch 2")
    # the Python API says the same in its KeyboardInterrupt; before its first epoch-last.pth, a run goes on from the
    # checkpoint it resumed
    steps.clear()
    stop_at[0] = 3
    config = {**smoke_config(set14), "epoch_max": 3}
    branch = tmp_path / "branch"
    said = f"resume from {run / 'epoch-1.pth'} with run_dir {branch} and config_path {branch / 'config.yaml'} to go on"
    with pytest.raises(KeyboardInterrupt, match=re.escape(f"{said} at epoch 2")):
        train(config, branch, read_checkpoint(run / "epoch-1.pth"), quiet=True, resume=run / "epoch-1.pth")


def test_a_resumed_run_stopped_before_its_first_checkpoint_says_all_it_takes_to_go_on(tmp_path, set14, capsys,
                                                                                      monkeypatch):
    """It goes on from the checkpoint it resumed, whose folder and config are not the run's: the line said only to
    resume it, which went on in the checkpoint's folder (refused there: it holds another run) by the checkpoint's
    config (epoch_max 1: nothing to train)."""
    run, step = tmp_path / "run", liif.training.loop.train_step
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1") == 0
    first = run / "epoch-1.pth"
    for out, options in ((tmp_path / "branch", f"--out {tmp_path / 'branch'} and --config {tmp_path / 'branch'}/"),
                         (run, f"--config {run}/")):
        monkeypatch.setattr(liif.training.loop, "train_step", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        assert liif_train("--resume", str(first), "--out", str(out), "--set", "epoch_max=2") == 130
        said = capsys.readouterr().err
        assert said == f"liif train: interrupted; resume from {first} with {options}config.yaml to go on at epoch 2\n"
        # the command it says goes on
        monkeypatch.setattr(liif.training.loop, "train_step", step)
        words = said.split("resume from ")[1].split(" to go on")[0].split()
        assert liif_train("--resume", *[word for word in words if word not in ("with", "and")]) == 0
        assert read_checkpoint(out / "epoch-last.pth")["epoch"] == 2


def small_pictures(folder: Path, source: Path, names=("baboon", "barbara", "bridge", "comic", "face")) -> Path:
    """A training folder of 100x100 crops of ``source``'s pictures ``names``."""
    folder.mkdir()
    for name in names:
        Image.open(source / f"{name}.png").convert("RGB").crop((0, 0, 100, 100)).save(folder / f"{name}.png")
    return folder


def wait_for_file(path: Path, proc, timeout: float = 120) -> None:
    """Return once ``path`` exists; fail if ``proc`` ends first or it takes ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("signals, code, word", [([signal.SIGTERM], 143, "terminated"),
                                                 ([signal.SIGINT, signal.SIGINT], 130, "interrupted")])
def test_sigterm_stops_training_as_ctrl_c_does_and_the_run_resumes(tmp_path, set14, signals, code, word):
    """SLURM's scancel (SIGTERM) and a terminal's Ctrl-C reach every process of the job, the DataLoader's worker
    too; SIGTERM killed the command silently, and a worker killed by it made torch raise over the command. A second
    Ctrl-C, while the first stops the run, is ignored: it made the DataLoader's workers' shutdown print a
    traceback."""
    data, run = small_pictures(tmp_path / "data", set14), tmp_path / "run"
    proc = start_group([sys.executable, "-m", "liif", "train", "--quiet", "--config", SMOKE, "--out", run,
                        *folder_sets(data), "--set", "train_dataset.dataset.args.repeat=20",
                        "--set", "num_workers=1", "--set", "epoch_max=100"])
    wait_for_file(run / "epoch-last.pth", proc)
    for signum in signals:
        os.killpg(proc.pid, signum)
        time.sleep(0.05)
    result = wait_group(proc, 120)
    # the epochs it finished are kept, as Ctrl-C keeps them, and the run goes on from the last
    epoch = read_checkpoint(run / "epoch-last.pth")["epoch"]
    assert (result.returncode, result.stderr) == (code, f"liif train: {word}; resume from {run / 'epoch-last.pth'} "
                                                        f"to go on at epoch {epoch + 1}\n")
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", f"epoch_max={epoch + 1}",
                      "--set", "num_workers=0") == 0
    assert read_checkpoint(run / "epoch-last.pth")["epoch"] == epoch + 1


def waiting_worker(started) -> None:
    leave_stopping_to_the_main_process(0)
    started.set()
    time.sleep(60)


def test_a_worker_ignores_ctrl_c_and_ends_when_terminated():
    """Its Ctrl-C is the main process's to act on; SIGTERM, ignored too, left multiprocessing waiting for ever for the
    worker it terminates at exit (pytest hung after the tests of `liif train` with workers)."""
    context = multiprocessing.get_context("fork")
    started = context.Event()
    worker = context.Process(target=waiting_worker, args=(started,), daemon=True)
    worker.start()
    try:
        assert started.wait(30)
        os.kill(worker.pid, signal.SIGINT)
        worker.join(0.5)
        assert worker.is_alive()
        worker.terminate()
        worker.join(30)
        assert worker.exitcode == 0
    finally:
        worker.kill()


@pytest.mark.parametrize("error, reported", [(EOFError(), False), (ConnectionResetError(104, "reset"), False),
                                             (ValueError("a worker's own"), True)])
def test_a_worker_does_not_report_a_transfer_the_stopping_main_process_cut_short(error, reported):
    """multiprocessing's thread that passes a worker's tensors reports its failures by sys.excepthook: a main
    process stopped by SIGTERM mid-transfer left a worker's traceback below the command's one line."""
    seen = []
    unless_cut_short(lambda *info: seen.append(info), type(error), error, None)
    assert bool(seen) == reported


@pytest.mark.parametrize("workers", [0, 1])
def test_a_sample_or_batch_that_cannot_be_made_is_one_line_even_from_a_worker(tmp_path, set14, capsys, workers):
    train_folder = small_pictures(tmp_path / "train", set14, ("baboon", "barbara", "bridge"))
    # a JPEG cut short passes the header check of the data set-up: it fails only when a sample decodes it
    bad = train_folder / "zebra.jpg"
    Image.open(set14 / "zebra.png").convert("RGB").save(bad)
    bad.write_bytes(bad.read_bytes()[:3000])
    cut = ["--set", f"train_dataset.dataset.args.root_path={train_folder}", "--set",
           "train_dataset.dataset.args.cache=none", "--set", "val_dataset=null"]
    # whole validation images differ in size: they cannot be stacked into batches of 4, found from the first batch
    # before the run folder exists, not once the first epoch has trained
    whole = ["--set", "val_dataset.wrapper.args={scale_max: 4}"]
    for extra, message in ((cut, f"train_dataset: {bad}: cannot read the image, it may be truncated"),
                           (whole, "val_dataset: samples of different sizes cannot share a batch (inp (3, ")):
        run = tmp_path / f"run-{len(extra)}"
        assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1",
                          "--set", f"num_workers={workers}", *extra) == 2
        assert message in one_line_error(capsys)
    assert not (tmp_path / f"run-{len(whole)}").exists()


def damaged(ckpt: dict, part: str) -> dict:
    """``ckpt`` with one of its training entries broken as an edit or other code might leave it."""
    ckpt = {**ckpt, "optimizer": {**ckpt["optimizer"], "sd": {**ckpt["optimizer"]["sd"]}}}
    if part == "epoch":
        del ckpt["epoch"]
    elif part == "global_step":
        ckpt["global_step"] = "14"
    elif part == "best_val":
        ckpt["best_val"] = "high"
    elif part == "lr":
        ckpt["optimizer"]["sd"]["param_groups"] = [{"params": group["params"]}
                                                   for group in ckpt["optimizer"]["sd"]["param_groups"]]
    elif part == "scheduler":
        ckpt["scheduler"] = {"milestones": {1: 1}}
    elif part == "rng":
        ckpt["rng"] = {**ckpt["rng"], "python": 3}
    elif part == "moments":
        ckpt["optimizer"]["sd"]["state"] = {k: {**v, "exp_avg": v["exp_avg"][:1]}
                                            for k, v in ckpt["optimizer"]["sd"]["state"].items()}
    return ckpt


@pytest.mark.parametrize("part, message", [
    ("epoch", "epoch must be an int >= 1, got None"),
    ("global_step", "global_step must be an int >= 0, got '14'"),
    ("best_val", "best_val must be a number or null, got 'high'"),
    ("lr", "the optimizer's parameter groups are not a list of groups with params and an lr"),
    ("scheduler", "the scheduler state holds no step count (last_epoch)"),
    ("rng", "TypeError: cannot unpack non-iterable int object"),
    ("moments", "ValueError: optimizer state exp_avg of shape (1, 3, 3, 3) for a weight of shape (8, 3, 3, 3)"),
])
def test_a_damaged_training_state_is_refused_in_one_line_before_anything_is_written(tmp_path, set14, capsys,
                                                                                    part, message):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1") == 0
    broken = tmp_path / "broken.pth"
    torch.save(damaged(read_checkpoint(run / "epoch-last.pth"), part), broken)
    assert liif_train("--resume", str(broken), "--out", str(tmp_path / "resumed"), "--set", "epoch_max=2") == 2
    assert f"cannot resume: {broken} holds a damaged training state ({message}" in one_line_error(capsys)
    assert not (tmp_path / "resumed").exists()


def test_fine_tuning_from_the_released_weights_keeps_their_quality(tmp_path, set14):
    baby = shared_file(BENCHMARKS / "Set5" / "baby.png")
    crops = tmp_path / "crops"
    crops.mkdir()
    Image.open(baby).crop((200, 150, 392, 342)).save(crops / "baby.png")  # a 192 px crop keeps the test quick
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "init_from=edsr-baseline-liif",
                      "--set", "epoch_max=1", "--set", "optimizer.args.lr=1e-6", "--set", "train_dataset.batch_size=2",
                      "--set", "train_dataset.dataset.args.repeat=1", "--set", "train_dataset.dataset.args.first_k=4") == 0
    tuned = read_checkpoint(run / "epoch-last.pth")
    released = read_checkpoint(liif.pretrained.pretrained_path("edsr-baseline-liif"))
    assert tuned["model"]["args"] == released["model"]["args"] and tuned["global_step"] == 2
    assert not torch.equal(tuned["model"]["sd"]["imnet.layers.0.weight"], released["model"]["sd"]["imnet.layers.0.weight"])
    scores = [evaluate(m, crops, scales=[4], progress=False).means()["crops"]["x4"]
              for m in (load_model("edsr-baseline-liif"), load_model(run / "epoch-last.pth"))]
    assert scores[0]["psnr"] > scores[0]["bicubic_psnr"] + 0.5
    assert abs(scores[1]["psnr"] - scores[0]["psnr"]) < 0.05



def test_fine_tuning_refuses_another_data_norm_and_resumes_without_its_init_weights(tmp_path, set14, capsys):
    plain = "data_norm={inp: {sub: [0], div: [1]}, gt: {sub: [0.0, 0, 0], div: [1]}}"
    first, tuned = tmp_path / "first", tmp_path / "tuned"
    assert liif_train("--config", str(SMOKE), "--out", str(first), *folder_sets(set14), "--set", "epoch_max=1",
                      "--set", plain) == 0
    fine_tune = ["--config", str(SMOKE), "--out", str(tuned), *folder_sets(set14), "--set", "epoch_max=1",
                 "--set", f"init_from={first / 'epoch-last.pth'}", "--set", "model=null"]
    # the config's default 0.5 / 0.5 would feed the weights values they never saw
    assert liif_train(*fine_tune) == 2
    assert (f"init_from {first / 'epoch-last.pth'} was trained with data_norm {{'inp': {{'sub': [0.0], 'div': [1.0]}}, "
            f"'gt': {{'sub': [0.0, 0.0, 0.0], 'div': [1.0]}}}}, the config says {{'inp': {{'sub': [0.5], "
            f"'div': [0.5]}}, 'gt': {{'sub': [0.5], 'div': [0.5]}}}}: set data_norm to the model's"
            in one_line_error(capsys))
    assert not tuned.exists()
    # the same values written per channel, or once for all three, are the same data_norm
    same = "data_norm={inp: {sub: [0, 0, 0], div: [1]}, gt: {sub: [0], div: [1, 1, 1]}}"
    assert liif_train(*fine_tune, "--set", same) == 0
    assert load_model(tuned / "epoch-last.pth").data_norm.per_channel() == ((0.0,) * 3, (1.0,) * 3, (0.0,) * 3,
                                                                           (1.0,) * 3)
    # resuming the fine-tuning run needs its own checkpoint only, not the weights it started from
    shutil.rmtree(first)
    assert liif_train("--resume", str(tuned / "epoch-last.pth"), "--set", "epoch_max=2") == 0
    assert read_checkpoint(tuned / "epoch-last.pth")["epoch"] == 2


def test_iteration_schedule_and_tensorboard_scalars_and_images(tmp_path, set14):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1",
                      "--set", "multi_step_lr.unit=iter", "--set", "multi_step_lr.milestones=[3, 5]",
                      "--set", "tensorboard=true", "--set", "log_every=1") == 0
    ckpt = read_checkpoint(run / "epoch-last.pth")
    assert ckpt["scheduler"]["last_epoch"] == 7  # stepped per iteration, not per epoch
    assert ckpt["optimizer"]["sd"]["param_groups"][0]["lr"] == pytest.approx(1e-3 / 4)
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    # the rate each step trained at: halved after the 3rd and the 5th step
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([1e-3] * 3 + [1e-3 / 2] * 2 + [1e-3 / 4] * 2)
    assert len(events.Scalars("train/loss")) == 7 and len(events.Scalars("val/psnr")) == 1
    assert events.Images("val/sample")[0].width > 24


def test_a_run_asking_for_tensorboard_without_it_says_so(tmp_path, set14, monkeypatch, capsys):
    """tensorboard: true is the default, and without the package the run wrote no events and said nothing."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an import finds where it is not installed
    train({**smoke_config(set14), "epoch_max": 1, "tensorboard": True}, tmp_path / "run")
    said = ("no TensorBoard events: tensorboard is not installed (pip install 'liif[tensorboard]', or set "
            "tensorboard: false)")
    assert said in capsys.readouterr().out and said in (tmp_path / "run" / "log.txt").read_text()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_a_run_that_fails_closes_its_tensorboard_writer(tmp_path, set14, damaged_set5):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    # a picture cut off: a one-line error once epoch 1 has trained
    config = {**smoke_config(set14), "epoch_max": 1, "tensorboard": True, "log_every": 1,
              "benchmark_eval": {"root": str(damaged_set5), "scales": [2]}}
    before = set(threading.enumerate())
    with pytest.raises(LiifError, match="benchmark_eval at epoch 1: "):
        train(config, tmp_path / "run", quiet=True)
    # the writer's thread, left running by each failed train() in a notebook
    assert [t for t in threading.enumerate() if t not in before and t.name != "tqdm_monitor"] == []
    events = accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("train/loss")) == 7


def test_resume_takes_the_learning_rate_of_the_new_config_with_the_decay_reached(tmp_path, set14):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1") == 0
    assert read_checkpoint(run / "epoch-last.pth")["optimizer"]["sd"]["param_groups"][0]["lr"] == pytest.approx(5e-4)
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=2",
                      "--set", "optimizer.args.lr=4e-3") == 0
    group = read_checkpoint(run / "epoch-last.pth")["optimizer"]["sd"]["param_groups"][0]
    assert group["lr"] == pytest.approx(2e-3) and group["initial_lr"] == pytest.approx(4e-3)
    # optimizer.args may be null (the schema allows it): the checkpoint's learning rate then goes on
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=3",
                      "--set", "optimizer.args=null") == 0
    group = read_checkpoint(run / "epoch-last.pth")["optimizer"]["sd"]["param_groups"][0]
    assert group["lr"] == pytest.approx(2e-3) and group["initial_lr"] == pytest.approx(4e-3)


def test_resume_takes_the_schedule_of_the_new_config(tmp_path, set14):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1",
                      "--set", "multi_step_lr.milestones=[5]") == 0
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=2",
                      "--set", "multi_step_lr.milestones=[2]", "--set", "multi_step_lr.gamma=0.1") == 0
    ckpt = read_checkpoint(run / "epoch-last.pth")
    assert ckpt["optimizer"]["sd"]["param_groups"][0]["lr"] == pytest.approx(1e-4)



def test_a_schedule_added_or_changed_to_iterations_on_resume_counts_from_the_start_of_the_run(tmp_path, set14):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1",
                      "--set", "multi_step_lr=null") == 0
    # milestone epoch 2: epoch 3 trains at half the rate, where the schedule counted from the resume decayed later
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=3",
                      "--set", "multi_step_lr={milestones: [2], gamma: 0.5}") == 0
    assert re.search(r"epoch 3/3: loss [0-9.]+, lr 5\.00e-04,", (run / "log.txt").read_text())
    assert read_checkpoint(run / "epoch-last.pth")["scheduler"]["last_epoch"] == 3
    # now per iteration: step 21 is done, so milestone 25 comes 4 steps into epoch 4, not 25 steps after the resume
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=4",
                      "--set", "multi_step_lr={milestones: [25], gamma: 0.5, unit: iter}") == 0
    ckpt = read_checkpoint(run / "epoch-last.pth")
    assert ckpt["scheduler"]["last_epoch"] == ckpt["global_step"] == 28
    assert ckpt["optimizer"]["sd"]["param_groups"][0]["lr"] == pytest.approx(2.5e-4)



@pytest.mark.parametrize("name", ["log.txt", "config.yaml", "tensorboard"])
def test_a_run_folder_entry_that_cannot_be_written_is_one_line(tmp_path, set14, capsys, name):
    run = tmp_path / "run"
    run.mkdir()
    if name == "tensorboard":
        pytest.importorskip("tensorboard")  # an optional extra: without it no folder is written
        (run / name).write_text("a file where its folder goes")
    else:
        (run / name).mkdir()
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1",
                      "--set", "tensorboard=true") == 2
    reason = os.strerror(errno.EEXIST if name == "tensorboard" else errno.EISDIR)
    assert f"cannot write {run / name}: {reason}" in one_line_error(capsys)



def test_skipped_images_are_one_line_warnings_in_the_commands_style(tmp_path, set14, capsys):
    # Python's own format gave each two lines: the library's file and line, then its source code
    data = tmp_path / "data"
    data.mkdir()
    for name in ("baboon", "barbara", "bridge", "comic", "face"):
        shutil.copy(set14 / f"{name}.png", data)
    (data / "fake.png").write_text("not a picture")
    Image.new("RGB", (40, 40)).save(data / "small.png")
    assert liif_train("--config", str(SMOKE), "--out", str(tmp_path / "run"), *folder_sets(data),
                      "--set", "epoch_max=1") == 0
    assert capsys.readouterr().err.splitlines() == [
        f"liif train: warning: skipping unreadable image {data / 'fake.png'}: not an image, or not one of the "
        "formats read (PNG, JPEG, WebP, BMP, TIFF)",
        f"liif train: warning: skipping 1 image(s) smaller than the largest HR crop (96 px), e.g. {data / 'small.png'}"]


def test_a_bin_cache_that_cannot_be_written_stops_the_run_before_it_starts(tmp_path, set14, capsys):
    # as on a read-only dataset mount (test_train_data); a file where the cache folder goes stops root too
    data = tmp_path / "data"
    shutil.copytree(set14, data / "Set14")
    (data / "_bin_Set14").write_text("")
    run, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--config", str(SMOKE), *folder_sets(data / "Set14"), *dataset_sets("cache", "bin"),
              "--set", "epoch_max=1", "--out", str(run)]
    assert liif_train(*common) == 2
    assert one_line_error(capsys) == (
        f"liif train: error: train_dataset: {data / 'Set14'}: cannot write its bin cache in {data / '_bin_Set14'} "
        "(File exists): use cache: in_memory or none, or set cache_dir to a folder that can be written\n")
    assert not run.exists()
    assert liif_train(*common, *dataset_sets("cache_dir", cache)) == 0
    [folder] = cache.iterdir()
    assert folder.name.startswith("_bin_Set14-") and len([*folder.glob("*.png.npy")]) == 14


def test_a_benchmark_that_fails_at_the_end_of_an_epoch_keeps_the_epoch(tmp_path, set14, damaged_set5, capsys):
    run = tmp_path / "run"
    # a picture cut off in its pixel data, which evaluation finds only when it reads them
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=2",
                      "--set", f"benchmark_eval={{root: {damaged_set5}, scales: [2]}}") == 2
    error = one_line_error(capsys)
    why = "cannot read the image, it may be truncated"
    assert f"benchmark_eval at epoch 1: {damaged_set5 / 'baby.png'}: {why}" in error
    assert (f"; the epoch's checkpoints are written: correct benchmark_eval and resume from "
            f"{run / 'epoch-last.pth'}") in error
    assert read_checkpoint(run / "epoch-last.pth")["epoch"] == 1 and "epoch 1/2: loss" in (run / "log.txt").read_text()
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", "benchmark_eval=null") == 0
    assert read_checkpoint(run / "epoch-last.pth")["epoch"] == 2


def test_a_validation_that_fails_at_the_end_of_an_epoch_keeps_the_epoch(tmp_path, set14, capsys):
    run, val = tmp_path / "run", tmp_path / "val"
    val.mkdir()
    for name in ("baboon", "barbara", "bridge", "comic"):  # the first batch, which the set-up makes
        shutil.copy(set14 / f"{name}.png", val)
    # a JPEG cut short passes the header check of the data set-up: it fails only when validation decodes it
    bad = val / "zebra.jpg"
    Image.open(set14 / "zebra.png").convert("RGB").save(bad)
    bad.write_bytes(bad.read_bytes()[:3000])
    val_sets = ["--set", f"val_dataset.dataset.args.root_path={val}", "--set", "val_dataset.dataset.args.cache=none",
                "--set", "val_dataset.dataset.args.first_k=null"]
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), *val_sets,
                      "--set", "epoch_max=2") == 2
    error = one_line_error(capsys)
    assert f"validation at epoch 1: val_dataset: {bad}: cannot read the image, it may be truncated" in error
    assert f"the epoch's checkpoints are written: correct val_dataset and resume from {run / 'epoch-last.pth'}" in error
    assert read_checkpoint(run / "epoch-last.pth")["epoch"] == 1 and (run / "epoch-1.pth").exists()
    assert not (run / "epoch-best.pth").exists()  # no score to rank it by
    bad.unlink()
    assert liif_train("--resume", str(run / "epoch-last.pth")) == 0
    assert read_checkpoint(run / "epoch-last.pth")["epoch"] == 2


class MidGrey(torch.nn.Module):
    """A model whose every colour is 0.5 (0 in the 0.5/0.5 normalised space)."""

    def forward(self, inp, coord, cell):
        return torch.zeros(*coord.shape[:-1], 3)


def test_validation_psnr_is_the_sample_weighted_mean_and_infinite_for_a_perfect_match():
    def batch(n: int, grey: float) -> dict[str, torch.Tensor]:
        return {"inp": torch.zeros(n, 3, 4, 4), "coord": torch.zeros(n, 16, 2), "cell": torch.zeros(n, 16, 2),
                "gt": torch.full((n, 16, 3), grey)}

    model = MidGrey()
    # mse 0.25**2 (12.04 dB) on 3 samples, 0.5**2 (6.02 dB) on 1
    expected = (3 * 10 * math.log10(16) + 10 * math.log10(4)) / 4
    assert validate(model, [batch(3, 0.25), batch(1, 1.0)], DataNorm(), torch.device("cpu")) == pytest.approx(expected)
    assert validate(model, [batch(2, 0.5)], DataNorm(), torch.device("cpu")) == math.inf


def test_validation_draws_the_same_patches_at_every_epoch(tmp_path, set14):
    # the weights do not move at lr 0: equal scores mean equal patches, so epochs compare on one set
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14),
                      "--set", "optimizer.args.lr=0", "--set", "epoch_max=3") == 0
    scores = re.findall(r"val PSNR (\S+) ", (run / "log.txt").read_text())
    assert len(scores) == 3 and len(set(scores)) == 1


def test_validation_shows_a_progress_bar_unless_quiet(capsys):
    # a DIV2K validation (100 batches of 16) takes minutes on a CPU: the reference shows a `val` bar, cleared after
    batches = [{"inp": torch.zeros(1, 3, 4, 4), "coord": torch.zeros(1, 16, 2), "cell": torch.zeros(1, 16, 2),
                "gt": torch.full((1, 16, 3), 0.25)}] * 3
    validate(MidGrey(), batches, DataNorm(), torch.device("cpu"), progress=True)
    err = capsys.readouterr().err
    assert err.startswith("\rval:") and "/3 [" in err and err.split("\r")[-2].strip() == ""  # then cleared
    validate(MidGrey(), batches, DataNorm(), torch.device("cpu"))
    assert capsys.readouterr().err == ""


def test_benchmark_eval_shows_a_progress_bar_unless_quiet(tmp_path, capsys):
    # benchmark_eval on Set14 takes minutes between two epochs on a CPU, and showed nothing
    folder = tmp_path / "Tiny"
    folder.mkdir()
    Image.fromarray(comic_crop()[:24, :24]).save(folder / "comic.png")
    model = liif.make(smoke_config(folder)["model"])
    spec = {"root": str(folder), "scales": [2, 3]}
    scores = benchmark_psnr(model, spec, torch.device("cpu"), progress=True)
    err = capsys.readouterr().err
    assert set(scores) == {"Tiny/x2", "Tiny/x3"} and "\rTiny x2: " in err and "\rTiny x3: " in err and "/2 [" in err
    assert err.split("\r")[-1].strip() == ""  # then cleared, as the epoch's bar is
    assert benchmark_psnr(model, spec, torch.device("cpu")) == scores and capsys.readouterr().err == ""


class Offset(torch.nn.Module):
    """A model whose every colour is its own learnable (3,) offset, in the normalised space."""

    def __init__(self, offset: list[float]) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.tensor(offset))

    def forward(self, inp, coord, cell):
        return self.offset.expand(*coord.shape[:-1], 3)


def test_a_training_step_descends_the_l1_loss_in_the_normalised_space():
    """Spec 5: L1 (mean) between the prediction and the GT mapped to the model's [-1, 1] space, worked out by hand
    here on the Set14 comic crop's pixels: the loss is mean |offset - (gt - 0.5) / 0.5|, and its gradient per
    channel the mean sign of the differences, over all 3Q values."""
    pixels = comic_crop().reshape(-1, 3).astype(np.float64) / 255  # (Q, 3)
    offset = [0.1, -0.2, 0.3]
    target = (pixels - 0.5) / 0.5
    expected_loss = float(abs(np.array(offset) - target).mean())
    expected_grad = [float(((offset[c] - target[:, c]) > 0).sum() - ((offset[c] - target[:, c]) < 0).sum())
                     / target.size for c in range(3)]
    model = Offset(offset)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    batch = {"inp": torch.zeros(1, 3, 20, 28), "coord": make_coord((20, 28))[None], "cell": torch.zeros(1, 560, 2),
             "gt": torch.from_numpy(pixels).float()[None]}
    cpu = torch.device("cpu")
    loss = train_step(model, batch, DataNorm(), optimizer, torch.amp.GradScaler("cpu", enabled=False), "none",
                      Processes(0, 1, cpu))
    assert 0.1 < expected_loss and loss == pytest.approx(expected_loss, abs=1e-6)
    assert model.offset.detach().tolist() == pytest.approx([o - g for o, g in zip(offset, expected_grad)], abs=1e-6)


@pytest.mark.parametrize("schedule", [{"milestones": [1, 3]}, {"milestones": [1, 3], "gamma": None}])
def test_a_schedule_that_leaves_gamma_out_decays_tenfold_at_each_milestone(schedule):
    """The config schema's word: multi_step_lr without gamma (or with gamma null) decays by 0.1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, schedule)
    rates = []
    for _ in range(4):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([1.0, 0.1, 0.1, 0.01])
