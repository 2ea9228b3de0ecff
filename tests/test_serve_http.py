"""The IIIF server over HTTP: the same pixels as `liif upscale`, seamless tiles, info.json, every refusal."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import shutil
import threading
import time
from email.utils import formatdate, parsedate_to_datetime
from types import SimpleNamespace

import httpx2
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from liif.checkpoint import load_model
from liif.cli import main
from liif.errors import LiifError
from liif.geometry import Geometry
from liif.imageio import read_picture
from liif.serve.app import ServeOptions, create_app
from liif.serve.iiif import CONTEXT
from liif.serve.library import Library
from liif.upscale import resize_bicubic
from liif.pretrained import DEFAULT_MODEL, pretrained_path
from serving import RunningServer, make_app, small_picture

W, H = 48, 36


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    picture = small_picture(folder)
    small_picture(folder / "sub", "inner pic.png", box=(10, 10, 40, 30))
    (folder / "damaged.png").write_bytes(picture.read_bytes()[:100])  # in a folder: found when asked for
    gray = np.asarray(Image.open(picture).convert("L"))
    Image.fromarray(gray).save(folder / "gray.png")
    outside = small_picture(tmp_path_factory.mktemp("outside"), "secret.png")
    os.symlink(outside, folder / "link.png")
    app = make_app([folder])
    with TestClient(app) as client:
        yield client, picture, folder


def pixels_of(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def upscale_cli(tmp_path, picture, region, size) -> np.ndarray:
    out = tmp_path / "cli.png"
    with pytest.raises(SystemExit) as exit_code:
        main(["upscale", str(picture), "--region", region, "--size", size, "--model", DEFAULT_MODEL,
              "--device", "cpu", "-q", "-o", str(out), "--overwrite"])
    assert exit_code.value.code == 0
    return read_picture(out).pixels


@pytest.mark.parametrize("region,size,cli_region,cli_size", [
    ("8,4,20,16", "^160,128", "8,4,28,20", "160x128"),
    ("full", "^200,150", "0,0,48,36", "200x150"),
    ("0,0,48,36", "48,36", "0,0,48,36", "48x36"),
    ("40,30,20,20", "^37,29", "40,30,48,36", "37x29"),  # cut to the picture: 8x6
    ("pct:25,50,50,25", "^300,", "12,18,36,27", "300x113"),
])
def test_iiif_pixels_equal_liif_upscale(served, tmp_path, region, size, cli_region, cli_size):
    client, picture, _ = served
    answer = client.get(f"/iiif/3/butterfly.png/{region}/{size}/0/default.png")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["access-control-allow-origin"] == "*"
    served_pixels = pixels_of(answer.content)
    expected = upscale_cli(tmp_path, picture, cli_region, cli_size)
    assert served_pixels.shape == expected.shape
    assert np.array_equal(served_pixels, expected)


@pytest.mark.parametrize("scale,span", [(4, 16), (8, 8), (2, 20)])
def test_tiles_of_a_level_stitch_into_one_render(served, scale, span):
    """The viewer's tiles of a level (span picture pixels each, at ^span*scale) equal one render of the level."""
    client, _, _ = served
    whole = pixels_of(client.get(f"/iiif/3/butterfly.png/full/^{W * scale},{H * scale}/0/default.png").content)
    stitched = np.zeros_like(whole)
    for y in range(0, H, span):
        for x in range(0, W, span):
            w, h = min(span, W - x), min(span, H - y)
            answer = client.get(f"/iiif/3/butterfly.png/{x},{y},{w},{h}/^{w * scale},{h * scale}/0/default.png")
            assert answer.status_code == 200, answer.text
            stitched[y * scale:(y + h) * scale, x * scale:(x + w) * scale] = pixels_of(answer.content)
    assert np.array_equal(stitched, whole)


