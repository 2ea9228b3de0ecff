"""Built-in models, resolved by name to weights shipped inside the package."""

from __future__ import annotations

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
