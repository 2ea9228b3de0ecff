"""Time `liif eval` per dataset and scale (built-in model, CPU) and print the results table.

Usage: python benchmarks/eval_speed.py [--data DIR ...] [--scales 2,3,4,6,8] [--degrade pil] [--out DIR]
Writes the markdown table and the seconds per dataset and scale to stdout, and results.json/per_image.csv
to --out when given.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import liif
from liif.evaluation.runner import EvalResults

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None)
    parser.add_argument("--scales", default="2,3,4,6,8")
    parser.add_argument("--degrade", default="pil")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or [str(SHARED / "Set5"), str(SHARED / "Set14")]
    scales = [float(s) for s in args.scales.split(",")]
    model = liif.load_model(liif.DEFAULT_MODEL)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, degrade {args.degrade}")
    all_scores, timings = [], []
    for folder in data:
        for scale in scales:
            start = time.perf_counter()
            run = liif.evaluate(model, folder, [scale], degrade=args.degrade, progress=False)
            seconds = time.perf_counter() - start
            all_scores += run.scores
            timings.append((Path(folder).name, scale, len(run.scores), seconds))
            print(f"{Path(folder).name} x{scale:g}: {len(run.scores)} images, {seconds:.1f} s", flush=True)
    results = EvalResults(liif.DEFAULT_MODEL, all_scores)
    print()
    print(results.markdown())
    print("| dataset | " + " | ".join(f"x{s:g}" for s in scales) + " | total |")
    print("|---|" + "---|" * (len(scales) + 1))
    for name in dict.fromkeys(t[0] for t in timings):
        row = [t[3] for t in timings if t[0] == name]
        print(f"| {name} | " + " | ".join(f"{s:.0f} s" for s in row) + f" | {sum(row):.0f} s |")
    if args.out:
        results.write(args.out)


if __name__ == "__main__":
    main()
