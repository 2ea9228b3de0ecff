"""DDP: 2 CPU processes (gloo, launched by torchrun) end with the weights of 1 process at the same global batch."""

from __future__ import annotations

import os
import sys

import torch

from conftest import BENCHMARKS, ROOT, run_group, shared_file
from liif.checkpoint import read_checkpoint


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


# After all_reduce returns, gloo's threads hold the tensor a moment longer (here: in about one call of five); one
# that drops it while the interpreter shuts down aborts the process after its work is done.
RELEASE_PROBE = """
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
print("still held:", held)
stop_processes(procs, wait=True)
"""


def test_a_summed_tensor_is_released_by_gloo_before_it_is_used(tmp_path):
    (tmp_path / "probe.py").write_text(RELEASE_PROBE)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "probe.py"]
    result = run_group(launch, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n").count("still held: 0") == 2, result.stdout
