"""Name -> constructor registries: a model or dataset is described by a spec ``{'name': ..., 'args': ...}``."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable

from liif.bounds import flag
from liif.errors import LiifError, one_line

KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Registry:
    """The constructors of one kind of object (``kind`` names it in errors: "model", "dataset") by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.constructors: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A decorator registering a constructor under ``name``; a name already taken is a ValueError."""

        def decorator(constructor: Callable[..., Any]) -> Callable[..., Any]:
            if name in self.constructors:
                raise ValueError(f"{self.kind} name {name!r} is already registered")
            self.constructors[name] = constructor
            return constructor

        return decorator

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self.constructors)

    def __contains__(self, name: object) -> bool:
        return name in self.constructors

    def takes(self, name: str, argument: str) -> bool:
        """Whether the constructor registered as ``name`` takes the keyword ``argument`` (by name or ``**kwargs``)."""
        params = inspect.signature(self.constructors[name]).parameters
        return argument in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def complete(self, spec: Any) -> Any:
        """``spec`` with the defaults its constructor fills in written out, and so in the specs of this registry
        among its args (a model's encoder), so that two specs that build the same thing compare equal; anything
        that is not a spec of a registered name comes back as it is."""
        if not (isinstance(spec, dict) and spec.get("name") in self.constructors
                and isinstance(spec.get("args") or {}, dict)):
            return spec
        params = inspect.signature(self.constructors[spec["name"]]).parameters
        defaults = {name: p.default for name, p in params.items()
                    if p.kind in KEYWORD_KINDS and p.default is not p.empty}
        args = {**defaults, **(spec.get("args") or {})}
        return {"name": spec["name"], "args": {key: self.complete(value) for key, value in args.items()}}

    def make(self, spec: dict[str, Any], args: dict[str, Any] | None = None,
             optional: dict[str, Any] | None = None) -> Any:
        """Build what ``spec`` describes, ``args`` overriding ``spec['args']``, and keep the spec as ``obj.spec``;
        ``optional`` arguments (a progress bar, a seed) go only to a constructor that takes them.

        A malformed spec, an unknown name, an unknown or missing argument is a LiifError naming it."""
        given = spec.get("args") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or "name" not in spec or not isinstance(given or {}, dict):
            shown = {k: type(v).__name__ for k, v in spec.items()} if isinstance(spec, dict) else type(spec).__name__
            raise LiifError(f"a {self.kind} spec must be a dict with a 'name' and a dict of 'args', got {shown}")
        name = spec["name"]
        if name not in self.constructors:
            raise LiifError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        overrides = {**{k: v for k, v in (optional or {}).items() if self.takes(name, k)}, **(args or {})}
        kwargs = {**copy.deepcopy(given or {}), **overrides}
        params = inspect.signature(self.constructors[name]).parameters
        unknown = [k for k in kwargs if not self.takes(name, k)]
        if unknown:
            raise LiifError(f"{self.kind} {name!r} has no argument {unknown[0]!r}; "
                            f"it takes {', '.join(p for p in params if p not in overrides)}")
        missing = [p for p, v in params.items()
                   if v.kind in KEYWORD_KINDS and v.default is v.empty and p not in kwargs]
        if missing:
            raise LiifError(f"{self.kind} {name!r} needs the argument {missing[0]!r}")
        try:
            obj = self.constructors[name](**kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a negative or fractional layer size
            raise LiifError(f"bad arguments for {self.kind} {name!r}: {one_line(exc)}") from None
        # Overrides (the MLP's in_dim, a wrapper's dataset) are derived, so the stored spec keeps only the given args.
        obj.spec = {"name": name, "args": copy.deepcopy(given or {})}
        return obj


MODELS = Registry("model")
DATASETS = Registry("dataset")
# README documents ``liif.register`` and ``liif.make`` for models.
register = MODELS.register


def make(spec: dict[str, Any], args: dict[str, Any] | None = None, load_sd: bool = False) -> Any:
    """The model ``spec`` describes (``MODELS.make``); with ``load_sd``, as the reference's ``models.make``, with
    the weights of ``spec['sd']`` (a checkpoint's ``'model'`` entry), loaded strictly."""
    if not flag(load_sd, "load_sd", LiifError):
        return MODELS.make(spec, args)
    from liif.checkpoint import model_from_spec  # checkpoints build their models through this module

    if not isinstance(spec, dict) or "sd" not in spec:
        raise LiifError("load_sd=True loads the spec's 'sd', its state dict (a checkpoint's 'model' entry), "
                        "and this spec has none")
    return model_from_spec({**spec, "args": {**(spec.get("args") or {}), **(args or {})}}, "spec")
