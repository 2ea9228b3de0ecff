"""The Starlette app: IIIF Image API 3.0 at ``/iiif/3/{id}`` (LIIF pixels; a downscale's are bicubic) and
``/bicubic/3/{id}`` (the same requests by plain bicubic, for comparison), the viewer page at ``/`` and
``/view/{id}``, its assets at ``/static``. Identifiers are taken from the raw URL path, so an escaped ``/``
(``%2F``) stays inside one."""

from __future__ import annotations

import hashlib
import html
import io
import logging
import math
import os
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timezone
from email.utils import formatdate, parsedate_to_datetime
from importlib import resources
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import torch
import torch.nn as nn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import liif
from liif.bounds import Number
from liif.errors import LiifError, one_line, option, os_reason
from liif.geometry import Geometry, Target
from liif.imageio import Picture, encode_picture
from liif.pretrained import DEFAULT_MODEL, weights_file
from liif.renderer import FEATURE_CACHE_BYTES, FeatureCache
from liif.runtime import render_tile
from liif.serve.iiif import IIIFError, ImageRequest, Limits, info_json, info_media_type, parse_request
from liif.serve.library import FileState, Library
from liif.serve.worker import RenderQueue
from liif.upscale import check_target, checked_max_pixels, model_on, render_picture, resize_bicubic

log = logging.getLogger("liif.serve")
STATIC = Path(str(resources.files("liif.serve") / "static"))
PROFILE_LINK = '<http://iiif.io/api/image/3/level2.json>;rel="profile"'
# Script on another origin reads only the CORS-safelisted headers of an answer and those named here: an IIIF client
# reads the profile in Link, and a tile cache the ETag to revalidate with
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag, Link"}
PREFLIGHT_SECONDS = 86400  # how long a browser may keep a preflight's answer
METHODS = ("iiif", "bicubic")  # URL prefix -> who makes the pixels: LIIF, or plain bicubic
DEFAULT_SERVE_PIXELS = 4096 * 4096  # the largest single answer: a server must not render 500 MP for one request
INDEX_PICTURES = 1000  # the most the index page lists: a tree of many more is walked that far only


def viewer_path(identifier: str) -> str:
    """The viewer page of a picture, relative to the server's root."""
    return f"view/{quote(identifier, safe='')}"


@dataclass
class ServeOptions:
    """How the server renders: limits, caches (bytes), and the model's precision, query kernel and compile mode."""

    max_scale: float = 32.0
    max_pixels: int = DEFAULT_SERVE_PIXELS
    image_cache_bytes: int = 128 << 20
    feature_cache_bytes: int = FEATURE_CACHE_BYTES
    picture_cache_bytes: int = 256 << 20  # the Library raises it to the largest picture read
    precision: str = "fp32"
    kernel: str | None = None
    compile: str = "none"


