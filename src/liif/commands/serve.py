"""Serve pictures over IIIF Image API 3.0 (level 2, with upscaling) with LIIF pixels, and a viewer page.

Each picture's identifier is its file name, or its path inside a served folder (URL-encoded). Tiles and any
region come from the same renderer as `liif upscale`: /iiif/3/{id}/{x},{y},{w},{h}/^{W},{H}/0/default.png
has exactly the pixels of `liif upscale FILE --region x,y,x+w,y+h --size WxH`. /bicubic/3/{id}/... answers
the same requests by plain bicubic, as /iiif does a downscale (an output smaller than its region: LIIF adds
nothing there). The viewer is at / and /view/{id}.

examples:
  liif serve photos/                         (http://127.0.0.1:8182/)
  liif serve photo.jpg --max-scale 16 --port 9000
  liif serve photos/ --root-path /liif      (behind a proxy serving it at https://example.org/liif/)
  curl http://127.0.0.1:8182/iiif/3/photo.jpg/info.json
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
from typing import TYPE_CHECKING, Callable

from liif.bounds import POSITIVE, Number
from liif.commands import add_feature_cache_option, add_model_options, feature_cache_bytes
from liif.errors import LiifError, os_reason

if TYPE_CHECKING:  # the server's modules (Starlette) load only when a server starts
    from liif.serve.app import ServeOptions

DEFAULT_PORT = 8182
# The address a browser on this machine opens a server listening on every interface at: one cannot open 0.0.0.0
# (Windows) or :: everywhere
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`liif serve`'s options."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="pictures and folders of pictures to serve")
    add_server_arguments(parser)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `liif serve` and `liif view` share."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--root-path", default="", metavar="PREFIX",
                        help="the path a reverse proxy serves this server under, cutting it off (e.g. /liif): "
                             "info.json ids and redirects carry it")
    add_model_options(parser)
    parser.add_argument("--max-scale", type=float, default=32.0,
                        help="largest zoom, in output pixels per picture pixel (default 32)")
    parser.add_argument("--max-pixels", type=float, default=None,
                        help="largest answer, in pixels (default 16777216, i.e. 4096x4096)")
    parser.add_argument("--cache-mb", type=float, default=128, help="encoded images kept, in MB (default 128)")
    add_feature_cache_option(parser)
    parser.add_argument("--picture-cache-mb", type=float, default=256,
                        help="decoded pictures kept, in MB (default 256; raised to the largest picture read)")


def server_options(args: argparse.Namespace) -> ServeOptions:
    """The server's options from the command line, each checked (a LiifError naming the option)."""
    from liif.serve.app import DEFAULT_SERVE_PIXELS, ServeOptions
    from liif.upscale import checked_max_pixels

    for name in ("cache_mb", "picture_cache_mb"):  # --max-scale: the Service checks it
        POSITIVE.check(getattr(args, name), f"--{name.replace('_', '-')}", LiifError)
    features = feature_cache_bytes(args.feature_cache_mb)
    max_pixels = checked_max_pixels(DEFAULT_SERVE_PIXELS if args.max_pixels is None else args.max_pixels)
    Number(int, 0, 65535).check(args.port, "--port", LiifError)
    return ServeOptions(max_scale=args.max_scale, max_pixels=max_pixels, precision=args.precision,
                        kernel=args.kernel, compile=args.compile,
                        image_cache_bytes=int(args.cache_mb * 2**20),
                        feature_cache_bytes=features,
                        picture_cache_bytes=int(args.picture_cache_mb * 2**20))


def checked_root_path(text: str) -> str:
    """``--root-path`` without its trailing /: empty, or a path from / of characters a URL path takes as they are
    (the ids clients build tile URLs from carry it); a LiifError otherwise."""
    if not re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]*)*", text):
        raise LiifError(f"--root-path must be a URL path from /, as /liif, got {text!r}")
    return text.rstrip("/")


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, or a LiifError saying why not (the port is taken, the host unknown)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart at once on the port
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise LiifError(f"cannot listen on {host}:{port}: {os_reason(exc)}") from None
    return sock


def start(args: argparse.Namespace, paths: list[str], on_ready: Callable[[str], None] | None = None,
          read: bool = False) -> int:
    """Check the files named (with ``read``, read them whole), bind the address, build the app, call
    ``on_ready(base_url)`` once listening, and serve until interrupted."""
    import uvicorn

    from liif.serve.app import create_app
    from liif.serve.library import Library

    options = server_options(args)
    root_path = checked_root_path(args.root_path)
    library = Library(paths, options.picture_cache_bytes, read)  # a file that is no picture: refused before binding
    sock = bound_socket(args.host, args.port)  # before the model loads: a taken port fails at once
    app = create_app(library, args.model, args.device, options)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", root_path=root_path)
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets=None) -> None:  # the address is known only once listening (--port 0)
        await original_startup(sockets)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            host = LOOPBACK.get(args.host, args.host)
            url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
            listening = f"listening on {args.host}; " if host != args.host else ""
            print(f"liif {args.command}: serving {len(paths)} path(s) at {url} ({listening}Ctrl+C stops)",
                  file=sys.stderr)
            if on_ready is not None:
                on_ready(url)

    original_shutdown = server.shutdown

    async def shutdown(sockets=None) -> None:  # uvicorn would wait for the requests in flight, and they for renders
        await app.state.service.queue.stop()
        await original_shutdown(sockets)

    server.startup, server.shutdown = startup, shutdown
    server.run(sockets=[sock])
    return 0 if server.started else 1


def run(args: argparse.Namespace) -> int:
    """Serve the paths until interrupted."""
    return start(args, args.paths)
