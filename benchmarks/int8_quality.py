"""int8 decoding on the CPU against fp32 (and bf16 where the CPU has it): Set14 PSNR-Y and decoder speed, one run.

Quality: ``liif.evaluate`` (the ``liif eval`` protocol: PIL bicubic LR, PSNR on Y with the scale as shave) of the
released EDSR-baseline-LIIF at each scale in each precision; per scale the mean PSNR, the mean loss against fp32
and the image that loses most. Speed: the decoder alone (``query_chunked`` on the latents of a fixed Set14 crop,
every pixel of its x4 grid, the default chunk) and the whole ``liif.render`` of the same crop, the precisions
alternating, best of --repeats after a warm-up (which includes int8's one-off kernel compilation). The issue's
rule for shipping int8, at x4: at most 0.02 dB mean loss, at most 0.1 dB on the worst image, at least 1.5x the
decoder speed of fp32.

    python benchmarks/int8_quality.py [--scales 2,3,4] [--images N] [--repeats 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from common import BENCHMARK_SETS, best_of, run_script
import liif
from liif.commands.eval import parse_scales
from liif.evaluation.datasets import open_dataset, read_rgb
from liif.evaluation.runner import evaluate
from liif.fileio import write_text
from liif.models import int8
from liif.geometry import make_cell, make_coord
from liif.runtime import autocast, cpu_flags, cpu_has_bf16, cpu_has_int8, cpu_info

SET14 = BENCHMARK_SETS / "Set14"
SPEED_IMAGE, SPEED_CROP, SPEED_SCALE = "baboon.png", 128, 4
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
MAX_MEAN_LOSS, MAX_WORST_LOSS, MIN_SPEED_UP = 0.02, 0.1, 1.5


def cpu_name() -> str:
    return cpu_info().get("model name") or platform.processor()


def measured(precision: str) -> tuple[contextlib.AbstractContextManager, str]:
    """The context to run ``precision`` in and the precision to name to liif: on a CPU without AMX int8,
    where ``--precision int8`` is refused, int8 still runs (through ``int8.decoding()``) to be measured."""
    if precision == "int8" and not cpu_has_int8():
        return int8.decoding(), "fp32"
    return contextlib.nullcontext(), precision


def quality(model: torch.nn.Module, data: Path, scales: list[float], images: int | None,
            precisions: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """``{precision: {"x4": {image: PSNR-Y}}}`` by the eval protocol."""
    dataset = open_dataset(data)
    if images:
        dataset = dataclasses.replace(dataset, images=dataset.images[:images])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for precision in precisions:
        started = time.perf_counter()
        context, named = measured(precision)
        with context:
            results = evaluate(model, dataset, scales, degrade="pil", precision=named, progress=True)
        for s in results.scores:
            out.setdefault(precision, {}).setdefault(f"x{s.scale:g}", {})[s.image] = s.psnr
        print(f"# {precision}: Set14 scored in {time.perf_counter() - started:.0f} s", flush=True)
    return out


def speed(model: torch.nn.Module, precisions: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Best seconds of the decoder alone and of the whole render per precision, the precisions alternating."""
    picture = read_rgb(SET14 / SPEED_IMAGE)[:, :SPEED_CROP, :SPEED_CROP][None]
    size = (SPEED_CROP * SPEED_SCALE, SPEED_CROP * SPEED_SCALE)
    device = torch.device("cpu")
    with torch.no_grad():
        latents = model.latents(model.encode(model.data_norm.to_model(picture)))
    coord = make_coord(size).unsqueeze(0)
    cell = make_cell(coord, size)
    runs = {"decoder": lambda: model.query_chunked(latents, coord, cell),
            "render": lambda: liif.render(model, picture, size)}

    def run_in(precision: str, run: Callable[[], object]) -> None:
        context, named = measured(precision)
        with torch.no_grad(), context, autocast(device, named, model):
            run()

    # The precisions alternate within each measure, the measures one after the other: a render's large encoder
    # buffers between two decoder calls change what the allocator hands back to the OS, and so the page faults the
    # next call pays. The first round warms up kernels, the allocator and int8's compiled steps.
    seconds: dict[str, dict[str, float]] = {p: {} for p in precisions}
    for name, run in runs.items():
        timings = best_of({p: lambda p=p, run=run: run_in(p, run) for p in precisions}, repeats, warmup=1)
        for p in precisions:
            seconds[p][name] = timings[p].seconds
    return seconds