def test_info_json(served):
    client, _, _ = served
    request = client.build_request("GET", "/iiif/3/butterfly.png/info.json")
    del request.headers["accept"]  # without one, the spec's media type: JSON-LD, its profile the context
    answer = client.send(request)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == f'application/ld+json;profile="{CONTEXT}"'
    assert answer.headers["access-control-allow-origin"] == "*"
    info = answer.json()
    assert info["@context"] == CONTEXT and info["type"] == "ImageService3" and info["profile"] == "level2"
    assert info["protocol"] == "http://iiif.io/api/image"
    assert info["id"] == "http://testserver/iiif/3/butterfly.png"
    assert (info["width"], info["height"]) == (W, H)
    assert (info["maxWidth"], info["maxHeight"]) == (32 * W, 32 * H) and info["maxArea"] == 32 * W * 32 * H
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1]}]
    assert "sizeUpscaling" in info["extraFeatures"] and "mirroring" in info["extraFeatures"]
    for accept, media_type in (("application/ld+json", f'application/ld+json;profile="{CONTEXT}"'),
                               ("application/json", "application/json")):
        answer = client.get("/iiif/3/butterfly.png/info.json", headers={"Accept": accept})
        assert answer.headers["content-type"] == media_type and answer.json() == info


@pytest.mark.parametrize("url", ["/iiif/3/butterfly.png/info.json", "/bicubic/3/butterfly.png/full/max/0/default.png"])
def test_cors_preflight_is_answered(served, url):
    """A client sending a header beyond the simple ones (Authorization, as IIIF Auth viewers do) first asks with
    OPTIONS; the server answered 405 without CORS headers, and the browser never sent the request."""
    client, _, _ = served
    answer = client.options(url, headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
                                          "Access-Control-Request-Headers": "authorization,x-requested-with"})
    assert answer.status_code == 204 and not answer.content
    assert answer.headers["access-control-allow-origin"] == "*"
    assert {"GET", "HEAD"} <= set(answer.headers["access-control-allow-methods"].replace(" ", "").split(","))
    assert answer.headers["access-control-allow-headers"] == "authorization,x-requested-with"
    # the request it was asked for is then answered as ever
    assert client.get(url, headers={"Origin": "https://viewer.example", "Authorization": "Bearer x"}).status_code == 200


def test_a_gray_picture_offers_no_color_quality_but_serves_it(served):
    """info.json listed "color" for a gray picture, which the spec says it should not (5.4: no colour to give);
    a color request must still answer, with the gray pixels."""
    client, _, folder = served
    info = client.get("/iiif/3/gray.png/info.json").json()
    assert info["extraQualities"] == ["gray", "bitonal"]
    gray = np.asarray(Image.open(folder / "gray.png"))
    for quality in ("default", "color", "gray"):
        answer = client.get(f"/bicubic/3/gray.png/full/max/0/{quality}.png")
        assert answer.status_code == 200 and np.array_equal(pixels_of(answer.content), gray)
    assert client.get("/iiif/3/butterfly.png/info.json").json()["extraQualities"] == ["color", "gray", "bitonal"]


def test_images_carry_a_validator_and_a_revalidation_is_answered_without_rendering(served):
    """Answers had no caching headers: a browser could keep no tile, and asked again for each, rendered again
    once out of the server's cache. Now each has an ETag (the renderer, the file's state and the canonical
    request) and must be revalidated (no-cache): an If-None-Match that matches is a 304, nothing rendered."""
    client, _, folder = served
    small_picture(folder, "changing.png")
    url = "/iiif/3/changing.png/0,0,24,18/^48,36/0/default.png"
    first = client.get(url)
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    assert etag.startswith('"') and etag.endswith('"')
    assert client.get(url.replace("0,0,24,18", "pct:0,0,50,50")).headers["etag"] == etag  # the same pixels
    assert client.get(url.replace("default.png", "default.jpg")).headers["etag"] != etag
    assert client.get(url.replace("/iiif/", "/bicubic/")).headers["etag"] != etag
    stats = dataclasses.replace(client.app.state.service.queue.stats)
    for asked in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(url, headers={"If-None-Match": asked})
        assert again.status_code == 304 and not again.content, asked
        assert again.headers["etag"] == etag and again.headers["access-control-allow-origin"] == "*"
    assert client.app.state.service.queue.stats == stats  # neither rendered nor taken from the cache
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    Image.open(folder / "butterfly.png").transpose(Image.FLIP_TOP_BOTTOM).save(folder / "changing.png")  # changed
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    info = client.get("/iiif/3/changing.png/info.json")
    assert "accept" in info.headers["vary"].lower()  # its media type is negotiated


