"""`liif eval` on hostile input: non-finite scores in strict JSON, bad scales and threads, unreadable and odd files,
each a one-line error naming what is wrong."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import liif.commands.eval
import liif.evaluation.runner
from conftest import TINY, load_benchmark, shared_file
from evaluating import expect_error, make_benchmark_set, run_cli, set5_crop
from liif.errors import LiifError
from liif.evaluation import EvalResults, ImageScore, evaluate


def strict_json(text: str):
    """Parse ``text`` refusing the NaN and Infinity tokens that are not JSON."""
    def refuse(token: str):
        raise AssertionError(f"{token} in results.json: not JSON")
    return json.loads(text, parse_constant=refuse)


def flat_folder(root: Path) -> Path:
    """A folder with a flat gray image (PIL bicubic of a flat LR is exact: bicubic PSNR is +inf) and a real crop."""
    root.mkdir()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(root / "gray.png")
    Image.fromarray(set5_crop("bird", (40, 40))).save(root / "bird.png")
    return root


def test_an_exact_reconstruction_writes_null_and_names_the_infinity(tmp_path, capsys):
    data, out = flat_folder(tmp_path / "flat"), tmp_path / "out"
    code, table, _ = run_cli(capsys, "--data", str(data), "--scales", "2", "--out", str(out),
                             "--model", str(shared_file(TINY)))
    assert code == 0 and "| bicubic PSNR | inf |" in table
    text = (out / "results.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    entry = strict_json(text)["flat"]["x2"]
    # the mean of +inf and a finite PSNR is +inf: null, and non_finite says which value it was
    assert entry["bicubic_psnr"] is None and entry["non_finite"] == {"bicubic_psnr": "inf"}
    assert all(math.isfinite(entry[m]) for m in ("psnr", "ssim", "bicubic_ssim"))
    rows = {r["image"]: r for r in csv.DictReader(open(out / "per_image.csv"))}
    assert rows["gray.png"]["bicubic_psnr"] == "inf" and math.isfinite(float(rows["bird.png"]["bicubic_psnr"]))


def test_results_write_any_non_finite_score_as_null():
    scores = [ImageScore("A", 2.0, "a.png", "pil", math.inf, 1.0, 30.0, 0.9),
              ImageScore("A", 2.0, "b.png", "pil", 31.0, math.nan, 30.0, 0.9),
              ImageScore("A", 3.0, "a.png", "pil", 28.0, 0.8, -math.inf, 0.7),
              ImageScore("B", 2.5, "c.png", "pil", 29.0, 0.85, 27.0, 0.8)]
    results = EvalResults("m", scores)
    means = results.json_means()
    text = json.dumps(means, allow_nan=False)  # strict JSON: raises on any NaN or infinity left
    assert strict_json(text) == {
        "A": {"x2": {"psnr": None, "ssim": None, "bicubic_psnr": 30.0, "bicubic_ssim": 0.9,
                     "non_finite": {"psnr": "inf", "ssim": "nan"}},
              "x3": {"psnr": 28.0, "ssim": 0.8, "bicubic_psnr": None, "bicubic_ssim": 0.7,
                     "non_finite": {"bicubic_psnr": "-inf"}}},
        "B": {"x2.5": {"psnr": 29.0, "ssim": 0.85, "bicubic_psnr": 27.0, "bicubic_ssim": 0.8}}}
    assert results.means()["A"]["x2"]["psnr"] == math.inf  # the Python API keeps the float


def test_written_files_hold_no_json_infinity(tmp_path):
    scores = [ImageScore("A", 2.0, "a.png", "pil", math.inf, math.nan, 30.0, 0.9)]
    EvalResults("m", scores).write(tmp_path)
    results = strict_json((tmp_path / "results.json").read_text())
    assert results["A"]["x2"]["psnr"] is None and results["A"]["x2"]["non_finite"] == {"psnr": "inf", "ssim": "nan"}
    row = next(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert (row["psnr"], row["ssim"]) == ("inf", "nan")


@pytest.mark.parametrize("scales", ["", ",", " ", " , "])
def test_empty_scales_are_a_one_line_error(tmp_path, capsys, scales):
    """`--scales ''` once ran the default preset silently."""
    data = flat_folder(tmp_path / "flat")
    err = expect_error(capsys, "give at least one scale", "--data", str(data), "--scales", scales)
    assert repr(scales) in err


@pytest.mark.parametrize("scales,mentions", [("0.5", "at least 1"), ("1e-300", "at least 1"), ("-0", "at least 1"),
                                              ("nan", "got nan"), ("inf", "got inf"), ("2,-inf", "got -inf"),
                                              ("1e308", "too small"), ("0x10", "--scales"), ("2;3", "--scales")])
def test_scales_out_of_range_are_one_line_errors(tmp_path, capsys, scales, mentions):
    """x1e-300 once asked PIL for an LR of 1e300 pixels a side (an OverflowError traceback)."""
    data = flat_folder(tmp_path / "flat")
    expect_error(capsys, mentions, "--data", str(data), "--scales", scales, "--model", str(shared_file(TINY)))


@pytest.mark.parametrize("script", ["eval_speed", "decoder_speed", "int8_quality"])
def test_benchmark_scripts_read_scales_as_liif_eval_does(monkeypatch, capsys, script):
    """`eval_speed.py --scales x` once ended in a ValueError traceback."""
    monkeypatch.setattr("sys.argv", [f"{script}.py", "--scales", "2,x"])
    with pytest.raises(SystemExit) as stop:
        load_benchmark("common").run_script(load_benchmark(script).main)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"{script}.py: error: --scales '2,x': expected numbers like 2,3,4 " \
                                              "or a preset (benchmark, div2k)"


def test_evaluate_checks_its_scales(tmp_path):
    data = flat_folder(tmp_path / "flat")
    for scales, mentions in (([], "no scale"), (["2"], "'2'"), ([True], "True"), ([0.99], "at least 1"),
                             ([None], "None")):
        with pytest.raises(LiifError, match=mentions):
            evaluate(str(shared_file(TINY)), data, scales=scales, progress=False)
    # one number is one scale
    assert list(evaluate(str(shared_file(TINY)), data, scales=2, progress=False).means()["flat"]) == ["x2"]


def test_evaluate_without_scales_takes_its_protocol_s_preset_as_the_command_does(tmp_path, capsys, monkeypatch):
    """evaluate(protocol="div2k") scored the benchmark preset, liif eval --protocol div2k the div2k one; then the
    command kept a copy of the preset lookup of its own: one owner now, which both plan with."""
    monkeypatch.setattr(liif.evaluation.runner, "SCALE_PRESETS", {"benchmark": (2,), "div2k": (3,)})
    data = flat_folder(tmp_path / "flat")
    for protocol, keys in (("benchmark", ["x2"]), ("div2k", ["x3"])):
        results = evaluate(str(shared_file(TINY)), data, protocol=protocol, degrade="pil", progress=False)
        assert list(results.means()["flat"]) == keys
        out = tmp_path / protocol
        code, _, err = run_cli(capsys, "--data", str(data), "--protocol", protocol, "--degrade", "pil", "--model",
                               str(shared_file(TINY)), "--device", "cpu", "--out", str(out))
        assert code == 0, err
        assert list(json.loads((out / "results.json").read_text())["flat"]) == keys


@pytest.mark.parametrize("chunk_size", [0, 2.5, "4096"])
def test_evaluate_refuses_a_chunk_size_before_the_model_loads(tmp_path, chunk_size):
    """As --chunk-size is: it was refused at the first render, once the model had been looked for and loaded."""
    with pytest.raises(LiifError, match=f"^chunk_size must be an int >= 1, got {chunk_size!r}$"):
        evaluate(tmp_path / "absent.pth", flat_folder(tmp_path / "flat"), scales=[2], chunk_size=chunk_size,
                 progress=False)


@pytest.mark.parametrize("shard", [(0, 0), (2, 2), (-1, 2), (0.5, 2), (0, 2.0), (True, 2), (0,), "01", None])
def test_evaluate_refuses_a_shard_that_is_no_rank_of_its_processes(tmp_path, shard):
    """(2, 2) silently scored every second image from the third (rank 0's share, but the first), (0, 0) raised
    slicing's ValueError, once the model had loaded."""
    with pytest.raises(LiifError, match=r"^shard must be \(rank, processes\), whole numbers with 0 <= rank < "
                                        r"processes, got "):
        evaluate(tmp_path / "absent.pth", flat_folder(tmp_path / "flat"), scales=[2], shard=shard, progress=False)


def test_evaluate_scores_its_shard_of_the_images(tmp_path):
    data = flat_folder(tmp_path / "flat")
    shares = [evaluate(str(shared_file(TINY)), data, scales=[2], shard=(rank, 2), progress=False) for rank in (0, 1)]
    assert [[s.image for s in share.scores] for share in shares] == [["bird.png"], ["gray.png"]]


@pytest.mark.parametrize("model,what", [(torch.nn.Linear(2, 3), "Linear"), (None, "NoneType")])
def test_evaluate_refuses_what_is_no_image_model_in_words(tmp_path, model, what):
    """As liif.upscale does: an encoder alone or no model at all failed with an AttributeError (no cell_clip)."""
    with pytest.raises(LiifError, match=f"^model must be an image model .*, got {what}$"):
        evaluate(model, flat_folder(tmp_path / "flat"), scales=[2], progress=False)


@pytest.mark.parametrize("option,value,bound", [("--threads", "0", "in [1, 1024]"), ("--threads", "-1", "in [1, 1024]"),
                                               ("--threads", "100000", "in [1, 1024]"), ("--chunk-size", "0", ">= 1")])
def test_counts_out_of_bounds_are_refused(tmp_path, capsys, option, value, bound):
    data = flat_folder(tmp_path / "flat")
    expect_error(capsys, f"{option} must be an int {bound}, got {value}", "--data", str(data), "--scales", "2",
                 option, value)


def test_a_16_bit_hr_image_is_named(tmp_path, capsys):
    data = tmp_path / "deep"
    data.mkdir()
    Image.fromarray(np.full((40, 40), 30000, np.uint16)).save(data / "deep.png")  # a 16-bit gray PNG
    expect_error(capsys, f"{data / 'deep.png'}: a 16-bit image", "--data", str(data), "--scales", "2")


def test_a_corrupt_or_non_image_lr_file_is_named(tmp_path, capsys):
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    lr = data / "LR_bicubic" / "X2" / "birdx2.png"
    lr.write_bytes(lr.read_bytes()[:60])  # truncated
    expect_error(capsys, str(lr), "--data", str(data), "--scales", "2")
    lr.write_bytes(b"GIF89a not a picture at all")
    expect_error(capsys, str(lr), "--data", str(data), "--scales", "2")


def test_unlistable_folders_are_one_line_errors(tmp_path, capsys, monkeypatch):
    """A folder that cannot be listed (permission denied; simulated, as tests may run as root)."""
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    iterdir = Path.iterdir

    def refuse(self, denied):
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    for denied in (data / "HR", data / "LR_bicubic" / "X2"):
        monkeypatch.setattr(Path, "iterdir", lambda self, denied=denied: refuse(self, denied))
        err = expect_error(capsys, f"{denied}: cannot list", "--data", str(data), "--scales", "2")
        assert "Permission denied" in err


def test_a_model_path_that_is_a_folder_or_too_long_is_a_one_line_error(tmp_path, capsys):
    data = flat_folder(tmp_path / "flat")
    expect_error(capsys, f"{tmp_path}: is a folder", "--data", str(data), "--scales", "2", "--model", str(tmp_path))
    expect_error(capsys, "File name too long", "--data", str(data), "--scales", "2", "--model", "m" * 5000 + ".pth")


def test_an_output_file_that_is_a_folder_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    """A folder where per_image.csv goes used to fail only once the whole evaluation had run."""
    data, out = flat_folder(tmp_path / "flat"), tmp_path / "out"
    (out / "per_image.csv").mkdir(parents=True)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output folder was checked")

    monkeypatch.setattr(liif.commands.eval, "score_runs", must_not_run)
    expect_error(capsys, f"{out / 'per_image.csv'}: is a folder", "--data", str(data), "--scales", "2",
                 "--out", str(out), "--model", str(shared_file(TINY)))


def test_images_a_scale_cannot_score_are_refused_before_any_render(tmp_path, capsys, monkeypatch):
    """Image sizes were checked only when each image's turn came: a set's last image too small for x8, or a
    mis-sized LR file, failed the run after every image before it had been rendered (hours, on DIV2K)."""
    def must_not_render(*args, **kwargs):
        raise AssertionError("an image was rendered before every image had been checked")

    monkeypatch.setattr(liif.evaluation.runner, "render", must_not_render)
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(set5_crop("bird", (120, 120))).save(folder / "a.png")
    Image.fromarray(set5_crop("head", (40, 40))).save(folder / "z.png")  # x8: 5x5 LR, 40 - 2 x 8 = 24 px scored
    Image.fromarray(set5_crop("baby", (120, 30))).save(folder / "zz.png")  # x8: 24 px wide once cropped, 8 once shaved
    expect_error(capsys, f"{folder / 'zz.png'} at x8: a 8x104 image (after shaving) is smaller than the SSIM window",
                 "--data", str(folder), "--scales", "8", "--degrade", "pil", "--model", str(shared_file(TINY)))
    # the div2k protocol shaves 6 px more: z.png has 12 left, zz.png none
    with pytest.raises(LiifError, match=f"^{folder / 'zz.png'} at x8: a 24x120 image is too small to shave 14 px"):
        evaluate(str(shared_file(TINY)), folder, scales=[8], protocol="div2k", degrade="pil", progress=False)
    for name in ("a.png", "zz.png"):
        (folder / name).unlink()
    with pytest.raises(LiifError, match=f"^{folder / 'z.png'} at x50: a 40x40 image is too small for x50$"):
        evaluate(str(shared_file(TINY)), folder, scales=[2, 50], degrade="pil", progress=False)
    # an LR file the size of another scale's, in a set whose other files are right
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2, 4))
    lr = data / "LR_bicubic" / "X2" / "headx2.png"
    Image.open(data / "LR_bicubic" / "X4" / "headx4.png").save(lr)
    expect_error(capsys, f"{lr}: LR is 11x13, but HR {data / 'HR' / 'head.png'} (44x52) at x2 needs 22x26",
                 "--data", str(data), "--scales", "2")


def test_a_scale_named_twice_is_scored_once_and_near_scales_keep_keys_of_their_own(tmp_path):
    """--scales 2,2 scored every image twice (two CSV rows each); 2 and 2.0000001, both written "x2" by ``:g``,
    were averaged together as one scale."""
    data = flat_folder(tmp_path / "flat")
    results = evaluate(str(shared_file(TINY)), data, scales=[2, 2.0, 2.0000001], degrade="pil", progress=False)
    assert [(s.scale, s.image) for s in results.scores] == [(2.0, "bird.png"), (2.0, "gray.png"),
                                                            (2.0000001, "bird.png"), (2.0000001, "gray.png")]
    assert list(results.means()["flat"]) == ["x2", "x2.0000001"]
    results.write(tmp_path / "out")
    rows = list(csv.DictReader(open(tmp_path / "out" / "per_image.csv")))
    assert [r["scale"] for r in rows] == ["2", "2", "2.0000001", "2.0000001"]
    assert list(strict_json((tmp_path / "out" / "results.json").read_text())["flat"]) == ["x2", "x2.0000001"]
