"""``liif upscale`` on many pictures: reading ahead and writing behind the renderer change nothing in the files
written or in the order of the messages, stay bounded, and leave nothing half-written when interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import liif
import liif.commands.upscale
from conftest import BENCHMARKS, ROOT, TINY, shared_file, start_ranks, upscale_cli, wait_ranks
from liif.errors import LiifError
from liif.geometry import Geometry
from liif.imageio import read_picture, write_picture
from liif.upscale import render_picture

# Real pictures of several sizes and kinds: crops of Set5 (RGB, and one as gray).
CROPS = {"a.png": ("bird.png", (0, 0, 30, 22), "RGB"), "b.png": ("butterfly.png", (40, 40, 64, 58), "RGB"),
         "c.png": ("head.png", (100, 90, 121, 120), "L"), "d.png": ("woman.png", (20, 50, 48, 70), "RGB"),
         "e.png": ("baby.png", (200, 200, 226, 219), "RGB")}


@pytest.fixture
def folder(tmp_path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, (source, box, mode) in CROPS.items():
        with Image.open(shared_file(BENCHMARKS / "Set5" / source)) as img:
            img.convert(mode).crop(box).save(inputs / name)
    return inputs


def test_a_batch_writes_what_render_and_write_give_file_by_file(tmp_path, folder, capsys) -> None:
    code, lines = upscale_cli(capsys, folder, "--scale", "2.5", "-o", tmp_path / "out", quiet=False)
    assert code == 0 and lines[-1].startswith("liif upscale: 5 written, 0 failed")
    model = liif.load_model(shared_file(TINY))
    for name in CROPS:
        picture = read_picture(folder / name)
        target = Geometry(2.5).target(picture.pixels.shape[:2])
        write_picture(render_picture(model, picture, target), tmp_path / f"plain-{name}")
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / f"plain-{name}").read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(CROPS)


@pytest.mark.parametrize("output", ["out.png", "out.JPG", "out.mp4", "out.gif"])
def test_an_output_file_name_for_several_inputs_is_a_mistake_not_a_folder(tmp_path, folder, capsys, output) -> None:
    """Several inputs with -o out.png once made a folder named out.png and wrote into it, exit 0; an existing
    folder or a name ending in / is still a folder."""
    code, lines = upscale_cli(capsys, folder / "a.png", folder / "c.png", "--scale", "2", "-o", tmp_path / output)
    assert code == 2 and lines == [f"liif upscale: error: -o {tmp_path / output} names one output file, but the "
                                   "inputs are several (a folder or a glob counts): give a folder (end the name "
                                   "with / to make this one)"]
    assert not (tmp_path / output).exists()
    code, _ = upscale_cli(capsys, folder, "--scale", "2", "-o", f"{tmp_path / output}/")
    assert code == 0 and sorted(os.listdir(tmp_path / output)) == sorted(CROPS)
    code, _ = upscale_cli(capsys, folder / "a.png", folder / "c.png", "--scale", "2", "-o", tmp_path / output,
                          "--suffix", "_x2")
    assert code == 0 and (tmp_path / output / "a_x2.png").is_file()


def test_failures_in_the_middle_are_reported_in_input_order_and_the_rest_written(tmp_path, folder, capsys,
                                                                                 monkeypatch) -> None:
    (folder / "b.png").write_bytes(b"not a picture")  # fails when read
    real_write = liif.commands.upscale.write_picture

    def write(picture, path, overwrite=False):
        if Path(path).name == "c.png":  # fails when written, later than d's and e's reads
            time.sleep(0.3)
            raise LiifError(f"cannot write {path}: disk full")
        real_write(picture, path, overwrite)

    monkeypatch.setattr(liif.commands.upscale, "write_picture", write)
    (folder / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # fails when read
    code, lines = upscale_cli(capsys, folder, "--scale", "2", "-o", tmp_path / "out", quiet=False)
    assert code == 1
    assert [line.split(": ")[2] for line in lines[:-1]] == [str(folder / n) for n in ("b.png", "c.png", "e.png")]
    assert "disk full" in lines[1]
    assert lines[-1].startswith("liif upscale: 2 written, 3 failed")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "d.png"]


def test_a_folder_or_glob_listing_nothing_beside_others_fails_on_its_own_line(tmp_path, folder, capsys) -> None:
    """A typo in one glob of several, or an empty folder, is reported, not silently passed over."""
    (tmp_path / "empty").mkdir()
    typo = str(tmp_path / "nowhere" / "*.png")
    code, lines = upscale_cli(capsys, folder / "a.png", tmp_path / "empty", typo, "--scale", "2",
                              "-o", tmp_path / "out", quiet=False)
    assert code == 1
    assert lines[:-1] == [f"liif upscale: error: {tmp_path / 'empty'}: no picture or video to upscale in this folder",
                          f"liif upscale: error: {typo}: matches no picture or video"]
    assert lines[-1].startswith("liif upscale: 1 written, 2 failed")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_reading_and_writing_overlap_rendering_a_bounded_number_ahead_and_behind(tmp_path, folder, capsys,
                                                                                  monkeypatch) -> None:
    """Each render waits until the reader has read as far ahead as it may (2 pictures), and each write until the
    renderer has finished as far behind as it may (the next 2): both happen only if reading and writing run beside
    rendering. Waits end by events, never by a sleep; their timeout only ends a run that would otherwise hang."""
    names = sorted(CROPS)
    events: list[tuple[str, str]] = []
    happened = {(kind, name): threading.Event() for kind in ("read", "rendered") for name in names}
    missed: list[str] = []
    lock = threading.Lock()

    def log(kind: str, name: str) -> None:
        with lock:
            events.append((kind, name))
        if (kind, name) in happened:
            happened[kind, name].set()

    def wait_for(kind: str, name: str, waiting: str) -> None:
        if not happened[kind, name].wait(timeout=120):
            missed.append(f"{waiting} waited in vain for {kind} {name}")

    module = liif.commands.upscale
    real_read, real_render, real_write = module.read_picture, module.render_picture, module.write_picture

    def read(path):
        log("read", Path(path).name)
        return real_read(path)

    def render(model, picture, target, *args, label=None, **kwargs):
        log("render", label)
        wait_for("read", names[min(names.index(label) + 2, len(names) - 1)], f"render {label}")
        result = real_render(model, picture, target, *args, label=label, **kwargs)
        log("rendered", label)
        return result

    def write(picture, path, overwrite=False):
        name = Path(path).name
        log("write", name)
        if names.index(name) + 2 < len(names):
            wait_for("rendered", names[names.index(name) + 2], f"write {name}")
        real_write(picture, path, overwrite)
        log("written", name)

    for name, function in (("read_picture", read), ("render_picture", render), ("write_picture", write)):
        monkeypatch.setattr(module, name, function)
    code, _ = upscale_cli(capsys, folder, "--scale", "2", "-o", tmp_path / "out")
    assert code == 0
    assert not missed, missed  # reading ran 2 ahead of each render, and writing 2 behind
    position = {event: i for i, event in enumerate(events)}
    for i, name in enumerate(names):  # bounded: at most 2 read ahead of, and 2 unwritten behind, a render
        start, end = position[("render", name)], position[("rendered", name)]
        assert sum(1 for kind, _ in events[:end] if kind == "read") <= i + 3, events
        assert sum(1 for kind, _ in events[:start] if kind == "rendered") \
            - sum(1 for kind, _ in events[:start] if kind == "written") <= 2, events
    assert [n for kind, n in events if kind == "written"] == names


INTERRUPTED = '''
import sys, time
import liif.commands.upscale as command
real_render, real_write = command.render_picture, command.write_picture

def render(model, picture, target, *args, label=None, **kwargs):
    print("render", label, flush=True)
    time.sleep(0.5)
    return real_render(model, picture, target, *args, label=label, **kwargs)

def write(picture, path, overwrite=False):
    time.sleep(1.0)  # a write is queued when the interrupt comes
    real_write(picture, path, overwrite)

command.render_picture, command.write_picture = render, write
from liif.cli import main
main(sys.argv[1:])
'''


def script_environment() -> dict[str, str]:
    """This environment, with this checkout's package first on the path of a script's process."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))


