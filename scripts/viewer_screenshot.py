"""The README's screenshot of the viewer at x8, bicubic on the left of the divider and LIIF on the right.

    python scripts/viewer_screenshot.py ../shared/data/benchmarks/Set5/butterfly.png 128,128 -o docs/images/viewer_x8.png

Serves the picture in this process, opens /view in headless Chromium (Debian's, through Playwright), zooms to x8
at the point through the viewer's API, waits for every tile, and saves the screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serving import RunningServer  # noqa: E402  (the tests' in-process server)

from liif.serve.app import create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("picture")
    parser.add_argument("point", help="X,Y in picture pixels")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--zoom", type=float, default=8)
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--mode", default="split", choices=("liif", "bicubic", "split"))
    args = parser.parse_args()
    x, y = (float(v) for v in args.point.split(","))
    width, height = (int(v) for v in args.size.split("x"))
    with RunningServer(create_app([args.picture], device="cpu")) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{url}/view/{Path(args.picture).name}")
        page.wait_for_function("window.liif !== undefined")
        page.select_option("#mode", args.mode)
        page.evaluate(f"liif.zoomTo({args.zoom}, {x}, {y})")
        bicubic_shown = "true" if args.mode != "liif" else "false"
        page.wait_for_function(f"liif.liif.getFullyLoaded() && (!{bicubic_shown} || liif.bicubic.getFullyLoaded())",
                               timeout=600_000)
        page.wait_for_timeout(1500)  # let the navigator and the last tiles' fade-in finish
        page.screenshot(path=args.output)
        browser.close()


if __name__ == "__main__":
    main()
