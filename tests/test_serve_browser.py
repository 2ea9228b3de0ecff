"""The viewer page in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import io
import shutil
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from conftest import BENCHMARKS, shared_file
from serving import RunningServer, make_app, small_picture

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class Record:
    """What a page did: its console errors, the image (tile) URLs it asked for, and every IIIF answer's URL and
    status."""

    errors: list[str] = field(default_factory=list)
    tiles: list[str] = field(default_factory=list)
    answers: list[tuple[str, int]] = field(default_factory=list)


def is_iiif(url: str) -> bool:
    """Whether ``url`` asks either IIIF endpoint, LIIF or bicubic."""
    return "/iiif/3/" in url or "/bicubic/3/" in url


def tile_scale(url: str) -> float:
    """Output pixels per picture pixel of an image request ``.../x,y,w,h/[^]W,H/0/default.png``."""
    region, size = unquote(url).split("/")[-4:-2]
    return float(size.lstrip("^").split(",")[0]) / float(region.split(",")[2])


def upscaled_tile(endpoint: str) -> Callable[[Request], bool]:
    """Whether a request asks ``endpoint`` (iiif or bicubic) for a tile larger than its region."""
    return lambda asked: f"/{endpoint}/3/" in asked.url and asked.url.endswith(".png") and tile_scale(asked.url) > 1


def open_viewer(browser: Browser, url: str, width: int, height: int, clock: bool = False) -> tuple[Page, Record]:
    """The viewer of butterfly.png served at ``url``, on a ``width`` x ``height`` page, and its Record; with
    ``clock``, the page's timers run on Playwright's clock, which a test can move on."""
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    if clock:
        page.clock.install()
    record = Record()
    page.on("console", lambda message: record.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: record.errors.append(str(error)))
    page.on("request", lambda asked: record.tiles.append(asked.url)
            if is_iiif(asked.url) and asked.url.endswith(".png") else None)
    page.on("response", lambda answer: record.answers.append((answer.url, answer.status)) if is_iiif(answer.url)
            else None)
    page.goto(f"{url}/view/butterfly.png")
    page.wait_for_function("window.liif !== undefined", timeout=30_000)
    return page, record


def test_viewer_zooms_to_x8_with_every_tile_served(browser, tmp_path):
    picture = small_picture(tmp_path, box=(40, 40, 168, 136))  # 128x96: x8 is zooming in on a 640x400 page
    with RunningServer(make_app([picture])) as url:
        page, record = open_viewer(browser, url, 640, 400)
        page.evaluate("liif.zoomTo(8, 60, 40)")
        page.wait_for_function("liif.liif.getFullyLoaded()", timeout=60_000)
        assert page.text_content("#zoom") == "x8.0"
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L"), dtype=np.float32)
        assert shot.std() > 20, "the screenshot is blank"
        levels = {unquote(url).split("/")[-3] for url in record.tiles}
        assert any(size.startswith("^") for size in levels), "no upscaled tile was asked for"

        # bicubic on the left of the divider, LIIF on the right; the levels up to x1 come from /bicubic anyway: the
        # bicubic side is its upscaled tiles
        with page.expect_request(upscaled_tile("bicubic"), timeout=60_000):
            page.select_option("#mode", "split")
        page.wait_for_function("liif.bicubic.getFullyLoaded()", timeout=60_000)

        with page.expect_download() as download:
            page.click("#save")
        saved = Image.open(download.value.path())
        view = page.evaluate("liif.viewUrl()")
        assert saved.size == tuple(int(v) for v in unquote(view).split("/")[-3].lstrip("^").split(","))
        assert saved.size[0] > 300

        answers = record.answers
        assert answers and all(status == 200 for _, status in answers), [a for a in answers if a[1] != 200]
        assert record.errors == []
        page.close()


def test_viewer_asks_liif_only_above_the_pictures_resolution(browser, tmp_path):
    picture = small_picture(tmp_path, box=(0, 0, 256, 256))  # all of butterfly: larger than a 360x240 page
    with RunningServer(make_app([picture])) as url:
        page, record = open_viewer(browser, url, 360, 240)
        page.wait_for_function("liif.liif.getFullyLoaded()", timeout=60_000)
        assert page.evaluate("liif.zoom()") < 1, "the home view is not a downscale"
        assert record.tiles and all("/bicubic/3/" in tile for tile in record.tiles), record.tiles
        assert page.is_visible("#same"), "the page does not say that both sides are bicubic"
        assert "/bicubic/3/" in page.evaluate("liif.viewUrl()")

        record.tiles.clear()
        # the layer is still fully loaded when zoomTo returns: its tiles of x4 are asked for at the next draw
        with page.expect_request(upscaled_tile("iiif"), timeout=60_000):
            page.evaluate("liif.zoomTo(4, 128, 128)")
        page.wait_for_function("liif.liif.getFullyLoaded()", timeout=120_000)
        liif = [tile for tile in record.tiles if "/iiif/3/" in tile]
        assert liif and all(tile_scale(tile) > 1 for tile in liif), record.tiles
        assert page.is_hidden("#same")
        assert "/iiif/3/" in page.evaluate("liif.viewUrl()")

        with page.expect_request(upscaled_tile("bicubic"), timeout=60_000):  # the left of the divider
            page.select_option("#mode", "split")
        page.wait_for_function("liif.bicubic.getFullyLoaded()", timeout=60_000)
        assert all(status == 200 for _, status in record.answers), record.answers
        assert record.errors == []
        page.close()


def test_a_iiif_client_on_another_origin_gets_every_tile(browser, tmp_path):
    """OpenSeadragon's own IIIF tile source, as Mirador and the Universal Viewer use it, on a page of another
    origin and sending Authorization (as IIIF Auth viewers do): its preflight was a 405 without CORS headers,
    and the viewer opened nothing. Now info.json and every tile it asks for (odd sizes, two levels) are 200, and
    the page's script reads their Link and ETag (which without Access-Control-Expose-Headers it could not)."""
    picture = tmp_path / "baboon.png"  # 500x480: 256-pixel tiles at scale factors 1 and 2
    shutil.copy(shared_file(BENCHMARKS / "Set14" / "baboon.png"), picture)
    with RunningServer(make_app([picture])) as url:
        page = browser.new_page(viewport={"width": 600, "height": 500})
        errors, answers = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("response", lambda answer: answers.append((answer.url, answer.status)) if is_iiif(answer.url)
                else None)
        page.set_content(f"""<div id="v" style="width:600px;height:500px"></div>
            <script src="{url}/static/openseadragon/openseadragon.min.js"></script>
            <script>
              window.viewer = OpenSeadragon({{id: "v", tileSources: "{url}/bicubic/3/baboon.png/info.json",
                  loadTilesWithAjax: true, ajaxHeaders: {{Authorization: "Bearer x"}},
                  crossOriginPolicy: "Anonymous"}});
              viewer.addHandler("open-failed", (event) => window.failed = event.message);
            </script>""")  # another origin: the page's is null
        page.wait_for_function("window.failed || (viewer.world.getItemCount() && viewer.world.getItemAt(0)"
                               ".getFullyLoaded())", timeout=60_000)
        assert page.evaluate("window.failed") is None, errors
        page.evaluate("viewer.viewport.zoomTo(viewer.world.getItemAt(0).imageToViewportZoom(1), null, true)")
        page.wait_for_function("viewer.world.getItemAt(0).getFullyLoaded()", timeout=60_000)
        tiles = [answer for answer in answers if answer[0].endswith(".jpg")]
        assert len({unquote(url).split("/")[-3] for url, _ in tiles}) > 2, tiles  # sizes of both levels
        assert answers and all(status == 200 for _, status in answers), answers
        # the page's script reads the headers an IIIF client needs: the profile's Link, the ETag to revalidate with
        read = page.evaluate(f"""fetch("{tiles[0][0]}").then((answer) =>
            [answer.headers.get("Link"), answer.headers.get("ETag")])""")
        assert read[0] == '<http://iiif.io/api/image/3/level2.json>;rel="profile"' and read[1].startswith('"'), read
        assert errors == []
        page.close()


