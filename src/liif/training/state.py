"""Training checkpoints: the reference format (model spec with ``sd``, optimizer, epoch) plus what an
exact resume needs (scheduler, RNG states, global step, best validation score, config)."""

from __future__ import annotations

import errno
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from liif.checkpoint import model_entries
from liif.errors import LiifError
from liif.fileio import atomic_write


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


def training_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, config: dict[str, Any],
                        scheduler: Any, epoch: int, global_step: int, best_val: float | None) -> dict[str, Any]:
    """The object written as ``epoch-*.pth``; ``load_model`` and the reference's test.py read it as is."""
    return {**model_entries(model),
            "optimizer": {**config["optimizer"], "sd": optimizer.state_dict()},
            "epoch": epoch,
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "global_step": global_step,
            "best_val": best_val,
            "rng": rng_states(),
            "config": config}


def write_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """Write atomically; a full disk (or any failed write) leaves the previous file at ``path`` intact."""
    try:
        atomic_write(path, lambda f: torch.save(ckpt, f))
    except (OSError, RuntimeError) as exc:  # torch.save's zip writer reports a failed write as a RuntimeError
        full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)
        reason = "no space left on device" if full else getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise LiifError(f"could not write checkpoint {path}: {reason}{kept}") from None


def restore(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any) -> tuple[int, int, float | None]:
    """Load a training checkpoint into the live objects; (next epoch, global step, best validation score)."""
    if "global_step" not in ckpt or "optimizer" not in ckpt:
        raise LiifError("this checkpoint holds no training state (optimizer, step): it can start a "
                        "fine-tuning run through 'init_from', not a resume")
    getattr(model, "module", model).load_state_dict(ckpt["model"]["sd"])
    optimizer.load_state_dict(ckpt["optimizer"]["sd"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_states(ckpt["rng"])
    return ckpt["epoch"] + 1, ckpt["global_step"], ckpt.get("best_val")
