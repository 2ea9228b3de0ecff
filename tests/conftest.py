"""Shared test helpers: where ../shared lives, a clean skip when a shared file is absent, the shared fixtures
(the tiny reference checkpoint, the Set14 comic crop and patch, the reference query sets), small runners and
minimal ICC profiles."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from liif import cli

ROOT = Path(__file__).resolve().parents[1]
# LIIF_SHARED points elsewhere when ../shared is absent (on the GPU machine: a copy in .gpu_data, same layout).
SHARED = Path(os.environ.get("LIIF_SHARED") or ROOT.parent / "shared").resolve()
REFERENCE = SHARED / "fixtures" / "reference"
BENCHMARKS = SHARED / "data" / "benchmarks"
DECODERS = SHARED / "fixtures" / "decoders"
TINY = REFERENCE / "tiny-edsr-liif.pth"  # the tiny reference checkpoint most tests render with
# The reference checkpoints of fixtures/reference, each with its .npz of outputs at every query set.
TINY_FIXTURES = ["tiny-edsr-liif", "tiny-edsr-liif-no-unfold", "tiny-edsr-liif-no-cell", "tiny-edsr-liif-no-ensemble",
                 "tiny-rdn-liif"]
QUERY_SETS = ["x1", "x2", "x3.7", "x2by3", "x12", "random", "edges"]
COMIC_BOX = (60, 40, 88, 60)  # x0, y0, x1, y1 of the Set14 comic crop

torch.set_num_threads(2)


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as its script run would, so its sibling imports (``common``) resolve."""
    folder = ROOT / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpu_check_with(tmp_path: Path, sections: str, *args: str) -> dict:
    """benchmarks/gpu_check.py run with the functions ``section_NAME`` that ``sections`` (Python source) defines in
    place of its own, the wrapper itself being what each section's process runs; the report it wrote
    (gpu_report.json, in tmp_path / "out")."""
    script = tmp_path / "gpu_check_with.py"
    script.write_text(f"import os, signal, sys\nsys.path.insert(0, {str(ROOT / 'benchmarks')!r})\nimport gpu_check\n"
                      f"{sections}\nfor name in gpu_check.CHILDREN:\n"
                      "    gpu_check.CHILDREN[name] = globals().get(f'section_{name}', gpu_check.CHILDREN[name])\n"
                      "sys.exit(gpu_check.main())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = run_group([sys.executable, script, "--out", tmp_path / "out", *args], env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "out" / "gpu_report.json").read_text())


def shared_file(path: Path) -> Path:
    """``path``, or a skip naming it when the shared material is not beside the clone."""
    if not path.exists():
        pytest.skip(f"shared material absent: {path}")
    return path


def comic_crop() -> np.ndarray:
    """A real 28x20 crop of Set14 comic, (20, 28, 3) uint8."""
    with Image.open(shared_file(BENCHMARKS / "Set14" / "comic.png")) as img:
        return np.array(img.convert("RGB").crop(COMIC_BOX))


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """``comic_crop()``, once per module."""
    return comic_crop()


def comic_patch() -> torch.Tensor:
    """The reference fixtures' 20x28 patch of Set14 comic, (1, 3, 20, 28) in [0, 1]."""
    return torch.from_numpy(np.load(shared_file(REFERENCE / "tiny-edsr-liif.npz"))["inp"]) * 0.5 + 0.5


def query_set_outputs(model: torch.nn.Module, fixture) -> dict[str, torch.Tensor]:
    """The model's output (on the CPU) at every query set of a reference fixture (an .npz), from its input."""
    device = next(model.parameters()).device
    with torch.no_grad():
        latents = model.latents(model.encode(torch.from_numpy(fixture["inp"]).to(device)))
        return {name: model.query(latents, torch.from_numpy(fixture[f"{name}.coord"]).to(device),
                                  torch.from_numpy(fixture[f"{name}.cell"]).to(device)).cpu()
                for name in QUERY_SETS}


def max_errors(model: torch.nn.Module, fixture) -> dict[str, float]:
    """The largest absolute difference from a reference fixture's outputs, per query set."""
    return {name: float((pred - torch.from_numpy(fixture[f"{name}.pred"])).abs().max())
            for name, pred in query_set_outputs(model, fixture).items()}


def upscale_cli(capsys, *args, quiet: bool = True) -> tuple[int, list[str]]:
    """``liif upscale`` in this process with the tiny model on the CPU: its exit code and its own stderr lines, as
    a terminal shows them (``screen``: a line written above nested progress bars follows their cursor moves)."""
    argv = ["upscale", *map(str, args), "--model", str(shared_file(TINY)), "--device", "cpu"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + (["--quiet"] if quiet else []))
    lines = screen(capsys.readouterr().err)
    return exit_info.value.code, [line for line in lines if line.startswith("liif upscale:")]


def screen(stderr: str) -> list[str]:
    """The non-blank lines a terminal shows once ``stderr`` is written to it: tqdm redraws a bar's line after a
    carriage return, and reaches a nested bar's line by newlines, then back by cursor-up (ESC [A)."""
    lines, row, col = [""], 0, 0
    for token in re.split(r"(\r|\n|\x1b\[A)", stderr):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\x1b[A":
            row = max(row - 1, 0)
        elif token:
            lines[row] = lines[row][:col].ljust(col) + token + lines[row][col + len(token):]
            col += len(token)
    return [line.rstrip() for line in lines if line.strip()]


def files_bar(line: str, done: int, failed: int = 0, label: str = "files") -> bool:
    """Whether ``line`` (of ``screen``) is ``liif upscale``'s files bar, done at ``done`` files, ``failed`` of them
    failed."""
    failures = f", {failed} failed" if failed else ""
    pattern = rf"{re.escape(label)}: 100%\|.+\| {done}/{done} \[.*(file/s|s/file){failures}\]"
    return re.fullmatch(pattern, line) is not None


# The groups start_group started and wait_group has not seen end. Their own session keeps them out of reach of
# a signal to pytest's group: a test stopped from outside must end them itself, or they outlive pytest (on the
# GPU machine they would go on using the card while gpu_check measures it).
LIVE_GROUPS: set[subprocess.Popen] = set()


def start_group(command: list, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen:
    """``command`` started in its own process group, its output captured."""
    proc = subprocess.Popen([str(c) for c in command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    LIVE_GROUPS.add(proc)
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s whole process group, whatever of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_group(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """How a command ``start_group`` started ended; its whole group (torchrun's workers too) is killed on timeout,
    which fails the test, and when the test is stopped while it waits (pytest-timeout, Ctrl-C, SIGTERM)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(proc.args)}\n{err[-3000:]}")
    except BaseException:
        kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a process leaving a GPU can take a moment
            proc.wait(timeout=5)
        raise
    finally:
        LIVE_GROUPS.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


PYTEST_PID = os.getpid()


def stop_on_sigterm(signum: int, frame) -> None:
    """SIGTERM (gpu_run.sh's time limit on the tests) ends the tests' process groups and stops pytest as Ctrl-C
    does, so that it still prints its summary and writes its junit XML."""
    if os.getpid() != PYTEST_PID:  # a child forked by a test (a DataLoader worker, say): terminated as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    for proc in list(LIVE_GROUPS):
        kill_group(proc)
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """pytest's SIGTERM is ``stop_on_sigterm`` (unless something else already handles it)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop_on_sigterm)


def run_group(command: list, timeout: float = 300, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group and kill the whole group (torchrun's workers too) on timeout,
    which fails the test."""
    return wait_group(start_group(command, env, cwd), timeout)


def free_port() -> int:
    """A TCP port of this machine that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(command: list, env: dict[str, str], cwd: Path = ROOT) -> list[subprocess.Popen]:
    """``command`` started as the 2 processes of a gloo group, as torchrun starts them, without its agent: it
    would stop the other rank (SIGTERM) once one fails, before that rank can say why."""
    port = str(free_port())
    return [start_group(command, {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}, cwd) for rank in range(2)]


def wait_ranks(ranks: list[subprocess.Popen], timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """How the processes of ``start_ranks`` ended; one still running after ``timeout`` (a hang) fails the test."""
    with ThreadPoolExecutor(len(ranks)) as pool:  # at once: a rank's pipe left unread could block it
        try:
            return list(pool.map(lambda proc: wait_group(proc, timeout), ranks))
        except BaseException:  # one rank timed out, or the test was stopped: the others end too
            for proc in ranks:
                kill_group(proc)
            raise


def run_ranks(command: list, env: dict[str, str], timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """``command`` run by the 2 processes of a gloo group (``start_ranks``), each ended within ``timeout``."""
    return wait_ranks(start_ranks(command, env), timeout)


@pytest.fixture
def umask_022():
    """The umask 022 of a usual login, restored afterwards (permission checks compare with a plain write)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def both_paths_training_step(model: torch.nn.Module, batch: int, side: int, queries: int, seed: int
                             ) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """One L1 training step on random inputs (``batch`` x ``side``², ``queries`` samples at scales in [1, 4]) by
    each query path: the outputs and the gradients of every trainable tensor, by path."""
    torch.manual_seed(seed)
    inp = torch.rand(batch, 3, side, side) * 2 - 1
    scale = torch.empty(batch, 1, 1).uniform_(1, 4)
    coord = torch.rand(batch, queries, 2) * 2 - 1
    cell = (2 / (side * scale)).expand(batch, queries, 2).contiguous()
    target = torch.rand(batch, queries, 3) * 2 - 1
    outputs, grads = {}, {}
    for path in ("reference", "fast"):
        model.zero_grad()
        model.query_path = path
        outputs[path] = model(inp, coord, cell)
        (outputs[path] - target).abs().mean().backward()
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return outputs, grads


@pytest.fixture
def kernel_launches() -> dict[str, int]:
    """How many times each Triton entry point runs from now on (a kernel comparison must not pass by falling
    back to torch): ``liif.kernels.triton_query.LAUNCHES``, zeroed."""
    triton_query = pytest.importorskip("liif.kernels.triton_query", reason="triton is not installed")
    triton_query.LAUNCHES.update(dict.fromkeys(triton_query.LAUNCHES, 0))
    return triton_query.LAUNCHES


def icc_profile(device_class: bytes, space: bytes, pcs: bytes, tags: list[tuple[bytes, bytes, bytes]]) -> bytes:
    """A minimal ICC v2 profile; ``tags`` are (signature, type, body)."""
    bodies = [kind + b"\0" * 4 + body + b"\0" * (-len(body) % 4) for _, kind, body in tags]
    offset, table = 128 + 4 + 12 * len(tags), struct.pack(">I", len(tags))
    for (signature, _, _), body in zip(tags, bodies):
        table += signature + struct.pack(">2I", offset, len(body))
        offset += len(body)
    d50 = struct.pack(">3i", 63190, 65536, 54061)
    header = struct.pack(">I4sI4s4s4s12s4s", offset, b"", 0x02100000, device_class, space, pcs, b"", b"acsp")
    return header + b"\0" * 28 + d50 + b"\0" * 48 + table + b"".join(bodies)


def common_tags() -> list[tuple[bytes, bytes, bytes]]:
    """The description and white point every test profile carries."""
    description = struct.pack(">I", 5) + b"test\0" + b"\0" * 11 + b"\0" * 67
    return [(b"desc", b"desc", description), (b"wtpt", b"XYZ ", struct.pack(">3i", 63190, 65536, 54061))]


def gray_profile() -> bytes:
    """A gray display profile: gamma 2.2."""
    return icc_profile(b"mntr", b"GRAY", b"XYZ ", common_tags() + [(b"kTRC", b"curv", struct.pack(">IH", 1, 0x0233))])
