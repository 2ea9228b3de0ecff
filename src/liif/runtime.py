"""Where and how the model runs: the device (auto, cpu, cuda, cuda:N, mps), the precision, the query chunk and
the render tile.

``upscale``, ``eval`` and ``train`` all resolve their ``--device`` and precision here, so a name means the
same everywhere and a device that is not there is one clear error.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Iterator

import torch

from liif.errors import LiifError

# int8 names the dtype of LIIF's hidden-layer GEMMs (``liif.models.int8``); the rest autocast.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}
# How queries may run: eagerly, compiled by torch.compile, or compiled and replayed as CUDA graphs.
COMPILE_MODES = ("none", "default", "reduce-overhead")
# Queries per chunk on the CPU: 4 neighbours x 4096 rows x 256 floats = 16 MiB per activation, small enough
# to stay below glibc's largest mmap threshold (so buffers come from the heap; the command keeps them there,
# ``liif.cli.keep_freed_buffers``) and cache-friendly.
CPU_CHUNK = 4096
# A GPU chunk is sized from free memory at this many bytes per query (activations of every ensemble member
# and layer, with room to spare), capped where larger chunks stop paying.
GPU_BYTES_PER_QUERY = 64 << 10
GPU_MAX_CHUNK = 1 << 20
# Render tile side in latents on the CPU (and MPS): windows that stay in cache and bound memory.
CPU_TILE = 256
# A GPU tile is sized from free memory at this many bytes per latent of the encoded window (RDN's widest
# activations in fp32, with room to spare), using at most a quarter of it, and capped where larger tiles stop
# paying: 1024 measured 1.6x faster than 256 end to end on an H200 (BENCHMARKS.md), and the renderer's block
# limit caps it at x2 anyway.
GPU_BYTES_PER_LATENT = 16 << 10
GPU_MAX_TILE = 1024


def mps_available() -> bool:
    """Whether this torch has Apple's Metal backend and a device for it."""
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def pick_device(name: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` takes CUDA, then MPS, then the CPU; ``cuda`` is this process's GPU (``local_rank`` under torchrun).

    A named device must exist on this machine: anything else is a one-line LiifError.
    """
    name = str(name).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise LiifError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if kind == "mps" and not mps_available():
        raise LiifError("device mps is not available on this machine (it needs Apple silicon and a torch with MPS)")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        number = int(index) if index else (local_rank or 0)
        if number >= count:
            raise LiifError(f"device {name} is not available on this machine "
                            f"({count} CUDA device{'s' if count != 1 else ''} found)")
        return torch.device("cuda", number)
    return torch.device(kind)


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "flags", ...); empty where there is none."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    return frozenset(cpu_info().get("flags", "").split())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX), where bf16 can be faster than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_int8() -> bool:
    """Whether this CPU has AMX int8 tiles, the only kind where int8 decoding was measured faster than fp32
    (BENCHMARKS.md); VNNI alone is not enough to promise it."""
    return "amx_int8" in cpu_flags()


def has_cpp_compiler() -> bool:
    """Whether torch.compile finds the C++ compiler it builds CPU kernels with (g++, or $CXX)."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    try:
        get_cpp_compiler()
    except Exception:  # inductor raises its own error types for a missing or unusable compiler
        return False
    return True


def check_precision(device: torch.device, precision: str, model: torch.nn.Module | None = None) -> None:
    """Refuse a precision this device cannot run well: fp16 on the CPU, bf16 on a CPU without native bf16,
    int8 anywhere but a CPU with AMX int8 (and a C++ compiler for its fused kernels), or for a ``model``
    that cannot decode in int8 (only LIIF's fast query path can: ``decodes_int8``)."""
    if precision not in PRECISIONS:
        raise LiifError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "int8":
        check_int8(device)
        if model is not None and not getattr(model, "decodes_int8", False):
            raise LiifError(f"precision int8 is for LIIF's fast query path; this {type(model).__name__} model "
                            "cannot decode in int8, use fp32")
        return
    if device.type != "cpu" or precision == "fp32":
        return
    if precision == "fp16":
        raise LiifError("precision fp16 is for GPUs; on the CPU use fp32, or bf16 where the CPU has it")
    if not cpu_has_bf16():
        raise LiifError("precision bf16 needs a GPU or a CPU with native bf16 (AVX512_BF16 or AMX); "
                        "this CPU has neither, use fp32")


def check_int8(device: torch.device) -> None:
    """int8 runs on CPUs with AMX int8 only (and a C++ compiler for its fused steps)."""
    if device.type != "cpu":
        raise LiifError(f"precision int8 is for CPUs with AMX; on {device.type} use bf16 or fp16")
    if not cpu_has_int8():
        raise LiifError("precision int8 needs a CPU with AMX int8 (where it was measured faster than fp32); "
                        "this CPU has none, use fp32" + (" or bf16" if cpu_has_bf16() else ""))
    if not has_cpp_compiler():
        raise LiifError("precision int8 builds its kernels with torch.compile, which needs a C++ compiler "
                        "(g++, or the one $CXX names); none found, use fp32")


def autocast(device: torch.device, precision: str = "fp32",
             model: torch.nn.Module | None = None) -> contextlib.AbstractContextManager:
    """Mixed precision for ``model``'s matrix products (checked by ``check_precision``); fp32 is a no-op, int8
    decodes LIIF's hidden layers in int8."""
    check_precision(device, precision, model)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "int8":
        from liif.models import int8  # the models import this module
        return int8.decoding()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


@contextlib.contextmanager
def torch_settings(threads: int | None = None, deterministic: bool = False) -> Iterator[None]:
    """torch's CPU ``threads`` (None: as they are) and, when ``deterministic``, its deterministic algorithms for a
    with-block; both are process-wide, so the caller's come back at its end, raised or not."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(saved[0])
        # only when changed: torch's setter imports its compiler stack (torch._inductor, triton), which a Ctrl-C
        # while the model was built (the same import) can leave half-imported, and the Ctrl-C became its traceback
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
                != saved[1:]:
            torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


def query_chunk(device: torch.device, batch: int = 1) -> int:
    """Queries per model call for each of ``batch`` pictures: cache-sized on the CPU, sized from free memory
    on a GPU (shared by the batch)."""
    if device.type != "cuda":
        return CPU_CHUNK
    free, _ = torch.cuda.mem_get_info(device)
    return max(CPU_CHUNK, min(GPU_MAX_CHUNK, free // (GPU_BYTES_PER_QUERY * batch)))


def render_tile(device: torch.device, batch: int = 1) -> int:
    """The renderer's tile side in latents for ``batch`` pictures at once: ``CPU_TILE`` off CUDA; on a GPU the
    largest power of two from ``CPU_TILE`` to ``GPU_MAX_TILE`` whose windows fit a quarter of free memory."""
    if device.type != "cuda":
        return CPU_TILE
    free, _ = torch.cuda.mem_get_info(device)
    tile = CPU_TILE
    while tile < GPU_MAX_TILE and (2 * tile) ** 2 * GPU_BYTES_PER_LATENT * batch <= free // 4:
        tile *= 2
    return tile


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(needed: int, what: str, device: torch.device) -> None:
    """A LiifError unless ``needed`` bytes for ``what`` fit in what ``device`` has free now (a GPU's memory, else the
    machine's): a buffer beyond it would fail deep in torch, or be filled until the system kills the process."""
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    if free is not None and needed > free:
        raise LiifError(f"{what} needs {needed / 2**30:.1f} GiB of memory, only {free / 2**30:.1f} GiB is available")
