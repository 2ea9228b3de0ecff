"""On a CUDA device: the same function as on the CPU, mixed precision within bounds, and every command end to end.

Marked ``gpu`` and skipped without CUDA, so CI on CPU passes. On a GPU machine:
``python3 -m pytest -q -m gpu tests/test_gpu.py`` (about 2-3 minutes on an H100; benchmarks/gpu_run.sh runs it).
Shared material comes from ../shared, or from $LIIF_SHARED (the GPU machine's copy, .gpu_data) via conftest.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import liif
from conftest import (BENCHMARKS, DECODERS, QUERY_SETS, REFERENCE, ROOT, TINY, TINY_FIXTURES, gpu_check_with,
                      query_set_outputs, run_group, shared_file)
from facts import REFERENCE_Y_PSNR
from liif.checkpoint import read_checkpoint
from liif.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

DECODER_FIXTURES = ["tiny-edsr-metasr", "tiny-edsr-lte"]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.fixture(autouse=True)
def tf32_off():
    """Full fp32 matrix products and convolutions (TF32 would cost about 1e-3 relative), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module", autouse=True)
def cpu_threads():
    """More CPU threads than conftest's 2 for the CPU side of the comparisons (a GPU machine has 16 cores)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(max(saved, min(8, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(saved)


def subprocess_env() -> dict[str, str]:
    """This process's environment with the working tree's src first (the package is not installed there)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "4")
    return env


def max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float((a[k] - b[k]).abs().max()) for k in a}


def load_pair(source, query_path: str):
    """The same model on the CPU and on CUDA, both on ``query_path``."""
    cpu, gpu = liif.load_model(source, "cpu"), liif.load_model(source, "cuda")
    cpu.query_path = gpu.query_path = query_path
    return cpu, gpu


@pytest.mark.parametrize("query_path", ["fast", "reference"])
@pytest.mark.parametrize("name", [*TINY_FIXTURES, *DECODER_FIXTURES, "edsr-baseline-liif"])
def test_cuda_output_equals_cpu_output_on_the_reference_fixtures(name: str, query_path: str) -> None:
    if name == "edsr-baseline-liif":  # the built-in released weights
        source, fixture = name, np.load(shared_file(REFERENCE / "edsr-baseline-liif-release.npz"))
    else:
        folder = DECODERS if name in DECODER_FIXTURES else REFERENCE
        source, fixture = shared_file(folder / f"{name}.pth"), np.load(shared_file(folder / f"{name}.npz"))
    cpu, gpu = load_pair(source, query_path)
    on_gpu, on_cpu = query_set_outputs(gpu, fixture), query_set_outputs(cpu, fixture)
    expected = {k: torch.from_numpy(fixture[f"{k}.pred"]) for k in QUERY_SETS}
    assert max(max_abs(on_gpu, on_cpu).values()) <= 1e-4, max_abs(on_gpu, on_cpu)
    assert max(max_abs(on_gpu, expected).values()) <= 1e-4, max_abs(on_gpu, expected)


def bird_input(size: int = 96) -> torch.Tensor:
    """A real (1, 3, size, size) patch of Set5 bird, normalised as (x - 0.5) / 0.5."""
    img = Image.open(shared_file(BENCHMARKS / "Set5" / "bird.png")).convert("RGB").crop((60, 60, 60 + size, 60 + size))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    return (x - 0.5) / 0.5


def render_grid(model, inp: torch.Tensor, size: tuple[int, int], chunk: int = 30000) -> torch.Tensor:
    """The whole output grid of ``size`` through encode, latents and query_chunked (several chunks)."""
    device = next(model.parameters()).device
    coord = liif.make_coord(size, device=device).unsqueeze(0)
    cell = liif.make_cell(coord, size)
    with torch.no_grad():
        latents = model.latents(model.encode(inp.to(device)))
        return model.query_chunked(latents, coord, cell, chunk_size=chunk).float().cpu()


@pytest.mark.parametrize("query_path", ["fast", "reference"])
def test_release_model_renders_a_real_picture_on_cuda_as_on_cpu(query_path: str) -> None:
    cpu, gpu = load_pair("edsr-baseline-liif", query_path)
    inp = bird_input(64)
    size = (230, 198)  # x3.6 by x3.1: non-integer scales, several chunks
    diff = (render_grid(gpu, inp, size, chunk=10000) - render_grid(cpu, inp, size, chunk=10000)).abs()
    assert float(diff.max()) <= 1e-4, float(diff.max())


