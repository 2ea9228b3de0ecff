"""Compiled queries (``ImplicitModel.compile_queries``, ``liif upscale --compile``): the eager function, with a
fixed small set of graphs whatever the tiles, chunks and pictures. Compiling on a CPU takes a few seconds."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import liif
from conftest import comic_patch
from facts import IMPLICIT, SMALL
from liif.errors import LiifError


@pytest.mark.parametrize("name", IMPLICIT)
def test_compiled_queries_render_as_eager_with_one_graph_for_every_tile_and_chunk(name: str) -> None:
    torch.manual_seed(0)
    model = liif.make(SMALL[name]).eval()
    # 12 tiles of 6 shapes, each in several chunks of 256 queries and a shorter last one; then another picture
    cases = [(comic_patch(), (57, 83)), (comic_patch()[..., 3:17, 5:26], (31, 47))]
    eager = [liif.render(model, image, size, tile=8, chunk_size=256) for image, size in cases]
    torch._dynamo.reset()
    counters.clear()
    assert model.compile_queries("default") is model and model.compiled_query is not None
    compiled = [liif.render(model, image, size, tile=8, chunk_size=256) for image, size in cases]
    for got, expected in zip(compiled, eager):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])  # not one per tile, chunk or picture
    assert not counters["graph_break"], dict(counters["graph_break"])
    model.compile_queries("none")
    assert model.compiled_query is None


def test_an_unknown_compile_mode_is_refused() -> None:
    model = liif.make(SMALL["liif"])
    with pytest.raises(LiifError, match="unknown compile mode 'max'; use none, default, reduce-overhead"):
        model.compile_queries("max")
