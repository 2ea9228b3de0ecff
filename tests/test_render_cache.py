"""Encoder features shared between renders: bit for bit the same output, each window encoded once, bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import liif
import liif.imageio
from liif import load_model
from liif.geometry import Geometry
from liif.imageio import Picture, read_picture
from liif.lru import ByteLRU
from liif.renderer import FeatureCache, model_token, render
from liif.upscale import render_picture
from conftest import BENCHMARKS, shared_file
from facts import SMALL


@pytest.fixture(scope="module")
def model():
    return load_model("edsr-baseline-liif")


@pytest.fixture(scope="module")
def picture() -> Picture:
    return Picture(np.ascontiguousarray(read_picture(shared_file(BENCHMARKS / "Set5" / "butterfly.png")).pixels[60:100, 80:132]))


def as_input(picture: Picture) -> torch.Tensor:
    return torch.from_numpy(picture.pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]


def test_cached_renders_equal_plain_renders(model, picture):
    cache = FeatureCache()
    for geometry in (Geometry(scale=0.5), Geometry(scale=3.3, region=(10, 5, 40, 30)),
                     Geometry(size=(97, 61), region=(33.5, 20.25, 41, 25)), Geometry(scale=2, region=(0, 20, 52, 40))):
        target = geometry.target(picture.pixels.shape[:2])
        plain = render_picture(model, picture, target, tile=16)
        assert np.array_equal(render_picture(model, picture, target, tile=16, cache=cache).pixels, plain.pixels)
    assert cache.encoded > 0


def test_tiles_of_nearby_zooms_share_windows(model, picture):
    """Quadrants at x4, then the whole picture at x2 and x3, then a corner at x16: one window (the tile side is
    256 up to x8, 128 at x16, and either covers the 40x52 picture); x64 cuts the grid in 16-latent tiles (its block
    side, sqrt(2**22 / 64**2) = 32, lands a hair below 32 with the corner's float range)."""
    inp = as_input(picture)
    cache = FeatureCache()
    quadrants = [((-1, 0), (-1, 0)), ((-1, 0), (0, 1)), ((0, 1), (-1, 0)), ((0, 1), (0, 1))]
    for ranges in quadrants:
        assert torch.equal(render(model, inp, (80, 104), ranges=ranges, cache=cache),
                           render(model, inp, (80, 104), ranges=ranges))
    assert cache.encoded == 1
    for size in ((80, 104), (120, 156)):
        assert torch.equal(render(model, inp, size, cache=cache), render(model, inp, size))
    assert cache.encoded == 1
    corner = ((-1, -0.8), (-1, -1 + 8 / 52))  # 4x4 latents
    for size in ((64, 64), (256, 256)):
        assert torch.equal(render(model, inp, size, ranges=corner, cache=cache), render(model, inp, size, ranges=corner))
    assert cache.encoded == 2
    # x72, between powers of two: a block of sqrt(2**22 / 72**2) = 28.4 latents a side, cut to the power of two
    # below it, as at x64: x64's windows
    assert torch.equal(render(model, inp, (288, 288), ranges=corner, cache=cache),
                       render(model, inp, (288, 288), ranges=corner))
    assert cache.encoded == 2
    render(model, inp.flip(-1), (40, 52), cache=cache)  # another picture: its own windows
    assert cache.encoded == 3


def test_a_picture_is_hashed_once_however_many_renders(model, picture, monkeypatch):
    """The cache names a Picture by its content_key, computed once: the server's and zoom's renders of one
    picture do not hash it again per tile or frame (a 12 MP input took 0.3 s to hash here)."""
    hashed = []
    real_blake2b = liif.imageio.hashlib.blake2b
    monkeypatch.setattr(liif.imageio.hashlib, "blake2b", lambda *a, **k: hashed.append(1) or real_blake2b(*a, **k))
    copy = Picture(picture.pixels.copy())
    cache = FeatureCache()
    for region in ((0, 0, 26, 20), (26, 0, 52, 20), (0, 20, 26, 40)):
        target = Geometry(scale=4, region=region).target(copy.pixels.shape[:2])
        assert np.array_equal(render_picture(model, copy, target, cache=cache).pixels,
                              render_picture(model, picture, target).pixels)
    assert len(hashed) == 1 and cache.encoded == 1
    other = Picture(picture.pixels[::-1].copy())  # other pixels, other features
    render_picture(model, other, Geometry(scale=1).target(other.pixels.shape[:2]), cache=cache)
    assert cache.encoded == 2


def test_self_ensemble_with_the_cache(model, picture):
    inp = as_input(picture)
    cache = FeatureCache()
    plain = render(model, inp, (50, 65), self_ensemble=True)
    assert torch.equal(render(model, inp, (50, 65), self_ensemble=True, cache=cache), plain)
    assert cache.encoded == 8  # one window per symmetry
    assert torch.equal(render(model, inp, (50, 65), self_ensemble=True, cache=cache), plain)
    assert cache.encoded == 8


def test_features_encoded_in_another_precision_are_not_reused(model, picture):
    """bf16 features differ from fp32 ones: a render in fp32 after one under bf16 autocast encodes its own window,
    and equals the fp32 render without a cache."""
    inp = as_input(picture)
    cache = FeatureCache()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = render(model, inp, (40, 52), cache=cache)
    plain = render(model, inp, (40, 52))
    assert (low - plain).abs().max() > 1e-3  # the precisions really give other pictures
    assert torch.equal(render(model, inp, (40, 52), cache=cache), plain)
    assert cache.encoded == 2


def test_cache_is_bounded_in_bytes(model, picture):
    inp = as_input(picture)
    cache = FeatureCache(max_bytes=40 * 52 * 64 * 4 * 3 // 2)  # room for one whole-picture window, not two
    render(model, inp, (40, 52), cache=cache)
    render(model, inp.flip(-1), (40, 52), cache=cache)
    assert cache.encoded == 2 and len(cache.entries) == 1 and cache.entries.bytes <= cache.entries.max_bytes
    assert len(cache.latent_entries) == 0  # a window's tables (256 channels) do not fit beside its features


def test_latents_are_kept_in_the_room_features_leave(model, picture):
    """LIIF's per-latent tables are kept beside the features while there is room, and go first: the bound is one,
    and the features (costlier to make again) stay."""
    inp = as_input(picture)
    window = 40 * 52 * 4  # bytes per channel of the whole-picture window
    bound = window * (64 + 64 + 256) - 1  # two windows' features, a byte short of tables beside them
    cache = FeatureCache(max_bytes=bound)
    first = render(model, inp, (40, 52), cache=cache)
    assert torch.equal(render(model, inp, (40, 52), cache=cache), first)
    assert (cache.encoded, cache.latents_made, len(cache.latent_entries)) == (1, 1, 1)
    other = render(model, inp.flip(-1), (40, 52), cache=cache)
    assert (cache.encoded, cache.latents_made, len(cache.entries), len(cache.latent_entries)) == (2, 2, 2, 0)
    assert cache.entries.bytes + cache.latent_entries.bytes <= bound
    assert torch.equal(render(model, inp.flip(-1), (40, 52), cache=cache), other)
    assert (cache.encoded, cache.latents_made) == (2, 3)  # its features kept, its tables made again


def test_byte_lru_drops_least_recently_used():
    lru = ByteLRU(10, len)
    lru.put("a", b"1234")
    lru.put("b", b"1234")
    assert lru.get("a") == b"1234"  # "a" is now the most recent
    lru.put("c", b"1234")
    assert lru.get("b") is None and lru.get("a") == b"1234" and lru.bytes == 8
    lru.put("huge", b"x" * 11)
    assert lru.get("huge") is None and lru.bytes == 8


@pytest.mark.parametrize("max_bytes", [float("nan"), "512MB", -1])
def test_a_bound_that_is_no_count_of_bytes_is_refused(max_bytes):
    """NaN kept every value (none is above it), and "512MB" failed at the first put, deep in a render."""
    with pytest.raises(liif.LiifError, match=f"^max_bytes must be a number >= 0, got {max_bytes!r}$"):
        FeatureCache(max_bytes)


def test_a_model_created_where_a_freed_one_lived_gets_its_own_entries(picture):
    """Models are told apart by a token that outlives the object's address: a new model never reads the
    features a freed model left in the cache, even if Python gives it the same id()."""
    cache = FeatureCache()
    inp = as_input(picture)
    tokens = set()
    for seed in range(3):
        torch.manual_seed(seed)
        net = liif.make(SMALL["liif"]).eval()
        tokens.add(model_token(net))
        cached = render(net, inp, (80, 104), tile=16, cache=cache)
        assert torch.equal(cached, render(net, inp, (80, 104), tile=16))
        del net
    assert len(tokens) == 3
