"""int8 decoding (``liif.models.int8``, ``--precision int8``): the quantised MLP's arithmetic on real activations of
the released model, the benchmark's Set14 path against fp32 on a real crop, and the refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import liif
import liif.runtime
from liif.errors import LiifError
from liif.evaluation.datasets import read_rgb
from liif.models import int8
from liif.models import liif as liif_model
from liif.registry import make
from liif.runtime import autocast, check_precision, cpu_has_int8, has_cpp_compiler
from liif.upscale import configure_model

from conftest import BENCHMARKS, SHARED, load_benchmark, shared_file
from facts import SMALL

MONARCH = BENCHMARKS / "Set14" / "monarch.png"
# A 96x96 corner of monarch: smooth out-of-focus background and a wing edge (the worst Set14 image at x4).
CROP = (slice(0, 96), slice(0, 96))
# The int8 arithmetic runs on any x86 CPU (with 7-bit activations on AVX2 without VNNI or AMX), though
# --precision int8 is refused off AMX; its fused steps need torch.compile's C++ compiler.
needs_compiler = pytest.mark.skipif(not has_cpp_compiler(), reason="no C++ compiler: int8's fused steps cannot build")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return liif.load_model("edsr-baseline-liif", torch.device("cpu"))


@pytest.fixture(scope="module")
def activations(model) -> tuple[torch.Tensor, list[torch.nn.Linear]]:
    """The first layer's pre-activations (rows, 256) of 24x24 monarch latents queried at x4, as the fast path
    hands them to ``mlp_tail``, and the layers after it."""
    picture = read_rgb(shared_file(MONARCH))[:, CROP[0], CROP[1]]
    small = torch.nn.functional.interpolate(picture[None], size=(24, 24), mode="area")
    seen = []
    original = liif_model.mlp_tail

    def record(hidden, linears):
        seen.append((hidden.clone(), linears))
        return original(hidden, linears)

    liif_model.mlp_tail = record
    try:
        liif.render(model, small, (96, 96))
    finally:
        liif_model.mlp_tail = original
    hidden = torch.cat([h for h, _ in seen])
    return hidden, seen[0][1]


@pytest.mark.parametrize("levels", int8.ACTIVATION_LEVELS)
def test_rows_quantise_to_within_half_a_step_of_their_own_scale(activations, levels: int) -> None:
    hidden, _ = activations
    rows, scales = int8.quantize_rows(hidden, levels)
    values = torch.relu(hidden)
    assert rows.dtype == torch.uint8 and scales.shape == (len(hidden), 1)
    # each row's largest value is its top level, and every value within half a step of that row's scale
    live = values.amax(dim=1) > 0
    assert bool(live.any()) and torch.equal(rows.amax(dim=1)[live], torch.full_like(rows[:, 0], levels)[live])
    error = (rows.float() * scales - values).abs()
    assert bool((error <= scales * (0.5 + 1e-4)).all()), float((error / scales).max())  # 1e-4: fp32 rounding


def test_activation_levels_are_the_largest_this_cpus_gemm_sums_exactly() -> None:
    levels = int8.activation_levels()
    assert int8.sums_exactly(levels)
    # 255 x 127 x 2 overflows a 16-bit pair sum: 8-bit activations are exact only where sums are 32-bit
    assert (levels == 255) == int8.sums_exactly(255)
    assert levels in int8.ACTIVATION_LEVELS


def test_7_bit_activations_are_exact_where_8_bit_ones_saturate() -> None:
    # AVX2 without VNNI sums u8 x s8 pairs in saturating 16-bit lanes; oneDNN limited to AVX2 shows it on any x86
    probe = ("from liif.models import int8; "
             "print(int8.sums_exactly(255), int8.sums_exactly(127), int8.activation_levels())")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "127"]


def test_int8_layer_matches_the_dequantised_float_product_and_its_error_bound(activations) -> None:
    hidden, linears = activations
    linear = linears[0]
    layer = int8.quantized(linear)
    rows, row_scales = int8.quantize_rows(hidden, int8.activation_levels())
    out = int8.rescale(layer.scaled_sums(rows), row_scales, layer.bias)
    # the GEMM is exact in int32: the result is the float64 product of the dequantised operands, to fp32 rounding
    bias = linear.bias.detach().double()
    dequantised = (rows.double() * row_scales.double()) @ layer.dequantized_weight().double().t() + bias
    assert torch.allclose(out.double(), dequantised, rtol=1e-5, atol=1e-5 * float(dequantised.abs().max()))
    # against the exact fp32 layer, each output is off by at most half an activation step times the weights' sum
    # plus half a weight step times the activations' sum (per row, per channel)
    values = torch.relu(hidden).double()
    weight = linear.weight.detach().double()
    exact = values @ weight.t() + bias
    bound = (row_scales.double() / 2) * weight.abs().sum(dim=1) + values.sum(dim=1, keepdim=True) * (
        layer.scales.double() / 2)
    assert bool(((out.double() - exact).abs() <= bound * 1.001 + 1e-6).all())
    # the errors, of both signs, mostly cancel: typically far inside that worst case, and small next to the values
    error = (out.double() - exact).abs()
    assert float(error.mean()) < 0.25 * float(bound.mean())
    assert float(error.mean()) < 0.01 * float(exact.abs().mean())


@needs_compiler
def test_int8_tail_stays_close_to_fp32(activations) -> None:
    hidden, linears = activations
    with torch.no_grad():
        fp32 = liif_model.mlp_tail(hidden, linears)
        quantised = int8.int8_mlp_tail(hidden, linears)
    error = (quantised - fp32).abs()
    # outputs are colours in [-1, 1]: a mean error below 0.002 is about a quarter of an 8-bit level
    assert float(error.mean()) < 0.002 and float(error.max()) < 0.05, (float(error.mean()), float(error.max()))


def test_a_changed_weight_is_quantised_again() -> None:
    linear = torch.nn.Linear(8, 4)
    first = int8.quantized(linear)
    assert int8.quantized(linear) is first
    with torch.no_grad():
        linear.weight.mul_(2)
    assert torch.allclose(int8.quantized(linear).scales, first.scales * 2)


@needs_compiler
def test_benchmark_int8_psnr_is_within_a_hundredth_of_a_db_of_fp32(model, tmp_path) -> None:
    pixels = np.asarray(Image.open(shared_file(MONARCH)).convert("RGB"))[CROP]
    Image.fromarray(pixels).save(tmp_path / "monarch-crop.png")
    bench = load_benchmark("int8_quality")
    scores = bench.quality(model, tmp_path, [4.0], None, ["fp32", "int8"])
    mean_loss, worst_loss, worst = bench.losses(scores, "int8", "x4")
    assert worst == "monarch-crop.png"
    assert scores["fp32"]["x4"][worst] > 20  # a real reconstruction, not two equal failures
    assert 0 < abs(worst_loss) <= 0.01, worst_loss  # not 0: the int8 path ran


@pytest.mark.parametrize("case,message", [
    ("gpu", "precision int8 is for CPUs with AMX; on cuda use bf16 or fp16"),
    ("no-amx", "precision int8 needs a CPU with AMX int8 (where it was measured faster than fp32)"),
    ("no-compiler", "precision int8 builds its kernels with torch.compile, which needs a C++ compiler"),
    ("metasr", "precision int8 is for LIIF's fast query path; this MetaSR model cannot decode in int8"),
    ("lte", "precision int8 is for LIIF's fast query path; this LTE model cannot decode in int8"),
    ("reference-path", "precision int8 is for LIIF's fast query path; this LIIF model cannot decode in int8"),
])
def test_int8_refusals(monkeypatch, case: str, message: str) -> None:
    monkeypatch.setattr(liif.runtime, "cpu_flags", lambda: frozenset(
        {"avx2", "avx512f", "avx512_vnni"} if case == "no-amx" else {"avx2", "avx512f", "avx512_vnni", "amx_int8"}))
    monkeypatch.setattr(liif.runtime, "has_cpp_compiler", lambda: case != "no-compiler")
    device = torch.device("cuda" if case == "gpu" else "cpu")
    model = make(SMALL[case if case in ("metasr", "lte") else "liif"])
    if case == "reference-path":
        model.query_path = "reference"
    with pytest.raises(LiifError, match="^" + re.escape(message)):
        check_precision(device, "int8", model)
    with pytest.raises(LiifError, match="^" + re.escape(message)):
        autocast(device, "int8", model)


def test_compiled_queries_are_refused_with_int8_on_a_cpu_that_runs_it(monkeypatch) -> None:
    monkeypatch.setattr(liif.runtime, "cpu_flags", lambda: frozenset({"amx_int8"}))
    monkeypatch.setattr(liif.runtime, "has_cpp_compiler", lambda: True)
    model = make(SMALL["liif"])
    with pytest.raises(LiifError, match="^compile does not run int8 queries"):
        configure_model(model, "int8", compile="default")
    assert configure_model(model, "int8") is model


def test_the_small_liif_is_allowed(monkeypatch) -> None:
    monkeypatch.setattr(liif.runtime, "cpu_flags", lambda: frozenset({"amx_int8"}))
    monkeypatch.setattr(liif.runtime, "has_cpp_compiler", lambda: True)
    check_precision(torch.device("cpu"), "int8", make(SMALL["liif"]))


def test_cli_refuses_int8_for_metasr_in_one_line(tmp_path) -> None:
    checkpoint = shared_file(SHARED / "fixtures" / "decoders" / "tiny-edsr-metasr.pth")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    result = subprocess.run([sys.executable, "-m", "liif", "upscale", "in.png", "--scale", "2", "-o", "out.png",
                             "--model", str(checkpoint), "--device", "cpu", "--precision", "int8", "--quiet"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    expected = ("this MetaSR model cannot decode in int8" if cpu_has_int8() and has_cpp_compiler()
                else "precision int8 needs a CPU" if not cpu_has_int8() else "needs a C++ compiler")
    assert lines[0].startswith("liif upscale: error: precision int8") and expected in lines[0], lines[0]
    assert not (tmp_path / "out.png").exists()
