"""Training configs: YAML that reads like the reference's, checked against a schema, with ``--set`` overrides.

A key outside the schema, a value of the wrong type or out of its range, is a ``LiifError`` naming the key. Sections
named ``args`` are free-form (they are constructor arguments, checked when the model or dataset is built).
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from liif.bounds import COUNT, POSITIVE, THREADS, Number
from liif.errors import LiifError, one_line, option, os_reason
from liif.normalization import DataNorm


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``2e-4`` (no dot) as a float, as YAML 1.2 does, and dates as strings
    (a config holds plain data, which checkpoints store and load safely)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)

FREE = "free-form"  # marks a dict whose keys are not checked here
FLOAT_MAX = sys.float_info.max
MAX_DEPTH = 100  # nesting a config never needs; deeper values would overflow the recursive copy and checks


@dataclass(frozen=True)
class Maybe:
    """``schema``, or null (or left out): an optional key or section."""

    schema: Any


@dataclass(frozen=True)
class ListOf:
    """A list whose every item fits ``item``."""

    item: Any


@dataclass(frozen=True)
class OneOf:
    """One of a few strings."""

    options: tuple[str, ...]


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
# What torch's optimizers take but this loop does not: ``capturable`` keeps the step count on the GPU for CUDA
# graphs (on a CPU the first step fails), ``differentiable`` steps weights that cannot be updated in place.
NOT_OPTIMIZER_ARGS = ("params", "capturable", "differentiable")
# torch takes any float, then overflows converting it for the float32 weights at the first step
FLOAT32 = Number(low=-torch.finfo(torch.float32).max, high=torch.finfo(torch.float32).max)

SPEC = {"name": str, "args": Maybe(FREE)}
DATASET = {"dataset": SPEC, "wrapper": SPEC, "batch_size": COUNT}
NORM = {"sub": list, "div": list}  # lengths and values: DataNorm.from_config

# A key whose schema is not Maybe must be there and not null (DEFAULTS fill in the top level).
SCHEMA: dict[str, Any] = {
    "train_dataset": DATASET,
    "val_dataset": Maybe(DATASET),
    "data_norm": {"inp": NORM, "gt": NORM},
    "model": Maybe(SPEC),  # null only with init_from, which brings its own
    "init_from": Maybe(str),  # start from these weights (a built-in name or a .pth): fine-tuning
    "optimizer": {"name": OneOf(tuple(OPTIMIZERS)), "args": Maybe(FREE)},  # args: check_optimizer
    "epoch_max": COUNT,
    "multi_step_lr": Maybe({"milestones": ListOf(COUNT), "gamma": Maybe(POSITIVE),
                            "unit": Maybe(OneOf(("epoch", "iter")))}),  # left out: gamma 0.1, per epoch
    "epoch_val": Maybe(COUNT),  # null: never validate, as in the reference
    "epoch_save": Maybe(Number(int, low=0)),  # 0 or null: no epoch-N.pth
    "resume": Maybe(str),
    "seed": Number(int, low=0, high=2**32 - 1),  # numpy's global seed takes 32 bits
    "num_workers": Number(int, low=0),  # its limit depends on the machine: training.loop.check_workers
    "deterministic": bool,
    "device": str,
    "amp": OneOf(("none", "bf16", "fp16")),
    "compile": bool,
    "threads": Maybe(THREADS),
    "log_every": COUNT,
    "tensorboard": bool,
    "benchmark_eval": Maybe({"root": str, "scales": list, "every": Maybe(COUNT)}),  # root, scales: when built
}

DEFAULTS: dict[str, Any] = {
    "data_norm": {"inp": {"sub": [0.5], "div": [0.5]}, "gt": {"sub": [0.5], "div": [0.5]}},
    "init_from": None,
    "optimizer": {"name": "adam", "args": {"lr": 1.0e-4}},
    "multi_step_lr": None,
    "epoch_val": 1,
    "epoch_save": 100,
    "resume": None,
    "seed": 0,
    "num_workers": 0,
    "deterministic": False,
    "device": "auto",
    "amp": "none",
    "compile": False,
    "threads": None,
    "log_every": 50,
    "tensorboard": True,
    "benchmark_eval": None,
}


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``update`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def describe(schema: Any) -> str:
    """What fits ``schema``, in words."""
    if isinstance(schema, Maybe):
        return f"{describe(schema.schema)} or null"
    if isinstance(schema, Number):
        return schema.describe()
    if isinstance(schema, OneOf):
        return f"one of {', '.join(schema.options)}"
    if isinstance(schema, ListOf) or schema is list:
        return "a list"
    if isinstance(schema, dict) or schema == FREE:
        return "a mapping"
    return {str: "a string", bool: "true or false"}[schema]


def fits(value: Any, schema: Any) -> bool:
    """Whether a leaf ``value`` (not a section) fits ``schema``."""
    if isinstance(schema, Number):
        return schema.fits(value)
    if isinstance(schema, OneOf):
        return isinstance(value, str) and value in schema.options
    if isinstance(schema, ListOf):
        return isinstance(value, list)
    return isinstance(value, dict if schema == FREE else schema)


def check(value: Any, schema: Any, key: str) -> None:
    """Raise a LiifError naming ``key`` if ``value`` does not fit ``schema``."""
    expected = describe(schema)
    if isinstance(schema, Maybe):
        if value is None:
            return
        schema = schema.schema
    if not isinstance(schema, dict):
        if not fits(value, schema):
            raise LiifError(f"config key {key!r} must be {expected}, got {value!r}")
        if isinstance(schema, ListOf):
            for i, item in enumerate(value):
                check(item, schema.item, f"{key}[{i}]")
        return
    if not isinstance(value, dict):
        raise LiifError(f"config key {key!r} must be a mapping, got {value!r}")
    for sub in value:
        if sub not in schema:
            known = "" if key else "; known: " + ", ".join(SCHEMA)
            raise LiifError(f"unknown config key {f'{key}.{sub}' if key else sub!r}{known}")
    for sub, sub_schema in schema.items():
        dotted = f"{key}.{sub}" if key else sub
        if value.get(sub) is None and not isinstance(sub_schema, Maybe):
            raise LiifError(f"config key {dotted!r} is required ({describe(sub_schema)})")
        check(value.get(sub), sub_schema, dotted)


def check_plain(value: Any, key: str, depth: int = 0) -> None:
    """Refuse what YAML can hold but a config must not: NaN or infinite numbers, sets, bytes, pairs, lists or
    mappings that contain themselves or nest absurdly deep (free-form ``args`` included)."""
    if depth > MAX_DEPTH:
        raise LiifError(f"config key {key!r} is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise LiifError(f"config key {key!r} must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for sub, item in value.items():
            check_plain(item, f"{key}.{sub}" if key else str(sub), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_plain(item, f"{key}[{i}]", depth + 1)
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise LiifError(f"config key {key!r} holds a {type(value).__name__}, which a config cannot hold")


def optimizer_args(name: str) -> dict[str, Any]:
    """The keyword arguments a run may give optimizer ``name``, with torch's defaults."""
    return {key: param.default for key, param in inspect.signature(OPTIMIZERS[name]).parameters.items()
            if key not in NOT_OPTIMIZER_ARGS}


