"""One module per subcommand (``add_arguments`` and ``run``); the options they share are defined here once."""

from __future__ import annotations

import argparse

from liif.kernels import QUERY_KERNELS
from liif.pretrained import DEFAULT_MODEL
from liif.runtime import COMPILE_MODES, PRECISIONS


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--precision``, ``--kernel`` and ``--compile``, as every command that renders
    takes them (``liif.upscale.model_on`` applies them)."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"built-in name or .pth path (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="bf16 or fp16 on a GPU; bf16 on a CPU with native bf16; int8 on a CPU with "
                             "AMX, LIIF only (default fp32)")
    parser.add_argument("--kernel", default="torch", choices=QUERY_KERNELS,
                        help="what runs a LIIF query: torch (default) or a Triton kernel on CUDA (opt-in until "
                        "measured faster on a card; see README)")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="run the decoder's query chunks compiled by torch.compile: default, or reduce-overhead "
                        "(CUDA graphs too, on a GPU); the first render pays for compiling (default none: eager)")