def test_if_modified_since_is_answered_and_a_changed_file_is_never_stale(tmp_path, monkeypatch):
    """Answers had no Last-Modified, and If-Modified-Since was not answered: a client revalidating by date
    (without the ETag) downloaded, and the server rendered, every tile again. A date is given once its second
    is over (a change later in that second would keep it), and a file changed since is rendered again."""
    picture = small_picture(tmp_path)
    url, info_url = "/bicubic/3/butterfly.png/full/max/0/default.png", "/iiif/3/butterfly.png/info.json"
    clock = []  # the server's time where the test sets it
    monkeypatch.setattr("liif.serve.app.time", SimpleNamespace(time=lambda: clock[-1] if clock else time.time()))
    with TestClient(make_app([picture])) as client:
        service = client.app.state.service
        clock.append(service.started)
        assert "last-modified" not in client.get(url).headers  # in the server's first second
        clock.clear()
        time.sleep(max(0.0, math.floor(service.started) + 1 - time.time()))  # until that second is over
        first = client.get(url)
        modified = first.headers["last-modified"]
        assert parsedate_to_datetime(modified).timestamp() == math.floor(service.started)
        stats = dataclasses.replace(service.queue.stats)
        later = formatdate(service.started + 50, usegmt=True)
        for since in (modified, later, later.replace("GMT", "-0000")):
            again = client.get(url, headers={"If-Modified-Since": since})
            assert again.status_code == 304 and not again.content and again.headers["etag"] == first.headers["etag"]
        assert service.queue.stats == stats  # nothing rendered
        for since in (formatdate(service.started - 1, usegmt=True), "yesterday", ""):
            assert client.get(url, headers={"If-Modified-Since": since}).status_code == 200, since
        # If-None-Match decides where both are sent
        assert client.get(url, headers={"If-Modified-Since": modified, "If-None-Match": '"other"'}).status_code == 200
        info = client.get(info_url)
        assert info.headers["cache-control"] == "no-cache" and info.headers["last-modified"] == modified
        assert client.get(info_url, headers={"If-None-Match": info.headers["etag"]}).status_code == 304
        assert client.get(info_url, headers={"If-Modified-Since": modified}).status_code == 304
        assert client.get(info_url, headers={"Accept": "application/json"}).headers["etag"] != info.headers["etag"]

        original = read_picture(picture).pixels
        Image.open(picture).transpose(Image.FLIP_TOP_BOTTOM).save(picture)
        os.utime(picture, ns=(10**9, 10**9))  # changed, with a modification time of 1970
        changed_at = picture.stat().st_ctime
        clock.append(changed_at)  # the second it changed in: no date, which a later change could keep
        changed = client.get(url, headers={"If-Modified-Since": modified})
        assert changed.status_code == 200 and "last-modified" not in changed.headers
        assert np.array_equal(pixels_of(changed.content), original[::-1])
        clock.append(changed_at + 1)
        again = client.get(url, headers={"If-Modified-Since": modified})
        assert again.status_code == 200 and again.headers["etag"] == changed.headers["etag"] != first.headers["etag"]
        assert parsedate_to_datetime(again.headers["last-modified"]).timestamp() == math.floor(changed_at)
        assert client.get(url, headers={"If-Modified-Since": again.headers["last-modified"]}).status_code == 304


def test_the_validators_hold_across_runs_of_the_same_renderer(tmp_path):
    """Each server run gave its answers other ETags: after a restart a browser downloaded, and the server
    rendered, every tile it had kept. The same weights file, device and options make the same pixels, and the
    same tags; other weights, or a module given (whose attributes the run alone knows), make others."""
    picture = small_picture(tmp_path)
    weights = tmp_path / "copy.pth"
    shutil.copyfile(pretrained_path(DEFAULT_MODEL), weights)
    module = load_model(DEFAULT_MODEL)
    tags = []
    for model in (DEFAULT_MODEL, DEFAULT_MODEL, weights, module, module):
        with TestClient(create_app([picture], model, "cpu")) as client:
            answer = client.head("/iiif/3/butterfly.png/0,0,24,18/^48,36/0/default.png")  # nothing rendered
            assert answer.status_code == 200
            tags.append(answer.headers["etag"])
    assert tags[0] == tags[1] and len(set(tags)) == 4


