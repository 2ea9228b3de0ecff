"""`liif train` end to end on a tiny model: reference-format checkpoints, exact resume, bad input, fine-tuning."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import liif.checkpoint
from conftest import BENCHMARKS, ROOT, shared_file
from liif.checkpoint import load_model, read_checkpoint
from liif.cli import main
from liif.evaluation import evaluate

SMOKE = ROOT / "configs" / "smoke.yaml"


def folder_sets(folder: Path) -> list[str]:
    return ["--set", f"train_dataset.dataset.args.root_path={folder}",
            "--set", f"val_dataset.dataset.args.root_path={folder}", "--set", "threads=1"]


@pytest.fixture(scope="module")
def set14() -> Path:
    return shared_file(BENCHMARKS / "Set14")


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
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 14
    assert ckpt["optimizer"]["name"] == "adam" and set(ckpt["optimizer"]["sd"]) == {"state", "param_groups"}
    assert ckpt["model"]["name"] == "liif" and not any(k.startswith("module.") for k in ckpt["model"]["sd"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config == ckpt["config"] and config["train_dataset"]["dataset"]["args"]["root_path"] == str(set14)
    model = load_model(run / "epoch-last.pth")
    assert model.spec == {"name": ckpt["model"]["name"], "args": ckpt["model"]["args"]}
    log = (run / "log.txt").read_text()
    assert "epoch 1/2: loss" in log and "epoch 2/2: loss" in log and "val PSNR" in log
    # the weights moved, and the lr was halved after epoch 1 (milestones [1])
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
    code = liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=2",
                      "--set", "data_norm.gt.div=[1.0e-45]")  # float32 targets overflow to inf
    err = capsys.readouterr().err
    assert code == 2 and "the loss is inf at epoch 2, step 8: training stopped" in err
    assert f"the last good checkpoint is {run / 'epoch-last.pth'} (epoch 1)" in err and "Traceback" not in err
    assert (run / "epoch-last.pth").read_bytes() == before


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    # what torch.save's zip writer raises when a write fails
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed"), "PytorchStreamWriter failed writing file data/0: file write failed"),
])
def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, set14, capsys, monkeypatch, error, reason):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1") == 0
    before = (run / "epoch-last.pth").read_bytes()

    def full_disk(obj, f):
        f.write(b"half a checkpoint")
        raise error

    monkeypatch.setattr(liif.checkpoint.torch, "save", full_disk)
    code = liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=2")
    err = capsys.readouterr().err
    assert code == 2 and f"could not write checkpoint {run / 'epoch-last.pth'}: " in err
    assert f"{reason}; the previous epoch-last.pth is intact" in err and "Traceback" not in err
    assert (run / "epoch-last.pth").read_bytes() == before
    assert not list(run.glob(".*.tmp"))


def test_bad_config_keys_and_values_are_named(tmp_path, set14, capsys):
    base = ["--config", str(SMOKE), "--out", str(tmp_path / "run"), *folder_sets(set14)]
    for extra, message in ((["--set", "epoch_maxx=3"], "--set epoch_maxx: unknown config key"),
                           (["--set", "epoch_max=three"], "config key 'epoch_max' must be int, got 'three'"),
                           (["--set", "optimizer.args.lr=fast"], "--set optimizer.args.lr: expected float"),
                           (["--set", "model.args.cell_decod=false"], "cell_decod"),
                           (["--set", "train_dataset.dataset.args.root_path=/nonexistent"],
                            "/nonexistent: no such image folder")):
        assert liif_train(*base, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("liif train: error: ") and message in err and "Traceback" not in err, err
    assert liif_train("--config", str(tmp_path / "missing.yaml")) == 2
    assert "no such config file" in capsys.readouterr().err


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
    assert [e.value for e in events.Scalars("train/lr")][2:4] == pytest.approx([1e-3 / 2, 1e-3 / 2])
    assert len(events.Scalars("train/loss")) == 7 and len(events.Scalars("val/psnr")) == 1
    assert events.Images("val/sample")[0].width > 24


def test_resume_takes_the_schedule_of_the_new_config(tmp_path, set14):
    run = tmp_path / "run"
    assert liif_train("--config", str(SMOKE), "--out", str(run), *folder_sets(set14), "--set", "epoch_max=1",
                      "--set", "multi_step_lr.milestones=[5]") == 0
    assert liif_train("--resume", str(run / "epoch-last.pth"), "--set", "epoch_max=2",
                      "--set", "multi_step_lr.milestones=[2]", "--set", "multi_step_lr.gamma=0.1") == 0
    ckpt = read_checkpoint(run / "epoch-last.pth")
    assert ckpt["optimizer"]["sd"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
