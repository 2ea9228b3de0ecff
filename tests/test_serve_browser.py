"""The viewer page in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import io
import shutil
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from serving import RunningServer, make_app, small_picture

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


def test_viewer_zooms_to_x8_with_every_tile_served(browser, tmp_path):
    picture = small_picture(tmp_path, box=(40, 40, 168, 136))  # 128x96: x8 is zooming in on a 640x400 page
    with RunningServer(make_app([picture])) as url:
        page = browser.new_page(viewport={"width": 640, "height": 400}, accept_downloads=True)
        errors, tiles = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("response", lambda answer: tiles.append((answer.url, answer.status))
                if "/iiif/3/" in answer.url or "/bicubic/3/" in answer.url else None)
        page.goto(f"{url}/view/butterfly.png")
        page.wait_for_function("window.liif !== undefined", timeout=30_000)
        page.evaluate("liif.zoomTo(8, 60, 40)")
        page.wait_for_function("liif.liif.getFullyLoaded()", timeout=60_000)
        assert page.text_content("#zoom") == "x8.0"
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L"), dtype=np.float32)
        assert shot.std() > 20, "the screenshot is blank"
        levels = {unquote(url).split("/")[-3] for url, _ in tiles if url.endswith(".png")}
        assert any(size.startswith("^") for size in levels), "no upscaled tile was asked for"

        page.select_option("#mode", "split")  # bicubic on the left of the divider, LIIF on the right
        page.wait_for_function("liif.bicubic.getFullyLoaded()", timeout=60_000)
        assert any("/bicubic/3/" in url for url, _ in tiles)

        with page.expect_download() as download:
            page.click("#save")
        saved = Image.open(download.value.path())
        view = page.evaluate("liif.viewUrl()")
        assert saved.size == tuple(int(v) for v in unquote(view).split("/")[-3].lstrip("^").split(","))
        assert saved.size[0] > 300

        assert tiles and all(status == 200 for _, status in tiles), [t for t in tiles if t[1] != 200]
        assert errors == []
        page.close()
