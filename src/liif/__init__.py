"""liif: continuous image representation with Local Implicit Image Functions (LIIF, CVPR 2021)."""

from liif.checkpoint import load_model, save_checkpoint
from liif.coords import make_cell, make_coord
from liif.errors import CheckpointError, LiifError
from liif.evaluation import evaluate
from liif.pretrained import DEFAULT_MODEL, pretrained_names
from liif.registry import make, register
from liif.upscale import upscale

__version__ = "0.1.0"

__all__ = ["load_model", "save_checkpoint", "make_coord", "make_cell", "make", "register",
           "pretrained_names", "DEFAULT_MODEL", "evaluate", "upscale", "LiifError", "CheckpointError", "__version__"]
