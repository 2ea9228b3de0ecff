"""`liif eval` through the CLI on small real crops: layouts, LR sources, output files, and every bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch._dynamo
from PIL import Image
from torch._dynamo.utils import counters

import liif
from conftest import ROOT, TINY, run_group, run_ranks, shared_file
from evaluating import NAMES, expect_error, make_benchmark_set, run_cli, set5_crop
from facts import EDSR_Y
from liif.cli import main
from liif.evaluation.degrade import matlab_imresize
from liif.evaluation.metrics import psnr
from liif.evaluation.runner import plan


def y_psnr(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    """Spec 6.2 PSNR on Y of two uint8 (h, w, 3) images, shave per side."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 255 @ EDSR_Y
    return -10 * math.log10(np.mean(diff[shave:-shave, shave:-shave] ** 2))


def test_an_lr_file_that_matlab_rounded_up_is_scored_on_its_own_grid(tmp_path):
    """MATLAB's imresize(hr, 1/2) of a 45x53 HR makes a 23x27 LR (ceil), whose last pixels overhang the HR: such a
    file was refused (it needs 22x26), where the reference takes it (at a scale of 53 // 27 = 1, scoring nonsense).
    The model now renders the LR's own grid at x2 and is scored where it covers the HR: as well as on the HR
    cropped to a multiple of 2 with its own LR, where rendering the LR onto the HR's 45x53 loses 5 dB."""
    sets = {}
    for name, hr_size, lr_size in (("rounded-up", (53, 45), (27, 23)), ("modcropped", (52, 44), (26, 22))):
        root = sets[name] = tmp_path / name
        (root / "HR").mkdir(parents=True)
        (root / "LR_bicubic" / "X2").mkdir(parents=True)
        hr = set5_crop("baby", hr_size)
        Image.fromarray(hr).save(root / "HR" / "baby.png")
        Image.fromarray(matlab_imresize(hr, lr_size, 1 / 2)).save(root / "LR_bicubic" / "X2" / "babyx2.png")
    model = liif.load_model("edsr-baseline-liif")
    (odd,), (even,) = (liif.evaluate(model, sets[name], scales=[2], progress=False).scores
                       for name in ("rounded-up", "modcropped"))
    assert odd.lr_source == "files" and abs(odd.psnr - even.psnr) < 0.1 and abs(odd.ssim - even.ssim) < 0.01
    assert abs(odd.bicubic_psnr - even.bicubic_psnr) < 0.1
    hr = torch.from_numpy(set5_crop("baby", (53, 45))).permute(2, 0, 1) / 255
    lr = torch.from_numpy(np.array(Image.open(sets["rounded-up"] / "LR_bicubic" / "X2" / "babyx2.png")))
    with torch.no_grad():
        sr, stretched = (liif.render(model, lr.permute(2, 0, 1)[None] / 255, size)[0, :, :53, :45]
                         for size in ((54, 46), (53, 45)))
    assert odd.psnr == pytest.approx(psnr(sr, hr, 2, on_y=True), abs=1e-6)
    assert psnr(stretched, hr, 2, on_y=True) < odd.psnr - 3


