"""Pixel values and model values: a model sees (x - sub) / div of pictures in [0, 1] (the reference's ``data_norm``).

The model owns its ``DataNorm``: reference checkpoints use 0.5 / 0.5, a checkpoint of ``liif train`` stores
the one it was trained with, and everything that feeds a model or reads its output converts through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from liif.errors import LiifError

Values = tuple[float, ...]


def checked_values(value: Any, where: str) -> Values:
    """One value per channel (or one for all), finite; ``div`` values must not be 0."""
    if not isinstance(value, (list, tuple)) or len(value) not in (1, 3) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise LiifError(f"data_norm {where} must be a list of 1 or 3 finite numbers, got {value!r}")
    if where.endswith("div") and any(v == 0 for v in value):
        raise LiifError(f"data_norm {where} must not hold 0, got {value!r}")
    return tuple(float(v) for v in value)


def float_pixels(pixels: object) -> None:
    """A LiifError unless ``pixels`` is a float tensor: 0.5 in an integer type is 0, so 8-bit values would be
    divided by 0, and an array has no channel dimension to broadcast along."""
    if not isinstance(pixels, torch.Tensor):
        raise LiifError(f"pixels must be a float tensor in [0, 1], got a {type(pixels).__name__}")
    if not pixels.is_floating_point():
        raise LiifError(f"pixels must be floats in [0, 1], got {pixels.dtype} (divide 8-bit values by 255)")


@dataclass(frozen=True)
class DataNorm:
    """``inp`` maps input pictures to the model, ``gt`` maps the model's output back to pictures."""

    inp_sub: Values = (0.5,)
    inp_div: Values = (0.5,)
    gt_sub: Values = (0.5,)
    gt_div: Values = (0.5,)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> DataNorm:
        """From ``{'inp': {'sub', 'div'}, 'gt': {'sub', 'div'}}`` (a training config's ``data_norm``); None is 0.5/0.5."""
        if config is None:
            return cls()
        if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("inp", "gt")):
            raise LiifError(f"data_norm must map 'inp' and 'gt' to {{'sub': [...], 'div': [...]}}, got {config!r}")
        return cls(*(checked_values(config[part].get(key), f"{part}.{key}")
                     for part in ("inp", "gt") for key in ("sub", "div")))

    def per_channel(self) -> tuple[Values, Values, Values, Values]:
        """Each of the four with a value per channel (one value stands for all three): equal when they act alike."""
        return tuple(values * (3 // len(values)) for values in (self.inp_sub, self.inp_div, self.gt_sub, self.gt_div))

    def as_config(self) -> dict[str, dict[str, list[float]]]:
        """The ``data_norm`` entry ``from_config`` reads back (a training config's, a checkpoint's)."""
        return {"inp": {"sub": list(self.inp_sub), "div": list(self.inp_div)},
                "gt": {"sub": list(self.gt_sub), "div": list(self.gt_div)}}

    @staticmethod
    def along(values: Values, like: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """``values`` as a tensor of ``like``'s type and device, laid along its ``channel_dim`` to broadcast."""
        shape = [1] * like.dim()
        shape[channel_dim] = len(values)
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)

    def to_model(self, pixels: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
        """Input pictures in [0, 1] (channels along ``channel_dim``) in the model's space."""
        float_pixels(pixels)
        return (pixels - self.along(self.inp_sub, pixels, channel_dim)) / self.along(self.inp_div, pixels, channel_dim)

    def to_target(self, pixels: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
        """Ground-truth colours in [0, 1] in the model's output space (what training compares with)."""
        float_pixels(pixels)
        return (pixels - self.along(self.gt_sub, pixels, channel_dim)) / self.along(self.gt_div, pixels, channel_dim)

    def to_pixels(self, output: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
        """The model's output as colours, clamped to [0, 1]."""
        output = output.float()
        return (output * self.along(self.gt_div, output, channel_dim)
                + self.along(self.gt_sub, output, channel_dim)).clamp(0, 1)
