"""Training configs: YAML that reads like the reference's, checked against a schema, with ``--set`` overrides.

A key outside the schema, or a value of the wrong type, is a ``LiifError`` naming the key. Sections named
``args`` are free-form (they are constructor arguments, checked when the model or dataset is built).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from liif.errors import LiifError



class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``2e-4`` (no dot) as a float, as YAML 1.2 does."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))

FREE = "free-form"  # marks a dict whose keys are not checked here
NUMBER = (int, float)
OPTIONAL_STR = (str, type(None))

SPEC = {"name": str, "args": FREE}
DATASET = {"dataset": SPEC, "wrapper": SPEC, "batch_size": int}
NORM = {"sub": list, "div": list}

SCHEMA: dict[str, Any] = {
    "train_dataset": DATASET,
    "val_dataset": DATASET,
    "data_norm": {"inp": NORM, "gt": NORM},
    "model": SPEC,
    "init_from": OPTIONAL_STR,  # start from these weights (a built-in name or a .pth): fine-tuning
    "optimizer": SPEC,
    "epoch_max": int,
    "multi_step_lr": {"milestones": list, "gamma": NUMBER, "unit": str},
    "epoch_val": int,
    "epoch_save": int,
    "resume": OPTIONAL_STR,
    "seed": int,
    "num_workers": int,
    "deterministic": bool,
    "device": str,
    "amp": str,
    "compile": bool,
    "threads": (int, type(None)),
    "log_every": int,
    "tensorboard": bool,
    "benchmark_eval": {"root": str, "scales": list, "every": int},
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
REQUIRED = ("train_dataset", "epoch_max")
CHOICES = {"amp": ("none", "bf16", "fp16"), "multi_step_lr.unit": ("epoch", "iter"),
           "optimizer.name": ("adam", "sgd")}


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``update`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(type_name(t) for t in expected if t is not type(None)) + " or null"
    return {dict: "a mapping", FREE: "a mapping"}.get(expected, getattr(expected, "__name__", str(expected)))


def check(value: Any, schema: Any, key: str) -> None:
    """Raise a LiifError naming ``key`` if ``value`` does not fit ``schema``."""
    if isinstance(schema, dict):
        if value is None:
            return
        if not isinstance(value, dict):
            raise LiifError(f"config key {key!r} must be a mapping, got {value!r}")
        for sub, sub_value in value.items():
            if sub not in schema:
                known = "" if key else "; known: " + ", ".join(SCHEMA)
                raise LiifError(f"unknown config key {f'{key}.{sub}' if key else sub!r}{known}")
            check(sub_value, schema[sub], f"{key}.{sub}" if key else sub)
        return
    if schema == FREE:
        if value is not None and not isinstance(value, dict):
            raise LiifError(f"config key {key!r} must be a mapping, got {value!r}")
        return
    expected = schema if isinstance(schema, tuple) else (schema,)
    # a bool is an int in Python, but `epoch_max: true` is a mistake; an int is a fine float
    if isinstance(value, bool) and bool not in expected or not isinstance(value, expected):
        raise LiifError(f"config key {key!r} must be {type_name(schema)}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise LiifError(f"config key {key!r} must be one of {', '.join(CHOICES[key])}, got {value!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a', 'b', 'c'], value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise LiifError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        value = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise LiifError(f"--set {key}: cannot parse {raw!r} ({exc.problem})") from None
    return key.strip().split("."), value


def schema_at(path: list[str]) -> Any:
    """The schema entry for a dotted path, FREE inside ``args``, or None when the key is unknown."""
    node: Any = SCHEMA
    for part in path:
        if node == FREE:
            return FREE
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_override(config: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``config[path] = value``; an unknown key or a type unlike the schema's or the old value's fails."""
    key = ".".join(path)
    schema = schema_at(path)
    if schema is None:
        raise LiifError(f"--set {key}: unknown config key")
    node = config
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    old = node.get(path[-1])
    if schema == FREE and old is not None and value is not None and not isinstance(old, dict):
        same = isinstance(value, type(old)) or (isinstance(old, float) and isinstance(value, int)
                                                and not isinstance(value, bool))
        if not same:
            raise LiifError(f"--set {key}: expected {type(old).__name__} like {old!r}, got {value!r}")
        if isinstance(old, float):
            value = float(value)
    node[path[-1]] = value


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checked config from a YAML file (or ``base``, e.g. a checkpoint's) with defaults and ``--set``s."""
    if path is not None:
        try:
            loaded = yaml.load(Path(path).read_text(), Loader=ConfigLoader)
        except FileNotFoundError:
            raise LiifError(f"{path}: no such config file") from None
        except yaml.YAMLError as exc:
            raise LiifError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise LiifError(f"{path}: a config must be a YAML mapping")
    else:
        loaded = copy.deepcopy(base or {})
    config = merge(DEFAULTS, loaded)
    for text in overrides:
        apply_override(config, *parse_override(text))
    check(config, SCHEMA, "")
    for key in REQUIRED:
        if config.get(key) is None:
            raise LiifError(f"config key {key!r} is required")
    if config.get("init_from") is None and not isinstance((config.get("model") or {}).get("name"), str):
        raise LiifError("config key 'model' (with a 'name') is required, unless 'init_from' gives the weights")
    return config