def test_benchmark_layout_reads_lr_files_and_writes_csv_and_json(tmp_path, capsys):
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    out = tmp_path / "out"
    code, table, _ = run_cli(capsys, "--data", str(data), "--scales", "2,2.5", "--out", str(out))
    assert code == 0
    assert "| Tiny | x2 | x2.5 |" in table and "bicubic PSNR" in table
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["scale"], r["image"], r["lr_source"]) for r in rows] == \
        [("2", f"{n}.png", "files") for n in NAMES] + [("2.5", f"{n}.png", "pil") for n in NAMES]
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["Tiny", "settings"] and list(results["Tiny"]) == ["x2", "x2.5"]
    for key, scale in (("x2", "2"), ("x2.5", "2.5")):
        assert set(results["Tiny"][key]) == {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"}
        for metric, value in results["Tiny"][key].items():
            assert value == pytest.approx(np.mean([float(r[metric]) for r in rows if r["scale"] == scale]))
    # the bicubic row: PIL bicubic of the LR file back to the HR size, PSNR on Y with shave 2
    for row in rows[:3]:
        hr = set5_crop(row["image"][:-4])
        lr = Image.open(data / "LR_bicubic" / "X2" / row["image"].replace(".png", "x2.png"))
        up = np.array(lr.resize((hr.shape[1], hr.shape[0]), Image.BICUBIC))
        # float32 images, as the reference: 1e-6 dB from float64 arithmetic on the same 8-bit values
        assert float(row["bicubic_psnr"]) == pytest.approx(y_psnr(up, hr, 2), abs=1e-5)
        assert float(row["psnr"]) > float(row["bicubic_psnr"])  # the model beats bicubic on real content


def test_a_benchmark_named_by_its_hr_folder_reads_its_lr_files(tmp_path):
    # <Set>/HR was a plain folder: its LR made by PIL instead of read from the set's (MATLAB) files, its results
    # named "HR"
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    [(dataset, scale, source)] = plan([data / "HR"], [2], "auto")
    assert (dataset.name, dataset.layout, dataset.hr_dir, dataset.lr_root, source) == (
        "Tiny", "benchmark", data / "HR", data / "LR_bicubic", "files")
    assert plan([data / "HR"], [2], "auto") == plan([data], [2], "auto")
    # a folder named HR with no LR files beside it is a plain folder
    plain = tmp_path / "other" / "HR"
    shutil.copytree(data / "HR", plain)
    [(dataset, _, source)] = plan([plain], [2], "auto")
    assert (dataset.name, dataset.layout, source) == ("HR", "folder", "pil")


def test_lr_files_score_against_the_top_left_of_an_hr_the_scale_does_not_divide(tmp_path, capsys):
    """52x44 HR at x3: the LR files are 17x14, scored against the HR's top-left 51x42 (the reference's paired test),
    not another 51x42 window of it."""
    data = make_benchmark_set(tmp_path / "Tiny", scales=(3,))
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "--data", str(data), "--scales", "3", "--model", str(shared_file(TINY)),
                         "--device", "cpu", "--out", str(out))
    assert code == 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [(r["image"], r["lr_source"]) for r in rows] == [(f"{n}.png", "files") for n in NAMES]
    for row in rows:
        hr = set5_crop(row["image"][:-4])
        up = np.array(Image.open(data / "LR_bicubic" / "X3" / row["image"].replace(".png", "x3.png"))
                      .resize((42, 51), Image.BICUBIC))
        assert float(row["bicubic_psnr"]) == pytest.approx(y_psnr(up, hr[:51, :42], 3), abs=1e-5)
        assert abs(y_psnr(up, hr[1:, 2:], 3) - float(row["bicubic_psnr"])) > 0.01  # another window scores apart


def test_flat_folder_and_div2k_layout(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(set5_crop("bird")).save(flat / "bird.png")
    div2k = tmp_path / "div2k"
    hr_dir, lr_dir = div2k / "DIV2K_valid_HR", div2k / "DIV2K_valid_LR_bicubic" / "X3"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    hr = set5_crop("baby", (54, 48))
    Image.fromarray(hr).save(hr_dir / "0801.png")
    Image.fromarray(matlab_imresize(hr, (18, 16), 1 / 3)).save(lr_dir / "0801x3.png")
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "--data", str(flat), "--data", str(hr_dir), "--protocol", "div2k",
                         "--scales", "3", "--quantize", "--out", str(out))
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["flat", "DIV2K_valid_HR", "settings"]
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["lr_source"] for r in rows] == ["pil", "files"]
    # the DIV2K row: the model's output quantised to 8 bits, PSNR on RGB with shave 3 + 6, worked out here
    model = liif.load_model("edsr-baseline-liif")
    lr = torch.from_numpy(np.array(Image.open(lr_dir / "0801x3.png"))).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        sr = liif.render(model, lr[None], hr.shape[:2])[0].permute(1, 2, 0).double().numpy()
    quantised = np.round(sr * 255) / 255

    def rgb_psnr(image: np.ndarray, shave: int) -> float:
        diff = (image - hr / 255)[shave:-shave, shave:-shave]
        return -10 * math.log10(np.mean(diff**2))

    assert float(rows[1]["psnr"]) == pytest.approx(rgb_psnr(quantised, 9), abs=1e-6)
    # the check tells the options apart: unquantised output, or the benchmark shave, score differently
    assert abs(rgb_psnr(sr, 9) - rgb_psnr(quantised, 9)) > 1e-3
    assert abs(rgb_psnr(quantised, 3) - rgb_psnr(quantised, 9)) > 1e-3


