"""DDP: 2 CPU processes (gloo, launched by torchrun) end with the weights of 1 process at the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch

from conftest import BENCHMARKS, ROOT, shared_file
from liif.checkpoint import read_checkpoint


def run_group(command: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """Run ``command`` in its own process group, killing the whole group (torchrun's workers too) on timeout."""
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, err


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    set14 = shared_file(BENCHMARKS / "Set14")
    common = ["-m", "liif", "train", "--quiet", "--config", str(ROOT / "configs" / "smoke.yaml"),
              "--set", f"train_dataset.dataset.args.root_path={set14}",
              "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for name, prefix in (("one", [sys.executable]), ("two", launch)):
        code, err = run_group([*prefix, *common, "--out", str(tmp_path / name)], env)
        assert code == 0, err[-3000:]
    one, two = (read_checkpoint(tmp_path / name / "epoch-last.pth") for name in ("one", "two"))
    assert one["global_step"] == two["global_step"] == 14
    for key, value in one["model"]["sd"].items():
        torch.testing.assert_close(two["model"]["sd"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert "2 process(es)" in (tmp_path / "two" / "log.txt").read_text()
    assert not list((tmp_path / "two").glob("*.tmp"))
