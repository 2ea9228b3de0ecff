"""`liif view` and `liif serve` from the command line: a real process, its address, its refusals."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx2
import pytest

from conftest import ROOT
from liif.cli import main
from liif.serve import app as serve_app
from serving import small_picture


def liif(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "liif", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_view_serves_the_page_it_prints(tmp_path):
    picture = small_picture(tmp_path, "my picture.png")
    process = liif("view", str(picture), "--port", "0", "--no-browser", "--device", "cpu")
    try:
        page = process.stdout.readline().strip()
        assert page.startswith("http://127.0.0.1:") and page.endswith("/view/my%20picture.png")
        assert httpx2.get(page).status_code == 200
        info = httpx2.get(page.replace("/view/", "/iiif/3/") + "/info.json").json()
        assert (info["width"], info["height"]) == (48, 36)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_view_refuses_a_picture_it_cannot_read_before_serving(tmp_path):
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(small_picture(tmp_path).read_bytes()[:100])
    process = liif("view", str(damaged), "--port", "0", "--no-browser", "--device", "cpu")
    try:
        _, stderr = process.communicate(timeout=30)  # a server started instead would never end
    finally:
        process.kill()
    assert process.returncode == 2 and stderr == (f"liif view: error: {damaged}: cannot read the image, it may be "
                                                  f"truncated or corrupt (image file is truncated)\n")


def test_bad_options_are_one_line_errors_naming_what_is_wrong(tmp_path):
    missing, picture = tmp_path / "missing.png", small_picture(tmp_path)
    for args, expected in ((["serve", str(missing)], f"{missing}: no such picture or folder"),
                           (["serve", str(tmp_path), "--max-scale", "0.5"], "--max-scale"),
                           (["zoom", str(missing), "-o", str(tmp_path / "z.gif")], f"{missing}: no such file"),
                           (["zoom", str(picture), "-o", str(tmp_path / "z.gif"), "--zoom", "40:2"], "the zoom must grow: x40 to x2")):
        process = liif(*args)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 2 and stderr.count("\n") == 1 and expected in stderr, (args, stderr)


@pytest.mark.parametrize("args,expected", [
    (["serve", "{dir}", "--max-scale", "nan"], "--max-scale must be a number >= 1, got nan"),
    (["serve", "{dir}", "--cache-mb", "0"], "--cache-mb must be a number > 0, got 0.0"),
    (["serve", "{dir}", "--feature-cache-mb", "-5"], "--feature-cache-mb must be a number > 0, got -5.0"),
    (["serve", "{dir}", "--max-pixels", "0.5"], "--max-pixels must be a number >= 1, got 0.5"),
    (["serve", "{dir}", "--port", "70000"], "--port must be an int in [0, 65535], got 70000"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--fps", "0"], "fps must be a number in [0.001, 1000], got 0.0"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "0x64"], "size must be an int above 0"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "nanx64"], "size must be an int above 0 and at most 16777216, "
                                                                   "got nan"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "64.5x64"], "got 64.5"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "20000x64"], "--size 20000x64: each side must be an int in "
                                                                     "[1, 16384]"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--zoom", "0:4"], "--zoom 0:4: each zoom must be a number above 0"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--frames", "0"], "--frames must be an int in [1, 100000], got 0"),
    (["view", "{dir}/missing.png"], "missing.png: no such file"),
    (["view", "{dir}"], ": is a folder, not a file"),
])
def test_out_of_range_values_and_wrong_paths_are_one_line_errors(tmp_path, capsys, args, expected):
    picture = small_picture(tmp_path)
    argv = [a.format(dir=tmp_path, picture=picture) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and stderr.count("\n") == 1 and expected in stderr, stderr


def test_a_taken_port_or_unknown_host_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    picture = small_picture(tmp_path)
    monkeypatch.setattr(serve_app, "create_app", lambda *args: pytest.fail("the app was built"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, expected in (([str(picture), "--port", str(port)], f"cannot listen on 127.0.0.1:{port}: Address "
                                                                     "already in use"),
                               ([str(picture), "--host", "no.such.host.invalid"], "cannot listen on "
                                                                                  "no.such.host.invalid:8182: ")):
            with pytest.raises(SystemExit) as exit_info:
                main(["serve", *args])
            stderr = capsys.readouterr().err
            assert exit_info.value.code == 2 and stderr.count("\n") == 1 and expected in stderr, stderr