def test_degrade_matlab_replaces_the_lr_files(tmp_path, capsys):
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    out = tmp_path / "out"
    assert run_cli(capsys, "--data", str(data), "--scales", "2", "--degrade", "matlab", "--out", str(out))[0] == 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert {r["lr_source"] for r in rows} == {"matlab"}
    # the LR files were made by the same MATLAB port, so the scores are those of the files
    files_out = tmp_path / "files"
    assert run_cli(capsys, "--data", str(data), "--scales", "2", "--out", str(files_out))[0] == 0
    from_files = list(csv.DictReader(open(files_out / "per_image.csv")))
    assert [r["psnr"] for r in rows] == [r["psnr"] for r in from_files]


def test_missing_and_empty_folders(tmp_path, capsys):
    expect_error(capsys, str(tmp_path / "nowhere"), "--data", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    expect_error(capsys, f"{tmp_path / 'empty'}: no images", "--data", str(tmp_path / "empty"))
    (tmp_path / "Set" / "HR").mkdir(parents=True)
    expect_error(capsys, f"{tmp_path / 'Set' / 'HR'}: no images", "--data", str(tmp_path / "Set"))


def test_a_folder_of_sets_or_of_lr_images_is_named_for_what_it_is(tmp_path, capsys):
    """The folder above the sets said only "no images"; an LR folder was scored as if its images were HR ones."""
    data = make_benchmark_set(tmp_path / "benchmark" / "Tiny", scales=(2,))
    (tmp_path / "benchmark" / "Other").mkdir()
    expect_error(capsys, f"{tmp_path / 'benchmark'}: no images in this folder, only folders (Other, Tiny): name each "
                         "set to score with --data", "--data", str(tmp_path / "benchmark"))
    for lr in (data / "LR_bicubic" / "X2", data / "LR_bicubic"):
        expect_error(capsys, f"{lr}: a folder of LR images; name the HR folder, or the set's folder that holds it",
                     "--data", str(lr), "--scales", "2")


def test_non_image_files_are_named(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(set5_crop("bird")).save(folder / "bird.png")
    (folder / "notes.txt").write_text("not a picture")
    expect_error(capsys, str(folder / "notes.txt"), "--data", str(folder), "--scales", "2")
    (folder / "notes.txt").unlink()
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    expect_error(capsys, str(folder / "broken.png"), "--data", str(folder), "--scales", "2")


def test_mismatched_lr_names_and_sizes(tmp_path, capsys):
    data = make_benchmark_set(tmp_path / "Renamed", scales=(2,), lr_names={"head": "face"})
    err = expect_error(capsys, str(data / "LR_bicubic" / "X2" / "headx2.png"), "--data", str(data), "--scales", "2")
    assert "missing" in err
    lr_dir = data / "LR_bicubic" / "X2"
    Image.open(lr_dir / "facex2.png").save(lr_dir / "headx2.png")
    # now every HR has its LR, and facex2.png is left without an HR
    expect_error(capsys, str(lr_dir / "facex2.png"), "--data", str(data), "--scales", "2")
    (lr_dir / "facex2.png").unlink()
    Image.fromarray(set5_crop("head", (20, 20))).save(lr_dir / "headx2.png")
    err = expect_error(capsys, str(lr_dir / "headx2.png"), "--data", str(data), "--scales", "2")
    assert "20x20" in err and "22x26" in err


def test_two_hr_images_of_one_name_are_refused_where_they_would_share_an_lr_file(tmp_path, capsys):
    """head.png and head.jpg were both scored against headx2.png: the JPEG's score was the PNG's LR upscaled."""
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    Image.fromarray(set5_crop("head")).save(data / "HR" / "head.jpg")
    expect_error(capsys, f"{data / 'HR' / 'head.jpg'} and {data / 'HR' / 'head.png'} would share the LR file "
                         f"{data / 'LR_bicubic' / 'X2' / 'headx2.png'}", "--data", str(data), "--scales", "2")
    # made from the HR, each has an LR of its own
    code, _, err = run_cli(capsys, "--data", str(data), "--scales", "2", "--degrade", "pil", "--model",
                           str(shared_file(TINY)), "--device", "cpu")
    assert code == 0, err


def test_a_scale_without_lr_files_where_the_protocol_needs_them(tmp_path, capsys):
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    err = expect_error(capsys, str(data / "LR_bicubic" / "X3"), "--data", str(data), "--scales", "2,3")
    assert "--degrade pil" in err
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(set5_crop("bird")).save(flat / "bird.png")
    expect_error(capsys, "no LR files for x2", "--data", str(flat), "--scales", "2", "--degrade", "files")


def test_a_set_without_its_lr_folder_is_told_where_the_lr_files_go(tmp_path, capsys):
    """<Set>/HR beside an LR folder of another name (<Set>/LR) was told only that <Set>/HR had no LR files."""
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    (data / "LR_bicubic").rename(data / "LR")
    expect_error(capsys, f"{data / 'LR_bicubic' / 'X2'}: no LR files for x2, which the benchmark protocol at x2-x4 "
                         "requires", "--data", str(data), "--scales", "2")
    div2k = tmp_path / "div2k"
    (div2k / "DIV2K_valid_HR").mkdir(parents=True)
    Image.fromarray(set5_crop("bird")).save(div2k / "DIV2K_valid_HR" / "0801.png")
    expect_error(capsys, f"{div2k / 'DIV2K_valid_LR_bicubic' / 'X4'}: no LR files for x4", "--data", str(div2k),
                 "--scales", "4")


def test_bad_options(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(set5_crop("bird")).save(flat / "bird.png")
    expect_error(capsys, "--scales", "--data", str(flat), "--scales", "2,x")
    expect_error(capsys, "at least 1", "--data", str(flat), "--scales", "0")
    expect_error(capsys, "too small", "--data", str(flat), "--scales", "60")
    expect_error(capsys, "unknown model", "--data", str(flat), "--scales", "2", "--model", "no-such-model")
    (tmp_path / "a-file").write_text("")
    expect_error(capsys, str(tmp_path / "a-file" / "out"), "--data", str(flat), "--out", str(tmp_path / "a-file" / "out"))


def test_help_documents_the_protocol(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("floor(H/s + 1e-9)", "shave s + 6", "SSIM on Y", "not quantised", "--degrade", "PIL bicubic"):
        assert phrase in text


def test_errors_reach_the_shell_as_one_line_without_traceback(tmp_path):
    run = subprocess.run([sys.executable, "-m", "liif", "eval", "--data", str(tmp_path / "missing")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == f"liif eval: error: {tmp_path / 'missing'}: no such folder"


def test_an_image_too_small_for_the_shave_is_named(tmp_path, capsys):
    folder = tmp_path / "small"
    folder.mkdir()
    Image.fromarray(set5_crop("bird", (16, 16))).save(folder / "tiny.png")
    expect_error(capsys, f"{folder / 'tiny.png'} at x4", "--data", str(folder), "--scales", "4")


def test_self_ensemble_reaches_the_model(tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(set5_crop("butterfly", (32, 32))).save(folder / "butterfly.png")
    plain, ensemble = tmp_path / "plain", tmp_path / "ensemble"
    assert run_cli(capsys, "--data", str(folder), "--scales", "2", "--out", str(plain))[0] == 0
    assert run_cli(capsys, "--data", str(folder), "--scales", "2", "--self-ensemble", "--out", str(ensemble))[0] == 0
    a, b = (json.loads((d / "results.json").read_text())["one"]["x2"] for d in (plain, ensemble))
    assert a["psnr"] != b["psnr"] and abs(a["psnr"] - b["psnr"]) < 0.5
    assert a["bicubic_psnr"] == b["bicubic_psnr"]


def test_compiled_queries_score_as_eager_and_a_kernel_without_cuda_is_refused(tmp_path, capsys, monkeypatch):
    """The model options every rendering command shares (--kernel, --compile) reach eval's model."""
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(set5_crop("butterfly", (32, 32))).save(folder / "butterfly.png")
    scores, graphs = {}, {}
    for mode in ("none", "default"):
        out = tmp_path / mode
        torch._dynamo.reset()
        counters.clear()
        assert run_cli(capsys, "--data", str(folder), "--scales", "2", "--device", "cpu", "--compile", mode,
                       "--out", str(out))[0] == 0
        scores[mode] = json.loads((out / "results.json").read_text())["one"]["x2"]["psnr"]
        graphs[mode] = counters["stats"]["unique_graphs"]
    assert graphs == {"none": 0, "default": 1}, graphs  # the queries were compiled, once, only when asked
    assert abs(scores["default"] - scores["none"]) < 1e-4, scores
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    expect_error(capsys, "kernel triton-first-layer", "--data", str(folder), "--scales", "2", "--device", "cpu",
                 "--kernel", "triton-first-layer")


def test_torchrun_shares_the_images_and_rank_0_reports_what_one_process_does(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    for name in NAMES:
        Image.fromarray(set5_crop(name)).save(data / f"{name}.png")
    model = str(shared_file(TINY))
    common = ["-m", "liif", "eval", "--data", str(data), "--scales", "2,3", "--degrade", "pil", "--model", model,
              "--device", "cpu", "--threads", "1"]
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one"), "--quiet"], capture_output=True,
                         text=True, timeout=300)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.run([*launch, *common, "--out", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert two.stdout == one.stdout and "| set | x2 | x3 |" in one.stdout  # one table, printed once
    # Rank 0 alone draws its bar, which counts its share (3 of the 6 items) and says so.
    bars = [line for line in two.stderr.splitlines() if line.startswith("set x")]
    assert bars and all(" (rank 0 of 2): " in line for line in bars), two.stderr
    assert re.fullmatch(r"set x3 \(rank 0 of 2\): 100%\|.+\| 3/3 \[.*(img/s|s/img)\]", bars[-1]), two.stderr
    assert (tmp_path / "two" / "per_image.csv").read_bytes() == (tmp_path / "one" / "per_image.csv").read_bytes()
    results = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "two")]
    for run_results, processes in zip(results, (1, 2)):  # the settings say how many shared the work, and when
        assert run_results["settings"].pop("processes") == processes
        del run_results["settings"]["date"]
    assert results[0] == results[1]


@pytest.mark.parametrize("mistake, error", [
    (["--model", "no-such-model"], "unknown model 'no-such-model': not a file, and not a built-in model "
                                   "(edsr-baseline-liif)"),
    (["--out", "{file}/out"], "{file}/out: cannot create the output folder (Not a directory)"),
])
def test_a_mistake_every_process_meets_is_said_once_by_rank_0(tmp_path, mistake, error):
    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(set5_crop(NAMES[0])).save(data / f"{NAMES[0]}.png")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    main, other = run_ranks([sys.executable, "-m", "liif", "eval", "--data", data, "--scales", "2", "--model",
                             shared_file(TINY), *(part.format(file=blocker) for part in mistake), "--device", "cpu",
                             "--threads", "1"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, main.stderr) == (2, f"liif eval: error: {error.format(file=blocker)}\n")
    assert (other.returncode, other.stderr) == (2, "")


# A disk that is full when rank 0 writes the results, after every rank has scored its share.
FULL_DISK = """
import sys
import liif.evaluation.runner as runner
from liif.errors import LiifError

def full(texts):
    raise LiifError(f"cannot write {next(iter(texts))}: No space left on device")

runner.write_texts = full
from liif.cli import main
main(sys.argv[1:])
"""


def test_a_failure_of_rank_0_to_write_the_results_stops_every_rank_in_one_line(tmp_path):
    data = tmp_path / "set"
    data.mkdir()
    for name in NAMES[:2]:
        Image.fromarray(set5_crop(name)).save(data / f"{name}.png")
    (tmp_path / "full.py").write_text(FULL_DISK)
    main, other = run_ranks([sys.executable, tmp_path / "full.py", "eval", "--data", data, "--scales", "2",
                             "--degrade", "pil", "--model", shared_file(TINY), "--device", "cpu", "--threads", "1",
                             "--quiet", "--out", tmp_path / "out"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (main.returncode, other.returncode) == (2, 2), other.stderr[-3000:]
    written = tmp_path / "out" / "per_image.csv"
    assert main.stderr == f"liif eval: error: cannot write {written}: No space left on device\n"
    assert "| set | x2 |" in main.stdout  # the table was printed before the write
    assert other.stderr == ("liif eval: error: the main process (rank 0) failed to report the results; its error "
                            "says why\n")


# As FULL_DISK, with rank 0 slow to leave the process group (its store far away, say).
SLOW_TO_LEAVE = FULL_DISK.replace("from liif.cli import main", """import time
import liif.distributed as distributed
stop = distributed.stop_processes
def slow(procs):
    if procs.is_main:
        time.sleep(2)
    stop(procs)
distributed.stop_processes = slow
from liif.cli import main""")


def test_under_torchrun_rank_0_says_why_it_failed_before_the_others_stop(tmp_path):
    # torchrun's agent ends every process once one has stopped: the others wait for rank 0 to leave first
    data = tmp_path / "set"
    data.mkdir()
    Image.fromarray(set5_crop(NAMES[0])).save(data / f"{NAMES[0]}.png")
    (tmp_path / "slow.py").write_text(SLOW_TO_LEAVE)
    result = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        tmp_path / "slow.py", "eval", "--data", data, "--scales", "2", "--degrade", "pil", "--model",
                        shared_file(TINY), "--device", "cpu", "--threads", "1", "--quiet", "--out", tmp_path / "out"],
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("liif eval: error:")]
    why = f"liif eval: error: cannot write {tmp_path / 'out' / 'per_image.csv'}: No space left on device"
    assert why in errors, result.stderr[-3000:]
    # rank 1's own line, where the agent has not ended it first
    assert set(errors) <= {why, "liif eval: error: the main process (rank 0) failed to report the results; its error "
                                "says why"}


# Rank 1 meets a picture it cannot read at its second item, after scoring its first.
FAILS_ON_RANK_1 = """
import os
import sys
import liif.evaluation.runner as runner
from liif.errors import LiifError

score_image, calls = runner.evaluate_image, []

def second_fails_on_rank_1(*args, **kwargs):
    calls.append(args)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        raise LiifError("rank 1's second picture is cut short")
    return score_image(*args, **kwargs)

runner.evaluate_image = second_fails_on_rank_1
from liif.cli import main
main(sys.argv[1:])
"""


def test_under_torchrun_the_partial_results_hold_what_every_rank_finished(tmp_path):
    """Another rank failing mid-run lost rank 0's scores at the gather, and a stopped run's partial files held
    rank 0's share alone."""
    data = tmp_path / "set"
    data.mkdir()
    for name in NAMES[:2]:
        Image.fromarray(set5_crop(name)).save(data / f"{name}.png")
    (tmp_path / "fails.py").write_text(FAILS_ON_RANK_1)
    out = tmp_path / "out"
    main, other = run_ranks([sys.executable, tmp_path / "fails.py", "eval", "--data", data, "--scales", "2,3",
                             "--degrade", "pil", "--model", shared_file(TINY), "--device", "cpu", "--threads", "1",
                             "--quiet", "--out", out], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (other.returncode, other.stderr) == (2, "liif eval: error: rank 1's second picture is cut short\n")
    assert (main.returncode, main.stderr) == (2, "liif eval: error: another process of this run stopped (rank 1's "
                                                 f"error says why); kept the 3 image scores finished in "
                                                 f"{out}/per_image.partial.csv and {out}/results.partial.json\n")
    # items (x2 baby, x2 bird, x3 baby, x3 bird) were shared 0, 1, 0, 1: all but rank 1's second, in order
    with open(out / "per_image.partial.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["scale"], r["image"]) for r in rows] == [("2", "baby.png"), ("2", "bird.png"), ("3", "baby.png")]
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    assert list(json.loads((out / "results.partial.json").read_text())["set"]) == ["x2", "x3"]