def losses(scores: dict[str, dict[str, dict[str, float]]], precision: str, key: str) -> tuple[float, float, str]:
    """(mean loss, worst loss, worst image) of ``precision`` against fp32 at scale ``key``, in dB (positive: worse)."""
    loss = {image: scores["fp32"][key][image] - psnr for image, psnr in scores[precision][key].items()}
    worst = max(loss, key=loss.get)
    return sum(loss.values()) / len(loss), loss[worst], worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SET14)
    parser.add_argument("--scales", default="2,3,4")
    parser.add_argument("--images", type=int, default=None, help="only the first N images (smoke tests)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = parser.parse_args()
    scales = parse_scales(args.scales)
    torch.set_num_threads(args.threads)
    flags = [f for f in SHOWN_FLAGS if f in cpu_flags()]
    print(f"# CPU: {cpu_name()}; flags: {' '.join(flags) or 'none of ' + ' '.join(SHOWN_FLAGS)}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; int8 activations up to "
          f"{int8.activation_levels()}", flush=True)
    if not cpu_has_int8():
        print("# this CPU has no AMX int8: --precision int8 is refused here; measured anyway",
              flush=True)
    precisions = ["fp32", "int8"] + (["bf16"] if cpu_has_bf16() else [])
    model = liif.load_model("edsr-baseline-liif", torch.device("cpu"))
    times = speed(model, precisions, args.repeats)
    scores = quality(model, args.data, scales, args.images, precisions)

    others = precisions[1:]
    print("\n| scale | fp32 PSNR-Y | " + " | ".join(f"{p} PSNR-Y | {p} mean loss | {p} worst loss (image)"
                                                   for p in others) + " |")
    print("|---|---|" + "---|---|---|" * len(others))
    report: dict[str, object] = {"cpu": cpu_name(), "flags": flags, "torch": torch.__version__,
                                 "threads": torch.get_num_threads(),
                                 "activation_levels": int8.activation_levels(), "images": len(scores["fp32"][f"x{scales[0]:g}"]),
                                 "psnr_y": scores, "seconds": times, "losses": {}}
    for key in scores["fp32"]:
        cells = [f"{sum(scores['fp32'][key].values()) / len(scores['fp32'][key]):.4f}"]
        for precision in others:
            mean_loss, worst_loss, worst = losses(scores, precision, key)
            mean = sum(scores[precision][key].values()) / len(scores[precision][key])
            cells += [f"{mean:.4f}", f"{mean_loss:+.4f}", f"{worst_loss:+.4f} ({Path(worst).stem})"]
            report["losses"].setdefault(precision, {})[key] = {"mean": mean_loss, "worst": worst_loss,
                                                               "worst_image": worst}
        print(f"| {key} | " + " | ".join(cells) + " |")

    crop = f"{SPEED_CROP}x{SPEED_CROP} {Path(SPEED_IMAGE).stem} -> x{SPEED_SCALE}"
    print(f"\n| {crop}, best of {args.repeats} | " + " | ".join(f"{p} s" for p in precisions) + " | "
          + " | ".join(f"{p} speed-up" for p in others) + " |")
    print("|---|" + "---|" * (len(precisions) + len(others)))
    for name in ("decoder", "render"):
        print(f"| {name} | " + " | ".join(f"{times[p][name]:.3f}" for p in precisions) + " | "
              + " | ".join(f"{times['fp32'][name] / times[p][name]:.2f}x" for p in others) + " |")

    x4 = report["losses"]["int8"].get("x4")
    speed_up = times["fp32"]["decoder"] / times["int8"]["decoder"]
    if x4 is not None:
        meets = x4["mean"] <= MAX_MEAN_LOSS and x4["worst"] <= MAX_WORST_LOSS and speed_up >= MIN_SPEED_UP
        report["meets_rule"] = meets
        print(f"\nint8 at x4: mean loss {x4['mean']:+.4f} dB (rule <= {MAX_MEAN_LOSS}), worst {x4['worst']:+.4f} dB "
              f"on {x4['worst_image']} (rule <= {MAX_WORST_LOSS}), decoder {speed_up:.2f}x (rule >= {MIN_SPEED_UP}): "
              f"{'meets' if meets else 'does not meet'} the rule")
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    run_script(main)
