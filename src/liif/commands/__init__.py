"""One module per subcommand (``add_arguments`` and ``run``); the options they share are defined here once."""

from __future__ import annotations

import argparse

import torch

from liif.bounds import POSITIVE, THREADS
from liif.errors import LiifError
from liif.kernels import QUERY_KERNELS
from liif.pretrained import DEFAULT_MODEL
from liif.renderer import FEATURE_CACHE_BYTES
from liif.runtime import COMPILE_MODES, PRECISIONS


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--precision``, ``--kernel`` and ``--compile``, as every command that renders
    takes them (``liif.upscale.model_on`` applies them)."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"built-in name or .pth path (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto",
                        help="auto (the default: a GPU if there is one), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="bf16 or fp16 on a GPU; bf16 on a CPU with native bf16; int8 on a CPU with "
                             "AMX, LIIF only (default fp32)")
    parser.add_argument("--kernel", default="torch", choices=QUERY_KERNELS,
                        help="what runs a LIIF query: torch (default) or a Triton kernel on CUDA (opt-in until "
                        "measured faster on a card; see README)")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="run the decoder's query chunks compiled by torch.compile: default, or reduce-overhead "
                        "(CUDA graphs too, on a GPU); the first render pays for compiling (default none: eager)")


def add_encoder_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, odd_side: str) -> None:
    """``--codec``, ``--crf``, ``--preset`` and ``--pix-fmt``, as every command that writes videos takes them
    (``video.writer.open_frame_writer`` applies them); ``odd_side`` says what becomes of an odd side in yuv420p."""
    parser.add_argument("--codec", help="h264 (default; .webm: vp9), vp9, av1 (SVT-AV1), ffv1 (lossless, "
                        "RGB) or an FFmpeg encoder name")
    parser.add_argument("--crf", type=int, help="quality, lower is better (default: h264 18, vp9 24, av1 28)")
    parser.add_argument("--preset", help="encoder speed: h264 ultrafast..veryslow, av1 0..13, vp9 cpu-used 0..8")
    parser.add_argument("--pix-fmt", help=f"pixel format (default yuv420p, which needs even sides: an odd one is "
                        f"{odd_side}; for ffv1 RGB as the frames are: bgr0, bgra, gbrp16le or gbrap16le; for prores "
                        f"yuv422p10le, yuva444p10le with transparency)")


def add_feature_cache_option(parser: argparse.ArgumentParser) -> None:
    """``--feature-cache-mb``, for the commands whose renders share encoder windows (``feature_cache_bytes`` reads it)."""
    parser.add_argument("--feature-cache-mb", type=float, default=FEATURE_CACHE_BYTES / 2**20,
                        help=f"encoder features (and LIIF's tables of them) kept, in MB (default {FEATURE_CACHE_BYTES >> 20})")


def feature_cache_bytes(megabytes: float) -> int:
    """``--feature-cache-mb`` in bytes; a LiifError for anything not above zero."""
    return int(POSITIVE.check(megabytes, "--feature-cache-mb", LiifError) * 2**20)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads``, for the commands that render in the foreground (``set_threads`` applies it)."""
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, one per core)")


def set_threads(threads: int | None) -> None:
    """Give torch ``threads`` CPU threads; None keeps its default. A LiifError outside ``bounds.THREADS``."""
    if threads is not None:
        torch.set_num_threads(THREADS.check(threads, "--threads", LiifError))
