"""Reference-format checkpoints: ``{'model': {'name', 'args', 'sd'}, 'optimizer': ..., 'epoch': ...}``."""

from __future__ import annotations

import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from liif.models import ImplicitModel  # importing liif.models registers the model names
from liif.errors import CheckpointError, LiifError, one_line, os_reason
from liif.fileio import atomic_write, check_regular_file
from liif.normalization import DataNorm
from liif.pretrained import pretrained_names, weights_file
from liif.registry import make
from liif.runtime import pick_device


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only``: it can never run code) and check its layout."""
    path = Path(path)
    try:
        check_regular_file(path, "checkpoint file")
    except LiifError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        # torch.save writes a zip archive, whose end record a cut-off file lacks
        cut_zip = head == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({os_reason(exc)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 75": the error line says it all
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types (OSError included) for files it cannot read
        message = str(exc)
        unsafe = "GLOBAL" in message or "Unsupported global" in message
        # a cut-off file in the legacy (pickle) format, which torch.save wrote before PyTorch 1.6, ends early
        if not unsafe and (cut_zip or isinstance(exc, EOFError) or "unexpected EOF" in message):
            raise CheckpointError(f"{path}: the checkpoint is truncated, its data ends early (an interrupted "
                                  f"download or copy?)") from None
        if unsafe or head[:1] == b"\x80":  # or a plain pickle that torch's safe unpickler cannot read
            raise CheckpointError(f"{path}: refused to load, the file holds objects other than tensors and "
                                  f"plain data, and unpickling it could run code") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.load failed: "
                              f"{type(exc).__name__})") from None
    spec = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(spec, dict) or not {"name", "args", "sd"} <= set(spec):
        raise CheckpointError(f"{path}: not a LIIF checkpoint ({contents(ckpt)}; expected a dict whose 'model' "
                              f"holds 'name', 'args' and 'sd')")
    return ckpt


def contents(ckpt: Any) -> str:
    """What a file that is not a reference-format checkpoint holds, in a few words."""
    if not isinstance(ckpt, dict):
        return f"it holds a {type(ckpt).__name__}"
    for where, entry in (("it", ckpt), ("its 'model'", ckpt.get("model"))):
        if isinstance(entry, dict) and entry and all(isinstance(v, torch.Tensor) for v in entry.values()):
            # torch.save(model.state_dict()): the weights alone do not say which model to build
            return f"{where} holds a bare state dict of {len(entry)} tensors, without the model's name and args"
    shown = ", ".join(repr(k)[:40] for k in list(ckpt)[:5]) + (f" and {len(ckpt) - 5} more" if len(ckpt) > 5 else "")
    return f"its keys are {shown}" if ckpt else "it holds an empty dict"


# The attribute under which a wrapper holds its model, which a wrapped model's state dict puts before every key:
# DataParallel and DistributedDataParallel ("module"), torch.compile ("_orig_mod").
WRAPPERS = ("module", "_orig_mod")


def unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the wrapper prefixes that every one of its keys carries (a state dict saved from a
    DataParallel, DDP or compiled model), else as it is."""
    while state:
        prefix = next((f"{w}." for w in WRAPPERS if all(k.startswith(f"{w}.") for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """A CheckpointError naming the missing, unexpected and mis-shaped keys unless ``state`` fits ``model``."""
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


def meta_build(spec: dict[str, Any], max_tensors: int, too_many: str) -> nn.Module:
    """Build ``spec`` on the meta device (no memory taken), stopping with the LiifError ``too_many`` once it has
    made ``max_tensors`` tensors: a spec asking for a billion blocks would otherwise take minutes and gigabytes
    before failing."""
    made = 0

    def count(module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        nonlocal made
        made += 1
        if made > max_tensors:
            raise LiifError(too_many)

    hooks = [nn.modules.module.register_module_parameter_registration_hook(count),
             nn.modules.module.register_module_buffer_registration_hook(count)]
    try:
        with torch.device("meta"):
            return make(spec)
    finally:
        for hook in hooks:
            hook.remove()


def build_within(spec: dict[str, Any], n_tensors: int) -> nn.Module:
    """``spec`` built on the meta device, refused once it makes far more tensors than the checkpoint holds; a few
    missing keys still build, so that the strict check can name them."""
    return meta_build(spec, 4 * n_tensors + 1024,
                      f"the spec builds far more weights than the {n_tensors} its state dict holds")


def model_from_spec(spec: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """Build the model a ``{'name', 'args', 'sd'}`` spec describes and load its weights strictly.

    The model is built on the meta device and checked against the state dict before any memory is taken, so
    a spec that does not fit its weights fails at once, however large it claims to be. Keys saved from a wrapped
    model (DataParallel, DDP, torch.compile) load without the wrapper's prefix.
    """
    state = spec["sd"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{source}: 'sd' must map parameter names to tensors")
    state = unwrapped(state)
    if not isinstance(spec["name"], str):
        raise CheckpointError(f"{source}: the model name must be a string, got {type(spec['name']).__name__}")
    try:
        model = build_within(spec, len(state))
    except LiifError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError, KeyError, AttributeError, IndexError,
            RecursionError, MemoryError) as exc:  # a spec no constructor expects: nested args of odd types
        raise CheckpointError(f"{source}: cannot build the model its spec describes "
                              f"({type(exc).__name__}: {one_line(exc)})") from None
    check_state_fits(model, state, source)
    # a float weight from an integer, boolean or complex tensor would be cast silently (complex with a warning)
    kind = next((f"{k} is {state[k].dtype}" for k, v in model.state_dict().items()
                 if v.is_floating_point() and not state[k].is_floating_point()), None)
    if kind is not None:
        raise CheckpointError(f"{source}: weight {kind}, not a real floating-point tensor")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{source}: weight {bad} holds NaN or infinite values")
    model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    return model


def data_norm_of(ckpt: dict[str, Any], source: str) -> DataNorm:
    """The ``data_norm`` a checkpoint was trained with: its own entry, else its training config's, else the
    reference's 0.5 / 0.5 (reference checkpoints carry none)."""
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    try:
        return DataNorm.from_config(ckpt.get("data_norm", config.get("data_norm")))
    except LiifError as exc:
        raise CheckpointError(f"{source}: {one_line(exc)}") from None
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:  # e.g. an integer too large for a float
        raise CheckpointError(f"{source}: data_norm is malformed ({type(exc).__name__}: {one_line(exc)})") from None


def exists(path: Path) -> bool:
    """Whether ``path`` exists; False for a name the system cannot even look up."""
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system
        return False


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A model, in eval mode on ``device``, from a reference-format ``.pth`` path or a built-in name."""
    text = str(source)
    path = weights_file(source)
    if not exists(path) and not text.endswith((".pth", ".pt")) and os.sep not in text:
        raise CheckpointError(f"unknown model {text!r}: not a file, and not a built-in model "
                              f"({', '.join(pretrained_names())})")
    if not exists(path) and path.stem in pretrained_names():
        raise CheckpointError(f"{path}: no such checkpoint file (the built-in model is named {path.stem}, "
                              f"without {path.suffix})")
    ckpt = read_checkpoint(path)
    model = model_from_spec(ckpt["model"], str(path))
    if isinstance(model, ImplicitModel):
        model.data_norm = data_norm_of(ckpt, str(path))
    return model.to(pick_device(device)).eval()


def inner_model(model: Any) -> Any:
    """``model`` out of the ``WRAPPERS`` around it (a compiled DDP model has two)."""
    while isinstance(model, nn.Module):
        inner = next((model._modules[w] for w in WRAPPERS if w in model._modules), None)
        if inner is None:
            break
        model = inner
    return model


def model_entries(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint holds of a model: the reference ``model`` entry (spec plus state dict, never
    prefixed by a wrapper) and, for an image model, its ``data_norm``."""
    model = inner_model(model)
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "spec", None), dict):
        # a checkpoint rebuilds its model from the spec that liif.make keeps on it
        raise LiifError(f"can only save a model built by liif (liif.make or load_model), not a "
                        f"{type(model).__name__}")
    entries = {"model": {"name": model.spec["name"], "args": model.spec["args"],
                         "sd": {k: v.detach().cpu() for k, v in model.state_dict().items()}}}
    if isinstance(model, ImplicitModel):  # an encoder or MLP alone has no pixel values to normalise
        entries["data_norm"] = model.data_norm.as_config()
    return entries


def loadable_bytes(ckpt: dict[str, Any]) -> memoryview:
    """``ckpt`` as ``torch.save`` writes it; a LiifError if ``load_model``, which loads with ``weights_only``, would
    refuse it (an optimizer object instead of its state dict): a checkpoint no one could load is not written."""
    buffer = io.BytesIO()
    try:
        torch.save(ckpt, buffer)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:  # a lambda, a local class, an open file
        raise LiifError(f"cannot save the checkpoint: {one_line(exc)}") from None
    buffer.seek(0)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(buffer)
    if unsafe:
        raise LiifError(f"the checkpoint would hold {', '.join(sorted(unsafe))}, which loading refuses (weights_only): "
                        f"save tensors and plain data (an optimizer as optimizer.state_dict())")
    return buffer.getbuffer()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, optimizer: dict[str, Any] | None = None,
                    epoch: int | None = None, **extra: Any) -> None:
    """Write ``model`` in the reference format, which ``load_model`` and the reference code both read, atomically:
    a failed write (a full disk, a folder at ``path``) is a LiifError naming the reason, ``path`` left as it was."""
    if not isinstance(path, (str, os.PathLike)):
        raise LiifError(f"save_checkpoint takes a file path, not a {type(path).__name__}")
    ckpt: dict[str, Any] = model_entries(model)
    if optimizer is not None:
        ckpt["optimizer"] = optimizer
    if epoch is not None:
        ckpt["epoch"] = epoch
    ckpt.update(extra)
    try:
        data = loadable_bytes(ckpt)
        atomic_write(path, lambda f: f.write(data))
    except (OSError, RuntimeError) as exc:  # torch.save's zip writer turns a failed write into a RuntimeError
        raise LiifError(f"could not write checkpoint {path}: {os_reason(exc)}") from None
