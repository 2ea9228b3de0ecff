"""Open a picture in the LIIF deep-zoom viewer: serve it (as `liif serve` does) and open the browser.

The page zooms past 100% up to --max-scale, shows the zoom (x1.0, x8.3), compares with plain bicubic (a
toggle or a split view), and saves the current view as a PNG made by one IIIF request.

examples:
  liif view photo.jpg
  liif view photo.jpg --port 0 --no-browser      (print the address only)
"""

from __future__ import annotations

import argparse
import threading
import webbrowser
from pathlib import Path

from liif.commands.serve import add_server_arguments, start
from liif.errors import LiifError
from liif.fileio import check_regular_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`liif view`'s options."""
    parser.add_argument("picture", metavar="PICTURE", help="the picture to view")
    add_server_arguments(parser)
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser, print the address")


def run(args: argparse.Namespace) -> int:
    """Serve the picture and open (or print) its viewer page, until interrupted."""
    from liif.serve.app import viewer_path
    from liif.serve.library import file_identifier

    try:  # a folder would be served as one, and its viewer page left blank
        check_regular_file(Path(args.picture))
    except LiifError as exc:
        raise LiifError(f"{args.picture}: {exc}") from None

    def ready(url: str) -> None:
        page = url + viewer_path(file_identifier(args.picture))
        print(page, flush=True)
        if not args.no_browser:
            threading.Thread(target=webbrowser.open, args=(page,), daemon=True).start()

    # read whole before serving, and served from what was read: a picture that cannot be read is a one-line
    # error here, not a blank page
    return start(args, [args.picture], ready, read=True)
