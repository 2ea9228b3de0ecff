"""Dataset name -> constructor, as the reference's ``datasets.register``/``datasets.make``."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable

from liif.errors import LiifError

_DATASETS: dict[str, Callable[..., Any]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a dataset class under its reference name."""

    def decorator(constructor: Callable[..., Any]) -> Callable[..., Any]:
        _DATASETS[name] = constructor
        return constructor

    return decorator


def make_dataset(spec: dict[str, Any], args: dict[str, Any] | None = None) -> Any:
    """Build the dataset ``spec`` = {'name', 'args'} describes; a bad name or argument is a LiifError naming it."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in _DATASETS:
        raise LiifError(f"unknown dataset {name!r}; known: {', '.join(sorted(_DATASETS))}")
    kwargs = copy.deepcopy(spec.get("args") or {})
    kwargs.update(args or {})
    params = inspect.signature(_DATASETS[name]).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [] if open_ended else [k for k in kwargs if k not in params]
    if unknown:
        raise LiifError(f"dataset {name!r} has no argument {unknown[0]!r}; "
                        f"it takes {', '.join(p for p in params if p not in ('dataset', 'seed'))}")
    return _DATASETS[name](**kwargs)
