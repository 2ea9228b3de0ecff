"""A name -> constructor registry: a model is described by a spec ``{'name': ..., 'args': ...}``."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch.nn as nn

from liif.errors import LiifError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model constructor under ``name`` (the name stored in checkpoint specs)."""

    def decorator(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = constructor
        return constructor

    return decorator


def registered_names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def make(spec: dict[str, Any], args: dict[str, Any] | None = None) -> nn.Module:
    """Build a model from ``spec``, with ``args`` overriding ``spec['args']``; the spec is remembered on the module."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise LiifError(f"a model spec must be a dict with a 'name', got {spec!r}")
    name = spec["name"]
    if name not in _REGISTRY:
        raise LiifError(f"unknown model {name!r}; known: {', '.join(registered_names())}")
    model_args = copy.deepcopy(spec.get("args") or {})
    model_args.update(args or {})
    try:
        model = _REGISTRY[name](**model_args)
    except TypeError as exc:
        raise LiifError(f"bad arguments for model {name!r}: {exc}") from None
    # Injected args (such as the MLP's in_dim) are derived, so the stored spec keeps only the given ones.
    model.spec = {"name": name, "args": copy.deepcopy(spec.get("args") or {})}
    return model