def test_ctrl_c_with_writes_queued_leaves_only_whole_files(tmp_path, folder) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), "upscale", str(folder), "--scale", "2", "-o", str(out),
                             "--model", str(shared_file(TINY)), "--device", "cpu", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_environment())
    try:
        for line in proc.stdout:
            if line.strip() == "render c.png":  # a and b are rendered, a is being written, b waits
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "liif upscale: interrupted" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no temporary file, nothing partial
    for name in ("a.png", "b.png"):
        with Image.open(out / name) as img:
            img.load()  # decodes to the end: a whole file
            assert img.size == tuple(2 * s for s in Image.open(folder / name).size)
    assert np.asarray(Image.open(out / "a.png")).std() > 5  # a picture, not a blank


def test_ctrl_c_on_one_process_under_torchrun_stops_the_others_in_one_line(tmp_path, folder) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    main, other = start_ranks([sys.executable, script, "upscale", folder, "--scale", "2", "-o", tmp_path / "out",
                               "--model", shared_file(TINY), "--device", "cpu", "--threads", "1", "--quiet"],
                              {**script_environment(), "OMP_NUM_THREADS": "1"})
    for line in other.stdout:
        if line.strip() == "render d.png":  # rank 1's second picture: rank 0 is still at its own
            other.send_signal(signal.SIGINT)
            break
    main, other = wait_ranks([main, other])
    assert (other.returncode, other.stderr) == (130, "liif upscale: interrupted\n")
    assert (main.returncode, main.stderr) == (2, "liif upscale: error: another process of this run stopped (rank "
                                                 "1's error says why)\n")
    assert {"a.png", "c.png", "e.png"} <= {p.name for p in (tmp_path / "out").iterdir()}  # rank 0 ended its share