@pytest.mark.parametrize("query_path", ["fast", "reference"])
def test_bf16_autocast_stays_close_to_fp32(query_path: str) -> None:
    """bf16 keeps 8 significant bits (relative rounding 2^-9, about 0.2%) on the inputs of every convolution and
    linear layer (products accumulate in fp32); through the 36 layers of the released model that is about 1e-3 on
    average in the normalised [-1, 1] space. Emulated on a CPU (torch.autocast('cpu', bfloat16)), a 96x96 Set5
    patch at x2 gives a mean absolute difference of 0.0008 (fast) and 0.0019 (reference), a maximum of 0.005 and
    0.043 (the reference path rounds the relative coordinates to bf16 too), and 56-65 dB PSNR against fp32.
    The bounds below are about 5x looser: a mean within 0.01 (1.3 levels of 8 bits, whose step is 2/255 here), a
    maximum within 0.15 (rare pixels on edges), and 45 dB against fp32, far above the 5 dB LIIF gains over bicubic.
    """
    model = liif.load_model("edsr-baseline-liif", "cuda")
    model.query_path = query_path
    inp, size = bird_input(96), (192, 192)
    fp32 = render_grid(model, inp, size)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = render_grid(model, inp, size)
    assert torch.isfinite(bf16).all()
    diff = (bf16 - fp32).abs()
    mse = float((((bf16 * 0.5 + 0.5).clamp(0, 1) - (fp32 * 0.5 + 0.5).clamp(0, 1)) ** 2).mean())
    psnr = -10 * math.log10(max(mse, 1e-20))
    stats = {"mean": float(diff.mean()), "max": float(diff.max()), "psnr_vs_fp32": psnr}
    assert stats["mean"] <= 0.01 and stats["max"] <= 0.15 and psnr >= 45, stats


def test_a_model_put_on_cuda_encodes_channels_last_with_the_auto_tile_and_renders_as_on_cpu() -> None:
    from liif.runtime import render_tile
    from liif.upscale import resolve_model

    gpu = resolve_model("edsr-baseline-liif", torch.device("cuda"))
    cpu = resolve_model("edsr-baseline-liif", torch.device("cpu"))
    assert gpu.channels_last and not cpu.channels_last
    assert gpu.encoder.head[0].weight.is_contiguous(memory_format=torch.channels_last)
    tile = render_tile(torch.device("cuda"))
    assert tile in (256, 512, 1024), tile
    image = bird_input(96) * 0.5 + 0.5
    size = (250, 230)
    on_gpu = liif.render(gpu, image.cuda(), size).cpu()  # the auto tile: the whole picture in one tile
    on_cpu = liif.render(cpu, image, size, tile=32)
    diff = float((on_gpu - on_cpu).abs().max())
    assert diff <= 1e-4, diff


