"""Process group set-up for ``torchrun`` (training, and batches shared among GPUs): gloo on CPU, nccl on GPU;
a single process needs nothing."""

from __future__ import annotations

import os
import pickle
import socket
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from liif.errors import LiifError
from liif.runtime import pick_device

# The store key under which the first process of a run to stop writes its rank.
STOPPED = "liif/stopped"
# The store key the main process (rank 0) writes as it leaves the process group.
MAIN_LEFT = "liif/main-left"
# The store key under which each process publishes the items of its share as it finishes them (``publish``).
PUBLISHED = "liif/published"
# How long a stopping process waits for the run's store: one that does not answer by then is as good as gone.
STORE_TIMEOUT = timedelta(seconds=5)


class AfterMain(LiifError):
    """A failure this process learnt of from the main process (rank 0), raised once that one has left the group."""


class SaidByMain(AfterMain):
    """A failure of the run that the main process (rank 0) prints for every process: this one stops silently."""


@dataclass
class Processes:
    """Where this process stands: its rank among ``world_size`` and the device it works on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class Launch:
    """This process within its torchrun launch, before and after its process group."""

    # whether a failure of this process may be its own (it has joined a group of several, or its GPU alone is
    # missing), not the command line's, which every process meets alike
    own_failures = False
    # whether another process of the run had stopped when this one did: where both were interrupted (a terminal's
    # Ctrl-C reaches every process, torchrun's agent passes a SIGTERM on to each), that one says so for the run
    stopped_after_another = False


def launch_rank() -> int:
    """This process's rank as torchrun launched it (0 outside torchrun), known before any process group."""
    return int(os.environ.get("RANK", "0"))


