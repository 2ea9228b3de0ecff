"""Training: configs, the loop, checkpoints with exact resume, DDP and monitoring."""

from liif.training.config import load_config
from liif.training.loop import TrainingDiverged, resume_config, train

__all__ = ["load_config", "train", "resume_config", "TrainingDiverged"]
