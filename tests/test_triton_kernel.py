"""The Triton query kernels (liif.kernels) compute what the torch fast path computes, in Triton's interpreter on
the CPU (TRITON_INTERPRET=1, set per test; the kernels are built interpreted for CPU tensors whatever the order
of the tests). On a GPU, tests/test_gpu.py checks the compiled kernels the same way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import liif
from conftest import BENCHMARKS, TINY, shared_file
from facts import SMALL, liif_spec
from liif.errors import LiifError
from liif.kernels import check_kernel, set_query_kernel
from liif.registry import make

triton = pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
from liif.kernels import triton_query  # noqa: E402  (needs triton)

ENCODER = SMALL["liif"]["args"]["encoder_spec"]
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def small_model(hidden: list[int], **switches: bool):
    torch.manual_seed(0)
    model = make(liif_spec(ENCODER, {"name": "mlp", "args": {"out_dim": 3, "hidden_list": hidden}}, **switches))
    return model.eval()


def queries(grid: tuple[int, int], batch: int, n_random: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random coordinates plus every latent edge and corner of the grid, where the neighbour lookup breaks ties,
    and the image's border; cells of scales 1 to 6."""
    h, w = grid
    generator = torch.Generator().manual_seed(seed)
    edges_y, edges_x = torch.linspace(-1, 1, h + 1), torch.linspace(-1, 1, w + 1)
    edges = torch.stack(torch.meshgrid(edges_y, edges_x, indexing="ij"), dim=-1).view(-1, 2)
    coord = torch.cat([torch.rand(n_random, 2, generator=generator) * 2 - 1, edges]).repeat(batch, 1, 1)
    coord[1:, :n_random] = torch.rand(batch - 1, n_random, 2, generator=generator) * 2 - 1  # others differ
    scale = torch.empty(batch, coord.shape[1], 1).uniform_(1, 6, generator=generator)
    cell = torch.cat([2 / (h * scale), 2 / (w * scale)], dim=-1)
    return coord, cell


def compare(model, kernel: str, grid=(7, 9), batch: int = 2, n_random: int = 150) -> float:
    """max |kernel - torch| over one query of every kind, on a random input's latents."""
    torch.manual_seed(2)
    inp = torch.rand(batch, 3, *grid) * 2 - 1
    coord, cell = queries(grid, batch, n_random)
    with torch.no_grad():
        latents = model.latents(model.encode(inp))
        expected = model.query(latents, coord, cell)
        model.query_kernel = kernel
        got = model.query(latents, coord, cell)
        model.query_kernel = "torch"
    assert got.shape == expected.shape and got.dtype == expected.dtype
    return float((got - expected).abs().max())


@pytest.mark.parametrize("hidden,switches", [
    ([16, 16], {}),                           # tests/facts.py SMALL
    ([16, 16], {"cell_decode": False}),       # two terms, not four
    ([16, 16], {"local_ensemble": False}),    # one member
    ([16, 16], {"feat_unfold": False}),
    ([32], {}),                               # no hidden GEMM: first layer, then output
    ([32, 32, 32], {}),                       # two hidden GEMMs: the scratch ping-pongs back
    ([16, 32, 32, 32], {}),                   # widths differ: the first-layer kernel, then torch
])
def test_fused_kernel_equals_the_torch_fast_path(hidden, switches, kernel_launches) -> None:
    diff = compare(small_model(hidden, **switches), "triton")
    fused = len(set(hidden)) == 1
    assert kernel_launches == {"fused_query": int(fused), "first_layer": int(not fused)}
    assert diff <= TOLERANCE, diff