def test_a_picture_that_cannot_be_read_shows_why_instead_of_a_blank_page(browser, tmp_path):
    """A served folder's picture that cannot be read left the viewer blank: its info.json's 400 was parsed as JSON
    (an uncaught SyntaxError). The page now says the server's reason."""
    (tmp_path / "damaged.png").write_bytes(small_picture(tmp_path).read_bytes()[:100])
    with RunningServer(make_app([tmp_path])) as url:
        page = browser.new_page(viewport={"width": 640, "height": 400})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/view/damaged.png")
        page.wait_for_function("document.getElementById('name').textContent !== 'damaged.png'", timeout=30_000)
        assert page.text_content("#name") == ("damaged.png: cannot read the image, it may be truncated or corrupt "
                                              "(image file is truncated)")
        assert errors == []
        page.close()


def test_no_answer_for_info_json_is_said_instead_of_a_blank_page(browser, tmp_path):
    """A network failure fetching info.json (the server stopped, the connection cut) left the page blank but for
    the picture's name, an uncaught error in the console. The page now says the server did not answer."""
    with RunningServer(make_app([small_picture(tmp_path)])) as url:
        page = browser.new_page(viewport={"width": 640, "height": 400})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route("**/info.json", lambda route: route.abort("connectionreset"))
        page.goto(f"{url}/view/butterfly.png")
        page.wait_for_function("document.getElementById('name').textContent !== 'butterfly.png'", timeout=30_000)
        assert page.text_content("#name") == "butterfly.png: the server did not answer (Failed to fetch)"
        assert errors == []
        page.close()


