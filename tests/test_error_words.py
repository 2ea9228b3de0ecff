"""Errors name an option in the caller's terms (``liif.errors.option``): the Python parameter from the API,
the flag from the ``liif`` command, for the same mistake."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import make_clip
from conftest import ROOT, TINY, shared_file
from liif import evaluate, upscale
from liif.cli import main
from liif.errors import Caller, LiifError, option
from liif.training import load_config, resume_config
from liif.video.writer import open_frame_writer
from liif.zoom import zoom, zoom_regions

SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A picture, a folder of HR pictures without LR files, and a short clip."""
    Image.fromarray(np.full((36, 48, 3), 120, np.uint8)).save(tmp_path / "in.png")
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.full((36, 48, 3), 60, np.uint8)).save(tmp_path / "flat" / "a.png")
    return {"picture": tmp_path / "in.png", "flat": tmp_path / "flat", "out": tmp_path / "out",
            "clip": make_clip(tmp_path / "clip.mp4", frames=2, audio=False)}


def model_options() -> list[str]:
    """The tiny model on the CPU, for the commands that load one."""
    return ["--model", str(shared_file(TINY)), "--device", "cpu"]


# (a Python call, what its message says; the same mistake as a command, what its message says)
CASES = {
    "max_pixels": (lambda f: upscale(np.zeros((8, 8, 3), np.uint8), scale=4, max_pixels=100),
                   "(raise it with max_pixels)",
                   lambda f: ["upscale", f["picture"], "--scale", "4", "--max-pixels", "100", "-o", f["out"],
                              *model_options()],
                   "(raise it with --max-pixels)"),
    "frames": (lambda f: zoom_regions((48, 36), (32, 18), frames=0), "frames must be an int in [1, 100000]",
               lambda f: ["zoom", f["picture"], "--print-regions", "--frames", "0", "--size", "32x18"],
               "--frames must be an int in [1, 100000]"),
    "fps": (lambda f: zoom(f["picture"], f["out"] / "z.gif", fps=0), "fps must be a number",
            lambda f: ["zoom", f["picture"], "-o", f["out"] / "z.gif", "--fps", "0", *model_options()],
            "--fps must be a number"),
    "degrade": (lambda f: evaluate("edsr-baseline-liif", f["flat"], scales=[2], degrade="files"),
                "which degrade='files' requires; pass degrade='pil' or degrade='matlab' to make",
                lambda f: ["eval", "--data", f["flat"], "--scales", "2", "--degrade", "files", *model_options()],
                "which --degrade files requires; pass --degrade pil or --degrade matlab to make"),
    "scales": (lambda f: evaluate("edsr-baseline-liif", f["flat"], scales=[0.5]),
               "each of scales must be a finite number of at least 1, got 0.5",
               lambda f: ["eval", "--data", f["flat"], "--scales", "0.5", *model_options()],
               "each of --scales must be a finite number of at least 1, got 0.5"),
    "overrides": (lambda f: load_config(SMOKE, ["epoch_maxx=3"]), "overrides epoch_maxx: unknown config key",
                  lambda f: ["train", "--config", SMOKE, "--set", "epoch_maxx=3", "--out", f["out"]],
                  "--set epoch_maxx: unknown config key"),
    "config_path": (lambda f: resume_config(None, None, []), "give config_path, or resume a checkpoint",
                    lambda f: ["train"], "give --config, or --resume a checkpoint"),
    "crf": (lambda f: open_frame_writer(f["out"] / "a.mp4", (64, 48), Fraction(24), crf=99), "crf must be 0 to 63",
            lambda f: ["upscale", f["clip"], "--scale", "2", "--crf", "99", "-o", f["out"] / "a.mp4",
                       *model_options()],
            "--crf must be 0 to 63"),
}


@pytest.mark.parametrize("case", CASES)
def test_python_is_told_its_parameter_and_the_command_its_flag(files, capsys, case):
    call, python_words, argv, command_words = CASES[case]
    with pytest.raises(LiifError) as error:
        call(files)
    assert python_words in str(error.value) and "--" not in str(error.value), str(error.value)
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv(files)])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and command_words in err, err
    with pytest.raises(LiifError) as again:  # the command is over: Python is told its own words again
        call(files)
    assert str(again.value) == str(error.value)


@pytest.mark.parametrize("name,value,python,command", [
    ("max_pixels", None, "max_pixels", "--max-pixels"),
    ("precision", "bf16", "precision='bf16'", "--precision bf16"),
    ("overwrite", True, "overwrite=True", "--overwrite"),
])
def test_one_option_words_both(monkeypatch, name, value, python, command):
    assert option(name, value) == python
    monkeypatch.setattr(Caller, "command_line", True)
    assert option(name, value) == command
    assert option("overrides", flag="set") == "--set"
