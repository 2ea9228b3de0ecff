"""Built-in models, resolved by name to weights shipped inside the package."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

# name -> file in liif/weights (see liif/weights/NOTICE for provenance and licence)
PRETRAINED_FILES = {"edsr-baseline-liif": "edsr-baseline-liif.pth"}
DEFAULT_MODEL = "edsr-baseline-liif"


def pretrained_names() -> list[str]:
    """Names accepted by ``load_model`` without a path."""
    return sorted(PRETRAINED_FILES)


def pretrained_path(name: str) -> Path:
    """The packaged weights file of a built-in model."""
    return Path(str(resources.files("liif") / "weights" / PRETRAINED_FILES[name]))


def weights_file(source: str | os.PathLike) -> Path:
    """The file a model is loaded from: a built-in name's packaged weights, or ``source`` itself."""
    return pretrained_path(str(source)) if str(source) in PRETRAINED_FILES else Path(source)
