"""Training checkpoints: the reference format (model spec with ``sd``, optimizer, epoch) plus what an
exact resume needs (scheduler, RNG states, global step, best validation score, config)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from liif.bounds import COUNT, Number
from liif.checkpoint import check_state_fits, data_norm_of, inner_model, save_checkpoint
from liif.errors import LiifError, one_line
from liif.normalization import DataNorm
from liif.registry import MODELS

STEPS = Number(int, low=0)  # a global step or a schedule's position


def rng_states() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain Python values (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "torch": torch.get_rng_state(),
              "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` captured."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: dict[str, Any],
                     scheduler: Any, epoch: int, global_step: int, best_val: float | None,
                     scaler: torch.amp.GradScaler | None = None) -> None:
    """Write ``epoch-*.pth`` by ``save_checkpoint`` (the reference entries, which ``load_model`` and the reference's
    test.py read as is, then what an exact resume needs: with fp16 ``amp``, the loss scale too), atomically: a full
    disk (or any failed write) leaves the previous file at ``path`` intact."""
    loss_scale = {"scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}
    try:
        save_checkpoint(model, path, optimizer={**config["optimizer"], "sd": optimizer.state_dict()}, epoch=epoch,
                        scheduler=None if scheduler is None else scheduler.state_dict(), global_step=global_step,
                        best_val=best_val, rng=rng_states(), config=config, **loss_scale)
    except LiifError as exc:
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise LiifError(f"{exc}{kept}") from None


def check_data_norm(trained: DataNorm, config: dict[str, Any], weights: str, whose: str) -> None:
    """Refuse a config whose ``data_norm`` differs from the one ``weights`` were trained with: another would shift
    every input and target the weights expect (the same values per channel or once for all three are alike)."""
    if trained.per_channel() != DataNorm.from_config(config["data_norm"]).per_channel():
        raise LiifError(f"{weights} was trained with data_norm {trained.as_config()}, the config says "
                        f"{config['data_norm']}: set data_norm to {whose}")


def check_resumable(ckpt: dict[str, Any], source: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                    config: dict[str, Any]) -> None:
    """A one-line LiifError naming what differs unless ``ckpt`` can resume the training of ``model`` by
    ``optimizer`` as ``config`` says (called before anything is written)."""
    if "global_step" not in ckpt or not isinstance(ckpt.get("optimizer"), dict):
        raise LiifError(f"{source} holds no training state (optimizer, step): it can start a fine-tuning run "
                        f"through 'init_from', not a resume")
    damage = state_damage(ckpt)
    if damage:
        raise damaged(source, damage)
    saved_model = {key: ckpt["model"][key] for key in ("name", "args")}
    differing = differences(MODELS.complete(saved_model), MODELS.complete(config["model"]), "model")
    if differing:  # switches that keep every weight's shape (local_ensemble) would train another model silently
        shown = "; ".join(f"{key} is {saved!r} in {source}, {given!r} in the config" for key, saved, given in differing)
        raise LiifError(f"cannot resume: the config's model differs from the checkpoint's ({shown}): set "
                        f"{'it' if len(differing) == 1 else 'them'} to the checkpoint's")
    try:
        check_state_fits(model, ckpt["model"]["sd"], source)
    except LiifError as exc:
        raise LiifError(f"cannot resume: the config's model differs from the checkpoint's ({exc})") from None
    saved, name = ckpt["optimizer"], config["optimizer"]["name"]
    if saved.get("name") != name:
        raise LiifError(f"cannot resume: {source} was trained with optimizer {saved.get('name')!r}, "
                        f"the config says {name!r}")
    saved_groups = [len(group["params"]) for group in saved["sd"]["param_groups"]]
    groups = [len(group["params"]) for group in optimizer.param_groups]
    if saved_groups != groups:
        raise LiifError(f"cannot resume: the optimizer state of {source} has parameter groups of "
                        f"{saved_groups} tensors, the config's optimizer {groups}")
    check_data_norm(data_norm_of(ckpt, source), config, f"cannot resume: {source}", "the checkpoint's")
    if ckpt["epoch"] >= config["epoch_max"]:
        raise LiifError(f"{source} is at epoch {ckpt['epoch']} and epoch_max is {config['epoch_max']}: nothing "
                        f"to train (raise epoch_max, e.g. to {ckpt['epoch'] + 1})")


class Unset:
    """A key one of two mappings compared by ``differences`` lacks."""

    def __repr__(self) -> str:
        return "unset"


def differences(saved: Any, given: Any, key: str) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, given value) wherever the nested mappings ``saved`` and ``given`` differ."""
    if not (isinstance(saved, dict) and isinstance(given, dict)):
        return [] if saved == given else [(key, saved, given)]
    return [found for name in {**saved, **given}
            for found in differences(saved.get(name, Unset()), given.get(name, Unset()), f"{key}.{name}")]


def damaged(source: str, damage: str) -> LiifError:
    """The one-line refusal of a resume from ``source`` whose training state is damaged as ``damage`` says."""
    return LiifError(f"cannot resume: {source} holds a damaged training state ({damage})")


def state_damage(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with the entries besides the model that a resume reads, in a few words; None if nothing.
    Training writes them; a checkpoint edited or written by other code may not hold them as it does."""
    best, schedule, saved = ckpt.get("best_val"), ckpt.get("scheduler"), ckpt["optimizer"].get("sd")
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not COUNT.fits(ckpt.get("epoch")):
        return f"epoch must be {COUNT.describe()}, got {ckpt.get('epoch')!r}"
    if not STEPS.fits(ckpt["global_step"]):
        return f"global_step must be {STEPS.describe()}, got {ckpt['global_step']!r}"
    # a perfect validation match scores an infinite PSNR
    if best is not None and not (Number().fits(best) or best == math.inf):
        return f"best_val must be a number or null, got {best!r}"
    if not isinstance(groups, list) or not all(isinstance(g, dict) and Number(low=0).fits(g.get("lr"))
                                               and isinstance(g.get("params"), list) for g in groups):
        return "the optimizer's parameter groups are not a list of groups with params and an lr"
    if schedule is not None and not (isinstance(schedule, dict) and STEPS.fits(schedule.get("last_epoch"))):
        return "the scheduler state holds no step count (last_epoch)"
    if not isinstance(ckpt.get("rng"), dict):
        return "no random number generator states (rng)"
    return None


def restore(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, source: str, scaler: torch.amp.GradScaler | None = None) -> tuple[int, int, float | None]:
    """Load a training checkpoint (checked by ``check_resumable``) into the live objects; (next epoch, global
    step, best validation score). An fp16 ``scaler`` takes the loss scale the run had reached, where it has one."""
    inner_model(model).load_state_dict(ckpt["model"]["sd"])
    try:
        optimizer.load_state_dict(ckpt["optimizer"]["sd"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and scaler.is_enabled() and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_states(ckpt["rng"])
        # torch loads the optimizer's per-weight state as it comes: a wrong shape would fail at the first step
        for group in optimizer.param_groups:
            for param in group["params"]:
                for name, value in optimizer.state.get(param, {}).items():
                    if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                        raise ValueError(f"optimizer state {name} of shape {tuple(value.shape)} for a weight of "
                                         f"shape {tuple(param.shape)}")
    # torch and numpy check these states by unpacking and indexing them: any error means a damaged entry
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
        raise damaged(source, f"{type(exc).__name__}: {one_line(exc)}") from None
    return ckpt["epoch"] + 1, ckpt["global_step"], ckpt.get("best_val")
