"""200 tile requests from 20 concurrent clients at a running server: every answer right, renders shared,
memory bounded."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from liif.pretrained import DEFAULT_MODEL
from conftest import load_benchmark
from serving import RunningServer, make_app, small_picture

serve_load = load_benchmark("serve_load")

RSS_GROWTH_MB = 400  # the bound: caches are set to 1 + 8 + 1 MB here, the rest is the renderer's working set


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_load(tmp_path):
    picture = small_picture(tmp_path)
    app = make_app([picture], image_cache_bytes=1 << 20, feature_cache_bytes=8 << 20, picture_cache_bytes=1 << 20)
    requests = serve_load.tile_requests("butterfly.png", 48, 36, 64, [1, 2, 4, 8])
    paths = serve_load.load_paths(requests, 200)
    samples, running = [], True

    def sample() -> None:
        while running:
            samples.append(rss_mb())
            time.sleep(0.02)

    with RunningServer(app) as url:
        before = rss_mb()
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = asyncio.run(serve_load.run_load(url, paths, clients=20, timeout=120))
        finally:
            running = False
            sampler.join()
    stats = app.state.service.queue.stats
    assert result.statuses == [200] * 200
    assert result.inconsistent == 0 and len(result.bodies) == len(requests) == 44
    assert serve_load.wrong_answers(picture, requests, result.bodies, DEFAULT_MODEL) == []
    assert stats.rendered >= len(requests) and stats.rendered + stats.shared + stats.cached == 200
    assert stats.shared + stats.cached > 0
    assert max(samples) - before < RSS_GROWTH_MB, (before, max(samples))
    print(f"{200 / result.seconds:.1f} requests/s, RSS {before:.0f} -> peak {max(samples):.0f} MB, {stats}")


def test_a_user_mistake_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("not a picture")
    picture = small_picture(tmp_path)
    for argv, words in (([tmp_path / "missing.png"], f"{tmp_path / 'missing.png'}: no such file"),
                        ([not_a_picture], f"{not_a_picture}: not an image"),
                        ([picture, "--scales", "1,2.5"], "--scales '1,2.5': levels are whole numbers"),
                        ([picture, "--scales", "1,x"], "--scales '1,x': expected numbers")):
        monkeypatch.setattr("sys.argv", ["serve_load.py", *map(str, argv)])
        with pytest.raises(SystemExit) as stop:
            load_benchmark("common").run_script(serve_load.main)
        assert stop.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"serve_load.py: error: {words}") and "\n" not in error, error
