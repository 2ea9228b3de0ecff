"""``liif upscale`` through the command line, in subprocesses: sizes, batches, progress, and every bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BENCHMARKS, TINY, comic_crop, files_bar, run_ranks, screen, shared_file, upscale_cli
from liif import cli
from liif.imageio import Picture, read_picture
from liif.runtime import cpu_has_int8, has_cpp_compiler


def liif_upscale(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``liif upscale ARGS`` in a subprocess, its output decoded as written: text mode would turn the carriage
    returns that redraw a progress bar into newlines."""
    command = [sys.executable, "-m", "liif", "upscale", *map(str, args), "--model", str(shared_file(TINY)),
               "--threads", "1"]
    result = subprocess.run(command, cwd=cwd, capture_output=True, timeout=300)
    return subprocess.CompletedProcess(command, result.returncode, result.stdout.decode(), result.stderr.decode())


@pytest.fixture
def picture(tmp_path) -> Path:
    """A real 28x20 crop of Set14 comic."""
    path = tmp_path / "comic.png"
    Image.fromarray(comic_crop()).save(path)
    return path


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("liif upscale: error:")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("options,size", [
    (["--scale", "3.7"], (104, 74)),             # round(28 x 3.7) = 103.6, round(20 x 3.7) = 74
    (["--scale", "2,3"], (84, 40)),              # SY,SX: 2x taller, 3x wider
    (["--size", "333x222"], (333, 222)),
    (["--width", "70"], (70, 50)),
    (["--height", "15"], (21, 15)),              # 15 x 28/20
    (["--region", "2.5,3,12.5,9.5", "--scale", "2.2"], (22, 14)),  # 10 x 6.5 input pixels: 22 x 14.3
    (["--scale", "0.5"], (14, 10)),
    (["--scale", "1.125"], (32, 23)),            # 31.5 and 22.5: halves round up (README), not to even
])
def test_output_sizes(picture, tmp_path, capsys, options, size):
    with pytest.raises(SystemExit) as stop:  # in this process: a process each spent seconds importing torch
        cli.main(["upscale", str(picture), *options, "-o", str(tmp_path / "out.png"), "--quiet",
                  "--model", str(shared_file(TINY))])
    assert (stop.value.code, capsys.readouterr().err) == (0, "")
    assert Image.open(tmp_path / "out.png").size == size


