"""Training checkpoints: the reference format (model spec with ``sd``, optimizer, epoch) plus what an
exact resume needs (scheduler, RNG states, global step, best validation score, config)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from liif.checkpoint import check_state_fits, save_checkpoint
from liif.errors import LiifError, os_reason


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
                     scheduler: Any, epoch: int, global_step: int, best_val: float | None) -> None:
    """Write ``epoch-*.pth`` by ``save_checkpoint`` (the reference entries, which ``load_model`` and the reference's
    test.py read as is, then what an exact resume needs), atomically: a full disk (or any failed write) leaves the
    previous file at ``path`` intact."""
    try:
        save_checkpoint(model, path, optimizer={**config["optimizer"], "sd": optimizer.state_dict()}, epoch=epoch,
                        scheduler=None if scheduler is None else scheduler.state_dict(), global_step=global_step,
                        best_val=best_val, rng=rng_states(), config=config)
    except (OSError, RuntimeError) as exc:
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise LiifError(f"could not write checkpoint {path}: {os_reason(exc)}{kept}") from None


def check_resumable(ckpt: dict[str, Any], source: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                    config: dict[str, Any]) -> None:
    """A one-line LiifError naming what differs unless ``ckpt`` can resume the training of ``model`` by
    ``optimizer`` as ``config`` says (called before anything is written)."""
    if "global_step" not in ckpt or not isinstance(ckpt.get("optimizer"), dict):
        raise LiifError(f"{source} holds no training state (optimizer, step): it can start a fine-tuning run "
                        f"through 'init_from', not a resume")
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
    if ckpt["epoch"] >= config["epoch_max"]:
        raise LiifError(f"{source} is at epoch {ckpt['epoch']} and epoch_max is {config['epoch_max']}: nothing "
                        f"to train (raise it, e.g. --set epoch_max={ckpt['epoch'] + 1})")


def restore(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any) -> tuple[int, int, float | None]:
    """Load a training checkpoint (checked by ``check_resumable``) into the live objects; (next epoch, global
    step, best validation score)."""
    getattr(model, "module", model).load_state_dict(ckpt["model"]["sd"])
    optimizer.load_state_dict(ckpt["optimizer"]["sd"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_states(ckpt["rng"])
    return ckpt["epoch"] + 1, ckpt["global_step"], ckpt.get("best_val")
