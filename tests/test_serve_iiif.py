"""IIIF Image API 3.0 parameters as pure functions: sizes, regions, limits, upscaling only with ^."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liif.serve.iiif import (CONTEXT, JSON_LD, IIIFError, Limits, info_media_type, parse_region, parse_request,
                             parse_rotation, parse_size, quoted)

LIMITS = Limits.for_picture(48, 36, max_scale=32, max_pixels=10**9)


def test_limits_are_max_scale_times_the_picture_within_the_pixel_limit():
    assert LIMITS == Limits(1536, 1152, 1536 * 1152)
    assert Limits.for_picture(48, 36, 32, max_pixels=1000).max_area == 1000


@pytest.mark.parametrize("size,expected", [
    ("max", (48, 36)), ("^max", (1536, 1152)), ("24,", (24, 18)), (",18", (24, 18)), ("pct:50", (24, 18)),
    ("^96,", (96, 72)), ("^,72", (96, 72)), ("^pct:200", (96, 72)), ("!24,24", (24, 18)), ("^!200,100", (133, 100)),
    ("10,30", (10, 30)), ("^50,10", (50, 10)),
    ("!96,96", (48, 36)), ("^!100000,100000", (1536, 1152)),  # best fit: not above the region (no ^), the limits
])
def test_sizes(size, expected):
    assert parse_size(size, 48, 36, LIMITS) == expected


def test_max_stays_within_max_area():
    width, height = parse_size("^max", 48, 36, Limits(1536, 1152, 100_000))
    assert width * height <= 100_000 and abs(width / height - 4 / 3) < 0.02
    # a thin region: its width raised to one pixel must not take the height over the area
    assert parse_size("^max", 0.01, 36, Limits(1536, 1152, 100)) == (1, 100)
    assert parse_size("^max", 36, 0.01, Limits(1536, 1152, 100)) == (100, 1)


HUGE = "9" * 400  # a float's inf, an int too large for one


@pytest.mark.parametrize("size", ["49,", ",37", "pct:101", "50,36", "^1537,", "^,1153", "0,", "^0,5",
                                  "pct:0", "max,", "^", "1,2,3", "-5,", "1.5,", "", "١٠,", "pct:٥٠", "^!0,10",
                                  f"^{HUGE},", f"^,{HUGE}", f"^pct:{HUGE}", f"^!{HUGE},{HUGE}", f"{HUGE},5",
                                  "^" + "9" * 5000 + ","])
def test_refused_sizes(size):
    with pytest.raises(IIIFError) as refusal:
        parse_size(size, 48, 36, LIMITS)
    assert refusal.value.status == 400


@pytest.mark.parametrize("region,size,reason", [
    ("FULL", "max", "region 'FULL': expected full, square, x,y,w,h (whole numbers) or pct:x,y,w,h"),
    ("pct:1,2,x,4", "max", "region 'pct:1,2,x,4': expected full, square, x,y,w,h (whole numbers) or pct:x,y,w,h"),
    ("full", "^", "size '^': expected max, w,, ,h, pct:n, w,h or !w,h (w and h whole numbers), each with a leading ^ "
                  "to upscale"),
    ("full", "!^5,5", "size '!^5,5': expected max, w,, ,h, pct:n, w,h or !w,h (w and h whole numbers), each with a "
                      "leading ^ to upscale"),
    ("full", "pct:1e2", "size 'pct:1e2': expected max, w,, ,h, pct:n, w,h or !w,h (w and h whole numbers), each "
                        "with a leading ^ to upscale"),
])
def test_a_malformed_region_or_size_is_quoted_whole_with_the_forms_taken(region, size, reason):
    """A malformed size was quoted without its ^, ! or pct: and answered with '2 non-negative whole numbers' ('^'
    gave "size '': expected 2 ..."), a region 'FULL' with '4 non-negative whole numbers': the reason now quotes
    the whole parameter and names the forms it takes."""
    with pytest.raises(IIIFError) as refusal:
        parse_request(region, size, "0", "default.png", 48, 36, LIMITS)
    assert refusal.value.status == 400 and str(refusal.value) == reason


def test_sizes_a_format_cannot_hold_are_refused_before_rendering():
    """A WebP wider than 16383 pixels, or a JPEG wider than 65500, was rendered, then failed to encode: a 500
    without CORS headers, or a 404 saying the picture could not be read. Such a size is now a 400 naming the
    format, before rendering."""
    strip = Limits.for_picture(2100, 4, max_scale=32, max_pixels=10**9)  # 67200 wide at most
    tall = Limits.for_picture(4, 2100, max_scale=32, max_pixels=10**9)
    assert parse_request("full", "^65500,", "0", "default.jpg", 2100, 4, strip).size == (65500, 125)
    assert parse_request("full", "^16383,", "0", "default.webp", 2100, 4, strip).size == (16383, 31)
    assert parse_request("full", "^67200,", "90", "default.png", 2100, 4, strip).size == (67200, 128)
    # the refusal is imageio.check_encodable's, which liif upscale gives, with the advice in IIIF's terms
    for size, fmt, reason, (width, height, limits) in (
            ("^65501,", "jpg", "JPEG holds at most 65500x65500 pixels, the output would be 65501x125", (2100, 4, strip)),
            ("^16384,", "webp", "WEBP holds at most 16383x16383 pixels, the output would be 16384x31", (2100, 4, strip)),
            ("^,16384", "webp", "WEBP holds at most 16383x16383 pixels, the output would be 31x16384", (4, 2100, tall))):
        with pytest.raises(IIIFError) as refusal:
            parse_request("full", size, "0", f"default.{fmt}", width, height, limits)
        assert refusal.value.status == 400 and str(refusal.value) == f"size {size!r}: {reason}; ask for png"


def test_quoted_text_is_cut_after_40_characters_with_its_length():
    assert quoted("9" * 40) == repr("9" * 40)
    assert quoted("9" * 41) == repr("9" * 40) + "... (41 characters)"
    assert quoted("\n" * 100) == repr("\n" * 40) + "... (100 characters)"  # still escaped: one line


LONG = "9" * 5000
ZEROS = "0" * 5000  # leading zeros: numbers of any value, as long as wanted


@pytest.mark.parametrize("region,size,rotation,quality_format", [
    ("1,2," + LONG, "max", "0", "default.png"),                                  # malformed region
    (LONG + ",0,1,1", "max", "0", "default.png"),                                # outside the picture
    ("0,0,1," + ZEROS, "max", "0", "default.png"),                               # no height
    ("pct:0,0," + ZEROS + "." + "0" * 318 + "1,100", "max", "0", "default.png"),  # narrower than a pixel allows
    ("full", "x" * 5000, "0", "default.png"),                                    # malformed size
    ("full", "^" + LONG + ",", "0", "default.png"),                              # above every limit
    ("full", "^" + ZEROS + "1537,", "0", "default.png"),                         # above the limits
    ("full", ZEROS + "96,", "0", "default.png"),                                 # upscaling without ^
    ("full", "pct:101." + ZEROS, "0", "default.png"),                            # the same, in percent
    ("full", "pct:0." + ZEROS, "0", "default.png"),                              # 0 percent
    ("full", ZEROS + ",", "0", "default.png"),                                   # an empty output
    ("full", "max", LONG, "default.png"),                                        # rotation
    ("full", "max", "0", "x" * 5000 + ".png"),                                   # quality
    ("full", "max", "0", "default." + "x" * 5000),                               # format
])
def test_every_reason_quotes_a_huge_request_short(region, size, rotation, quality_format):
    with pytest.raises(IIIFError) as refusal:
        parse_request(region, size, rotation, quality_format, 48, 36, LIMITS)
    reason = str(refusal.value)
    assert refusal.value.status == 400 and len(reason) < 300, reason
    assert re.search(r"'.{40}'\.\.\. \([0-9]{4} characters\)", reason), reason


def test_regions():
    assert parse_region("full", 48, 36) == (0, 0, 48, 36)
    assert parse_region("square", 48, 36) == (6, 0, 42, 36)
    assert parse_region("square", 36, 48) == (0, 6, 36, 42)  # a portrait picture: centred vertically
    assert parse_region("square", 37, 48) == (0, 5, 37, 42)  # (48 - 37) // 2 = 5
    assert parse_region("40,30,20,20", 48, 36) == (40, 30, 48, 36)  # cut to the picture
    assert parse_region("pct:25,50,50,25", 48, 36) == (12, 18, 36, 27)
    for bad in ("48,0,1,1", "0,0,0,1", "1,2,3", "pct:1,2,3", "-1,0,5,5", "a,b,c,d", "1.5,0,2,2", "١,0,5,5",
                # regions too thin for their aspect and the scales to the limits to be finite
                "pct:50,0,0.0000000000000000001,100", "pct:0,0,0." + "0" * 318 + "1,100"):
        with pytest.raises(IIIFError):
            parse_region(bad, 48, 36)


@pytest.mark.parametrize("text,expected", [
    ("0", (False, 0)), ("90", (False, 90)), ("!180", (True, 180)), ("270", (False, 270)),
    # any number from 0 to 360 (4.3) that is a multiple of 90: 360 is a whole turn, 90.0 is 90
    ("360", (False, 0)), ("!360", (True, 0)), ("90.0", (False, 90)), ("0.0", (False, 0)), ("!270.000", (True, 270)),
])
def test_rotations_by_multiples_of_90(text, expected):
    assert parse_rotation(text) == expected


@pytest.mark.parametrize("text", ["45", "22.5", "90.5", "450", "720", "-90", "+90", "1e2", "٩٠", "", "!", "!!90",
                                  "90,", " 90", "nan", "inf", ".", "9" * 400])
def test_refused_rotations(text):
    with pytest.raises(IIIFError) as refusal:
        parse_rotation(text)
    assert refusal.value.status == 400 and len(str(refusal.value)) < 300


@pytest.mark.parametrize("region,size,downscale", [
    ("full", "24,", True), ("full", "!24,24", True), ("8,4,20,16", "20,8", True),  # one side smaller is enough
    ("full", "max", False), ("8,4,20,16", "^40,32", False),                       # x1, an upscale
    ("full", "^50,10", False),                                                    # one side larger: LIIF's
])
def test_a_downscale_is_an_output_smaller_than_its_region(region, size, downscale):
    assert parse_request(region, size, "0", "default.png", 48, 36, LIMITS).downscale is downscale


def test_request_key_is_canonical():
    one = parse_request("full", "48,", "0", "default.png", 48, 36, LIMITS)
    other = parse_request("0,0,48,36", "max", "0", "default.png", 48, 36, LIMITS)
    assert one.key() == other.key() and one.size == (48, 36)
    assert parse_request("full", "max", "!90", "gray.webp", 48, 36, LIMITS).key().endswith("/!90/gray.webp")


def test_info_json_offers_the_one_tile_size(monkeypatch):
    from liif.serve import iiif

    info = iiif.info_json("http://x/iiif/3/a.png", 1000, 600, LIMITS)
    assert info["tiles"] == [{"width": iiif.TILE, "height": iiif.TILE, "scaleFactors": [1, 2, 4]}]
    monkeypatch.setattr(iiif, "TILE", 64)  # the viewer reads the size from here: nothing else names it
    info = iiif.info_json("http://x/iiif/3/a.png", 100, 60, LIMITS)
    assert info["tiles"] == [{"width": 64, "height": 64, "scaleFactors": [1, 2]}]


@pytest.mark.parametrize("max_pixels", [100, 5000, 60_000, 10**9])
def test_every_tile_info_json_offers_is_served(max_pixels):
    """The spec: tiles must be within the size limits expressed. With --max-pixels below 256x256 the tiles
    offered were refused (400), and a viewer showed nothing; the tiles now shrink to fit."""
    from liif.serve import iiif

    width, height = 1000, 600
    limits = Limits.for_picture(width, height, max_scale=32, max_pixels=max_pixels)
    (tiles,) = iiif.info_json("http://x/iiif/3/a.png", width, height, limits)["tiles"]
    side = tiles["width"]
    assert tiles["height"] == side and side <= iiif.TILE
    assert side == iiif.TILE or (2 * side) ** 2 > max_pixels  # as large as the limits allow
    for factor in tiles["scaleFactors"]:  # each tile of each level, as the spec's implementation notes ask for it
        span = side * factor
        for y in range(0, height, span):
            for x in range(0, width, span):
                w, h = min(span, width - x), min(span, height - y)
                size = f"{math.ceil(w / factor)},{math.ceil(h / factor)}"
                parse_request(f"{x},{y},{w},{h}", size, "0", "default.jpg", width, height, limits)


@pytest.mark.parametrize("accept,media_type", [
    (None, JSON_LD), ("", JSON_LD), ("*/*", JSON_LD), ("application/*", JSON_LD),  # the spec's default: JSON-LD
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", JSON_LD),  # a browser's tab
    ("application/ld+json", JSON_LD), (f'application/ld+json;profile="{CONTEXT}"', JSON_LD),
    ("application/json", "application/json"), ("application/json, */*;q=0.1", "application/json"),
    ("application/json, application/ld+json;q=0.9", "application/json"),
    ("application/ld+json;q=0.5, application/json", "application/json"),
    ("application/json;q=0.5, application/ld+json", JSON_LD), ("application/json;q=0.5, */*", JSON_LD),
    ("Application/JSON", "application/json"), ("application/ld+json;q=0, application/json", "application/json"),
    ("application/json;q=0, */*", JSON_LD), ("image/png", JSON_LD), ("application/json;q=bad", "application/json"),
])
def test_info_json_media_type_by_content_negotiation(accept, media_type):
    """Without an Accept header, or when the client takes both, info.json is JSON-LD with the context as its
    profile (Image API 3.0, 5.1); plain JSON only for a client that prefers it."""
    assert info_media_type(accept) == media_type


PART = st.one_of(st.integers(0, 60).map(str), st.sampled_from(["", "0", "00", "1e400", "nan", "inf", "+1", "-1", "١",
                                                               "9" * 400, "0.5", ".5", "5.", "1" + "0" * 30]))


def size_texts() -> st.SearchStrategy[str]:
    pair = st.builds("{},{}".format, PART, PART)
    body = st.one_of(st.just("max"), pair, PART.map("{},".format), PART.map(",{}".format), PART.map("pct:{}".format),
                     pair.map("!{}".format), st.text(max_size=6))
    return st.builds("{}{}".format, st.sampled_from(["", "^"]), body)


def region_texts() -> st.SearchStrategy[str]:
    four = st.builds("{},{},{},{}".format, PART, PART, PART, PART)
    return st.one_of(st.sampled_from(["full", "square"]), four, four.map("pct:{}".format), st.text(max_size=8))


@settings(derandomize=True, database=None, max_examples=3000, deadline=None)
@given(region=region_texts(), size=size_texts(), max_pixels=st.sampled_from([100, 5000, 10**9]))
def test_every_request_is_a_size_within_the_limits_or_a_400(region, size, max_pixels):
    """Any region and size: an output the spec's size, inside the picture and the limits, or a 400, never a crash."""
    limits = Limits.for_picture(48, 36, max_scale=32, max_pixels=max_pixels)
    try:
        request = parse_request(region, size, "0", "default.png", 48, 36, limits)
    except IIIFError as refusal:
        assert refusal.status == 400 and "\n" not in str(refusal)
        return
    x0, y0, x1, y1 = request.region
    width, height = request.size
    assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 36 and all(map(math.isfinite, request.region))
    assert 1 <= width and 1 <= height and limits.admit(request.size)
    if not size.startswith("^"):
        assert width <= max(1, math.floor(x1 - x0 + 0.5)) and height <= max(1, math.floor(y1 - y0 + 0.5))
