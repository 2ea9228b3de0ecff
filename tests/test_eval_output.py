"""What `liif eval` leaves in its --out folder: an earlier run's results kept unless --overwrite, and the scores
finished by a run that Ctrl-C or SIGTERM stopped, kept as partial results."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
from PIL import Image

import liif
import liif.evaluation.datasets
import liif.evaluation.runner
from conftest import TINY, load_benchmark, shared_file
from evaluating import NAMES, expect_error, make_benchmark_set, run_cli, set5_crop
from liif.errors import LiifError, OutputExists
from liif.evaluation import EvalResults, ImageScore

COMPLETE, PARTIAL = ("per_image.csv", "results.json"), ("per_image.partial.csv", "results.partial.json")


def crops_folder(root: Path) -> Path:
    """A folder of three small Set5 crops."""
    root.mkdir()
    for name in NAMES:
        Image.fromarray(set5_crop(name)).save(root / f"{name}.png")
    return root


def eval_args(data: Path, out: Path, *more: str) -> list[str]:
    """`liif eval`'s arguments for a quick run of the tiny model at x2 (three images) into ``out``."""
    return ["--data", str(data), "--scales", "2", "--degrade", "pil", "--model", str(shared_file(TINY)),
            "--device", "cpu", "--out", str(out), *more]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_an_earlier_run_s_results_are_refused_unless_overwrite(tmp_path, capsys, monkeypatch):
    """A second `liif eval --out DIR` replaced the first run's results without a word."""
    data, out = crops_folder(tmp_path / "crops"), tmp_path / "out"
    assert run_cli(capsys, *eval_args(data, out))[0] == 0
    first = {name: (out / name).read_bytes() for name in COMPLETE}
    score_image, scored = liif.evaluation.runner.evaluate_image, []

    def counted(*args, **kwargs):
        scored.append(args)
        return score_image(*args, **kwargs)

    monkeypatch.setattr(liif.evaluation.runner, "evaluate_image", counted)
    expect_error(capsys, f"{out / 'per_image.csv'} exists (an earlier run's results); pass --overwrite to replace "
                         "it", *eval_args(data, out, "--scales", "3"))
    assert not scored and {name: (out / name).read_bytes() for name in COMPLETE} == first  # refused before scoring
    assert run_cli(capsys, *eval_args(data, out, "--scales", "3", "--overwrite"))[0] == 0
    assert list(json.loads((out / "results.json").read_text())["crops"]) == ["x3"] and len(scored) == 3
    # the Python API refuses as Picture.save does
    results = EvalResults("m", [ImageScore("A", 2.0, "a.png", "pil", 30.0, 0.9, 28.0, 0.8)])
    with pytest.raises(OutputExists, match=r"results\); pass overwrite=True to replace it$"):
        results.write(out)
    results.write(out, overwrite=True)
    assert list(json.loads((out / "results.json").read_text())) == ["A"]


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_a_stopped_run_keeps_the_scores_it_finished_as_partial_results(tmp_path, capsys, monkeypatch, signum, code,
                                                                       word):
    """Ctrl-C or SIGTERM after some images lost every score computed so far."""
    data, out = crops_folder(tmp_path / "crops"), tmp_path / "out"
    score_image = liif.evaluation.runner.evaluate_image
    calls = []

    def stopped_at_the_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            os.kill(os.getpid(), signum)
            time.sleep(10)  # the handler raises before this ends
        return score_image(*args, **kwargs)

    monkeypatch.setattr(liif.evaluation.runner, "evaluate_image", stopped_at_the_third)
    stopped, table, err = run_cli(capsys, *eval_args(data, out))
    assert stopped == code
    assert err == (f"liif eval: {word}; kept the 2 image scores finished in {out}/per_image.partial.csv and "
                   f"{out}/results.partial.json\n")
    assert table.startswith("Partial results: the run was stopped; means over the 2 image scores it finished.")
    assert sorted(path.name for path in out.iterdir()) == sorted(PARTIAL)  # no complete-looking results
    partial = rows(out / "per_image.partial.csv")
    assert [r["image"] for r in partial] == ["baby.png", "bird.png"]
    means = json.loads((out / "results.partial.json").read_text())["crops"]["x2"]
    assert means["psnr"] == pytest.approx(sum(float(r["psnr"]) for r in partial) / 2)
    # they are an earlier run's results too; the complete run that replaces them leaves its own alone
    monkeypatch.setattr(liif.evaluation.runner, "evaluate_image", score_image)
    expect_error(capsys, f"{out / 'per_image.partial.csv'} exists", *eval_args(data, out))
    assert run_cli(capsys, *eval_args(data, out, "--overwrite"))[0] == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(COMPLETE)
    assert rows(out / "per_image.csv")[:2] == partial


def test_a_run_stopped_without_out_prints_the_scores_it_finished(tmp_path, capsys, monkeypatch):
    data = crops_folder(tmp_path / "crops")
    score_image, calls = liif.evaluation.runner.evaluate_image, []

    def stopped_at_the_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises
        return score_image(*args, **kwargs)

    monkeypatch.setattr(liif.evaluation.runner, "evaluate_image", stopped_at_the_second)
    stopped, table, err = run_cli(capsys, *eval_args(data, tmp_path / "out")[:-2])
    assert (stopped, err) == (130, "liif eval: interrupted; kept the 1 image score finished in the table above\n")
    assert "means over the 1 image score it finished" in table and "| crops | x2 |" in table


