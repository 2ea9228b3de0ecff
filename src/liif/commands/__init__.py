"""One module per subcommand (``add_arguments`` and ``run``); the options they share are defined here once."""

from __future__ import annotations

import argparse

from liif.pretrained import DEFAULT_MODEL
from liif.runtime import PRECISIONS


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device`` and ``--precision``, as every command that renders takes them."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"built-in name or .pth path (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="bf16 or fp16 on a GPU; bf16 on a CPU with native bf16; int8 on a CPU with "
                             "AMX, LIIF only (default fp32)")
