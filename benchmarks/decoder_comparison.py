"""The README's decoder comparison table from ``liif eval --out DIR`` results: one table per dataset, a row per
decoder plus bicubic (PSNR-Y in dB), columns by scale.

    python benchmarks/decoder_comparison.py LIIF=runs/eval-liif MetaSR=runs/eval-metasr LTE=runs/eval-lte
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="a label and a liif eval --out folder")
    args = parser.parse_args()
    results = {}
    for item in args.runs:
        label, _, folder = item.partition("=")
        found = Path(folder) / "results.json"
        if not label or not folder:
            parser.error(f"{item}: not LABEL=DIR")
        if not found.is_file():
            parser.error(f"{found}: no such file ({label}'s DIR is not a liif eval --out folder)")
        results[label] = json.loads(found.read_text())
    first = next(iter(results.values()))
    for dataset, by_scale in first.items():
        keys = list(by_scale)
        print(f"| {dataset} | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        print("| bicubic | " + " | ".join(f"{by_scale[k]['bicubic_psnr']:.2f}" for k in keys) + " |")
        for label, result in results.items():
            print(f"| {label} | " + " | ".join(f"{result[dataset][k]['psnr']:.2f}" for k in keys) + " |")
        print()


if __name__ == "__main__":
    main()
