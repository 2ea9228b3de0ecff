"""Training iterations per second of EDSR-baseline-LIIF (batch 16, 48x48 LR, 2304 queries), fast vs reference path.

Both query paths train the same model from the same weights on the same batches, in one run, alternating
so that a change in machine load hits both alike. Data loading is excluded (batches are made up front).
The step is timed in two parts: the encoder (forward and backward, the same in both paths) and the rest.

    python benchmarks/train_speed.py [--threads 2] [--iters 5] [--device cpu|cuda]

``batches``, ``reference_spec`` and ``step`` are shared with ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import BENCHMARK_SETS, ROOT, run_script
from liif.data import build_dataset
from liif.registry import make
from liif.runtime import pick_device
from liif.training.config import load_config



RECIPE = ROOT / "configs" / "train-div2k" / "edsr-baseline-liif.yaml"  # the reference's EDSR-baseline-LIIF


def batches(images: Path, count: int, batch_size: int | None = None) -> list[dict[str, torch.Tensor]]:
    """``count`` training batches over ``images``, sampled as the recipe's training set is (48x48 LR crops, 2304
    queries, x1 to x4), of the recipe's batch size unless ``batch_size`` is given."""
    train = load_config(RECIPE)["train_dataset"]
    section = {"dataset": {"name": "image-folder", "args": {"root_path": str(images), "cache": "in_memory"}},
               "wrapper": train["wrapper"]}
    batch_size = batch_size or train["batch_size"]
    dataset = build_dataset(section)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                         sampler=[(i % len(dataset), i // len(dataset)) for i in range(count * batch_size)])
    return list(loader)


def reference_spec() -> dict:
    """The EDSR-baseline-LIIF model spec of the reference recipe."""
    return load_config(RECIPE)["model"]


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
         sync, amp: torch.dtype | None = None, losses: list[torch.Tensor] | None = None) -> float:
    """One training step, as ``model(inp, coord, cell)`` does it, split at the feature map; the encoder's seconds.

    ``amp`` (torch.bfloat16 or torch.float16) runs the forward passes under ``torch.autocast``; the loss is in
    float32. ``losses``, when given, gets each step's loss (a detached tensor: no synchronisation).
    """
    def autocast():
        if amp is None:
            return contextlib.nullcontext()
        return torch.autocast(batch["inp"].device.type, dtype=amp)

    start = time.perf_counter()
    with autocast():
        feat = model.encode(model.data_norm.to_model(batch["inp"]))
    sync()
    encoder = time.perf_counter() - start
    detached = feat.detach().requires_grad_()
    with autocast():
        pred = model.query(model.latents(detached), batch["coord"], batch["cell"])
    loss = F.l1_loss(pred.float(), model.data_norm.to_target(batch["gt"]))
    if losses is not None:
        losses.append(loss.detach())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    start = time.perf_counter()
    feat.backward(detached.grad)
    sync()
    encoder += time.perf_counter() - start
    optimizer.step()
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per path (after 1 warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=Path, default=BENCHMARK_SETS / "Set14",
                        help="folder of training pictures (default Set14)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    spec = reference_spec()
    torch.manual_seed(0)
    base = make(spec)
    data = [{k: v.to(device) for k, v in b.items()} for b in batches(args.images, args.iters + 1)]
    runs = {}
    for path in ("fast", "reference"):
        model = copy.deepcopy(base).to(device)
        model.query_path = path
        runs[path] = (model, torch.optim.Adam(model.parameters(), lr=1e-4), [], [])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i, batch in enumerate(data):
        for path, (model, optimizer, times, encoder_times) in runs.items():
            sync()
            start = time.perf_counter()
            encoder = step(model, optimizer, batch, sync)
            sync()
            if i > 0:  # the first iteration warms up allocators and kernels
                times.append(time.perf_counter() - start)
                encoder_times.append(encoder)
    rates = {path: len(times) / sum(times) for path, (_, _, times, _) in runs.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}, {args.threads} threads"
    print(f"torch {torch.__version__}, {where}, batch 16, 48x48 LR, 2304 queries, {args.iters} timed iterations each")
    for path, (_, _, times, encoder_times) in runs.items():
        encoder, total = sum(encoder_times) / len(times), sum(times) / len(times)
        print(f"{path:>9} path: {rates[path]:.3f} it/s ({total:.2f} s/it: encoder forward+backward {encoder:.2f} s, "
              f"query, loss and Adam {total - encoder:.2f} s)")
    print(f"speed-up: {rates['fast'] / rates['reference']:.2f}x")


if __name__ == "__main__":
    run_script(main)
