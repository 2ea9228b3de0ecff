"""liif: continuous image representation with Local Implicit Image Functions (LIIF, CVPR 2021)."""

import sys

try:
    from liif.checkpoint import load_model, save_checkpoint
    from liif.errors import CheckpointError, LiifError
    from liif.evaluation import evaluate
    from liif.geometry import Geometry, make_cell, make_coord
    from liif.normalization import DataNorm
    from liif.pretrained import DEFAULT_MODEL, pretrained_names
    from liif.registry import make, register
    from liif.renderer import FeatureCache, render
    from liif.upscale import upscale
    from liif.video.upscale import upscale_video
except KeyboardInterrupt as stop:
    # `python -m liif` imports this package, torch with it, before liif/__main__ can catch a Ctrl-C; Python sets
    # argv[0] to "-m" while it does (documented), and there the Ctrl-C ends as the liif script's does. An
    # import by a program is the program's to interrupt.
    if sys.argv[:1] != ["-m"]:
        raise
    from liif_entry import interrupted

    interrupted("liif", stop)

__version__ = "0.1.0"

__all__ = ["load_model", "save_checkpoint", "make_coord", "make_cell", "Geometry", "DataNorm", "make", "register",
           "pretrained_names", "DEFAULT_MODEL", "evaluate", "render", "FeatureCache", "upscale", "upscale_video", "LiifError",
           "CheckpointError", "__version__"]