def test_batch_goes_on_after_a_bad_file(picture, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(picture).save(folder / "a.png")
    Image.open(picture).convert("L").save(folder / "b.jpg")
    (folder / "broken.png").write_bytes(b"not a picture")
    result = liif_upscale(folder, "--scale", "2", "-o", tmp_path / "out", "--suffix", "_x2", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x2.png", "b_x2.jpg"]
    assert Image.open(tmp_path / "out" / "b_x2.jpg").mode == "L"
    assert "broken.png: not an image" in result.stderr
    assert "2 written, 1 failed" in result.stderr.strip().splitlines()[-1]
    # The failure advances the files bar, and its line stays whole above it.
    error, bar, summary = screen(result.stderr)
    assert error.startswith(f"liif upscale: error: {folder / 'broken.png'}: not an image") and error.endswith(")")
    assert files_bar(bar, 3, failed=1), result.stderr
    assert summary.startswith("liif upscale: 2 written, 1 failed")
    quiet = liif_upscale(folder, "--scale", "2", "-o", tmp_path / "out", "--suffix", "_x2", "--overwrite", "-q",
                         cwd=tmp_path)
    assert quiet.returncode == 1 and quiet.stderr == error + "\n"


def test_default_output_beside_input_and_overwrite(picture, tmp_path):
    assert liif_upscale(picture, "--scale", "2", "--quiet", cwd=tmp_path).returncode == 0
    output = tmp_path / "comic_liif.png"
    assert Image.open(output).size == (56, 40)
    one_line_error(liif_upscale(picture, "--scale", "2", "--quiet", cwd=tmp_path), "exists", "--overwrite")
    assert liif_upscale(picture, "--scale", "3", "--quiet", "--overwrite", cwd=tmp_path).returncode == 0
    assert Image.open(output).size == (84, 60)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def write_bad_inputs(tmp_path: Path, picture: Path) -> dict[str, Path]:
    data = picture.read_bytes()
    bad = {"text.png": b"hello, not an image\n", "truncated.png": data[:len(data) // 2], "empty.png": b"",
           # a PNG whose header says 0 x 0 pixels
           "zero.png": data[:16] + b"\x00" * 8 + data[24:]}
    paths = {}
    for name, content in bad.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize("name,fragment", [("text.png", "not an image"), ("truncated.png", "truncated"),
                                           ("empty.png", "not an image"), ("zero.png", "")])
def test_bad_image_files(picture, tmp_path, name, fragment):
    path = write_bad_inputs(tmp_path, picture)[name]
    one_line_error(liif_upscale(path, "--scale", "2", "-o", "out.png", "--quiet", cwd=tmp_path), name, fragment)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("options,fragment", [
    (["missing.png", "--scale", "2"], "no such file"),
    (["{picture}", "--scale", "0"], "above 0"),
    (["{picture}", "--scale", "-2"], "above 0"),
    (["{picture}", "--scale", "nan"], "above 0"),
    (["{picture}", "--scale", "inf"], "above 0"),
    (["{picture}", "--scale", "2", "--region", "10,10,5,20"], "region"),
    (["{picture}", "--scale", "1e308"], "scale must be a number above 0 and at most 16777216, got 1e+308"),
    (["{picture}", "--size", "infx10"], "size must be an int above 0 and at most 16777216, got inf"),
    (["{picture}", "--size", "1e300x1e300"], "at most 16777216"),
    (["{picture}", "--width", "2.5"], "width must be an int above 0 and at most 16777216, got 2.5"),
    (["{picture}", "--scale", "2", "--size", "10x10"], "exactly one of --scale, --size, --width or --height"),
    (["{picture}", "--region", "0,0,1e300,5", "--scale", "2"],
     "each coordinate of --region must be a number in [0, 16777216], got 1e+300"),
    (["{picture}", "--region", "0,0,50,50", "--scale", "2"], "--region 0,0,50,50 must satisfy 0 <= x0 < x1 <= "),
    (["{picture}", "--scale", "30", "--max-pixels", "10000"], "limit"),
    (["{picture}", "--scale", "100000", "--max-pixels", "1e30"], "memory"),
    (["{picture}", "--scale", "2", "--model", "no-such-model"], "unknown model"),
    (["{picture}", "--scale", "2", "-o", "{picture}/out.png"], "cannot write"),
    (["{picture}", "--scale", "2", "-o", "out.xyz"], "unknown output format"),
    (["{picture}", "--scale", "2", "-o", "out.mp4"],
     "out.mp4: .mp4 is a video format, for video inputs; write a picture as one of .bmp, "),
    (["{picture}", "--scale", "2", "-o", ""], "-o is empty"),  # once: written beside the input, exit 0
    (["{picture}", "--scale", "2", "--precision", "fp16", "--device", "cpu"], "fp16 is for GPUs"),
    # off AMX int8 is refused first; test_int8 checks the --compile refusal itself on any CPU
    (["{picture}", "--scale", "2", "--precision", "int8", "--compile", "default"],
     "--compile does not run int8" if cpu_has_int8() and has_cpp_compiler() else "precision int8 needs a CPU"),
    (["{picture}", "--scale", "2", "--tile", "0"], "--tile must be an int >= 1, got 0"),
    (["{picture}", "--scale", "2", "--threads", "0"], "--threads must be an int in [1, 1024], got 0"),
    (["{picture}", "--scale", "2", "--threads", "2147483648"], "--threads must be an int in [1, 1024], got 2147483648"),
    (["{picture}", "--scale", "2", "--batch", "0"], "--batch must be an int >= 1, got 0"),
    (["{picture}", "--scale", "2", "--max-pixels", "0.5"], "--max-pixels must be a number >= 1, got 0.5"),
    (["{picture}", "--scale", "2", "--max-pixels", "nan"], "--max-pixels must be a number >= 1, got nan"),
])
def test_bad_options(picture, tmp_path, monkeypatch, capsys, options, fragment):
    """Run in this process, all of stderr checked: a process each spent seconds importing torch (real processes
    say their one line in test_bad_image_files)."""
    args = [a.replace("{picture}", str(picture)) for a in options] + ["--quiet"]
    if "-o" not in args:
        args += ["-o", "out.png"]
    if "--model" not in args:
        args += ["--model", str(shared_file(TINY))]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["upscale", *args])
    one_line_error(subprocess.CompletedProcess(args, stop.value.code or 0, "", capsys.readouterr().err), fragment)
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "comic_liif.png").exists()


def test_progress_and_summary_on_stderr(picture, tmp_path):
    """One input: its pixel bar stays, and no files bar is drawn."""
    result = liif_upscale(picture, "--scale", "2", "-o", "out.png", cwd=tmp_path)
    assert result.returncode == 0
    bar, summary = screen(result.stderr)
    assert re.fullmatch(r"comic\.png: 100%\|.+\| 2\.24k/2\.24k \[.*px/s\]", bar), result.stderr
    assert summary.startswith("liif upscale: 1 written, 0 failed")
    assert result.stdout == ""


def test_a_batch_shows_one_files_bar_and_clears_each_pictures_bar(crops, tmp_path):
    result = liif_upscale(crops, "--scale", "2", "-o", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0
    bar, summary = screen(result.stderr)
    assert files_bar(bar, 5), result.stderr
    assert summary.startswith("liif upscale: 5 written, 0 failed")
    for i in range(5):  # each picture's pixel bar was drawn beneath the files bar while it rendered
        assert re.search(rf"\n\rp{i}\.png: +\d+%\|.*px/s\]\x1b\[A", result.stderr), result.stderr


def test_readme_python_example_matches_cli(picture, tmp_path):
    """The README's three lines of Python write what the CLI writes."""
    assert liif_upscale(picture, "--scale", "3.5", "-o", "cli.png", "--quiet", cwd=tmp_path).returncode == 0
    import liif
    liif.upscale(str(picture), scale=3.5, model=str(TINY), device="cpu").save(tmp_path / "api.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cli.png")), np.asarray(Image.open(tmp_path / "api.png")))


