"""Time `liif eval` per dataset and scale (built-in model, CPU) and print the results table.

Usage: python benchmarks/eval_speed.py [--data DIR ...] [--scales 2,3,4,6,8] [--degrade pil] [--out DIR] [--overwrite]
Prints the results table and, per dataset and scale, wall seconds and process CPU seconds (CPU time stays
meaningful on a shared machine, where wall time also counts waiting for a core); writes results.json and
per_image.csv to --out when given (an earlier run's refused unless --overwrite, as liif eval does). The scales
default to the benchmark protocol's, as liif eval's.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import liif
from common import BENCHMARK_SETS, run_script
from liif.commands import set_threads
from liif.commands.eval import parse_scales
from liif.evaluation.runner import EvalResults, plan, prepare_out_dir, protocol_scales, run_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None)
    parser.add_argument("--scales", default=None)
    parser.add_argument("--degrade", default="pil")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    scales = protocol_scales("benchmark", None if args.scales is None else parse_scales(args.scales))
    if args.out:
        prepare_out_dir(args.out, args.overwrite)
    set_threads(args.threads)
    data = args.data or [str(BENCHMARK_SETS / "Set5"), str(BENCHMARK_SETS / "Set14")]
    model = liif.load_model(liif.DEFAULT_MODEL)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, degrade {args.degrade}")
    all_scores, timings = [], []
    for folder in data:
        for scale in scales:
            start, cpu_start = time.perf_counter(), time.process_time()
            run = liif.evaluate(model, folder, [scale], degrade=args.degrade, progress=False)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            all_scores += run.scores
            timings.append((Path(folder).name, scale, wall, cpu))
            print(f"{Path(folder).name} x{scale:g}: {len(run.scores)} images, {wall:.1f} s wall, {cpu:.1f} s CPU",
                  flush=True)
    # liif.evaluate's settings, for the scales of every call
    settings = run_settings(liif.DEFAULT_MODEL, liif.DEFAULT_MODEL, model, plan(data, scales, args.degrade),
                            "benchmark", args.degrade, quantize=False, self_ensemble=False, cell_clip=True,
                            precision="fp32", compile="none")
    results = EvalResults(liif.DEFAULT_MODEL, all_scores, settings=settings)
    print()
    print(results.markdown())
    print("| dataset (wall / CPU seconds) | " + " | ".join(f"x{s:g}" for s in scales) + " | total |")
    print("|---|" + "---|" * (len(scales) + 1))
    for name in dict.fromkeys(t[0] for t in timings):
        rows = [t for t in timings if t[0] == name]
        cells = [f"{wall:.0f} / {cpu:.0f}" for _, _, wall, cpu in rows]
        total = f"{sum(t[2] for t in rows):.0f} / {sum(t[3] for t in rows):.0f}"
        print(f"| {name} | " + " | ".join(cells) + f" | {total} |")
    if args.out:
        results.write(args.out, args.overwrite)


if __name__ == "__main__":
    run_script(main)