def test_upscale_cli_kernel_triton_on_cuda_matches_torch(tmp_path: Path) -> None:
    """``liif upscale --kernel triton`` end to end on the GPU: the picture ``--kernel torch`` writes, within a
    level after rounding."""
    pytest.importorskip("triton", reason="triton is not installed")
    bird = shared_file(BENCHMARKS / "Set5" / "bird.png")
    pixels = {}
    for kernel in ("torch", "triton"):
        out = tmp_path / f"bird_{kernel}.png"
        result = run_group([sys.executable, "-m", "liif", "upscale", bird, "--scale", "2.5", "-o", out,
                            "--device", "cuda", "--kernel", kernel, "--quiet"],
                           env=subprocess_env(), timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        pixels[kernel] = np.asarray(Image.open(out)).astype(int)
    assert pixels["triton"].shape == pixels["torch"].shape == (720, 720, 3)
    assert np.abs(pixels["triton"] - pixels["torch"]).max() <= 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_upscale_cli_on_cuda_writes_the_right_size(tmp_path: Path, precision: str) -> None:
    bird = shared_file(BENCHMARKS / "Set5" / "bird.png")  # 288x288
    out = tmp_path / f"bird_{precision}.png"
    result = run_group([sys.executable, "-m", "liif", "upscale", bird, "--scale", "2.5", "-o", out,
                        "--device", "cuda", "--precision", precision, "--quiet"],
                       env=subprocess_env(), timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(out) as img:
        assert img.size == (720, 720) and img.mode == "RGB"
        pixels = np.asarray(img)
    assert 20 < pixels.mean() < 235  # a picture, not a blank or saturated frame


def test_eval_on_cuda_matches_the_readme_set5_x4_psnr(tmp_path: Path) -> None:
    set5 = shared_file(BENCHMARKS / "Set5")
    result = run_group([sys.executable, "-m", "liif", "eval", "--device", "cuda", "--data", set5, "--scales", "4",
                        "--degrade", "pil", "--out", tmp_path / "eval", "--quiet"], env=subprocess_env(), timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    psnr = json.loads((tmp_path / "eval" / "results.json").read_text())["Set5"]["x4"]["psnr"]
    # liif eval runs cuDNN with its defaults (TF32 convolutions allowed): still within 0.01 dB of the CPU figure
    assert abs(psnr - REFERENCE_Y_PSNR[4]) <= 0.01, psnr


def train_args(run: Path, *extra: str) -> list[str]:
    set14 = shared_file(BENCHMARKS / "Set14")
    return ["--config", str(SMOKE), "--out", str(run), "--set", f"train_dataset.dataset.args.root_path={set14}",
            "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=2", "--set", "device=cuda",
            "--set", "epoch_max=1", *extra]


def check_run(run: Path, processes: int = 1) -> float:
    """The run wrote its checkpoint and trained on CUDA with a finite loss; that loss."""
    ckpt = read_checkpoint(run / "epoch-last.pth")
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 7
    log = (run / "log.txt").read_text()
    assert f"{processes} process(es), cuda" in log, log
    loss = float(re.search(r"epoch 1/1: loss ([^,\s]+)", log).group(1))
    assert math.isfinite(loss) and 0 < loss < 2, log
    assert all(torch.isfinite(v).all() for v in ckpt["model"]["sd"].values() if v.is_floating_point())
    model = liif.load_model(run / "epoch-last.pth")  # reference format: loads on the CPU as it is
    assert not any(k.startswith("module.") for k in model.state_dict())
    return loss


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_train_smoke_on_cuda(tmp_path: Path, amp: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--quiet", *train_args(tmp_path / "run", "--set", f"amp={amp}")])
    assert exit_info.value.code == 0
    check_run(tmp_path / "run")


def test_train_under_torchrun_one_process_on_cuda(tmp_path: Path) -> None:
    """The torchrun launch path on a GPU (one process: liif trains without a process group then)."""
    result = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                        "-m", "liif", "train", "--quiet", *train_args(tmp_path / "run")],
                       env=subprocess_env(), timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(tmp_path / "run")


def test_training_on_cuda_uses_fused_adam_which_updates_like_plain_adam() -> None:
    from liif.training.loop import build_optimizer

    torch.manual_seed(0)
    models = [liif.load_model("edsr-baseline-liif", "cuda").train() for _ in range(2)]
    fused = build_optimizer(models[0], {"name": "adam", "args": {"lr": 1e-3}})
    plain = build_optimizer(models[1], {"name": "adam", "args": {"lr": 1e-3, "fused": False}})
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    inp, coord = torch.rand(2, 3, 24, 24, device="cuda") * 2 - 1, torch.rand(2, 300, 2, device="cuda") * 2 - 1
    cell, gt = torch.full((2, 300, 2), 2 / 72, device="cuda"), torch.rand(2, 300, 3, device="cuda") * 2 - 1
    for _ in range(3):
        for model, optimizer in zip(models, (fused, plain)):
            optimizer.zero_grad()
            torch.nn.functional.l1_loss(model(inp, coord, cell), gt).backward()
            optimizer.step()
    for (key, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), key


NCCL_SCRIPT = '''
import copy, os, sys
import torch, torch.distributed as dist
import liif
dist.init_process_group("nccl")
assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
rank = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(rank)
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
model = liif.load_model(sys.argv[1], "cuda").train()
plain = copy.deepcopy(model)
ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank])
opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (ddp, plain)]
g = torch.Generator().manual_seed(0)
for _ in range(3):
    inp = (torch.rand(2, 3, 24, 24, generator=g) * 2 - 1).cuda()
    coord = (torch.rand(2, 500, 2, generator=g) * 2 - 1).cuda()
    cell = torch.full((2, 500, 2), 2 / 72).cuda()
    gt = (torch.rand(2, 500, 3, generator=g) * 2 - 1).cuda()
    for net, opt in zip((ddp, plain), opts):
        loss = torch.nn.functional.l1_loss(net(inp, coord, cell), gt)
        assert torch.isfinite(loss), loss
        opt.zero_grad(); loss.backward(); opt.step()
t = torch.ones(1, device="cuda"); dist.all_reduce(t); assert t.item() == 1
for (k, a), b in zip(model.state_dict().items(), plain.state_dict().values()):
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), k
dist.destroy_process_group()
print("nccl ddp ok")
'''


def test_ddp_with_nccl_trains_like_a_single_process(tmp_path: Path) -> None:
    """DistributedDataParallel over nccl, one process under torchrun: gradients all-reduced, same weights."""
    script = tmp_path / "nccl_ddp.py"
    script.write_text(NCCL_SCRIPT)
    result = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                        script, shared_file(TINY)], env=subprocess_env(), timeout=120)
    assert result.returncode == 0 and "nccl ddp ok" in result.stdout, result.stderr[-3000:]


def test_queries_compiled_as_cuda_graphs_render_as_eager() -> None:
    """``compile_queries("reduce-overhead")`` (liif upscale --compile reduce-overhead): torch.compile and CUDA graph
    replays over tiles and chunks of several shapes give the eager pixels; one graph serves them all."""
    from torch._dynamo.utils import counters

    model = liif.load_model(shared_file(TINY), "cuda")
    image = (bird_input(96) * 0.5 + 0.5).cuda()
    sizes = [(250, 230), (97, 301)]
    eager = [liif.render(model, image, size, tile=40, chunk_size=4096).cpu() for size in sizes]
    torch._dynamo.reset()
    counters.clear()
    model.compile_queries("reduce-overhead")
    for _ in range(2):  # the second pass replays the graphs the first recorded
        for size, expected in zip(sizes, eager):
            got = liif.render(model, image, size, tile=40, chunk_size=4096).cpu()
            diff = float((got - expected).abs().max())
            assert diff <= 1e-4, (size, diff)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_train_smoke_compiled_on_cuda(tmp_path: Path) -> None:
    """``compile: true`` (torch.compile of the training step's model); in a subprocess, bounded in time. Late in
    the file: compiling is the slowest and least predictable step."""
    result = run_group([sys.executable, "-m", "liif", "train", "--quiet",
                        *train_args(tmp_path / "run", "--set", "compile=true")], env=subprocess_env(), timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    check_run(tmp_path / "run")


def test_video_on_cuda_batches_frames_like_single_frames(tmp_path: Path) -> None:
    """Video upscaling on the GPU: 4 frames per model call render as 1 frame per call does (within one level
    after truncation), every frame and the sound are kept."""
    from clips import make_clip, packets

    source = make_clip(tmp_path / "clip.mp4", frames=12, size=(64, 48))
    model = liif.load_model("edsr-baseline-liif", "cuda")
    for batch in (1, 4):
        result = liif.upscale_video(source, tmp_path / f"b{batch}.mkv", scale=2.5, codec="ffv1", model=model,
                                    batch=batch)
        assert (result.frames, result.size) == (12, (160, 120))
    import av

    frames = {}
    for batch in (1, 4):
        with av.open(str(tmp_path / f"b{batch}.mkv")) as container:
            frames[batch] = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    assert len(frames[4]) == 12
    assert max(np.abs(a - b).max() for a, b in zip(frames[1], frames[4])) <= 1
    assert packets(tmp_path / "b4.mkv", "audio") == packets(source, "audio")


# A case that spoils its process's CUDA context (a device-side assert: an index out of bounds on the GPU) between
# two that do not.
CONTEXT_SPOILING = """
def spoil(ctx):
    torch = ctx.torch
    torch.zeros(4, device="cuda")[torch.tensor([10], device="cuda")]
    torch.cuda.synchronize()


def section_query(ctx, result):
    gpu_check.attempt(ctx, result, "before", lambda: {"value": float(ctx.torch.ones(1, device="cuda").sum())})
    gpu_check.attempt(ctx, result, "spoil", lambda: spoil(ctx))
    gpu_check.attempt(ctx, result, "after", lambda: {"value": float(ctx.torch.ones(3, device="cuda").sum())})
"""


def test_gpu_check_runs_the_cases_after_one_that_spoils_the_cuda_context_in_a_new_process(tmp_path: Path) -> None:
    query = gpu_check_with(tmp_path, CONTEXT_SPOILING, "--sections", "query")["sections"]["query"]
    cases = {case["label"]: case for case in query["cases"]}
    assert cases["before"]["value"] == 1 and cases["after"]["value"] == 3, query
    assert cases["spoil"]["error"].endswith("(the CUDA context is lost)"), query
    assert query["notes"] == ["the section's process lost its CUDA context during 'spoil'; a new process ran the "
                              "cases after it"], query


# The Triton kernels in this process last: an illegal memory access spoils the process's CUDA context, and every
# test after it on the GPU would fail too.
KERNEL_ENTRY = {"triton": "fused_query", "triton-first-layer": "first_layer"}


@pytest.mark.parametrize("kernel", ["triton", "triton-first-layer"])
@pytest.mark.parametrize("name", ["tiny-edsr-liif", "tiny-edsr-liif-no-ensemble", "edsr-baseline-liif"])
def test_triton_kernels_on_cuda_equal_the_torch_fast_path(name: str, kernel: str, kernel_launches) -> None:
    """The compiled kernels (tests/test_triton_kernel.py checks them in the interpreter) on every query set of
    the reference fixtures, edges and ties included; fp32 with TF32 off."""
    if name == "edsr-baseline-liif":
        source, fixture = name, np.load(shared_file(REFERENCE / "edsr-baseline-liif-release.npz"))
    else:
        source, fixture = shared_file(REFERENCE / f"{name}.pth"), np.load(shared_file(REFERENCE / f"{name}.npz"))
    model = liif.load_model(source, "cuda")
    expected = query_set_outputs(model, fixture)
    model.query_kernel = kernel
    got = query_set_outputs(model, fixture)
    assert kernel_launches[KERNEL_ENTRY[kernel]] == len(QUERY_SETS)
    assert max(max_abs(got, expected).values()) <= 1e-4, max_abs(got, expected)


@pytest.mark.parametrize("kernel", ["triton", "triton-first-layer"])
def test_triton_kernels_render_a_real_picture_as_torch_in_fp32_and_bf16(kernel: str, kernel_launches) -> None:
    """The released model over a whole output grid in chunks: fp32 within 1e-4 of the torch fast path; under bf16
    autocast within test_bf16_autocast_stays_close_to_fp32's bounds of fp32 and of torch's own bf16."""
    model = liif.load_model("edsr-baseline-liif", "cuda")
    inp, size = bird_input(96), (192, 192)
    renders = {}
    for kind in ("torch", kernel):
        model.query_kernel = kind
        renders[kind, "fp32"] = render_grid(model, inp, size, chunk=10000)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            renders[kind, "bf16"] = render_grid(model, inp, size, chunk=10000)
    assert kernel_launches[KERNEL_ENTRY[kernel]] == 2 * math.ceil(192 * 192 / 10000)
    fp32_diff = float((renders[kernel, "fp32"] - renders["torch", "fp32"]).abs().max())
    assert fp32_diff <= 1e-4, fp32_diff
    for reference in (renders["torch", "fp32"], renders["torch", "bf16"]):
        bf16 = renders[kernel, "bf16"]
        assert torch.isfinite(bf16).all()
        diff = (bf16 - reference).abs()
        mse = float((((bf16 * 0.5 + 0.5).clamp(0, 1) - (reference * 0.5 + 0.5).clamp(0, 1)) ** 2).mean())
        stats = {"mean": float(diff.mean()), "max": float(diff.max()), "psnr": -10 * math.log10(max(mse, 1e-20))}
        assert stats["mean"] <= 0.01 and stats["max"] <= 0.15 and stats["psnr"] >= 45, stats
