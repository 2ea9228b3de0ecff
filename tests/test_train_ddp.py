"""DDP: 2 CPU processes (gloo, launched by torchrun) end with the weights of 1 process at the same global batch; a
process that fails stops the others, each in one line."""

from __future__ import annotations

import os
import signal
import sys
import time

import torch
from PIL import Image

from conftest import BENCHMARKS, ROOT, run_group, run_ranks, shared_file, start_ranks, wait_ranks
from liif.checkpoint import read_checkpoint
from liif.data.order import EpochOrder


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


def test_skipped_images_are_warned_of_once_by_rank_0(tmp_path):
    set14, data = shared_file(BENCHMARKS / "Set14"), tmp_path / "data"
    data.mkdir()
    for name in ("baboon", "barbara", "bridge", "comic", "face"):
        Image.open(set14 / f"{name}.png").convert("RGB").crop((0, 0, 120, 120)).save(data / f"{name}.png")
    (data / "fake.png").write_text("not a picture")
    main, other = run_ranks([sys.executable, "-m", "liif", "train", "--quiet", "--config",
                             ROOT / "configs" / "smoke.yaml", "--out", tmp_path / "run",
                             "--set", f"train_dataset.dataset.args.root_path={data}",
                             "--set", f"val_dataset.dataset.args.root_path={data}", "--set", "threads=1",
                             "--set", "epoch_max=1"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, other.returncode) == (0, 0), other.stderr[-3000:]
    # every process builds the training set and meets the same unreadable file; rank 0 alone says so
    assert main.stderr == (f"liif train: warning: skipping unreadable image {data / 'fake.png'}: not an image, or "
                           f"not one of the formats read (PNG, JPEG, WebP, BMP, TIFF)\n")
    assert other.stderr == ""


def test_a_run_stopped_by_sigterm_on_every_process_says_so_once(tmp_path):
    """torchrun's agent passes a SIGTERM (or a terminal's Ctrl-C reaches) every process: each said it."""
    set14 = shared_file(BENCHMARKS / "Set14")
    ranks = start_ranks([sys.executable, "-m", "liif", "train", "--quiet", "--config", ROOT / "configs" / "smoke.yaml",
                         "--out", tmp_path / "run", "--set", f"train_dataset.dataset.args.root_path={set14}",
                         "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=1",
                         "--set", "epoch_max=100"], {**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "epoch-last.pth").exists():
        assert all(rank.poll() is None for rank in ranks) and time.monotonic() < deadline
        time.sleep(0.05)
    for rank in ranks:
        os.killpg(rank.pid, signal.SIGTERM)
    # the first to stop says it for the run: either rank, as the signals race
    said = sorted((rank.returncode, rank.stderr) for rank in wait_ranks(ranks))
    epoch = read_checkpoint(tmp_path / "run" / "epoch-last.pth")["epoch"]
    assert said == [(143, ""), (143, f"liif train: terminated; resume from {tmp_path / 'run' / 'epoch-last.pth'} to go "
                                     f"on at epoch {epoch + 1}\n")]


def test_a_mistake_every_process_meets_building_the_run_is_said_once_by_rank_0(tmp_path):
    missing = tmp_path / "missing"
    main, other = run_ranks([sys.executable, "-m", "liif", "train", "--quiet", "--config",
                             ROOT / "configs" / "smoke.yaml", "--out", tmp_path / "run",
                             "--set", f"train_dataset.dataset.args.root_path={missing}",
                             "--set", f"val_dataset.dataset.args.root_path={missing}", "--set", "threads=1"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, main.stderr) == (2, f"liif train: error: train_dataset: {missing}: no such image "
                                                 f"folder\n")
    assert (other.returncode, other.stderr) == (2, "")
    assert not (tmp_path / "run").exists()


def test_a_failure_of_rank_0_at_the_end_of_an_epoch_stops_every_rank_in_one_line(tmp_path):
    set14, set5 = shared_file(BENCHMARKS / "Set14"), tmp_path / "Set5"
    # a picture cut off in its pixel data: its header reads, so the run starts, and rank 0's benchmark_eval fails
    # when it reads the picture at the end of epoch 1
    set5.mkdir()
    whole = shared_file(BENCHMARKS / "Set5" / "baby.png").read_bytes()
    (set5 / "baby.png").write_bytes(whole[:len(whole) // 2])
    main, other = run_ranks([sys.executable, "-m", "liif", "train", "--quiet", "--config",
                             ROOT / "configs" / "smoke.yaml", "--out", tmp_path / "run",
                             "--set", f"train_dataset.dataset.args.root_path={set14}",
                             "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=1",
                             "--set", f"benchmark_eval={{root: {set5}, scales: [2]}}"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, other.returncode) == (2, 2), other.stderr[-3000:]
    assert main.stderr.startswith("liif train: error: benchmark_eval at epoch 1: ") and main.stderr.count("\n") == 1
    assert other.stderr == ("liif train: error: the main process (rank 0) failed at the end of epoch 1; its error "
                            "says why\n")



def test_a_failure_of_rank_1_in_the_middle_of_an_epoch_stops_every_rank_in_one_line(tmp_path):
    set14, train = shared_file(BENCHMARKS / "Set14"), tmp_path / "train"
    train.mkdir()
    order = EpochOrder(8, shuffle=True, seed=0, rank=1, world_size=2, global_batch=4)
    order.set_epoch(1)
    bad = [index for index, _ in order][-1]  # rank 1's second step: rank 0 has gone on to its own
    for index, name in enumerate(sorted(set14.iterdir())[:8]):
        Image.open(name).convert("RGB").crop((0, 0, 100, 100)).save(train / f"{index}.jpg")
    # a JPEG cut short passes the header check of the data set-up (cache: none): it fails when the step reads it
    (train / f"{bad}.jpg").write_bytes((train / f"{bad}.jpg").read_bytes()[:1000])
    main, other = run_ranks([sys.executable, "-m", "liif", "train", "--quiet", "--config",
                             ROOT / "configs" / "smoke.yaml", "--out", tmp_path / "run",
                             "--set", f"train_dataset.dataset.args.root_path={train}",
                             "--set", "train_dataset.dataset.args.cache=none",
                             "--set", "train_dataset.dataset.args.repeat=1",
                             "--set", f"val_dataset.dataset.args.root_path={set14}", "--set", "threads=1"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, other.returncode) == (2, 2), main.stderr[-3000:]
    assert other.stderr.startswith(f"liif train: error: train_dataset: {train / f'{bad}.jpg'}: cannot read the "
                                   f"image") and other.stderr.count("\n") == 1, other.stderr
    assert main.stderr == "liif train: error: another process of this run stopped (rank 1's error says why)\n"


# Rank 0 stops at once; rank 1 calls a collective only once rank 0, and the run's store (which it hosts), are gone.
STORE_GONE = """
import sys, time
from pathlib import Path
from liif.distributed import global_sum, joined_processes
from liif.errors import LiifError

try:
    with joined_processes("cpu") as procs:
        if procs.is_main:
            raise LiifError("rank 0 stops")
        for _ in range(600):
            if Path("rank-0-ended").exists():
                break
            time.sleep(0.1)
        global_sum([1], procs)
except LiifError as exc:
    sys.exit(f"error: {exc}")
"""


def test_a_process_whose_peers_and_their_store_are_gone_stops_in_one_line(tmp_path):
    (tmp_path / "probe.py").write_text(STORE_GONE)
    main, other = start_ranks([sys.executable, "probe.py"], {**os.environ, "OMP_NUM_THREADS": "1"}, tmp_path)
    ended = wait_ranks([main])[0]
    (tmp_path / "rank-0-ended").touch()
    assert (ended.returncode, ended.stderr) == (1, "error: rank 0 stops\n")
    other = wait_ranks([other])[0]
    assert (other.returncode, other.stderr) == (1, "error: another process of this run stopped (its error says "
                                                   "why)\n")


# After all_reduce returns, gloo's threads hold the tensor a moment longer (here: in about one call of five); one
# that drops it while the interpreter shuts down aborts the process after its work is done.
RELEASE_PROBE = """
import sys

import torch
import torch.distributed as dist
from liif.distributed import global_sum, joined_processes, released

with joined_processes("cpu") as procs:
    held = 0
    for _ in range(300):
        total = torch.ones(2, dtype=torch.int64)
        dist.all_reduce(total)
        held += released(total)._use_count() > 1
    assert global_sum([1, 2], procs) == [2, 4]
    sys.stdout.write(f"still held: {held}\\n")  # one write: the ranks share the pipe
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
import warnings

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
from liif.distributed import gather_sharded, joined_processes

warnings.simplefilter("error", FutureWarning)  # torch's deprecations, each printed on every rank's stderr
used = []  # every tensor given to a collective call, by liif or within torch (all_gather_object)


def recorded(collective):
    def call(*args, **kwargs):
        used.extend(t for arg in args for t in (arg if isinstance(arg, list) else [arg]) if torch.is_tensor(t))
        return collective(*args, **kwargs)
    return call


for name in ("all_gather", "all_gather_into_tensor", "all_gather_single"):
    if hasattr(c10d, name):  # all_gather_single: newer torch's name for all_gather_into_tensor
        setattr(c10d, name, recorded(getattr(c10d, name)))
        setattr(dist, name, getattr(c10d, name))
items = [{"name": "x" * i, "psnr": i / 3} for i in range(7)]  # shares of 4 and 3 items, of different sizes
with joined_processes("cpu") as procs:
    held = 0
    for _ in range(200):
        assert gather_sharded(items[procs.rank::2], procs) == items
        held += sum(t._use_count() > 1 for t in used)
        used.clear()
    sys.stdout.write(f"still held: {held}\\n")  # one write: the ranks share the pipe
"""


def test_sharded_items_are_gathered_in_order_through_tensors_gloo_has_released(tmp_path):
    lines = two_process_probe(tmp_path, GATHER_PROBE)
    assert lines.count("still held: 0") == 2, lines


# A backend whose point-to-point waits return without the peer, as NCCL's do on the host (they order GPU streams):
# torch's "fake" process group, over a real store. Rank 0 leaves once rank 1 has waited a while.
MAIN_LEAVES = """
import os, sys, time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.testing._internal.distributed.fake_pg  # noqa: F401  registers the "fake" backend
from liif.distributed import Processes, stop_processes, wait_for_main_to_leave

rank = int(os.environ["RANK"])
store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), 2, rank == 0)
dist.init_process_group("fake", store=store, rank=rank, world_size=2)
events = Path("events")
if rank == 1:
    Path("waiting").touch()
    wait_for_main_to_leave()
    with events.open("a") as f:
        f.write("rank 1 returned\\n")
else:
    while not Path("waiting").exists():
        time.sleep(0.01)
    time.sleep(1)
    with events.open("a") as f:
        f.write("rank 0 leaves\\n")
    stop_processes(Processes(0, 2, torch.device("cpu")))
"""


def test_the_others_wait_for_the_main_process_to_leave_where_point_to_point_waits_do_not_block(tmp_path):
    (tmp_path / "probe.py").write_text(MAIN_LEAVES)
    ranks = wait_ranks(start_ranks([sys.executable, "probe.py"], {**os.environ, "OMP_NUM_THREADS": "1"}, tmp_path))
    assert [rank.returncode for rank in ranks] == [0, 0], [rank.stderr[-2000:] for rank in ranks]
    assert (tmp_path / "events").read_text() == "rank 0 leaves\nrank 1 returned\n"