def test_saving_the_view_without_an_answer_says_so(browser, tmp_path):
    """"save view as PNG" with no answer from the server (stopped, the network down) did nothing but log an uncaught
    error; it now says that the server did not answer."""
    with RunningServer(make_app([small_picture(tmp_path)])) as url:
        page = browser.new_page(viewport={"width": 640, "height": 400})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route(lambda asked: is_iiif(asked) and asked.endswith(".png"), lambda route: route.abort())
        page.goto(f"{url}/view/butterfly.png")
        page.wait_for_function("window.liif !== undefined", timeout=30_000)
        page.on("dialog", lambda dialog: dialog.dismiss())  # at once: an alert left open holds the click
        with page.expect_event("dialog", timeout=30_000) as said:
            page.click("#save")
        assert said.value.message == "the server did not answer (Failed to fetch)"
        assert errors == []
        page.close()


def test_a_tile_the_server_takes_long_to_render_still_shows(browser, tmp_path, monkeypatch):
    """On a CPU a LIIF tile waits behind the others in the render queue, and one encoding a new window takes
    seconds: OpenSeadragon gave up on a tile after 30 s (its default), left a hole in the view and logged an
    error, and the server dropped the render as the request went. The viewer now waits for the server."""
    app = make_app([small_picture(tmp_path, box=(40, 40, 168, 136))])  # 128x96: its x2 level is one tile
    render, delayed = app.state.service.render, []
    asked, released = threading.Event(), threading.Event()

    def slow(method, picture, request):
        if method == "iiif" and not delayed:
            delayed.append(request.region)
            asked.set()
            released.wait(60)
        return render(method, picture, request)

    monkeypatch.setattr(app.state.service, "render", slow)
    with RunningServer(app) as url:
        page, record = open_viewer(browser, url, 200, 160, clock=True)  # it asks for the x2 tile at once
        assert asked.wait(60)
        page.clock.fast_forward("00:31")  # the page's timers: 31 s on, past OpenSeadragon's default
        with page.expect_response(upscaled_tile("iiif"), timeout=60_000) as answer:
            released.set()
        page.wait_for_timeout(500)  # drawn
        assert answer.value.status == 200
        assert record.errors == []
        page.close()