@pytest.mark.parametrize("block_rows,block_k", [(64, 16), (128, 64)])
def test_fused_kernel_tile_settings_equal_the_torch_fast_path(block_rows, block_k, kernel_launches,
                                                              monkeypatch) -> None:
    """Other block sizes: a reduction tile narrower than the output tile, and twice the rows per block."""
    monkeypatch.setattr(triton_query, "INTERPRETED_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(triton_query, "BLOCK_K", block_k)
    diff = compare(small_model([64, 64, 64]), "triton")
    assert kernel_launches["fused_query"] == 1
    assert diff <= TOLERANCE, diff


@pytest.mark.parametrize("hidden", [[16, 16], [12, 12], [20, 16, 8]])
def test_first_layer_kernel_equals_the_torch_fast_path(hidden, kernel_launches) -> None:
    """Widths that are not multiples of 16 too: the first-layer kernel masks its columns."""
    diff = compare(small_model(hidden), "triton-first-layer")
    assert kernel_launches == {"fused_query": 0, "first_layer": 1}
    assert diff <= TOLERANCE, diff


def test_widths_the_fused_kernel_cannot_tile_fall_back_to_the_first_layer_kernel(kernel_launches) -> None:
    diff = compare(small_model([24, 24]), "triton")
    assert kernel_launches == {"fused_query": 0, "first_layer": 1}
    assert diff <= TOLERANCE, diff


@pytest.mark.parametrize("kernel", ["triton", "triton-first-layer"])
def test_released_model_kernels_equal_the_torch_fast_path(kernel, kernel_launches) -> None:
    """The released EDSR-baseline-LIIF: 256-wide first layer, three 256x256 hidden layers, its real weights."""
    model = liif.load_model("edsr-baseline-liif")
    diff = compare(model, kernel, grid=(5, 6), batch=1, n_random=24)
    assert kernel_launches["fused_query" if kernel == "triton" else "first_layer"] == 1
    assert diff <= TOLERANCE, diff


@pytest.mark.parametrize("dtype,kernel,entry,bound", [
    (torch.float16, "triton", "fused_query", 0.005), (torch.float16, "triton-first-layer", "first_layer", 0.005),
    # bf16 is not fused in the interpreter (no bf16 tl.dot there, triton-lang/triton#11584): the first layer serves
    (torch.bfloat16, "triton", "first_layer", 0.05),
])
def test_autocast_kernels_stay_close_to_the_torch_fast_path(dtype, kernel, entry, bound, kernel_launches) -> None:
    """Under autocast the table is fp16 (bf16) and so are the kernel's GEMMs (fp32 accumulation), while its terms
    stay fp32 where torch rounds them: on the released model the two differ by at most 8e-4 (0.012) (measured),
    and the kernel is the closer to fp32."""
    model = liif.load_model("edsr-baseline-liif")
    torch.manual_seed(4)
    inp = torch.rand(1, 3, 6, 6) * 2 - 1
    coord, cell = queries((6, 6), 1, 20)
    with torch.no_grad():
        fp32 = model.query(model.latents(model.encode(inp)), coord, cell)
        with torch.autocast("cpu", dtype=dtype):
            latents = model.latents(model.encode(inp))
            assert latents.values.dtype == dtype
            expected = model.query(latents, coord, cell)
            model.query_kernel = kernel
            got = model.query(latents, coord, cell)
    assert kernel_launches == {"fused_query": int(entry == "fused_query"), "first_layer": int(entry == "first_layer")}
    assert got.dtype == expected.dtype == torch.float32
    assert float((got - expected).abs().max()) <= bound
    assert float((got - fp32).abs().max()) <= float((expected - fp32).abs().max()) * 1.5


def test_training_falls_back_to_torch_with_the_same_gradients(kernel_launches) -> None:
    """The kernels have no backward: with gradients on, the query runs in torch and trains as before."""
    model = small_model([16, 16]).train()
    torch.manual_seed(3)
    inp = torch.rand(2, 3, 7, 9) * 2 - 1
    coord, cell = queries((7, 9), 2, 50)
    grads = {}
    for kernel in ("torch", "triton"):
        model.zero_grad()
        model.query_kernel = kernel
        model(inp, coord, cell).abs().mean().backward()
        grads[kernel] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert kernel_launches == {"fused_query": 0, "first_layer": 0}
    assert grads["torch"].keys() == grads["triton"].keys() and "imnet.layers.0.weight" in grads["torch"]
    assert all(torch.equal(grads["torch"][name], grads["triton"][name]) for name in grads["torch"])


def test_tiled_render_through_the_python_api_equals_torch(kernel_launches) -> None:
    """liif.upscale(kernel=...) with tiles smaller than the picture: windows of the latent grid, every query."""
    model = small_model([16, 16])
    pixels = np.asarray(Image.open(shared_file(BENCHMARKS / "Set14" / "comic.png")).convert("RGB"))[40:52, 60:70]
    outs = {kernel: liif.upscale(pixels, 2.5, model=model, device="cpu", tile=4, kernel=kernel)
            for kernel in ("torch", "triton")}
    assert outs["torch"].shape == (30, 25, 3)
    assert kernel_launches["fused_query"] > 4  # one per tile
    assert np.abs(outs["torch"].astype(int) - outs["triton"]).max() <= 1  # fp32 sums may round a level apart
    assert (outs["torch"] == outs["triton"]).mean() > 0.99


def test_kernel_choice_is_checked(monkeypatch) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(LiifError, match="unknown kernel 'cuda-magic'"):
        check_kernel("cuda-magic", cpu)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(LiifError, match="runs on CUDA devices .*TRITON_INTERPRET=1"):
        check_kernel("triton", cpu)
    check_kernel("torch", cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(LiifError, match="serves LIIF decoders; this model is MetaSR"):
        set_query_kernel(make(SMALL["metasr"]), "triton", cpu)
    model = small_model([16, 16])
    model.query_kernel = "cuda-magic"
    with pytest.raises(LiifError, match="unknown kernel .cuda-magic."):
        model.query(model.latents(model.encode(torch.zeros(1, 3, 4, 4))), *queries((4, 4), 1, 3))


def test_a_kernel_that_does_not_build_for_the_card_is_one_line(monkeypatch) -> None:
    """A card without the shared memory (or registers) the kernel's tiles need: Triton raises as it builds, at
    the first query. The render stops with one line naming the way out, not Triton's traceback."""
    from triton.runtime.errors import OutOfResources

    class TooBigForTheCard:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                raise OutOfResources(required=300_000, limit=232_448, name="shared memory")
            return run

    monkeypatch.setattr(triton_query, "built_kernel", lambda interpreted: TooBigForTheCard())
    pixels = np.zeros((6, 5, 3), np.uint8)
    with pytest.raises(LiifError) as refused:
        liif.upscale(pixels, 2, model=small_model([16, 16]), device="cpu", kernel="triton")
    message = str(refused.value)
    assert message.startswith("the Triton query kernel does not build for the interpreter (out of resource: shared "
                              "memory, Required: 300000, Hardware limit: 232448")
    assert message.endswith("; use kernel='torch'") and "\n" not in message


def liif_upscale(*args, cwd: Path, interpret: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    command = [sys.executable, "-m", "liif", "upscale", *map(str, args), "--model",
               str(shared_file(TINY)), "--device", "cpu", "--threads", "1", "--quiet"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_upscale_cli_kernel_option(tmp_path: Path) -> None:
    """``liif upscale --kernel triton``: refused in one line on a CPU without the interpreter; with it, the
    picture torch renders."""
    source = tmp_path / "comic.png"
    Image.open(shared_file(BENCHMARKS / "Set14" / "comic.png")).crop((60, 40, 76, 52)).save(source)
    refused = liif_upscale(source, "--scale", "2", "-o", "no.png", "--kernel", "triton", cwd=tmp_path,
                           interpret=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "liif upscale: error: kernel triton runs on CUDA devices (or on the CPU in Triton's interpreter, "
        "TRITON_INTERPRET=1); use --device cuda or --kernel torch"]
    assert not (tmp_path / "no.png").exists()
    result = liif_upscale(source, "--scale", "2", "-o", "triton.png", "--kernel", "triton", cwd=tmp_path,
                          interpret=True)
    assert result.returncode == 0, result.stderr
    triton_pixels = np.asarray(Image.open(tmp_path / "triton.png")).astype(int)
    torch_pixels = liif.upscale(source, 2, model=TINY, device="cpu").pixels.astype(int)
    assert torch_pixels.shape == (24, 32, 3)
    assert np.abs(torch_pixels - triton_pixels).max() <= 1


def compile_for_card(capability: int, dtype: str, fused: bool, setting: tuple[int, int, int], width: int = 256,
                     members: int = 4, terms: int = 4):
    """The kernel compiled ahead of time for a CUDA card (Triton's own ptxas; no GPU needed), as ``launch`` would
    call it for the released model."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    table = f"*{dtype}"
    fp32_or_table = "*fp32" if fused else table
    signature = {"table_ptr": table, "rows_ptr": "*i64", "terms_ptr": "*fp32", "extra_weight_ptr": "*fp32",
                 "blend_ptr": fp32_or_table, "hidden_weight_ptr": table, "hidden_bias_ptr": fp32_or_table,
                 "out_weight_ptr": table, "out_bias_ptr": fp32_or_table, "out_ptr": fp32_or_table, "scratch_ptr": table,
                 "n_queries": "i32", "n_hidden": "i32"}
    block_rows, num_warps, block_k = setting
    block_q = block_rows // members
    constants = {"MEMBERS": members, "TERMS": terms, "WIDTH": width, "OUT_DIM": 3 if fused else 1, "BLOCK_Q": block_q,
                 "ROWS": members * block_q, "BLOCK_D": 64, "BLOCK_K": block_k, "OUT_BLOCK": triton_query.MAX_OUT,
                 "FUSED": fused, "PRECISION": "ieee" if dtype == "fp32" else "tf32"}
    signature.update(dict.fromkeys(constants, "constexpr"))
    names = list(signature)
    source = ASTSource(fn=triton_query.built_kernel(interpreted=False), signature=signature,
                       constexprs={(names.index(k),): v for k, v in constants.items()})
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": num_warps})


DEFAULT_SETTING = (triton_query.BLOCK_ROWS, triton_query.NUM_WARPS, triton_query.BLOCK_K)


@pytest.mark.parametrize("capability,dtype,fused,setting", [
    (90, "bf16", True, DEFAULT_SETTING), (90, "fp32", True, DEFAULT_SETTING), (90, "fp16", False, DEFAULT_SETTING),
    (80, "bf16", True, DEFAULT_SETTING),
    (90, "bf16", True, (128, 8, 256)),  # a gpu_check variant: the whole width as one reduction tile
])
def test_kernel_compiles_for_cuda_cards(capability, dtype, fused, setting, monkeypatch, tmp_path) -> None:
    """What the interpreter cannot check: the kernel lowers to a cubin for an H100 (sm_90) and an A100 (sm_80),
    within their shared memory (228 and 164 KiB)."""
    monkeypatch.delenv("TRITON_INTERPRET")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compiled here, not found in ~/.triton
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning
    kernel = compile_for_card(capability, dtype, fused, setting)
    assert kernel.asm["cubin"] and kernel.metadata.shared <= (164 << 10)