def test_head_answers_a_get_s_headers_without_rendering(served):
    """A HEAD of an image ran the whole render to answer headers only: a client probing tiles (or a huge
    picture's deep levels) with HEAD paid a render each. Now a HEAD checks the request as a GET would (the same
    status and refusal) and renders nothing; it says the body's length only once a GET has made the answer."""
    client, _, _ = served
    service = client.app.state.service
    url = "/iiif/3/butterfly.png/4,2,20,14/^80,60/0/default.webp"
    stats, encoded = dataclasses.replace(service.queue.stats), service.features.encoded
    head = client.head(url)
    assert head.status_code == 200 and not head.content
    assert head.headers["content-type"] == "image/webp" and head.headers["access-control-allow-origin"] == "*"
    assert "content-length" not in head.headers  # unknown until rendered, and never a false 0
    assert service.queue.stats == stats and service.features.encoded == encoded  # nothing rendered
    for refused in ("/iiif/3/butterfly.png/4,2,20,14/^80,60/0/default.gif",  # an unknown format
                    "/iiif/3/butterfly.png/400,2,20,14/^80,60/0/default.png",  # outside the picture
                    "/iiif/3/butterfly.png/full/^99999,/0/default.png",  # above the limits
                    "/iiif/3/nothing.png/full/max/0/default.png"):
        assert client.head(refused).status_code == client.get(refused).status_code >= 400, refused
    got = client.get(url)
    assert got.status_code == 200 and service.queue.stats.rendered == stats.rendered + 1
    again = client.head(url)
    assert again.headers["etag"] == got.headers["etag"] == head.headers["etag"]
    assert again.headers["link"] == got.headers["link"]
    assert int(again.headers["content-length"]) == len(got.content)  # from the cached answer
    assert service.queue.stats.rendered == stats.rendered + 1


