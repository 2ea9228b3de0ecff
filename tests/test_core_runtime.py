"""One runtime for every command: device names mean the same in upscale, eval and train; precision is checked once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import liif.runtime
from conftest import BENCHMARKS, ROOT, TINY, shared_file
from liif.cli import main
from liif.distributed import Launch, says_error, start_processes
from liif.errors import LiifError
from liif.runtime import autocast, check_precision, pick_device, query_chunk

NO_CUDA = not torch.cuda.is_available()
NO_MPS = not liif.runtime.mps_available()


def test_auto_and_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if liif.runtime.mps_available() else "cpu"
    assert pick_device("auto").type == expected
    assert pick_device(" CPU ") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name,message", [("gpu", "unknown device 'gpu'"), ("cpu:1", "unknown device"),
                                          ("cuda:x", "unknown device"), ("", "unknown device")])
def test_unknown_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(LiifError, match=message):
        pick_device(name)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_absent_cuda_is_a_clear_error(name: str) -> None:
    with pytest.raises(LiifError, match=rf"device {name} is not available on this machine \(0 CUDA devices found\)"):
        pick_device(name)


@pytest.mark.parametrize("native,precision,allowed", [(True, "bf16", True), (False, "bf16", False),
                                                      (True, "fp16", False), (False, "fp32", True)])
def test_cpu_precisions(monkeypatch, native: bool, precision: str, allowed: bool) -> None:
    monkeypatch.setattr(liif.runtime, "cpu_has_bf16", lambda: native)
    if allowed:
        with autocast(torch.device("cpu"), precision):
            out = torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4))
        assert out.dtype == liif.runtime.PRECISIONS[precision]
    else:
        with pytest.raises(LiifError, match="fp16 is for GPUs|needs a GPU or a CPU with native bf16"):
            check_precision(torch.device("cpu"), precision)


def test_cpu_bf16_detection_reads_the_cpu_flags() -> None:
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    assert liif.runtime.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_query_chunk_is_the_cpu_chunk_off_cuda_and_follows_free_memory_on_a_gpu(monkeypatch) -> None:
    assert query_chunk(torch.device("cpu")) == query_chunk(torch.device("cpu"), 4) == 4096
    gib = 1 << 30
    # 64 KiB per query, shared by the batch, from 4096 up to 2**20 queries
    for free, batch, expected in ((80 * gib, 1, 1 << 20), (80 * gib, 4, 327_680), (1 * gib, 1, 16_384),
                                  (1 * gib, 3, 5_461), (100 << 20, 1, 4096)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 80 * gib))
        assert query_chunk(torch.device("cuda", 0), batch) == expected, (free, batch)


def test_render_tile_is_the_cpu_tile_off_cuda_and_follows_free_memory_on_a_gpu(monkeypatch) -> None:
    assert liif.runtime.render_tile(torch.device("cpu")) == liif.runtime.CPU_TILE == 256
    gib = 1 << 30
    for free, batch, expected in ((80 * gib, 1, 1024), (80 * gib, 4, 512), (20 * gib, 1, 512), (4 * gib, 1, 256),
                                  (1 * gib, 1, 256)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 80 * gib))
        assert liif.runtime.render_tile(torch.device("cuda", 0), batch) == expected, (free, batch)


def run_command(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("set")
    Image.open(shared_file(BENCHMARKS / "Set14" / "comic.png")).crop((60, 40, 112, 84)).save(folder / "comic.png")
    return folder


def commands(picture, tmp_path, device: str) -> dict[str, list[str]]:
    return {
        "upscale": ["upscale", str(picture / "comic.png"), "--scale", "2", "-o", str(tmp_path / "out.png"),
                    "--model", str(shared_file(TINY)), "--device", device, "--quiet"],
        "eval": ["eval", "--data", str(picture), "--scales", "2", "--model", str(shared_file(TINY)),
                 "--device", device, "--quiet"],
        "train": ["train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path / "run"),
                  "--set", f"device={device}", "--set", "epoch_max=1", "--set", "threads=1", "--quiet",
                  "--set", f"train_dataset.dataset.args.root_path={BENCHMARKS / 'Set14'}",
                  "--set", f"val_dataset.dataset.args.root_path={BENCHMARKS / 'Set14'}"],
    }


@pytest.mark.parametrize("command", ["upscale", "eval", "train"])
def test_device_auto_works_in_every_command(capsys, picture, tmp_path, command: str) -> None:
    code, err = run_command(capsys, *commands(picture, tmp_path, "auto")[command])
    assert code == 0, err


@pytest.mark.skipif(not (NO_CUDA and NO_MPS), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["mps", "cuda:1"])
@pytest.mark.parametrize("command", ["upscale", "eval", "train"])
def test_absent_device_is_one_line_in_every_command(capsys, picture, tmp_path, command: str, device: str) -> None:
    code, err = run_command(capsys, *commands(picture, tmp_path, device)[command])
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"liif {command}: error: device {device} is not available on this machine"), err
    assert not (tmp_path / "run").exists()  # refused before anything was created


@pytest.mark.parametrize("gpus, said_here", [(0, False), (1, True)])
def test_under_torchrun_a_missing_gpu_is_said_by_the_process_it_is_missing_for(monkeypatch, gpus, said_here):
    # --device cuda on rank 1 of 2: with no GPU every process fails alike and rank 0 says so; with one, rank 1's
    # (the second) alone is missing, which only rank 1 can say
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(Launch, "own_failures", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(LiifError, match="^device cuda is not available on this machine") as caught:
        start_processes("cuda")
    assert says_error(caught.value) == said_here


# Buffers of MIB MiB made, filled and freed COUNT at a time, round after round, as a CPU query chunk's are; prints
# whether the command's thresholds were set and the minor page faults of 10 rounds after the first.
CHUNK_ROUNDS = """
import resource, sys, torch
from liif.cli import keep_freed_buffers
changed = keep_freed_buffers()
count, mib = int(sys.argv[1]), int(sys.argv[2])
def chunk():
    buffers = [torch.ones(mib << 18) for _ in range(count)]
    del buffers
chunk()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    chunk()
print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def chunk_rounds(count: int, mib: int, environment: dict[str, str]) -> tuple[str, int]:
    result = subprocess.run([sys.executable, "-c", CHUNK_ROUNDS, str(count), str(mib)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, **environment})
    assert result.returncode == 0, result.stderr
    changed, faults = result.stdout.split()
    return changed, int(faults)


@pytest.mark.parametrize("count,mib", [(4, 16), (2, 40)])
def test_the_command_keeps_freed_buffers_for_reuse_instead_of_faulting_them_in_again(count: int, mib: int) -> None:
    pages_per_round = count * mib * 256
    changed, faults = chunk_rounds(count, mib, {})
    assert changed == "True"
    # the pages of the first round are reused by the ten after it: a few buffers' worth may be faulted in again
    # (seen: 0 to 3 buffers of 40 MiB, as the kernel reclaims pages), where glibc's own thresholds fault in all ten
    # rounds (the next test)
    assert faults < 3 * pages_per_round, (faults, pages_per_round)


def test_the_environments_malloc_settings_win_over_the_commands() -> None:
    changed, faults = chunk_rounds(2, 40, {"GLIBC_TUNABLES": ""})
    assert changed == "False"
    # with glibc's own thresholds a block above 32 MiB is always mapped anew: every round faults all its pages in
    assert faults > 0.9 * 10 * 2 * 40 * 256, faults
