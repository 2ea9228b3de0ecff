"""Make a continuous zoom into a point of a picture: a video, an animation or a folder of PNG frames.

The zoom runs from START to END output pixels per picture pixel (START 'fit': the whole picture, fitted to
the frame), the zoom factor growing geometrically. From x1 on, frame k has exactly the pixels of
`liif upscale PICTURE --region R_k --size WxH` (below x1, plain bicubic, antialiased); --print-regions prints each
R_k as x0,y0,x1,y1.
OUT: .mp4 (H.264) .webm (VP9) .mkv .mov through PyAV; .gif, .webp or .png (APNG) animations; a path without a suffix
is a folder of PNG frames.

examples:
  liif zoom photo.jpg -o zoom.mp4 --center 812,430
  liif zoom photo.jpg -o zoom.gif --size 320x180 --frames 48 --fps 12 --compare bicubic
  liif zoom photo.jpg -o zoom.mkv --size 321x181 --pix-fmt yuv444p --crf 12
  liif zoom photo.jpg --print-regions --frames 4
"""

from __future__ import annotations

import argparse
import sys

from liif.commands import add_encoder_options, add_feature_cache_option, add_model_options, feature_cache_bytes
from liif.errors import LiifError
from liif.geometry import Geometry, parse_numbers
from liif.zoom import COMPARISONS, checked_zooms


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`liif zoom`'s options."""
    parser.add_argument("picture", metavar="PICTURE", help="the picture to zoom into")
    parser.add_argument("-o", "--output", metavar="OUT", help="video, animation or frame folder to write")
    parser.add_argument("--center", metavar="X,Y", help="the point zoomed into, in picture pixels (default: the middle)")
    parser.add_argument("--zoom", default="fit:16", metavar="START:END",
                        help="zoom range in output pixels per picture pixel; START may be 'fit' (default fit:16)")
    parser.add_argument("--frames", type=int, default=96, help="number of frames, at most 100000 (default 96)")
    parser.add_argument("--fps", type=float, default=24, help="frames per second (default 24; a .gif at most 50)")
    parser.add_argument("--size", default="1280x720", metavar="WxH", help="frame size (default 1280x720)")
    parser.add_argument("--compare", choices=COMPARISONS, help="put plain bicubic beside LIIF (frames twice as wide)")
    parser.add_argument("--background", default="white", metavar="COLOR",
                        help="what a transparent picture is shown over where OUT holds no alpha (a GIF, a plain "
                             "video): #rrggbb or a name such as black (default white)")
    parser.add_argument("--print-regions", action="store_true",
                        help="print each frame's region as x0,y0,x1,y1 (the form --region takes)")
    add_model_options(parser)
    add_feature_cache_option(parser)
    add_encoder_options(parser.add_argument_group("videos (.mp4 .mkv .mov .webm)"), "refused")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def parse_zoom(text: str) -> tuple[float | None, float]:
    """``START:END`` as (start, end) output pixels per picture pixel; start None for ``fit``."""
    start, colon, end = text.partition(":")
    try:
        if not colon:
            raise ValueError
        first = None if start == "fit" else float(start)
        last = float(end)
    except ValueError:
        raise LiifError(f"--zoom {text!r}: expected START:END, START 'fit' or a number and END a number, "
                        f"such as fit:16 or 2:32") from None
    return checked_zooms(first, last, f"--zoom {text}: each zoom")  # before the picture is read


def run(args: argparse.Namespace) -> int:
    """Print the frames' regions and/or write the zoom."""
    from liif.geometry import format_region
    from liif.renderer import FeatureCache
    from liif.zoom import Region, background_rgb, header_size, zoom, zoom_regions

    start, end = parse_zoom(args.zoom)
    size = Geometry.parse(size=args.size).size  # bounded as a frame's by zoom_regions
    center = None if args.center is None else tuple(parse_numbers(args.center, "--center", (2,)))
    cache = FeatureCache(feature_cache_bytes(args.feature_cache_mb))
    background = background_rgb(args.background)  # refused even where unused, with --print-regions alone
    if args.output is None and not args.print_regions:
        raise LiifError("give -o OUT (or --print-regions)")

    def print_regions(regions: list[Region]) -> None:
        for region in regions:
            print(format_region(region))
        sys.stdout.flush()

    if args.output is None:  # the regions need the picture's size alone: its header, not its pixels
        print_regions(zoom_regions(header_size(args.picture), size, center, start, end, args.frames))
    else:  # printed once every mistake (an output there already, a frame rate, a model) is refused
        zoom(args.picture, args.output, center, start, end, args.frames, args.fps, size, args.compare, args.model,
             args.device, args.precision, args.overwrite, progress=not args.quiet, kernel=args.kernel,
             compile=args.compile, codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt,
             planned=print_regions if args.print_regions else None, cache=cache, background=background)
    return 0