def test_a_picture_found_unreadable_in_its_turn_keeps_the_scores_finished(tmp_path, capsys):
    """A picture whose header reads but whose data is cut short (a truncated download) is found only when it is
    scored: the run stopped there, losing the scores of every image before it."""
    data, out = crops_folder(tmp_path / "crops"), tmp_path / "out"
    cut = data / f"{NAMES[1]}.png"
    cut.write_bytes(cut.read_bytes()[:-200])
    code, _, err = run_cli(capsys, *eval_args(data, out))
    assert code == 2
    assert err.startswith(f"liif eval: error: {cut}: cannot read the image") and err.endswith(
        f"; kept the 1 image score finished in {out}/per_image.partial.csv and {out}/results.partial.json\n")
    assert [r["image"] for r in rows(out / "per_image.partial.csv")] == [f"{NAMES[0]}.png"]


def test_a_run_stopped_before_any_score_writes_nothing(tmp_path, capsys, monkeypatch):
    data, out = crops_folder(tmp_path / "crops"), tmp_path / "out"

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(liif.evaluation.runner, "evaluate_image", stopped)
    assert run_cli(capsys, *eval_args(data, out))[::2] == (130, "liif eval: interrupted\n")
    assert list(out.iterdir()) == []


def test_the_plan_reads_each_picture_s_header_once(tmp_path, capsys, monkeypatch):
    """`liif eval` planned the run (every HR and LR file's header) and then planned it again in evaluate()."""
    data = make_benchmark_set(tmp_path / "Tiny", scales=(2,))
    header = liif.evaluation.datasets.picture_size
    read = Counter()

    def counted(path):
        read[Path(path)] += 1
        return header(path)

    monkeypatch.setattr(liif.evaluation.datasets, "picture_size", counted)
    code, _, err = run_cli(capsys, "--data", str(data), "--scales", "2,2.5", "--degrade", "auto", "--model",
                           str(shared_file(TINY)), "--device", "cpu")
    assert code == 0, err
    pictures = [data / "HR" / f"{name}.png" for name in NAMES] + \
               [data / "LR_bicubic" / "X2" / f"{name}x2.png" for name in NAMES]
    assert read == Counter(pictures)


def test_eval_speed_scores_the_protocol_s_scales(tmp_path, capsys, monkeypatch):
    """benchmarks/eval_speed.py had its own copy of the benchmark preset."""
    monkeypatch.setattr(liif.evaluation.runner, "SCALE_PRESETS", {"benchmark": (3,), "div2k": (4,)})
    data = crops_folder(tmp_path / "crops")
    out = tmp_path / "out"
    monkeypatch.setattr("sys.argv", ["eval_speed.py", "--data", str(data), "--threads", "1", "--out", str(out)])
    load_benchmark("eval_speed").main()
    printed = capsys.readouterr().out
    assert "| crops | x3 |" in printed
    assert [line.split(":")[0] for line in printed.splitlines() if line.startswith("crops x")] == ["crops x3"]
    # its results.json says how they were made, as liif eval's does
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert (settings["model"]["name"], settings["scales"], settings["degrade"]) == (liif.DEFAULT_MODEL, [3.0], "pil")
    assert settings["datasets"]["crops"]["lr"] == {"x3": "pil"}


@pytest.mark.parametrize("name", ["results.json", "scores.CSV"])
def test_an_out_named_as_a_results_file_is_refused(tmp_path, capsys, name):
    """`--out results.json` made a folder results.json/ holding results.json and per_image.csv."""
    data = crops_folder(tmp_path / "crops")
    expect_error(capsys, f"{tmp_path / name}: a file's name, where the folder for per_image.csv and results.json "
                         "goes; name a folder", *eval_args(data, tmp_path / name))
    assert not (tmp_path / name).exists()
    with pytest.raises(LiifError, match="a file's name"):
        EvalResults("m", [ImageScore("A", 2.0, "a.png", "pil", 30.0, 0.9, 28.0, 0.8)]).write(tmp_path / name)
    (tmp_path / name).mkdir()  # a folder of that name is one
    assert run_cli(capsys, *eval_args(data, tmp_path / name))[0] == 0
    assert sorted(path.name for path in (tmp_path / name).iterdir()) == sorted(COMPLETE)


def test_eval_speed_refuses_a_thread_count_in_one_line(capsys, monkeypatch):
    """`eval_speed.py --threads 0` ended in torch's RuntimeError traceback."""
    monkeypatch.setattr("sys.argv", ["eval_speed.py", "--threads", "0"])
    with pytest.raises(SystemExit) as stop:
        load_benchmark("common").run_script(load_benchmark("eval_speed").main)
    assert stop.value.code == 2
    assert capsys.readouterr().err == "eval_speed.py: error: --threads must be an int in [1, 1024], got 0\n"