def encode_answer(picture: Picture, request: ImageRequest) -> bytes:
    """Mirror, rotate, apply the quality and encode: the rendered region as the response body."""
    pixels = picture.pixels
    if request.mirror:
        pixels = pixels[:, ::-1]
    if request.rotation:
        pixels = np.rot90(pixels, k=-request.rotation // 90, axes=(0, 1))
    has_alpha = pixels.shape[2] in (2, 4)
    color, alpha = (pixels[:, :, :-1], pixels[:, :, -1:]) if has_alpha else (pixels, None)
    if request.quality in ("gray", "bitonal") and color.shape[2] == 3:
        luma = color.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        color = luma.round().astype(pixels.dtype)[:, :, None]
    if request.quality == "bitonal":
        color = np.where(color > picture.max_value // 2, picture.max_value, 0).astype(pixels.dtype)
    if request.format == "jpg":
        alpha = None
    pixels = np.ascontiguousarray(color if alpha is None else np.concatenate([color, alpha], axis=2))
    stream = io.BytesIO()
    try:
        # a bitonal answer is black and white alone (4.4): lossy WebP and JPEG at 95 blur its edges into grays
        encode_picture(Picture(pixels, picture.icc_profile), request.encoder, stream,
                       exact=request.quality == "bitonal")
    except LiifError as exc:
        raise IIIFError(400, str(exc)) from None
    return stream.getvalue()


def renderer_identity(model: str | os.PathLike | nn.Module, net: nn.Module, options: ServeOptions,
                      tile: int) -> tuple:
    """What makes a server's pixels beside the picture and the request: the weights file (its path, size and
    time; a module given is this run's alone), the device, the options that change the arithmetic, the render
    tile and the code's versions."""
    if isinstance(model, nn.Module):  # its code and attributes are its own: only its run knows its pixels
        weights = secrets.token_hex(8)
    else:
        path = weights_file(model).resolve()
        info = path.stat()
        weights = (str(path), info.st_size, info.st_mtime_ns)
    device = next(net.parameters()).device
    return (weights, str(device), options.precision, options.kernel, options.compile, tile, liif.__version__,
            torch.__version__)


class Service:
    """The model, the caches and the render queue behind the routes."""

    def __init__(self, paths: list[str | os.PathLike] | Library,
                 model: str | os.PathLike | nn.Module = DEFAULT_MODEL, device: str = "auto",
                 options: ServeOptions | None = None) -> None:
        options = options or ServeOptions()
        Number(low=1).check(options.max_scale, option("max_scale"), LiifError)
        self.options = replace(options, max_pixels=checked_max_pixels(options.max_pixels))
        # a Library given was built (its files checked) before the server bound its address; it keeps its cache
        self.library = paths if isinstance(paths, Library) else Library(paths, self.options.picture_cache_bytes)
        self.model = model_on(model, device, self.options.precision, self.options.kernel, self.options.compile)
        # the renderer's own tile, chosen once: every request cuts the latent grid alike, so they share windows
        self.render_tile = render_tile(next(self.model.parameters()).device)
        self.features = FeatureCache(self.options.feature_cache_bytes)
        self.queue = RenderQueue(self.options.image_cache_bytes)
        # another run with the same identity makes the same pixels: a browser's tiles stay valid across restarts
        self.identity = renderer_identity(model, self.model, self.options, self.render_tile)
        self.started = time.time()

    def limits(self, picture: Picture) -> Limits:
        """The largest answer for ``picture``: the max scale times its size, within the pixel limit."""
        height, width = picture.pixels.shape[:2]
        return Limits.for_picture(width, height, self.options.max_scale, self.options.max_pixels)

    def caching(self, answer_key: tuple, file: FileState) -> dict[str, str]:
        """The headers of an answer to be revalidated at each use: its entity tag, the same for the same bytes
        (the renderer's identity, the file's state, the canonical request), and when it last changed (its file,
        or this server's start: before it, another run may have rendered it otherwise)."""
        etag = hashlib.blake2b(repr((self.identity, answer_key)).encode(), digest_size=16).hexdigest()
        headers = {**CORS, "ETag": f'"{etag}"', "Cache-Control": "no-cache"}
        changed = max(file.last_change, self.started)
        # in whole seconds, which a change later in the same second would keep: given once its second is over
        if math.floor(time.time()) > math.floor(changed):
            headers["Last-Modified"] = formatdate(changed, usegmt=True)
        return headers

    def plan(self, picture: Picture, request: ImageRequest) -> Target:
        """The output ``request`` asks of ``picture``, refused (a LiifError) where rendering it would be."""
        target = Geometry(size=request.size, region=request.region).target(picture.pixels.shape[:2])
        check_target(target, picture, self.options.max_pixels)
        return target

    def render(self, method: str, picture: Picture, request: ImageRequest) -> bytes:
        """The response body of ``request`` by ``method``: LIIF's, exactly the pixels ``liif upscale --region
        --size`` writes, or plain bicubic's."""
        target = self.plan(picture, request)
        if method == "bicubic":
            result = resize_bicubic(picture, target)
        else:
            result = render_picture(self.model, picture, target, precision=self.options.precision,
                                    tile=self.render_tile, cache=self.features)
        return encode_answer(result, request)


def path_segments(request: Request, prefix: str) -> list[str]:
    """The percent-decoded segments of the raw path after ``prefix``: ``a%2Fb.png/info.json`` is two."""
    raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
    raw = raw.decode("latin-1")
    root = request.scope.get("root_path", "")
    if root and raw.startswith(root):
        raw = raw[len(root):]
    return [unquote(part) for part in raw[len(prefix):].split("/")]


def not_modified(request: Request, caching: dict[str, str]) -> bool:
    """Whether the request's If-None-Match is ``*`` or names the answer's ETag (weakly compared, as for a GET),
    or, without one, its If-Modified-Since is no earlier than the answer's Last-Modified (RFC 9110, 13.2.2)."""
    asked = request.headers.get("if-none-match")
    if asked is not None:
        return bool({"*", caching["ETag"]} & {tag.strip().removeprefix("W/") for tag in asked.split(",")})
    if "Last-Modified" not in caching:
        return False
    try:
        since = parsedate_to_datetime(request.headers["if-modified-since"])
    except (KeyError, TypeError, ValueError):  # none, or not a date: ignored
        return False
    if since.tzinfo is None:  # "-0000": UTC, said without a source
        since = since.replace(tzinfo=timezone.utc)
    return since >= parsedate_to_datetime(caching["Last-Modified"])


def internal_error(request: Request, exc: Exception) -> Response:
    """An unexpected failure: a 500 with CORS headers, so that a viewer on another origin reads the status (the
    server then logs the trace)."""
    return PlainTextResponse("internal server error: see the server's log\n", status_code=500, headers=CORS)


def error_response(exc: LiifError) -> Response:
    """A refusal as one line of text: its IIIF status, or 400 for any other LiifError."""
    status = exc.status if isinstance(exc, IIIFError) else 400
    return PlainTextResponse(one_line(exc) + "\n", status_code=status, headers=CORS)


def head_response(service: Service, picture: Picture, request: ImageRequest, answer_key: tuple,
                  headers: dict[str, str]) -> Response:
    """A HEAD's answer: the request checked as a GET's render would check it, and no render; the body's length
    only when the answer is cached (HTTP lets a HEAD leave Content-Length out)."""
    service.plan(picture, request)
    body = service.queue.results.get(answer_key)
    response = Response(body, media_type=request.media_type, headers=headers)
    if body is None:
        del response.headers["content-length"]  # Starlette says 0 for no body: the answer is not empty
    return response


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the request has no body left to read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(paths: list[str | os.PathLike] | Library, model: str | os.PathLike | nn.Module = DEFAULT_MODEL,
               device: str = "auto", options: ServeOptions | None = None) -> Starlette:
    """The server for pictures ``paths`` (files and folders, or a Library of them) with ``model``: run it with
    uvicorn."""
    service = Service(paths, model, device, options)

    async def iiif(request: Request) -> Response:
        parts = path_segments(request, "/")  # after the root path: /{method}/3/{id}/...
        method, segments = parts[0], parts[2:]
        try:
            # the route matched the decoded path: an escaped slash (/iiif%2F3%2Fa.png) leaves the raw one unlike it
            if method not in METHODS or parts[1:2] != ["3"] or not segments:
                raise IIIFError(404, "no such page")
            identifier = segments[0]
            path = service.library.resolve(identifier)
            base = f"{str(request.base_url).rstrip('/')}/{method}/3/{quote(identifier, safe='')}"
            if len(segments) == 1:
                return RedirectResponse(f"{base}/info.json", status_code=303, headers=CORS)
            try:
                picture, file = await run_in_threadpool(service.library.read, path)
            except OSError as exc:  # gone, or unreadable, since it was found
                raise IIIFError(404, f"cannot read picture: {os_reason(exc)}") from None
            height, width = picture.pixels.shape[:2]
            limits = service.limits(picture)
            if segments[1:] == ["info.json"]:
                media_type = info_media_type(request.headers.get("accept"))
                caching = {**service.caching(("info.json", base, media_type, limits), file), "Vary": "Accept"}
                if not_modified(request, caching):
                    return Response(status_code=304, headers=caching)
                color = picture.pixels.shape[2] >= 3  # gray, or gray and alpha: no colour
                return JSONResponse(info_json(base, width, height, limits, color), media_type=media_type,
                                    headers=caching)
            if len(segments) != 5:
                raise IIIFError(400, "expected /{id}/info.json or /{id}/{region}/{size}/{rotation}/{quality}.{format}")
            image_request = parse_request(*segments[1:], width, height, limits)
            # A downscale needs no super-resolution: LIIF samples without averaging (fine detail aliases) and
            # encodes every window the region reaches (a general client's overview tile of a big scan, all of it);
            # antialiased bicubic averages, as the viewer's levels up to x1 do. It is /bicubic's answer.
            made_by = "bicubic" if image_request.downscale else method
            answer_key = (made_by, file, image_request.key())
            # kept by the browser, and asked for again only with its validators: a 304 renders nothing
            caching = service.caching(answer_key, file)
            if not_modified(request, caching):
                return Response(status_code=304, headers=caching)
            if request.method == "HEAD":  # the headers a GET would send, without rendering for them
                return head_response(service, picture, image_request, answer_key,
                                     {**caching, "Link": PROFILE_LINK})
            body = await service.queue.get(answer_key, lambda: service.render(made_by, picture, image_request),
                                           lambda: client_gone(request), model=made_by == "iiif")
        except LiifError as exc:
            return error_response(exc)
        except (MemoryError, torch.OutOfMemoryError):
            return PlainTextResponse("out of memory\n", status_code=503, headers=CORS)
        if body is None:  # the client left: nobody reads this
            return Response(status_code=499)
        return Response(body, media_type=image_request.media_type, headers={**caching, "Link": PROFILE_LINK})

    async def preflight(request: Request) -> Response:
        """A CORS preflight (OPTIONS): any origin may GET any IIIF resource, with the headers it asks to send
        (Authorization included, which a wildcard would not allow)."""
        headers = {**CORS, "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                   "Access-Control-Max-Age": str(PREFLIGHT_SECONDS)}
        asked = request.headers.get("access-control-request-headers")
        if asked:
            headers["Access-Control-Allow-Headers"] = asked
        return Response(status_code=204, headers=headers)

    async def index(request: Request) -> Response:
        names = await run_in_threadpool(service.library.identifiers, INDEX_PICTURES + 1)
        items = "\n".join(f'<li><a href="{viewer_path(name)}">{html.escape(name)}</a></li>'
                          for name in names[:INDEX_PICTURES])
        if not names:
            note = "<p>No pictures (PNG, JPEG, WebP, BMP, TIFF) in the paths served.</p>"
        elif len(names) > INDEX_PICTURES:
            note = f"<p>The first {INDEX_PICTURES} pictures; the others open at view/ and their path.</p>"
        else:
            note = ""
        return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>liif serve</title>"
                            f"<link rel='stylesheet' href='static/viewer.css'></head><body class='index'>"
                            f"<h1>LIIF deep zoom</h1>{note}<ul>{items}</ul></body></html>")

    async def view(request: Request) -> Response:
        segments = path_segments(request, "/view/")
        try:
            if len(segments) != 1:
                raise IIIFError(404, "no such page")
            service.library.resolve(segments[0])
        except IIIFError as exc:
            return error_response(exc)
        return FileResponse(STATIC / "viewer.html", media_type="text/html")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await service.queue.start()
        try:
            yield
        finally:
            await service.queue.stop()

    routes = [Route("/", index), Route("/view/{rest:path}", view),
              *(Route(f"/{method}/3/{{rest:path}}", iiif) for method in METHODS),
              *(Route(f"/{method}/3/{{rest:path}}", preflight, methods=["OPTIONS"]) for method in METHODS),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: internal_error})
    app.state.service = service
    return app
