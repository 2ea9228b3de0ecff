"""int8 decoding of LIIF's MLP on the CPU: int8 weights per output channel, uint8 activations per row.

After the first layer's fp32 pre-activations (gathered from the latents' table), each hidden 256x256 layer
runs as one oneDNN u8 x s8 -> s32 GEMM. Weights are quantised once, symmetric, one scale per output channel.
The activations entering each layer are post-ReLU, so non-negative: each row (one query of one neighbour)
gets its own scale, its largest value / 255, and zero point 0 (uint8 keeps all 8 bits for values >= 0, where
symmetric int8 would use 7). Where oneDNN sums pairs of u8 x s8 products in saturating 16-bit lanes (AVX2 without
VNNI or AMX), the activations keep 7 bits, 0 to 127, so that every sum stays exact. The GEMM's int32 sums are rescaled by row scale x channel scale, the bias added
and the ReLU applied in fp32, fused with the next layer's quantisation by torch.compile; the first layer's
gathered pre-activations and the last layer (256 -> 3) stay fp32.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import torch
import torch.nn as nn

# Positive levels of a uint8 activation (all 8 bits, or 7 where 16-bit pair sums would saturate) and of a
# symmetric int8 weight.
ACTIVATION_LEVELS = (255, 127)
WEIGHT_LEVELS = 127

_decoding = contextvars.ContextVar("liif_int8_decoding", default=False)


@dataclass(frozen=True)
class QuantizedLinear:
    """A Linear's weight as int8 with one scale per output channel, packed for oneDNN, and its fp32 bias."""

    weight: torch.Tensor
    packed: torch.Tensor
    scales: torch.Tensor
    zero_points: torch.Tensor
    bias: torch.Tensor
    version: tuple[int, int]

    @classmethod
    def of(cls, linear: nn.Linear) -> QuantizedLinear:
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / WEIGHT_LEVELS
        quantized = torch.round(weight / scales[:, None]).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS).to(torch.int8)
        bias = torch.zeros(len(scales)) if linear.bias is None else linear.bias.detach().float()
        return cls(quantized, torch.ops.onednn.qlinear_prepack(quantized, None), scales,
                   torch.zeros(len(scales), dtype=torch.long), bias, weight_version(linear))

    def dequantized_weight(self) -> torch.Tensor:
        """The fp32 weight (N, K) this quantisation stands for."""
        return self.weight.float() * self.scales[:, None]

    def scaled_sums(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 rows (M, K) times the int8 weight, as fp32 times each channel's scale (M, N); row scales not
        applied."""
        return torch.ops.onednn.qlinear_pointwise(rows, 1.0, 0, self.packed, self.scales, self.zero_points, None,
                                                  1.0, 0, torch.float32, "none", [], "")


def weight_version(linear: nn.Linear) -> tuple[int, int]:
    """Identifies the weight's current values: its storage and in-place version (a load_state_dict bumps it)."""
    return linear.weight.data_ptr(), linear.weight._version


_quantized: weakref.WeakKeyDictionary[nn.Linear, QuantizedLinear] = weakref.WeakKeyDictionary()


def quantized(linear: nn.Linear) -> QuantizedLinear:
    """``linear``'s int8 weight, quantised once and again only when its weight changes."""
    cached = _quantized.get(linear)
    if cached is None or cached.version != weight_version(linear):
        cached = _quantized[linear] = QuantizedLinear.of(linear)
    return cached


def sums_exactly(levels: int) -> bool:
    """Whether oneDNN's u8 x s8 GEMM on this CPU sums uint8 activations up to ``levels`` exactly: without VNNI or
    AMX it adds pairs of products in 16-bit lanes, which saturate above 32767."""
    rows = torch.full((16, 64), levels, dtype=torch.uint8)
    weight = torch.full((16, 64), WEIGHT_LEVELS, dtype=torch.int8)
    packed = torch.ops.onednn.qlinear_prepack(weight, None)
    sums = torch.ops.onednn.qlinear_pointwise(rows, 1.0, 0, packed, torch.ones(16), torch.zeros(16, dtype=torch.long),
                                              None, 1.0, 0, torch.float32, "none", [], "")
    return bool((sums == levels * WEIGHT_LEVELS * 64).all())


@lru_cache(maxsize=None)
def activation_levels() -> int:
    """The top uint8 activation level this CPU's int8 GEMM sums exactly: 255 with VNNI or AMX, 127 on plain AVX2."""
    for levels in ACTIVATION_LEVELS:
        if sums_exactly(levels):
            return levels
    raise RuntimeError("oneDNN's int8 GEMM sums no activation range exactly on this CPU")


def quantize_rows(values: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU of fp32 rows (M, K) as uint8 (M, K) and each row's scale (M, 1): value ~ uint8 x scale, the row's
    largest value mapped to ``levels``, rounded to nearest."""
    values = torch.relu(values)
    peak = values.amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    # Truncating x + 0.5 rounds to nearest: x is in [0, levels].
    return (values * (levels / peak) + 0.5).to(torch.uint8), peak / levels


def rescale(sums: torch.Tensor, row_scales: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A layer's fp32 pre-activations from its channel-scaled sums (M, N): times each row's scale, plus bias."""
    return sums * row_scales + bias


def requantize(sums: torch.Tensor, row_scales: torch.Tensor, bias: torch.Tensor,
               levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One hidden layer's output, ReLU'd, as the next layer's uint8 rows and row scales."""
    return quantize_rows(rescale(sums, row_scales, bias), levels)


def dequantize(sums: torch.Tensor, row_scales: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The last hidden layer's output, ReLU'd, in fp32 for the fp32 output layer."""
    return torch.relu(rescale(sums, row_scales, bias))


@lru_cache(maxsize=None)
def fused(step: Callable) -> Callable:
    """``step`` compiled into one pass over memory: eager, its several passes cost more than int8 saves."""
    return torch.compile(step, dynamic=True)


def int8_mlp_tail(hidden: torch.Tensor, linears: list[nn.Linear]) -> torch.Tensor:
    """``liif.models.liif.mlp_tail`` with the hidden Linear + ReLU layers as int8 GEMMs; the last Linear fp32."""
    *hidden_layers, output_layer = linears
    flat = hidden.reshape(-1, hidden.shape[-1])
    if not hidden_layers:
        return output_layer(torch.relu(hidden))
    levels = activation_levels()
    rows, row_scales = fused(quantize_rows)(flat, levels)
    for linear in hidden_layers[:-1]:
        layer = quantized(linear)
        rows, row_scales = fused(requantize)(layer.scaled_sums(rows), row_scales, layer.bias, levels)
    layer = quantized(hidden_layers[-1])
    flat = fused(dequantize)(layer.scaled_sums(rows), row_scales, layer.bias)
    return output_layer(flat).view(*hidden.shape[:-1], -1)


def active(hidden: torch.Tensor) -> bool:
    """Whether this query runs in int8: inside ``decoding()``, CPU fp32 inference, not traced by torch.compile
    (which cannot read the context variable; ``liif upscale`` refuses --compile with int8)."""
    return (not torch.compiler.is_compiling() and _decoding.get() and hidden.device.type == "cpu"
            and hidden.dtype == torch.float32 and not torch.is_grad_enabled())


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """Within this context, LIIF's fast query decodes its hidden layers in int8 (CPU inference only)."""
    token = _decoding.set(True)
    try:
        yield
    finally:
        _decoding.reset(token)
