"""DDP: 2 CPU processes (gloo, launched by torchrun) end with the weights of 1 process at the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import torch

from conftest import BENCHMARKS, ROOT, run_group, shared_file
from liif.checkpoint import read_checkpoint
from serving import free_port


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    set14 = shared_file(BENCHMARKS / "Set14")
    common = ["-m", "liif", "train", "--quiet", "--config", str(ROOT / "configs" / "smoke.yaml"),
              "--set", f"train_dataset.dataset.args.root_path={set14}",
              "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for name, prefix in (("one", [sys.executable]), ("two", launch)):
        result = run_group([*prefix, *common, "--out", str(tmp_path / name)], env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (read_checkpoint(tmp_path / name / "epoch-last.pth") for name in ("one", "two"))
    assert one["global_step"] == two["global_step"] == 14
    for key, value in one["model"]["sd"].items():
        torch.testing.assert_close(two["model"]["sd"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert "2 process(es)" in (tmp_path / "two" / "log.txt").read_text()
    assert not list((tmp_path / "two").glob("*.tmp"))


def run_ranks(command: list, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """``command`` run by the 2 processes of a gloo group, started as torchrun starts them, without its agent: it
    would stop the other rank (SIGTERM) once one fails, before that rank can say why."""
    port = str(free_port())
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda rank: run_group(command, timeout=120, env={
            **env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port}), range(2)))


def test_a_failure_of_rank_0_at_the_end_of_an_epoch_stops_every_rank_in_one_line(tmp_path):
    set14, set5 = shared_file(BENCHMARKS / "Set14"), shared_file(BENCHMARKS / "Set5")
    # Set5 has no picture large enough to shave 200 px per side, which rank 0 finds when it runs benchmark_eval
    main, other = run_ranks([sys.executable, "-m", "liif", "train", "--quiet", "--config",
                             ROOT / "configs" / "smoke.yaml", "--out", tmp_path / "run",
                             "--set", f"train_dataset.dataset.args.root_path={set14}",
                             "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=1",
                             "--set", f"benchmark_eval={{root: {set5}, scales: [200]}}"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, other.returncode) == (2, 2), other.stderr[-3000:]
    assert main.stderr.startswith("liif train: error: benchmark_eval at epoch 1: ") and main.stderr.count("\n") == 1
    assert other.stderr == ("liif train: error: the main process (rank 0) failed at the end of epoch 1; its error "
                            "says why\n")


# After all_reduce returns, gloo's threads hold the tensor a moment longer (here: in about one call of five); one
# that drops it while the interpreter shuts down aborts the process after its work is done.
RELEASE_PROBE = """
import sys

import torch
import torch.distributed as dist
from liif.distributed import global_sum, released, start_processes, stop_processes

procs = start_processes("cpu")
held = 0
for _ in range(300):
    total = torch.ones(2, dtype=torch.int64)
    dist.all_reduce(total)
    held += released(total)._use_count() > 1
assert global_sum([1, 2], procs) == [2, 4]
sys.stdout.write(f"still held: {held}\\n")  # one write: the ranks share the pipe
stop_processes(procs, wait=True)
"""


def two_process_probe(tmp_path, source: str) -> list[str]:
    """The stdout lines of ``source`` run as a script by 2 gloo processes under torchrun, once both ended well."""
    (tmp_path / "probe.py").write_text(source)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "probe.py"]
    result = run_group(launch, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("\n")


def test_a_summed_tensor_is_released_by_gloo_before_it_is_used(tmp_path):
    lines = two_process_probe(tmp_path, RELEASE_PROBE)
    assert lines.count("still held: 0") == 2, lines


# all_gather_object gathers through tensors of its own, which no one can wait for gloo to let go of
GATHER_PROBE = """
import sys

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
from liif.distributed import gather_sharded, start_processes, stop_processes

used = []  # every tensor given to a collective call, by liif or within torch (all_gather_object)


def recorded(collective):
    def call(*args, **kwargs):
        used.extend(t for arg in args for t in (arg if isinstance(arg, list) else [arg]) if torch.is_tensor(t))
        return collective(*args, **kwargs)
    return call


for name in ("all_gather", "all_gather_into_tensor"):
    setattr(c10d, name, recorded(getattr(c10d, name)))
    setattr(dist, name, getattr(c10d, name))
procs = start_processes("cpu")
items = [{"name": "x" * i, "psnr": i / 3} for i in range(7)]  # shares of 4 and 3 items, of different sizes
held = 0
for _ in range(200):
    assert gather_sharded(items[procs.rank::2], procs) == items
    held += sum(t._use_count() > 1 for t in used)
    used.clear()
sys.stdout.write(f"still held: {held}\\n")  # one write: the ranks share the pipe
stop_processes(procs, wait=True)
"""


def test_sharded_items_are_gathered_in_order_through_tensors_gloo_has_released(tmp_path):
    lines = two_process_probe(tmp_path, GATHER_PROBE)
    assert lines.count("still held: 0") == 2, lines
