"""`liif view` and `liif serve` from the command line: a real process, its address, its refusals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import webbrowser
from pathlib import Path

import httpx2
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from liif import imageio
from liif.cli import build_parser, main
from liif.errors import LiifError
from liif.commands import serve as serve_command
from liif.serve import app as serve_app
from liif.serve.library import Library
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


def test_ctrl_c_stops_at_once_while_a_render_is_in_progress(tmp_path):
    """Ctrl-C waited for the renders in flight, minutes for a large one (and a second Ctrl-C printed uvicorn's
    tracebacks, still waiting): now the clients waiting are answered 503 and the render ends at once."""
    picture = small_picture(tmp_path, box=(0, 0, 256, 256))
    process = liif("view", str(picture), "--port", "0", "--no-browser", "--device", "cpu")
    answers = []
    try:
        base = process.stdout.readline().strip().replace("/view/", "/iiif/3/")
        asking = threading.Thread(target=lambda: answers.append(  # 16.7 MP: minutes on a CPU
            httpx2.get(f"{base}/full/^4096,4096/0/default.png", timeout=600)))
        asking.start()
        time.sleep(2)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
        took = time.monotonic() - interrupted
        asking.join(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and took < 15, took
    assert stderr.splitlines()[1:] == ["liif view: interrupted"], stderr
    (answer,) = answers
    assert answer.status_code == 503 and answer.text == "the server is stopping\n"
    assert answer.headers["access-control-allow-origin"] == "*"


def test_serve_behind_a_proxy_gives_the_proxys_base_uri(tmp_path):
    """A reverse proxy serving the server under a prefix (https://example.org/liif/ -> http://127.0.0.1:PORT/)
    needs info.json's id, which IIIF clients build every tile URL from, to carry the prefix and the proxy's
    scheme: there was no way to tell the server its prefix. --root-path tells it; X-Forwarded-Proto from the
    proxy (trusted from 127.0.0.1, as uvicorn does) gives the scheme."""
    small_picture(tmp_path)
    process = liif("serve", str(tmp_path), "--port", "0", "--device", "cpu", "--root-path", "/liif/")
    try:
        url = process.stderr.readline().split(" at ")[1].split()[0]  # what the proxy forwards to, prefix cut
        info = httpx2.get(f"{url}iiif/3/butterfly.png/info.json", headers={"X-Forwarded-Proto": "https"})
        assert info.status_code == 200, info.text
        assert info.json()["id"] == f"https{url[4:]}liif/iiif/3/butterfly.png"
        redirect = httpx2.get(f"{url}iiif/3/butterfly.png")
        assert redirect.status_code == 303
        assert redirect.headers["location"] == f"{url}liif/iiif/3/butterfly.png/info.json"
        assert httpx2.get(f"{url}iiif/3/butterfly.png/full/max/0/default.png").status_code == 200
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


def test_view_reads_its_picture_once_and_serves_what_it_read(tmp_path, monkeypatch):
    """The read that refuses a bad picture before serving is the one the page and its tiles are served from."""
    picture = small_picture(tmp_path)
    reads, read_picture = [], imageio.read_picture

    def counted_read(path):
        reads.append(Path(path).resolve())
        return read_picture(path)

    for module in list(sys.modules.values()):  # wherever it was imported from
        if getattr(module, "read_picture", None) is read_picture:
            monkeypatch.setattr(module, "read_picture", counted_read)
    statuses = []

    def browser(page: str) -> None:  # opened once the server listens: ask for the picture, then Ctrl+C
        try:
            base = page.replace("/view/", "/iiif/3/")
            statuses.extend(httpx2.get(f"{base}/{ask}", timeout=60).status_code
                            for ask in ("info.json", "full/^96,/0/default.png"))
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(webbrowser, "open", browser)
    with pytest.raises(SystemExit) as exit_info:
        main(["view", str(picture), "--port", "0", "--device", "cpu"])
    assert exit_info.value.code == 130 and statuses == [200, 200] and reads == [picture.resolve()]


def test_view_on_every_interface_opens_the_page_at_the_loopback_address(tmp_path, monkeypatch, capsys):
    """--host 0.0.0.0 (to show the picture on the local network too) opened http://0.0.0.0:PORT/view/..., which a
    browser on Windows cannot open: the page is opened at 127.0.0.1, and the line says where the server listens."""
    picture = small_picture(tmp_path)
    statuses = []

    def browser(page: str) -> None:
        try:
            statuses.append((page, httpx2.get(page, timeout=60).status_code))
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(webbrowser, "open", browser)
    with pytest.raises(SystemExit):
        main(["view", str(picture), "--host", "0.0.0.0", "--port", "0", "--device", "cpu"])
    (page, status), = statuses
    assert page.startswith("http://127.0.0.1:") and page.endswith("/view/butterfly.png") and status == 200
    port = page.split(":")[2].split("/")[0]
    assert capsys.readouterr().err.splitlines()[0] == (f"liif view: serving 1 path(s) at http://127.0.0.1:{port}/ "
                                                       f"(listening on 0.0.0.0; Ctrl+C stops)")


NOT_AN_IMAGE = "not an image, or not one of the formats read (PNG, JPEG, WebP, BMP, TIFF)"


@pytest.mark.parametrize("command", ["serve", "view"])
@pytest.mark.parametrize("damage,expected", [
    pytest.param(lambda png: png[:20], "cannot read the image, it may be truncated or corrupt (", id="cut-header"),
    pytest.param(lambda png: b"not a picture", NOT_AN_IMAGE, id="text"),
    pytest.param(lambda png: b"", NOT_AN_IMAGE, id="empty"),
])
def test_a_named_picture_that_cannot_be_read_is_refused_before_binding(tmp_path, capsys, monkeypatch, command,
                                                                       damage, expected):
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(damage(small_picture(tmp_path).read_bytes()))
    monkeypatch.setattr(serve_command, "bound_socket", lambda *args: pytest.fail("the address was bound"))
    with pytest.raises(SystemExit) as exit_info:
        main([command, str(damaged), "--device", "cpu"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"liif {command}: error: {damaged}: {expected}"), stderr


def test_serve_checks_a_named_picture_without_reading_it_and_view_reads_it_for_serving(tmp_path, monkeypatch):
    """`liif serve` checks a picture named by its header, cheap for a big one; `liif view` reads its picture
    whole, once, and keeps it for serving."""
    picture = small_picture(tmp_path)
    monkeypatch.setattr("liif.serve.library.read_picture", lambda path: pytest.fail("the picture was read"))
    assert len(Library([picture], 1 << 20).pictures) == 0
    monkeypatch.undo()
    library = Library([picture], 1 << 20, read=True)
    assert len(library.pictures) == 1
    monkeypatch.setattr("liif.serve.library.read_picture", lambda path: pytest.fail("the picture was read again"))
    assert library.read(library.files["butterfly.png"])[0].pixels.shape == (36, 48, 3)


def test_serve_checks_a_named_picture_by_its_header_the_same_for_every_format(tmp_path):
    """A cut PNG was refused at start (Pillow verified its chunks), a cut JPEG, BMP or TIFF served; a 32-bit
    integer TIFF, which is never read, was served. Now what the header tells decides, for every format (Pillow
    opens a WebP whole, so a cut one fails there), and damage past it is a 400 when the picture is asked for."""
    pixels = imageio.read_picture(small_picture(tmp_path)).pixels
    for suffix in (".png", ".jpg", ".bmp", ".tiff"):
        whole, cut = tmp_path / f"whole{suffix}", tmp_path / f"cut{suffix}"
        imageio.write_picture(imageio.Picture(pixels), whole)
        cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
        library = Library([cut], 1 << 20)
        with pytest.raises(LiifError, match="cannot read the image, it may be truncated or corrupt"):
            library.read(library.files[cut.name])
    wide = tmp_path / "int32.tiff"
    Image.fromarray(np.arange(36 * 48, dtype=np.int32).reshape(36, 48)).save(wide)
    with pytest.raises(LiifError, match=f"^{wide}: 32-bit integer pixels are not read"):
        Library([wide], 1 << 20)


def test_cache_sizes_are_given_in_mb():
    """Each cache option, in MB, is the server's bound in bytes; the command line's defaults are the API's."""
    def cache_bytes(options: serve_app.ServeOptions) -> tuple[int, int, int]:
        return options.image_cache_bytes, options.feature_cache_bytes, options.picture_cache_bytes

    given = ["--cache-mb", "1", "--feature-cache-mb", "2", "--picture-cache-mb", "0.5"]
    options = serve_command.server_options(build_parser().parse_args(["serve", "x", *given]))
    assert cache_bytes(options) == (1 << 20, 2 << 20, 1 << 19)
    defaults = serve_command.server_options(build_parser().parse_args(["view", "x"]))
    assert cache_bytes(defaults) == cache_bytes(serve_app.ServeOptions())


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
    (["serve", "{dir}", "--picture-cache-mb", "inf"], "--picture-cache-mb must be a number > 0, got inf"),
    (["serve", "{dir}", "--max-pixels", "0.5"], "--max-pixels must be a number >= 1, got 0.5"),
    (["serve", "{dir}", "--port", "70000"], "--port must be an int in [0, 65535], got 70000"),
    (["serve", "{dir}", "--root-path", "liif"], "--root-path must be a URL path from /, as /liif, got 'liif'"),
    (["serve", "{dir}", "--root-path", "/my liif"], "--root-path must be a URL path from /, as /liif, got '/my liif'"),
    (["view", "{picture}", "--root-path", "/café"], "--root-path must be a URL path from /, as /liif, got '/café'"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--fps", "0"], "--fps must be a number in [0.001, 1000], got 0.0"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "0x64"], "size must be an int above 0"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "nanx64"], "size must be an int above 0 and at most 16777216, "
                                                                   "got nan"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "64.5x64"], "got 64.5"),
    (["zoom", "{picture}", "-o", "{dir}/z.gif", "--size", "20000x64"], "each side of --size must be an int in "
                                                                     "[1, 16384], got 20000"),
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