def test_results_json_records_how_the_scores_were_made(tmp_path, capsys):
    """results.json held the means alone: not which model (nor which file of it), protocol, precision or versions
    made them."""
    data, out = crops_folder(tmp_path / "crops"), tmp_path / "out"
    assert run_cli(capsys, *eval_args(data, out, "--scales", "2,3", "--protocol", "div2k"))[0] == 0
    written = json.loads((out / "results.json").read_text())
    assert list(written) == ["crops", "settings"] and list(written["crops"]) == ["x2", "x3"]  # the means as before
    settings = written["settings"]
    model = shared_file(TINY).resolve()
    assert settings["model"] == {"name": model.stem, "file": str(model),
                                 "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
    assert {key: settings[key] for key in ("protocol", "psnr_on", "ssim_on", "scales", "shave", "degrade")} == {
        "protocol": "div2k", "psnr_on": "RGB", "ssim_on": "Y", "scales": [2.0, 3.0], "shave": {"x2": 8, "x3": 9},
        "degrade": "pil"}
    assert settings["datasets"] == {"crops": {"folder": str(data.resolve()), "layout": "folder", "images": 3,
                                              "lr": {"x2": "pil", "x3": "pil"}}}
    assert (settings["precision"], settings["device"], settings["processes"]) == ("fp32", "cpu", 1)
    assert (settings["liif_version"], settings["torch_version"]) == (liif.__version__, torch.__version__)
    assert abs(datetime.fromisoformat(settings["date"]) - datetime.now(timezone.utc)) < timedelta(minutes=10)
    # the Python API's results say the same, and a set cannot take the settings' key as its name
    api = liif.evaluate(str(shared_file(TINY)), data, scales=[2], degrade="pil", progress=False)
    assert api.settings["model"] == settings["model"] and api.settings["datasets"]["crops"]["lr"] == {"x2": "pil"}
    clash = crops_folder(tmp_path / "settings")
    with pytest.raises(LiifError, match=f"^{clash}: a set named 'settings', the key of the run's settings"):
        liif.evaluate(str(shared_file(TINY)), clash, scales=[2], degrade="pil", progress=False)


def test_a_stop_while_the_results_are_written_leaves_one_run_s_pair(tmp_path, monkeypatch):
    """Ctrl-C between writing per_image.csv and results.json left the new table beside the old means."""
    out = tmp_path / "out"
    EvalResults("old", [ImageScore("A", 2.0, "a.png", "pil", 30.0, 0.9, 28.0, 0.8)]).write(out)
    before = {name: (out / name).read_bytes() for name in COMPLETE}
    replace = os.replace

    def stopped_after_the_table(source, target):
        replace(source, target)
        if Path(target).name == "per_image.csv":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)  # the handler raises before this ends, where nothing holds the signal back

    monkeypatch.setattr(os, "replace", stopped_after_the_table)
    new = EvalResults("new", [ImageScore("A", 2.0, "a.png", "pil", 31.0, 0.9, 28.0, 0.8)])
    with pytest.raises(KeyboardInterrupt):
        new.write(out, overwrite=True)
    after = {name: (out / name).read_bytes() for name in COMPLETE}
    assert after != before and b"31.0" in after["per_image.csv"]
    assert json.loads(after["results.json"])["A"]["x2"]["psnr"] == 31.0  # the new means beside the new table
    assert sorted(path.name for path in out.iterdir()) == sorted(COMPLETE)  # no temporary file left


def test_decoder_comparison_shows_a_non_finite_mean(tmp_path, capsys, monkeypatch):
    """A mean that is null in results.json (PSNR +inf: an exact reconstruction) ended the script in a TypeError."""
    exact, lossy = tmp_path / "exact", tmp_path / "lossy"
    EvalResults("m", [ImageScore("A", 2.0, "a.png", "pil", math.inf, 1.0, 28.0, 0.8)],
                settings={"protocol": "benchmark"}).write(exact)
    EvalResults("m", [ImageScore("A", 2.0, "a.png", "pil", 30.0, 0.9, math.nan, 0.8)]).write(lossy)
    monkeypatch.setattr("sys.argv", ["decoder_comparison.py", f"Exact={exact}", f"Lossy={lossy}"])
    load_benchmark("decoder_comparison").main()
    assert capsys.readouterr().out == ("| A | x2 |\n|---|---|\n| bicubic | 28.00 |\n| Exact | inf |\n"
                                       "| Lossy | 30.00 |\n\n")


def test_overwrite_without_out_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    """`--overwrite` without `--out` was silently ignored: the user believed results were being replaced."""
    data = crops_folder(tmp_path / "crops")
    score_image, scored = liif.evaluation.runner.evaluate_image, []
    monkeypatch.setattr(liif.evaluation.runner, "evaluate_image",
                        lambda *args, **kwargs: scored.append(args) or score_image(*args, **kwargs))
    expect_error(capsys, "--overwrite replaces an earlier run's results in --out, and there is no --out",
                 *eval_args(data, tmp_path / "out")[:-2], "--overwrite")
    assert not scored  # before any work