@pytest.fixture
def crops(tmp_path) -> Path:
    """Five real 24x20 crops of Set14 comic."""
    folder = tmp_path / "in"
    folder.mkdir()
    comic = Image.open(shared_file(BENCHMARKS / "Set14" / "comic.png")).convert("RGB")
    for i in range(5):
        comic.crop((10 * i, 10 * i, 10 * i + 24, 10 * i + 20)).save(folder / f"p{i}.png")
    return folder


def test_torchrun_shares_a_batch_and_writes_what_one_process_writes(crops, tmp_path):
    one = liif_upscale(crops, "--scale", "2", "-o", tmp_path / "one", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "liif", "upscale", str(crops), "--scale", "2", "-o", str(tmp_path / "two"), "--device", "cpu",
              "--model", str(shared_file(TINY)), "--threads", "1"]
    two = subprocess.run(launch, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    summaries = [line for line in two.stderr.splitlines() if line.startswith("liif upscale:")]
    assert summaries == [summaries[0]] and "5 written, 0 failed" in summaries[0]
    assert "on 2 processes" in summaries[0]
    # Rank 0 alone draws its files bar, which counts its share: p0, p2 and p4.
    bars = [line for line in two.stderr.splitlines() if line.startswith("files")]
    assert bars and files_bar(bars[-1], 3, label="files (rank 0 of 2)"), two.stderr
    assert all(line.startswith("files (rank 0 of 2): ") for line in bars), two.stderr
    for name in (f"p{i}.png" for i in range(5)):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


@pytest.mark.parametrize("mistake, error", [
    (["--scale", "2", "--bogus"], "unrecognized arguments: --bogus; see liif upscale --help"),  # the parser's
    (["--scale", "x"], "--scale 'x': expected 1 or 2 numbers separated by ','"),  # found before the process group
    (["--scale", "2", "--model", "no-such-model"], "unknown model 'no-such-model': not a file, and not a built-in "
                                                   "model (edsr-baseline-liif)"),
    (["--scale", "2", "-o", "{file}/out/"], "cannot create output folder {file}/out/: Not a directory"),
])
def test_a_mistake_every_process_meets_is_said_once_by_rank_0(crops, tmp_path, mistake, error):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    mistake = [part.format(file=blocker) for part in mistake]
    main, other = run_ranks([sys.executable, "-m", "liif", "upscale", crops, "--model", shared_file(TINY),
                             *mistake, "--device", "cpu", "--threads", "1"],
                            {**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, main.stderr) == (2, f"liif upscale: error: {error.format(file=blocker)}\n")
    assert (other.returncode, other.stderr) == (2, "")


# Rank 1 alone cannot load the model (its own GPU out of memory, say).
RANK_1_FAILS = """
import os, sys
import liif.commands.upscale as upscale
from liif.errors import LiifError
load = upscale.model_on
def failing(*args, **kwargs):
    if os.environ["RANK"] == "1":
        raise LiifError("out of memory")
    return load(*args, **kwargs)
upscale.model_on = failing
from liif.cli import main
main(sys.argv[1:])
"""


def test_a_mistake_of_one_process_before_the_work_is_said_by_rank_0_naming_it(crops, tmp_path):
    (tmp_path / "rank1.py").write_text(RANK_1_FAILS)
    main, other = run_ranks([sys.executable, tmp_path / "rank1.py", "upscale", crops, "--scale", "2", "-o",
                             tmp_path / "out", "--model", shared_file(TINY), "--device", "cpu", "--threads", "1"],
                            {**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, main.stderr) == (2, "liif upscale: error: rank 1: out of memory\n")
    assert (other.returncode, other.stderr) == (2, "")
    assert not list((tmp_path / "out").iterdir())  # rank 0 wrote nothing of its share


# Rank 1 plans a second after rank 0: a rank that starts writing before the others have planned changes what
# they find on disk (an output of rank 0's is "existing" to rank 1), and so how they share the jobs.
LATE_PLANNER = """
import os, sys, time
import liif.commands.upscale as upscale
plan = upscale.plan_outputs
def late(destinations):
    if os.environ["RANK"] == "1":
        time.sleep(1)
    return plan(destinations)
upscale.plan_outputs = late
from liif.cli import main
main(sys.argv[1:])
"""


def test_torchrun_skip_existing_shares_one_plan_however_late_a_rank_starts(crops, tmp_path):
    (tmp_path / "late.py").write_text(LATE_PLANNER)
    for i in range(5, 12):  # 12 pictures: rank 0 writes several before rank 1 has looked at the folder
        Image.open(crops / f"p{i % 5}.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(crops / f"p{i}.png")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "late.py",
              "upscale", str(crops), "--scale", "2", "-o", str(tmp_path / "out"), "--skip-existing",
              "--device", "cpu", "--model", str(shared_file(TINY)), "--threads", "1"]
    run = subprocess.run(launch, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    summaries = [line for line in run.stderr.splitlines() if line.startswith("liif upscale:")]
    assert len(summaries) == 1, run.stderr
    assert summaries[0].startswith("liif upscale: 12 written, 0 skipped (existing), 0 failed,"), run.stderr
    assert run.returncode == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"p{i}.png" for i in range(12))


def test_skip_existing_finishes_an_interrupted_batch(crops, tmp_path):
    out = tmp_path / "out"
    assert liif_upscale(crops, "--scale", "2", "-o", out, "--quiet", cwd=tmp_path).returncode == 0
    kept = (out / "p1.png").stat().st_mtime_ns
    (out / "p3.png").unlink()
    rerun = liif_upscale(crops, "--scale", "2", "-o", out, "--skip-existing", cwd=tmp_path)
    assert rerun.returncode == 0 and "1 written, 4 skipped (existing), 0 failed" in rerun.stderr
    assert files_bar(screen(rerun.stderr)[0], 1), rerun.stderr  # the files left to do; the summary counts the rest
    done = liif_upscale(crops, "--scale", "2", "-o", out, "--skip-existing", cwd=tmp_path)
    assert [line.split(", 0 failed")[0] for line in screen(done.stderr)] == \
        ["liif upscale: 0 written, 5 skipped (existing)"]  # nothing left to upscale: no bar
    assert (out / "p3.png").is_file() and (out / "p1.png").stat().st_mtime_ns == kept
    one_line_error(liif_upscale(crops, "--scale", "2", "-o", out, "--skip-existing", "--overwrite", "--quiet",
                                cwd=tmp_path), "give --skip-existing or --overwrite, not both")


def test_a_16bit_picture_written_where_8_bits_fit_says_so(tmp_path, capsys):
    """16-bit colour written as TIFF (which PIL writes in 8 bits) is a note, the picture written; as PNG, silence."""
    pixels = comic_crop().astype(np.uint16) * 257 + 100
    Picture(pixels).save(tmp_path / "scan.png")
    code, lines = upscale_cli(capsys, tmp_path / "scan.png", "--scale", "2", "-o", tmp_path / "out.tif")
    assert code == 0 and Image.open(tmp_path / "out.tif").mode == "RGB"
    assert lines == [f"liif upscale: note: {tmp_path / 'scan.png'}: 16 bits per channel written as 8 "
                     "(only gray TIFF is written with 16; .png keeps 16)"]
    code, lines = upscale_cli(capsys, tmp_path / "scan.png", "--scale", "2", "-o", tmp_path / "out.png")
    assert code == 0 and lines == [] and read_picture(tmp_path / "out.png").pixels.dtype == np.uint16