def check_optimizer_arg(key: str, value: Any, default: Any) -> None:
    """A LiifError naming ``optimizer.args.KEY`` unless ``value`` is of the kind torch's ``default`` is: true or
    false (or null, where torch decides), a number in float32's range, or a list of as many of them."""
    where = f"optimizer.args.{key}"
    if isinstance(default, bool) or default is None:
        if not (isinstance(value, bool) or (default is None and value is None)):
            raise LiifError(f"config key {where!r} must be true or false{' or null' if default is None else ''}, "
                            f"got {value!r}")
        return
    numbers = value if isinstance(default, tuple) else [value]
    if ((isinstance(default, tuple) and not (isinstance(value, list) and len(value) == len(default)))
            or not all(is_number(number) for number in numbers)):
        expected = f"a list of {len(default)} numbers" if isinstance(default, tuple) else "a number"
        raise LiifError(f"config key {where!r} must be {expected}, got {value!r}")
    if not all(FLOAT32.fits(number) for number in numbers):
        raise LiifError(f"config key {where!r} holds {value!r}, beyond the float32 range of the weights "
                        f"(±{FLOAT32.high:.3g})")


def check_optimizer(spec: dict[str, Any]) -> None:
    """Refuse, naming the key, ``optimizer.args`` that the optimizer does not take, of another kind than torch's
    defaults, or out of torch's ranges (found by building the optimizer over one weight, each argument alone, then
    all together): at load, not at the run's first step, and not as torch's own words."""
    name, args = spec["name"], spec["args"] or {}
    takes = optimizer_args(name)
    for key, value in args.items():
        if key not in takes:
            raise LiifError(f"unknown config key 'optimizer.args.{key}'; {name} takes {', '.join(takes)}")
        check_optimizer_arg(key, value, takes[key])
    weight = torch.zeros(1, requires_grad=True)
    for keys in [[key] for key in args] + ([list(args)] if len(args) > 1 else []):
        try:
            OPTIMIZERS[name]([weight], **{key: args[key] for key in keys})
        except Exception as exc:  # torch checks by comparing and indexing: any error is a value it refuses
            where = f"optimizer.args.{keys[0]}" if len(keys) == 1 else "optimizer.args"
            raise LiifError(f"config key {where!r}: {one_line(exc)}") from None


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def parse_yaml(text: str, where: str) -> Any:
    """``text`` read as YAML; a LiifError naming ``where`` (and the line and column) if it cannot be."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LiifError(f"{where}{at}: not valid YAML: {collapse_whitespace(exc.problem or exc.context or '')}") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # a reader error, or a tag such as ``!!int 1.5``
        raise LiifError(f"{where}: not valid YAML: {collapse_whitespace(str(exc))}") from None
    except RecursionError:
        raise LiifError(f"{where}: not valid YAML: nested too deep") from None


def shown(key: str) -> str:
    """A key as typed, or quoted when it holds characters that would break the one-line error."""
    return key if key.isprintable() else repr(key)


def override(key: str) -> str:
    """How an error names the override of ``key``: ``overrides KEY`` from Python, ``--set KEY`` from the command."""
    return f"{option('overrides', flag='set')} {shown(key)}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a', 'b', 'c'], value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise LiifError(f"{option('overrides', flag='set')} takes KEY=VALUE (KEY a dotted path such as "
                        f"optimizer.args.lr), got {text!r}")
    key = ".".join(path)
    value = parse_yaml(raw, override(key)) if raw.strip() else None
    return path, value


def schema_at(path: list[str]) -> Any:
    """The schema entry for a dotted path, FREE inside ``args``, or None when the key is unknown."""
    node: Any = SCHEMA
    for part in path:
        node = node.schema if isinstance(node, Maybe) else node
        if node == FREE:
            return FREE
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node.schema if isinstance(node, Maybe) else node


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or a float (a bool is neither, here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def apply_override(config: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``config[path] = value``; an unknown key or a type unlike the schema's or the old value's fails."""
    key, where = shown(".".join(path)), override(".".join(path))
    schema = schema_at(path) if path else None
    if schema is None:
        raise LiifError(f"{where}: unknown config key")
    check_plain(value, key)
    node = config
    for depth, part in enumerate(path[:-1]):
        if node.get(part) is None:
            node[part] = {}
        elif not isinstance(node[part], dict):
            raise LiifError(f"{where}: {shown('.'.join(path[:depth + 1]))} holds {node[part]!r}, "
                            f"not a mapping")
        node = node[part]
    old = node.get(path[-1])
    if schema == FREE and old is not None and value is not None and not isinstance(old, dict):
        # any number for a number: a YAML ``scale_max: 4`` reads as an int, and 3.5 must replace it (the
        # constructors refuse a fraction where they need a whole number)
        same = isinstance(value, type(old)) or (is_number(old) and is_number(value))
        if not same:
            raise LiifError(f"{where}: expected {type(old).__name__} like {old!r}, got {value!r}")
        if isinstance(old, float):
            if not -FLOAT_MAX <= value <= FLOAT_MAX:
                raise LiifError(f"{where}: {value} is too large for a float")
            value = float(value)
    node[path[-1]] = value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; a one-line LiifError for a missing, unreadable or invalid file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LiifError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise LiifError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise LiifError(f"{path}: not a text file (a config is UTF-8 YAML)") from None
    except (OSError, ValueError) as exc:  # no permission, a name with a NUL byte or too long
        raise LiifError(f"{path}: cannot read ({os_reason(exc)})") from None
    loaded = parse_yaml(text, str(path))
    if not isinstance(loaded, dict):
        raise LiifError(f"{path}: a config must be a YAML mapping")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked config from a YAML file (or ``base``, e.g. a checkpoint's) with defaults and ``overrides``
    (KEY=VALUE, as ``liif train --set`` takes them)."""
    loaded = read_config_file(path) if path is not None else base or {}
    check_plain(loaded, "")
    config = merge(DEFAULTS, loaded)
    for text in overrides:
        apply_override(config, *parse_override(text))
    check(config, SCHEMA, "")
    check_optimizer(config["optimizer"])
    if config["init_from"] is None and config.get("model") is None:
        raise LiifError("config key 'model' is required, unless 'init_from' gives the weights")
    DataNorm.from_config(config["data_norm"])
    return config