def local_processes() -> int:
    """How many processes torchrun started on this machine (1 outside torchrun), known before any process group."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def says_error(exc: LiifError) -> bool:
    """Whether this process prints ``exc``: not where rank 0 prints it for the run, as it does a failure that
    every process met alike: ``SaidByMain``, or one found from the command line alone, before the process group."""
    return not isinstance(exc, SaidByMain) and (launch_rank() == 0 or Launch.own_failures)


def says_interruption() -> bool:
    """Whether this process prints that the command was interrupted (Ctrl-C) or terminated (SIGTERM): not where
    another process of its run stopped first (``Launch.stopped_after_another``), which says it for the run."""
    return not Launch.stopped_after_another


def start_processes(device: str) -> Processes:
    """Join the ``torchrun`` process group when launched by it (WORLD_SIZE > 1), else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        dev = pick_device(device, local_rank)
    except LiifError:
        pick_device(device)  # where local rank 0's device is missing too, every process fails alike
        Launch.own_failures = True
        raise
    if world_size == 1:
        return Processes(0, 1, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    Launch.own_failures = True
    return Processes(dist.get_rank(), dist.get_world_size(), dev)


def stop_processes(procs: Processes) -> None:
    """Leave the process group; the main process says so in the run's store (``wait_for_main_to_leave``)."""
    if procs.distributed and dist.is_initialized():
        if procs.is_main:
            say_main_left()
        dist.destroy_process_group()


@contextmanager
def joined_processes(device: str) -> Iterator[Processes]:
    """``start_processes`` for the length of a with-block; at its end every process waits for the others (a rank
    that leaves while another still works can abort gloo) and leaves the group. Where the block raised, the process
    leaves at once, the first to stop saying so in the run's store; the others' collective calls then fail, and
    end each of them with a LiifError naming it."""
    procs = start_processes(device)
    try:
        yield procs
        wait_for_all(procs)
    except BaseException as exc:
        # such a call fails with the backend's traceback (gloo: a RuntimeError, "Connection closed by peer", in
        # DDP's reducer as in liif's own calls), which says only that a peer left; a RuntimeError where none has
        # stopped is this process's own, and keeps its traceback
        peer = peer_stopped() if procs.distributed and isinstance(exc, RuntimeError) else None
        if peer is None and procs.distributed and not isinstance(exc, AfterMain):  # the main process has left
            Launch.stopped_after_another = not say_stopped(procs)
        stop_processes(procs)
        if peer is not None:
            raise LiifError(peer) from None
        raise
    stop_processes(procs)


def run_store() -> dist.Store | None:
    """The process group's store, or None where its host has gone (rank 0, where torchrun's agent does not host
    it: the run is over)."""
    store = dist.distributed_c10d._get_default_store()  # torch has no public name for it
    server = store
    while isinstance(server, dist.PrefixStore):
        server = server.underlying_store
    if isinstance(server, dist.TCPStore):
        # a request to a store whose host has gone prints a C++ stack trace on stderr; a connection is refused
        try:
            socket.create_connection((server.host, server.port), STORE_TIMEOUT.total_seconds()).close()
        except OSError:
            return None
    store.set_timeout(STORE_TIMEOUT)
    return store


def say_stopped(procs: Processes) -> bool:
    """Write this process's rank under ``STOPPED`` in the run's store, unless another process did first; whether
    this one was the first (not where the store has gone: its host stopped first)."""
    store = run_store()
    if store is None:
        return False
    try:
        return store.compare_set(STOPPED, "", str(procs.rank)).decode() == str(procs.rank)
    except dist.DistError:  # the store went at this moment: the others find it gone, which says as much
        return False


def peer_stopped() -> str | None:
    """Where another process of the run has stopped, a one-line error saying so, naming its rank where it wrote
    it in the store; None where none has."""
    store = run_store()
    try:
        if store is not None and not store.check([STOPPED]):
            return None
        rank = store.get(STOPPED).decode() if store is not None else None
    except dist.DistError:  # the store went at this moment, with its host
        rank = None
    whose = "its" if rank is None else f"rank {rank}'s"
    return f"another process of this run stopped ({whose} error says why)"


def wait_for_all(procs: Processes) -> None:
    """Return once every process has come here (at once in a single process)."""
    if procs.distributed:
        dist.barrier()


@contextmanager
def main_work(procs: Processes, what: str) -> Iterator[None]:
    """A with-block of work the main process does while the others pass through it; at its end they learn
    whether it went well there, and stop too (a LiifError naming ``what``) where it did not."""
    # rather than at their next collective call: with gloo's traceback once rank 0's exit closes its connections,
    # or at the process group's timeout (30 minutes) where the backend does not notice that exit
    try:
        yield
    except BaseException:
        main_ok(procs, False)
        raise
    if not main_ok(procs, True):
        wait_for_main_to_leave()
        raise AfterMain(f"the main process (rank 0) failed {what}; its error says why")


@contextmanager
def alike(procs: Processes) -> Iterator[None]:
    """A with-block that every process runs alike before they share the work (checks, the model, the plan): at its
    end each learns the others' LiifErrors, and where any failed all stop, rank 0 printing the lowest failing
    rank's error once for all, and the others nothing."""
    # No collective call may run inside the block: a process that failed before it would wait here instead.
    if not procs.distributed:
        yield
        return
    error = None
    try:
        yield
    except LiifError as exc:
        error = exc
    message = None if error is None else str(error)
    errors = [pickle.loads(data) for data in gathered_bytes(pickle.dumps(message), procs)]
    failed = [(rank, message) for rank, message in enumerate(errors) if message is not None]
    if not failed:
        return
    rank, message = failed[0]
    if procs.is_main:
        raise error or LiifError(f"rank {rank}: {message}")
    wait_for_main_to_leave()
    raise SaidByMain(message)


def wait_for_main_to_leave(timeout: timedelta = timedelta(seconds=60)) -> None:
    """Return once the main process has left the process group (said so in the run's store, or gone with the store
    it hosted), or after ``timeout``."""
    # torchrun's agent ends every process once one has failed: the main process, which says why the run stopped,
    # leaves first so that it has said so before that. The wait is the host's, through the store: NCCL's
    # point-to-point waits only order the GPU's streams, and return at once.
    deadline = time.monotonic() + timeout.total_seconds()
    while time.monotonic() < deadline:
        store = run_store()
        try:
            if store is None or store.check([MAIN_LEFT]):
                return
        except dist.DistError:  # the store went at this moment, with its host
            return
        time.sleep(0.05)


def say_main_left() -> None:
    """Write ``MAIN_LEFT`` in the run's store (nothing where its host has gone)."""
    store = run_store()
    if store is not None:
        with suppress(dist.DistError):  # the store went at this moment: the others find it gone
            store.set(MAIN_LEFT, "1")


def main_ok(procs: Processes, ok: bool) -> bool:
    """The main process's ``ok``, on every process (each must call this)."""
    if not procs.distributed:
        return ok
    flag = torch.tensor([ok], dtype=torch.uint8, device=procs.device)
    dist.broadcast(flag, src=0)
    return bool(released(flag).item())


def released(tensor: torch.Tensor, timeout_s: float = 5.0) -> torch.Tensor:
    """``tensor`` once no collective's work holds it any more (only Python does), or after ``timeout_s``."""
    # gloo's threads drop a finished work's tensors a moment after wait() returns, and a barrier keeps the works
    # before it alive; a thread that drops a Python-made tensor while the interpreter shuts down needs the GIL
    # and aborts the process ("terminate called without an active exception", after every output was written).
    deadline = time.monotonic() + timeout_s
    while tensor._use_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    return tensor


def global_mean(value: torch.Tensor, procs: Processes) -> torch.Tensor:
    """The mean of a scalar over all processes (itself in a single process)."""
    if not procs.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return released(value) / procs.world_size


def global_sum(counts: list[int], procs: Processes) -> list[int]:
    """Counts summed over all processes (themselves in a single process)."""
    if not procs.distributed:
        return counts
    total = torch.tensor(counts, dtype=torch.int64, device=procs.device)
    dist.all_reduce(total)
    return released(total).tolist()


def gather_sharded(items: list, procs: Processes) -> list:
    """Every process's share of a list split as ``all[rank::world_size]``, put back in the original order."""
    if not procs.distributed:
        return items
    return in_order([pickle.loads(data) for data in gathered_bytes(pickle.dumps(items), procs)])


def in_order(shares: list[list]) -> list:
    """Shares of a list split as ``all[rank::world_size]``, by rank, put back in its order, however many of its
    items each holds (a share cut short where its process stopped)."""
    world_size = len(shares)
    indexed = [(i * world_size + rank, item) for rank, share in enumerate(shares) for i, item in enumerate(share)]
    return [item for _, item in sorted(indexed, key=lambda pair: pair[0])]


def publish(item: object, index: int, procs: Processes) -> None:
    """Put ``item``, the ``index``-th of this process's share, in the run's store, where ``published_shares``
    finds it even once this process has stopped (nothing in a single process, or once the store has gone)."""
    if not procs.distributed:
        return
    store = dist.distributed_c10d._get_default_store()  # run_store's connection check would cost every item
    with suppress(dist.DistError):
        store.set(f"{PUBLISHED}/{procs.rank}/{index}", pickle.dumps(item))
        store.add(f"{PUBLISHED}/{procs.rank}", 1)  # counted once set: a reader never waits for an item


def published_shares(procs: Processes) -> list | None:
    """The items every process has published (``publish``), in the order of ``gather_sharded``: what a run that
    stopped finished, however its processes stopped; None where the run's store has gone."""
    store = run_store()
    if store is None:
        return None
    try:
        shares = []
        for rank in range(procs.world_size):
            count = store.add(f"{PUBLISHED}/{rank}", 0)
            shares.append([pickle.loads(store.get(f"{PUBLISHED}/{rank}/{i}")) for i in range(count)])
    except dist.DistError:  # the store went at this moment, with its host
        return None
    return in_order(shares)


def gathered_bytes(data: bytes, procs: Processes) -> list[bytes]:
    """Every process's ``data``, by rank, through tensors made here that ``released`` waits for gloo to let go
    of (``all_gather_object`` gathers through its own)."""
    size = torch.tensor([len(data)], dtype=torch.int64, device=procs.device)
    sizes = torch.empty(procs.world_size, dtype=torch.int64, device=procs.device)
    gather_into(sizes, size)
    released(size)
    lengths = released(sizes).tolist()
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=procs.device)
    # a copy: a tensor over Python's buffer would need the GIL wherever gloo drops it
    padded[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    rows = torch.empty(procs.world_size * max(lengths), dtype=torch.uint8, device=procs.device)
    gather_into(rows, padded)
    released(padded)
    rows = released(rows).view(procs.world_size, -1).cpu()
    return [rows[rank, :length].numpy().tobytes() for rank, length in enumerate(lengths)]


def gather_into(output: torch.Tensor, tensor: torch.Tensor) -> None:
    """Every process's ``tensor``, of one size, into ``output``, one after the other by rank."""
    # torch renamed all_gather_into_tensor all_gather_single (2.13 has both, older ones only the first), and the
    # old name warns on stderr at each call
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(output, tensor)


def share_label(label: str, rank: int, world_size: int) -> str:
    """The label of a progress bar that counts one process's share of work split ``all[rank::world_size]``, so
    that it is not read as the whole: 'files (rank 0 of 4)'; ``label`` itself in a single process."""
    return f"{label} (rank {rank} of {world_size})" if world_size > 1 else label
