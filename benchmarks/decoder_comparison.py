"""The README's decoder comparison table from ``liif eval --out DIR`` results: one table per dataset, a row per
decoder plus bicubic (PSNR-Y in dB), columns by scale.

    python benchmarks/decoder_comparison.py LIIF=runs/eval-liif MetaSR=runs/eval-metasr LTE=runs/eval-lte
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from liif.evaluation.runner import SETTINGS_KEY


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
        if dataset == SETTINGS_KEY:
            continue
        keys = list(by_scale)
        print(f"| {dataset} | " + " | ".join(keys) + " |")
        print("|---|" + "---|" * len(keys))
        print("| bicubic | " + " | ".join(cell(by_scale[k], "bicubic_psnr") for k in keys) + " |")
        for label, result in results.items():
            print(f"| {label} | " + " | ".join(cell(result.get(dataset, {}).get(k), "psnr") for k in keys) + " |")
        print()


def cell(means: dict | None, metric: str) -> str:
    """A mean as the table shows it: 2 decimals; ``inf`` or ``nan`` where results.json has null for it (its
    ``non_finite`` says which), and a dash where that run did not score this dataset and scale."""
    if means is None:
        return "-"
    value = means[metric]
    return f"{value:.2f}" if value is not None else means.get("non_finite", {}).get(metric, "-")


if __name__ == "__main__":
    main()
