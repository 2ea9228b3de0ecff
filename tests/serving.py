"""Helpers for the server tests: a small real picture, an app serving it with the default model, and a server
running in this process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

from liif.imageio import Picture, read_picture, write_picture
from liif.pretrained import DEFAULT_MODEL
from liif.serve.app import ServeOptions, create_app
from conftest import BENCHMARKS, free_port, shared_file


def small_picture(folder: Path, name: str = "butterfly.png", box=(100, 70, 148, 106)) -> Path:
    """A 48x36 crop of Set5 butterfly written to ``folder/name``."""
    x0, y0, x1, y1 = box
    pixels = read_picture(shared_file(BENCHMARKS / "Set5" / "butterfly.png")).pixels[y0:y1, x0:x1]
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_picture(Picture(np.ascontiguousarray(pixels)), path)
    return path


class RunningServer:
    """A uvicorn server in a thread of this process, on a free port: ``with RunningServer(app) as url``."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_app(paths, **options):
    return create_app([str(p) for p in paths], DEFAULT_MODEL, "cpu", ServeOptions(**options))
