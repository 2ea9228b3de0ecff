"""Hand-written GPU kernels for the decoders' query, chosen per model by name; triton is imported only on use.

``torch`` (the default) is the fast path in plain torch. ``triton`` runs the whole LIIF query in one Triton
kernel (gather, first-layer terms, every MLP layer and the ensemble blend); ``triton-first-layer`` runs only
the gather, first-layer terms and ReLU in Triton and the rest in torch. ``triton`` falls back to the first-layer
kernel for an MLP it cannot tile, and both to torch for gradients or an input they do not cover. They are opt-in until measured faster than torch on a card.
"""

from __future__ import annotations

import os

import torch

from liif.errors import LiifError, option

QUERY_KERNELS = ("torch", "triton", "triton-first-layer")


def interpreting() -> bool:
    """Whether Triton's interpreter is asked for (TRITON_INTERPRET=1): kernels then run on the CPU, slowly."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def check_kernel(name: str, device: torch.device) -> None:
    """Refuse, in one line, a kernel that is unknown or cannot run on ``device``."""
    if name not in QUERY_KERNELS:
        raise LiifError(f"unknown kernel {name!r}; use {', '.join(QUERY_KERNELS)}")
    if name == "torch":
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        raise LiifError(f"kernel {name} needs triton: pip install triton") from None
    if torch.device(device).type != "cuda" and not interpreting():
        raise LiifError(f"kernel {name} runs on CUDA devices (or on the CPU in Triton's interpreter, "
                        f"TRITON_INTERPRET=1); use {option('device', 'cuda')} or {option('kernel', 'torch')}")


def set_query_kernel(model: torch.nn.Module, name: str, device: torch.device) -> torch.nn.Module:
    """``model`` with its query kernel set to ``name``, once checked; ``torch`` suits every model."""
    check_kernel(name, device)
    if hasattr(model, "query_kernel"):
        model.query_kernel = name
    elif name != "torch":
        raise LiifError(f"kernel {name} serves LIIF decoders; this model is {type(model).__name__}")
    return model