def test_base_uri_redirects_to_info_json(served):
    client, _, _ = served
    answer = client.get("/iiif/3/butterfly.png", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "http://testserver/iiif/3/butterfly.png/info.json"


def test_escaped_identifier_in_a_subfolder(served, tmp_path):
    client, _, folder = served
    info = client.get("/iiif/3/sub%2Finner%20pic.png/info.json").json()
    assert (info["width"], info["height"]) == (30, 20)
    assert info["id"].endswith("/iiif/3/sub%2Finner%20pic.png")
    body = client.get("/iiif/3/sub%2Finner%20pic.png/2,3,10,8/^40,32/0/default.png").content
    expected = upscale_cli(tmp_path, folder / "sub" / "inner pic.png", "2,3,12,11", "40x32")
    assert np.array_equal(pixels_of(body), expected)


def test_rotation_mirroring_quality_and_formats(served):
    client, _, _ = served
    base = pixels_of(client.get("/iiif/3/butterfly.png/full/max/0/default.png").content)
    assert base.shape == (H, W, 3)
    assert np.array_equal(pixels_of(client.get("/iiif/3/butterfly.png/full/max/90/default.png").content),
                          np.rot90(base, k=-1))
    assert np.array_equal(pixels_of(client.get("/iiif/3/butterfly.png/full/max/!0/color.png").content), base[:, ::-1])
    assert np.array_equal(pixels_of(client.get("/iiif/3/butterfly.png/full/max/!360/color.png").content), base[:, ::-1])
    assert np.array_equal(pixels_of(client.get("/iiif/3/butterfly.png/full/max/!270/default.png").content),
                          np.rot90(base[:, ::-1], k=-3))
    assert np.array_equal(pixels_of(client.get("/iiif/3/butterfly.png/full/max/180/default.png").content),
                          base[::-1, ::-1])
    gray = pixels_of(client.get("/iiif/3/butterfly.png/full/max/0/gray.png").content)
    assert gray.shape == (H, W)
    assert np.abs(gray.astype(int) - (base @ [0.299, 0.587, 0.114]).round()).max() == 0
    bitonal = pixels_of(client.get("/iiif/3/butterfly.png/full/max/0/bitonal.png").content)
    assert set(np.unique(bitonal)) <= {0, 255} and len(np.unique(bitonal)) == 2
    for fmt, media in (("jpg", "image/jpeg"), ("webp", "image/webp")):
        answer = client.get(f"/iiif/3/butterfly.png/full/max/0/default.{fmt}")
        assert answer.headers["content-type"] == media
        assert np.abs(pixels_of(answer.content).astype(int) - base).mean() < 4  # lossy, at quality 95


def test_bitonal_is_black_and_white_in_every_format(served):
    """A bitonal answer is black and white alone (4.4), but WebP and JPEG were lossy at quality 95: its edges came
    back in grays. WebP is now lossless, exactly the PNG's pixels,
    and JPEG at quality 100, within a level of them."""
    client, _, _ = served
    bitonal = pixels_of(client.get("/iiif/3/butterfly.png/full/max/0/bitonal.png").content).astype(int)
    webp = pixels_of(client.get("/iiif/3/butterfly.png/full/max/0/bitonal.webp").content)
    assert np.array_equal(np.asarray(Image.fromarray(webp).convert("L")), bitonal)
    jpeg = pixels_of(client.get("/iiif/3/butterfly.png/full/max/0/bitonal.jpg").content).astype(int)
    assert np.abs(jpeg - bitonal).max() <= 1


def test_sizes(served):
    client, picture, _ = served
    def size_of(size, region="full"):
        answer = client.get(f"/iiif/3/butterfly.png/{region}/{size}/0/default.png")
        assert answer.status_code == 200, (size, answer.text)
        return Image.open(io.BytesIO(answer.content)).size
    assert size_of("max") == (48, 36)
    assert size_of("24,") == (24, 18) and size_of(",18") == (24, 18) and size_of("pct:50") == (24, 18)
    assert size_of("^96,") == (96, 72) and size_of("^,72") == (96, 72) and size_of("^pct:200") == (96, 72)
    assert size_of("!24,24") == (24, 18) and size_of("^!200,100") == (133, 100)
    assert size_of("!96,96") == (48, 36) and size_of("^50,10") == (50, 10) and size_of("max", "square") == (36, 36)
    with TestClient(make_app([picture], max_scale=4)) as client:  # the best fit within the bounds, 48 x 4 wide
        assert size_of("^!9999,9999") == (192, 144)


BAD = [
    ("/iiif/3/butterfly.png/1,2,3/max/0/default.png", 400),          # malformed region
    ("/iiif/3/butterfly.png/a,b,c,d/max/0/default.png", 400),
    ("/iiif/3/butterfly.png/0,0,0,10/max/0/default.png", 400),       # empty region
    ("/iiif/3/butterfly.png/60,0,10,10/max/0/default.png", 400),     # outside the picture
    ("/iiif/3/butterfly.png/full/96,/0/default.png", 400),           # upscaling without ^
    ("/iiif/3/butterfly.png/full/96,72/0/default.png", 400),
    ("/iiif/3/butterfly.png/full/pct:200/0/default.png", 400),
    ("/iiif/3/butterfly.png/full/^100000,/0/default.png", 400),      # over the limit
    ("/iiif/3/butterfly.png/full/^1537,/0/default.png", 400),        # 32 x 48 + 1
    ("/iiif/3/butterfly.png/full/0,/0/default.png", 400),
    ("/iiif/3/butterfly.png/full/big/0/default.png", 400),
    ("/iiif/3/butterfly.png/full/max/45/default.png", 400),          # rotation
    ("/iiif/3/butterfly.png/full/max/0/best.png", 400),              # quality
    ("/iiif/3/butterfly.png/full/max/0/default.gif", 400),           # format
    ("/iiif/3/butterfly.png/full/max/0/default", 400),
    ("/iiif/3/butterfly.png/full/max/0", 400),
    ("/iiif/3/damaged.png/info.json", 400),                          # a picture that cannot be read
    ("/iiif/3/damaged.png/full/max/0/default.png", 400),
    ("/iiif/3/nothing.png/info.json", 404),                          # unknown identifier
    ("/iiif/3/nothing.png/full/max/0/default.png", 404),
    ("/iiif/3/..%2F..%2F..%2Fetc%2Fpasswd/info.json", 404),          # traversal
    ("/iiif/3/sub%2F..%2F..%2Foutside%2Fsecret.png/info.json", 404),
    ("/iiif/3/%2Fetc%2Fpasswd/info.json", 404),                      # absolute path
    ("/iiif/3/link.png/info.json", 404),                             # a link leading out
    ("/iiif/3/link.png/full/max/0/default.png", 404),
    ("/view/..%2Fsecret.png", 404),
    ("/iiif%2F3%2Fbutterfly.png/info.json", 404),                    # escaped slashes in the service's path
    ("/iiif/3%2Fbutterfly.png", 404),
    ("/iiif/3%2Fbutterfly.png/info.json", 404),
    # huge requests: the reason quotes their start, not all of them
    pytest.param("/iiif/3/butterfly.png/full/^" + "9" * 5000 + ",/0/default.png", 400, id="a 5000-digit size"),
    pytest.param("/iiif/3/" + "x" * 5000 + "/info.json", 404, id="a 5000-character identifier"),
]


@pytest.mark.parametrize("url,status", BAD)
def test_bad_requests(served, url, status):
    client, _, _ = served
    answer = client.get(url)
    assert answer.status_code == status, answer.text
    assert answer.text.count("\n") == 1 and "Traceback" not in answer.text and len(answer.text) < 300
    assert answer.headers["access-control-allow-origin"] == "*"


def test_a_size_the_format_cannot_hold_is_a_400_before_rendering(served):
    client, _, folder = served
    Image.open(folder / "butterfly.png").crop((0, 0, 48, 1)).resize((2100, 4)).save(folder / "strip.png")
    rendered = client.app.state.service.queue.stats.rendered
    for url in ("/bicubic/3/strip.png/full/^20000,/0/default.webp", "/bicubic/3/strip.png/full/^65501,/0/default.jpg"):
        answer = client.get(url)
        assert answer.status_code == 400 and answer.headers["access-control-allow-origin"] == "*", answer.text
        assert "holds at most" in answer.text
    assert client.app.state.service.queue.stats.rendered == rendered


@pytest.mark.parametrize("failure", [ZeroDivisionError, lambda: OSError("encoder error -2")])
def test_an_unexpected_failure_is_a_500_a_cross_origin_viewer_can_read(tmp_path, monkeypatch, failure):
    """A render failing unexpectedly (a GPU error, a bug) was Starlette's bare 500, without CORS headers: a
    viewer on another origin saw a network error, not the status. It now carries them (uvicorn logs the trace).
    An OSError there was a 404 'cannot read picture', though the picture had been read."""
    app = make_app([small_picture(tmp_path)])

    def render(*args):
        raise failure()

    monkeypatch.setattr(app.state.service, "render", render)
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/bicubic/3/butterfly.png/full/max/0/default.png")
    assert answer.status_code == 500 and answer.headers["access-control-allow-origin"] == "*"
    assert answer.text.count("\n") == 1 and "Traceback" not in answer.text


def test_a_picture_gone_since_it_was_found_is_a_404(tmp_path, monkeypatch):
    app = make_app([small_picture(tmp_path)])

    def read(path):
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(app.state.service.library, "read", read)
    with TestClient(app) as client:
        answer = client.get("/iiif/3/butterfly.png/info.json")
    assert answer.status_code == 404 and answer.text == "cannot read picture: No such file or directory\n"


def test_bicubic_service_is_plain_bicubic(served):
    client, picture, _ = served
    answer = client.get("/bicubic/3/butterfly.png/8,4,20,16/^160,128/0/default.png")
    target = Geometry(size=(160, 128), region=(8, 4, 28, 20)).target((H, W))
    assert np.array_equal(pixels_of(answer.content), resize_bicubic(read_picture(picture), target).pixels)


@pytest.mark.parametrize("region,size,box,out", [
    ("full", "24,18", (0, 0, 48, 36), (24, 18)),          # an overview level (scale factor 2)
    ("8,4,20,16", "pct:50", (8, 4, 28, 20), (10, 8)),
    ("0,0,40,30", "40,20", (0, 0, 40, 30), (40, 20)),     # squeezed on one side only
])
def test_a_downscale_is_antialiased_bicubic_and_encodes_nothing(served, region, size, box, out):
    """A general IIIF client (Mirador, OpenSeadragon's IIIF source) asks /iiif for the levels below the picture's
    resolution: each ran LIIF over its whole region (a big scan's overview tile encoded all of it) and aliased
    fine detail, LIIF sampling without averaging. A downscale is now /bicubic's answer, encoding nothing."""
    client, picture, _ = served
    encoded = client.app.state.service.features.encoded
    answer = client.get(f"/iiif/3/butterfly.png/{region}/{size}/0/default.png")
    assert answer.status_code == 200, answer.text
    target = Geometry(size=out, region=box).target((H, W))
    assert np.array_equal(pixels_of(answer.content), resize_bicubic(read_picture(picture), target).pixels)
    assert client.app.state.service.features.encoded == encoded
    assert answer.headers["etag"] == client.get(f"/bicubic/3/butterfly.png/{region}/{size}/0/default.png").headers["etag"]


def test_a_bicubic_answer_does_not_wait_behind_liif_renders(tmp_path, monkeypatch):
    """The viewer's bicubic tiles (its overview, the left of its split view) queued behind every LIIF render asked
    before them, seconds each on a CPU: they are made beside them."""
    app = make_app([small_picture(tmp_path)])
    release, render, answers = threading.Event(), app.state.service.render, []

    def slow_liif(method, picture, request):
        if method == "iiif":
            release.wait(60)
        return render(method, picture, request)

    monkeypatch.setattr(app.state.service, "render", slow_liif)
    with RunningServer(app) as url:
        liif = threading.Thread(target=lambda: answers.append(
            httpx2.get(f"{url}/iiif/3/butterfly.png/full/max/0/default.png", timeout=120)))
        liif.start()
        try:
            while not app.state.service.queue.pending:
                time.sleep(0.05)
            bicubic = httpx2.get(f"{url}/bicubic/3/butterfly.png/full/^96,/0/default.png", timeout=30)
            assert bicubic.status_code == 200 and pixels_of(bicubic.content).shape == (72, 96, 3)
            assert liif.is_alive() and not answers
        finally:
            release.set()
            liif.join(timeout=120)
    assert answers[0].status_code == 200


def test_pages_and_assets(served):
    client, _, _ = served
    index = client.get("/")
    assert index.status_code == 200 and 'href="view/sub%2Finner%20pic.png"' in index.text
    assert "link.png" not in index.text
    page = client.get("/view/butterfly.png")
    assert page.status_code == 200 and "openseadragon.min.js" in page.text
    for asset in ("openseadragon/openseadragon.min.js", "openseadragon/LICENSE.txt", "viewer.js",
                  "openseadragon/images/zoomin_rest.png"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_the_index_says_when_it_lists_part_of_the_pictures_or_none(tmp_path, monkeypatch):
    """The index listed the first 1000 pictures of a folder and said nothing of the others, and an empty page
    for a folder without pictures: it now says so."""
    for name in ("a.png", "b.png", "c.png"):
        small_picture(tmp_path / "three", name)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("not a picture")
    monkeypatch.setattr("liif.serve.app.INDEX_PICTURES", 2)
    with TestClient(make_app([tmp_path / "three"])) as client:
        index = client.get("/").text
        assert 'href="view/b.png"' in index and "c.png" not in index and "The first 2 pictures" in index
    with TestClient(make_app([tmp_path / "none"])) as client:
        assert "No pictures" in client.get("/").text
    monkeypatch.setattr("liif.serve.app.INDEX_PICTURES", 3)
    with TestClient(make_app([tmp_path / "three"])) as client:
        index = client.get("/").text
        assert 'href="view/c.png"' in index and "The first" not in index and "No pictures" not in index


def test_behind_a_root_path(served):
    """Under a proxy's prefix (Starlette's root_path) every route still answers, its URLs carrying the prefix."""
    client, _, folder = served
    with TestClient(make_app([folder]), root_path="/x") as prefixed:
        info = prefixed.get("/x/iiif/3/sub%2Finner%20pic.png/info.json")
        assert info.status_code == 200, info.text
        assert info.json()["id"] == "http://testserver/x/iiif/3/sub%2Finner%20pic.png"
        answer = prefixed.get("/x/bicubic/3/butterfly.png", follow_redirects=False)
        assert answer.headers["location"] == "http://testserver/x/bicubic/3/butterfly.png/info.json"
        answer = prefixed.get("/x/iiif/3/butterfly.png/full/max/0/default.png")
        assert answer.status_code == 200 and pixels_of(answer.content).shape == (H, W, 3)
        # the same pixels as another server's, with the same model: the same tag
        assert answer.headers["etag"] == client.get("/iiif/3/butterfly.png/full/max/0/default.png").headers["etag"]
        assert prefixed.get("/x/view/butterfly.png").status_code == 200


@pytest.mark.parametrize("named,read", [(True, False), (True, True), (False, False)], ids=["serve", "view", "folder"])
def test_a_picture_larger_than_the_picture_cache_is_read_once(tmp_path, monkeypatch, named, read):
    """A picture whose pixels exceed the picture cache (a 10000x9000 scan: 270 MB, against 256 MB) was read again
    for every tile: the cache was raised to hold the pictures named, not a folder's. It grows to the largest read."""
    picture = small_picture(tmp_path / "folder")  # 5184 bytes of pixels, against a cache of 1 KB
    reads = []
    monkeypatch.setattr("liif.serve.library.read_picture", lambda path: reads.append(path) or read_picture(path))
    options = ServeOptions(picture_cache_bytes=1 << 10)
    library = Library([picture if named else picture.parent], options.picture_cache_bytes, read)
    with TestClient(create_app(library, DEFAULT_MODEL, "cpu", options)) as client:
        for method in ("iiif", "bicubic"):
            for ask in ("info.json", "0,0,24,18/^96,72/0/default.png", "24,0,24,18/^96,72/0/default.png",
                        "0,18,24,18/^96,72/0/default.png", "full/^96,/0/default.jpg"):
                answer = client.get(f"/{method}/3/butterfly.png/{ask}")
                assert answer.status_code == 200, answer.text
    assert reads == [picture.resolve()]


def test_a_picture_asked_for_by_several_requests_at_once_is_read_once(tmp_path, monkeypatch):
    """A viewer asks for several tiles of a picture at once: each request read and decoded the whole picture
    beside the others (six 270 MB copies of a big scan). The others now wait for the first's read."""
    picture = small_picture(tmp_path)
    library = Library([tmp_path], 1 << 20)
    reads, second_read = [], threading.Event()

    def slow_read(path):
        reads.append(path)
        if len(reads) == 1:
            second_read.wait(2)  # long enough for the other request to reach its own read, if it is let through
        else:
            second_read.set()
        return read_picture(path)

    monkeypatch.setattr("liif.serve.library.read_picture", slow_read)
    found = []
    readers = [threading.Thread(target=lambda: found.append(library.read(picture.resolve()))) for _ in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    assert len(reads) == 1 and found[0][0] is found[1][0]


def test_a_file_replaced_keeping_its_size_and_time_is_read_again(tmp_path):
    """A picture replaced by another of the same size and modification time (cp -p, a backup restored) was
    served as the first: the cache knew a file by its size and time alone."""
    picture, flipped = tmp_path / "butterfly.bmp", tmp_path / "flipped.bmp"  # uncompressed: the same size
    Image.open(small_picture(tmp_path)).save(picture)
    Image.open(picture).transpose(Image.FLIP_TOP_BOTTOM).save(flipped)
    assert flipped.stat().st_size == picture.stat().st_size
    library = Library([picture], 1 << 20)
    first, _ = library.read(picture.resolve())
    times = picture.stat().st_atime_ns, picture.stat().st_mtime_ns
    os.replace(flipped, picture)
    os.utime(picture, ns=times)
    again, _ = library.read(picture.resolve())
    assert np.array_equal(again.pixels, first.pixels[::-1])


@pytest.mark.parametrize("max_pixels", [float("nan"), "1000"])
def test_a_max_pixels_that_counts_no_pixels_is_refused_naming_it(tmp_path, max_pixels):
    """As --max-pixels is: NaN would let any answer through, a string fail at the first request."""
    with pytest.raises(LiifError, match="^max_pixels must be a number >= 1, got "):
        make_app([small_picture(tmp_path)], max_pixels=max_pixels)
