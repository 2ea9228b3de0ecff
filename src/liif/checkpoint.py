"""Reference-format checkpoints: ``{'model': {'name', 'args', 'sd'}, 'optimizer': ..., 'epoch': ...}``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import liif.models  # noqa: F401  (registers the model names)
from liif.errors import CheckpointError
from liif.pretrained import pretrained_path, pretrained_names
from liif.registry import make


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only``: it can never run code) and check its layout."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for files it cannot read
        message = str(exc)
        with open(path, "rb") as f:
            plain_pickle = f.read(1) == b"\x80"
        if "GLOBAL" in message or "Unsupported global" in message or plain_pickle:
            raise CheckpointError(f"{path}: refused to load, the file holds objects other than tensors and "
                                  f"plain data, and unpickling it could run code") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.load failed: "
                              f"{type(exc).__name__})") from None
    spec = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(spec, dict) or not {"name", "args", "sd"} <= set(spec):
        raise CheckpointError(f"{path}: not a LIIF checkpoint (expected a dict whose 'model' holds "
                              f"'name', 'args' and 'sd')")
    return ckpt


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model``; on any mismatch, name the missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                 if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: state dict does not fit the model; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def build_model(spec: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Build the model a ``{'name', 'args', 'sd'}`` spec describes and load its weights strictly."""
    model = make(spec)
    load_state_strict(model, spec["sd"], source)
    return model


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A model, in eval mode on ``device``, from a reference-format ``.pth`` path or a built-in name."""
    text = str(source)
    path = pretrained_path(text) if text in pretrained_names() else Path(text)
    if not path.exists() and not text.endswith((".pth", ".pt")) and os.sep not in text:
        raise CheckpointError(f"unknown model {text!r}: not a file, and not a built-in model "
                              f"({', '.join(pretrained_names())})")
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["model"], str(path))
    return model.to(device).eval()


def model_spec_with_state(model: nn.Module) -> dict[str, Any]:
    """The reference ``ckpt['model']`` entry: the model's spec plus its state dict (never DDP-prefixed)."""
    model = getattr(model, "module", model)
    return {"name": model.spec["name"], "args": model.spec["args"],
            "sd": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(model: nn.Module, path: str | os.PathLike, optimizer: dict[str, Any] | None = None,
                    epoch: int | None = None, **extra: Any) -> None:
    """Write ``model`` in the reference format, which ``load_model`` and the reference code both read."""
    ckpt: dict[str, Any] = {"model": model_spec_with_state(model)}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer
    if epoch is not None:
        ckpt["epoch"] = epoch
    ckpt.update(extra)
    atomic_save(ckpt, path)
