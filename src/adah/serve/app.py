"""The FastAPI app of ``adah serve``: JSON endpoints over an :class:`adah.index.Index` and one
HTML page.

==========================  ===============================================================
``GET /``                   the search page (``static/index.html``)
``GET /api/health``         ``{"status": "ok", "count": N}``
``GET /api/info``           the index header (bits, count, modalities, ...) and the limits
``POST /api/search/text``   JSON ``{"text": ..., "k": 10, "target": "image"}``; answers
                            :meth:`SearchResult.to_dict` plus ``count``, ``took_ms`` and a
                            ``thumbnail`` URL per hit (no server file paths)
``POST /api/search/image``  multipart upload (field ``image``; fields or query ``k``, ``target``),
                            or the raw bytes with ``Content-Type: image/...``
``POST /api/attention``     an upload like the above -> PNG overlay, or JSON with ``format=json``
``GET /api/thumbnail/{row}`` PNG thumbnail of an indexed image file (``size``, default 128)
``POST /api/reload``        switch to the index folder's new version now (loopback only; the
                            service also notices one by itself within ``watch_seconds``)
==========================  ===============================================================

Every error is a JSON body ``{"error": message, "status": code}`` with a 4xx code: 400 empty or
malformed input, 404 unknown path or row, 413 body or image over :class:`Limits`, 415 wrong
content type, 422 a value out of range or a query the model cannot answer (the AdahError text,
e.g. no query word in the vocabulary). Anything unexpected is answered with the same shape and
status 500, naming no internals (the traceback goes to the server log). Model calls are
serialized by a lock: on a few CPU cores concurrent forward passes only compete for the same cores.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from adah.errors import AdahError, ServiceUnavailable
from adah.utils.images import DEFAULT_MAX_PIXELS, ImageTooLarge, open_image, reduced_rgb
from adah.index import ImageQueryError
from adah.index.core import MAX_IMAGE_PIXELS

log = logging.getLogger("adah.serve")
TARGETS = ("image", "text")
TEXT_FIELDS = ("text", "k", "target")
ATTENTION_FORMATS = ("png", "json")
THUMBNAIL_SIZES = (16, 512)
HIDDEN_HIT_FIELDS = ("image_path",)  # absolute paths on the server: the thumbnail URL replaces them
IMAGE_FIELD = "image"
#: the page loads nothing from elsewhere: its own inline script and style, images from here or blobs
PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything over is answered with a 4xx JSON error."""

    max_body_bytes: int = 10 * 2**20  # whole request body (413)
    max_k: int = 100  # top-k in 1..max_k (422)
    max_text_chars: int = 1000  # query text length (422)
    max_image_pixels: int = MAX_IMAGE_PIXELS  # decoded width * height of an upload (413)
    default_k: int = 10

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AdahError(f"serve limits: {field.name} must be a positive integer, got {value!r}")
        if self.default_k > self.max_k:
            raise AdahError(f"serve limits: default_k={self.default_k} is over max_k={self.max_k}")


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def create_app(index, *, limits: Limits | None = None, watch_seconds: float | None = 1.0) -> FastAPI:
    """The service over ``index`` (an :class:`adah.index.Index`). ``watch_seconds``: how often a
    request may check whether the index folder holds a new version (``adah index add/remove``,
    a rebuild) and switch to it without a restart; None: never (``POST /api/reload`` from
    loopback still does)."""
    limits = limits or Limits()
    lock = threading.Lock()
    app = FastAPI(title="adah search", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.state.index, app.state.limits = index, limits
    watcher = VersionWatcher(app, watch_seconds)

    def current():
        return watcher.current()

    @app.exception_handler(HTTPException)
    async def _http_error(_request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):  # last resort: never a traceback or a path in the answer
        log.error("unexpected %s in a request", type(exc).__name__, exc_info=exc)
        return error_response(500, "internal error: the request could not be answered")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return error_response(422, "; ".join(parts) or "invalid request")

    def call(fn, *args, **kwargs):
        """``fn`` under the model lock; ImageQueryError -> 400, other AdahError (unknown words,
        a target the index lacks) -> 422."""
        try:
            with lock:
                return fn(*args, **kwargs)
        except ImageQueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except ServiceUnavailable as exc:  # a Milvus server down or restarting: the same request may work later
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        except AdahError as exc:
            raise HTTPException(422, str(exc)) from None

    thumbnail_lock = threading.Lock()  # one image decoded at a time: memory stays bounded under load

    @lru_cache(maxsize=64)
    def thumbnail_source(path: str):
        return reduced_image(path, THUMBNAIL_SIZES[1])

    @lru_cache(maxsize=4096)
    def thumbnail_of(path: str, size: int) -> bytes:  # keyed by path: an index that grows keeps its cache
        return thumbnail_png(thumbnail_source(path), size)

    def thumbnail(index, row: int, size: int) -> bytes:
        path = index.item(row).get("image_path")
        if not path:
            raise HTTPException(404, f"row {row} has no image file to show")
        with thumbnail_lock:
            return thumbnail_of(path, size)

    def explain_words(index) -> bool:
        """Word-level text attention (minilm): every text answer says which query words G keeps."""
        cfg = getattr(getattr(index, "model", None), "cfg", None)
        return getattr(cfg, "text_encoder", "bow_mlp") != "bow_mlp" and bool(getattr(cfg, "text_attention", False))

    def answer(result, started: float) -> dict:
        out = result.to_dict()
        for hit in out["hits"]:
            hit["thumbnail"] = f"/api/thumbnail/{hit['row']}" if hit.get("image_path") else None
            for key in HIDDEN_HIT_FIELDS:
                hit.pop(key, None)
        out["count"] = len(out["hits"])
        out["took_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return out

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(_page_html(), headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP,
                                                   "X-Content-Type-Options": "nosniff"})

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "count": len(current())}

    @app.get("/api/info")
    def info() -> dict:
        return jsonable_encoder({**current().info(), "limits": dataclasses.asdict(limits)})

    @app.post("/api/reload")
    async def reload(request: Request) -> dict:
        """Switch to the folder's current version now (loopback clients only)."""
        from adah.cli.serve import is_loopback

        host = request.client.host if request.client else ""
        if not is_loopback(host):
            raise HTTPException(403, "reload is allowed from this machine only (loopback)")
        changed = await run_in_threadpool(watcher.reload, True)
        index = current()
        return {"reloaded": changed, "count": len(index), "generation": int(index.info().get("generation") or 0)}

    @app.post("/api/search/text")
    async def search_text(request: Request) -> dict:
        started = time.perf_counter()
        require_type(request, ("application/json",), "a JSON body {\"text\": ..., \"k\": 10, \"target\": \"image\"}")
        payload = parse_json_object(await request.body())
        unknown = sorted(set(payload) - set(TEXT_FIELDS))
        if unknown:
            raise HTTPException(422, f"unknown field(s) {unknown}; expected {list(TEXT_FIELDS)}")
        text = check_text(payload.get("text"), limits)
        k = check_k(payload.get("k", limits.default_k), limits)
        target = check_target(payload.get("target", "image"))
        index = current()
        result = await run_in_threadpool(call, index.search_text, text, k=k, target=target, explain=explain_words(index))
        return answer(result, started)

    @app.post("/api/search/image")
    async def search_image(request: Request) -> dict:
        started = time.perf_counter()
        upload = await read_upload(request, limits)
        k = check_k(upload.params.get("k", limits.default_k), limits)
        target = check_target(upload.params.get("target", "text"))
        result = await run_in_threadpool(call, current().search_image, upload.image, k=k, target=target,
                                         name=upload.filename or "upload")
        result.query.update(width=upload.image.width, height=upload.image.height)
        return answer(result, started)

    @app.post("/api/attention")
    async def attention(request: Request) -> Response:
        upload = await read_upload(request, limits)
        fmt = upload.params.get("format", "png")
        if fmt not in ATTENTION_FORMATS:
            raise HTTPException(422, f"format must be one of {list(ATTENTION_FORMATS)}, got {fmt!r}")
        index = current()
        kind = (index.info().get("model") or {}).get("attention")
        if kind in ("none", "text"):
            raise HTTPException(422, f"this index's model has no image attention (model.attention={kind!r}), so "
                                     "there is no mask to show")
        att = await run_in_threadpool(call, index.attention, upload.image)
        if att is None:
            raise HTTPException(422, "this index's model has no spatial attention mask to show (it reads image "
                                     "feature vectors, or its mask is over channels)")
        if fmt == "json":
            return JSONResponse(att.to_dict())
        png = await run_in_threadpool(overlay_png, upload.image, np.asarray(att.mask, dtype=bool))
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/thumbnail/{row}")
    async def thumbnail_endpoint(row: int, size: int = 128) -> Response:
        index = current()
        if not 0 <= row < len(index):
            raise HTTPException(404, f"no row {row}: the index has rows 0..{len(index) - 1}")
        lo, hi = THUMBNAIL_SIZES
        if not lo <= size <= hi:
            raise HTTPException(422, f"size must be in {lo}..{hi}, got {size}")
        png = await run_in_threadpool(thumbnail, index, row, size)
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    return app


# --------------------------------------------------------------------------- new versions
class VersionWatcher:
    """The index the app serves, switched to the folder's new version when one appears: at most
    every ``seconds`` a request stats the manifest (:meth:`Index.changed_on_disk`); a changed one
    is loaded (by one thread; the others keep answering from the old version meanwhile) and
    replaces ``app.state.index``. A version that fails to load is logged and the old one kept."""

    def __init__(self, app: FastAPI, seconds: float | None) -> None:
        self.app, self.seconds = app, seconds
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self):
        index = self.app.state.index
        if self.seconds is not None and time.monotonic() - self._checked >= self.seconds:
            self.reload(False)
            index = self.app.state.index
        return index

    def reload(self, force: bool) -> bool:
        """Load the folder's version if it changed (``force``: check now); True when switched."""
        if not self._lock.acquire(blocking=force):
            return False
        try:
            self._checked = time.monotonic()
            old = self.app.state.index
            if not getattr(old, "path", None) or not old.changed_on_disk():
                return False
            try:
                self.app.state.index = old.reload()
            except (AdahError, OSError) as exc:
                import logging

                logging.getLogger("adah.serve").warning("index %s changed but cannot be loaded, still serving the "
                                                        "previous version: %s", old.path, exc)
                if force:
                    raise HTTPException(409, f"the new version cannot be loaded: {exc}") from None
                return False
            return True
        finally:
            self._lock.release()


# --------------------------------------------------------------------------- request checks
def require_type(request: Request, allowed: tuple[str, ...], what: str) -> str:
    """The request's media type when it starts with one of ``allowed``, else 415."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not any(media == a or (a.endswith("/") and media.startswith(a)) for a in allowed):
        raise HTTPException(415, f"Content-Type {media or '(none)'!r} not accepted; send {what}")
    return media


def parse_json_object(body: bytes) -> dict:
    if not body.strip():
        raise HTTPException(400, "empty request body: send JSON {\"text\": ..., \"k\": 10, \"target\": \"image\"}")
    try:
        payload = json.loads(body)
    except RecursionError:
        raise HTTPException(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise HTTPException(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, f"request body must be a JSON object, got {type(payload).__name__}")
    return payload


def check_text(text, limits: Limits) -> str:
    if text is None:
        raise HTTPException(422, "missing field 'text'")
    if not isinstance(text, str):
        raise HTTPException(422, f"'text' must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (\ud800) is valid JSON but not text
        raise HTTPException(400, f"'text' is not valid Unicode: a lone surrogate at position {exc.start}") from None
    text = text.strip()
    if not text:
        raise HTTPException(400, "empty query text")
    if len(text) > limits.max_text_chars:
        raise HTTPException(422, f"query text is {len(text)} characters; the limit is {limits.max_text_chars}")
    return text


def check_k(k, limits: Limits) -> int:
    if isinstance(k, str):
        try:
            k = int(k.strip())
        except ValueError:
            raise HTTPException(422, f"k must be an integer in 1..{limits.max_k}, got {_short(k)}") from None
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.max_k:
        raise HTTPException(422, f"k must be an integer in 1..{limits.max_k}, got {_short(k)}")
    return k


def _short(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (an echoed 5,000-digit k stays short)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_target(target) -> str:
    if not isinstance(target, str) or target not in TARGETS:
        raise HTTPException(422, f"target must be one of {list(TARGETS)}, got {_short(target)}")
    return target


@dataclass
class Upload:
    image: object  # PIL.Image.Image, RGB
    filename: str | None
    params: dict[str, str]  # query parameters, overridden by form fields


async def read_upload(request: Request, limits: Limits) -> Upload:
    """The uploaded image (multipart field ``image``, or a raw ``image/*`` body) decoded to RGB."""
    media = require_type(request, ("multipart/form-data", "image/"),
                         f"multipart/form-data with a file field '{IMAGE_FIELD}', or the image bytes as image/*")
    params = dict(request.query_params)
    filename = None
    if media == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=16)
        try:
            part = form.get(IMAGE_FIELD)
            if not isinstance(part, UploadFile):
                raise HTTPException(400, f"no file in the form field '{IMAGE_FIELD}'")
            params.update({key: value for key, value in form.items() if isinstance(value, str)})
            data, filename = await part.read(), part.filename
        finally:
            await form.close()
    else:
        data = await request.body()
    if not data:
        raise HTTPException(400, "empty upload: the image has 0 bytes")
    image = await run_in_threadpool(decode_image, data, limits.max_image_pixels)  # off the event loop
    return Upload(image, filename, params)


def decode_image(data: bytes, max_pixels: int):
    """Bytes of an image file -> RGB PIL image; 400 when PIL cannot decode them, 413 when larger
    than ``max_pixels`` (checked from the header, before decoding)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image too large: over {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise HTTPException(400, "could not decode the upload as an image: not a format PIL reads (JPEG, PNG, "
                                 "GIF, WebP, BMP, TIFF, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise HTTPException(400, f"could not decode the upload as an image ({type(exc).__name__}: {exc})") from None
    if width * height > max_pixels:
        raise HTTPException(413, f"image too large: {width}x{height} = {width * height} pixels; the limit is "
                                 f"{max_pixels}")
    try:
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        raise HTTPException(400, f"could not decode the upload as an image ({type(exc).__name__}: {exc})") from None


def reduced_image(path: str, side: int):
    """The image file at ``path`` decoded to RGB, reduced while decoding to about ``side`` pixels on
    its shorter side (:func:`adah.utils.images.reduced_rgb`): what every thumbnail of it is cut from, so
    a 10000 x 10000 photo is decoded once, not once per size. 404 when it is gone, unreadable or
    over :data:`adah.utils.images.DEFAULT_MAX_PIXELS`."""
    from PIL import Image

    try:
        with open_image(path, max_pixels=DEFAULT_MAX_PIXELS, what="the image of this row") as image:
            return reduced_rgb(image, side)
    except ImageTooLarge as exc:
        raise HTTPException(404, f"{str(exc).split(' (option')[0]}: too large to show") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise HTTPException(404, f"the image of this row cannot be read ({type(exc).__name__})") from None


def thumbnail_png(image, size: int) -> bytes:
    """``image`` (RGB) centre-cropped to a square and resized to ``size``, as PNG."""
    from PIL import Image, ImageOps

    square = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    square.save(buf, format="PNG")
    return buf.getvalue()


def overlay_png(image, mask: np.ndarray, max_side: int = 512) -> bytes:
    """``image`` (at most ``max_side`` pixels a side) with the cells outside ``mask`` dimmed and
    those inside tinted red, as PNG bytes."""
    from PIL import Image

    image = image.copy()
    image.thumbnail((max_side, max_side))
    cells = Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.Resampling.NEAREST)
    inside = np.asarray(cells) > 127
    base = np.asarray(image, dtype=np.float32)
    out = base * 0.3
    out[inside] = base[inside] * 0.6 + np.array([255.0, 40.0, 40.0]) * 0.4
    buf = io.BytesIO()
    Image.fromarray(out.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=1)
def _page_html() -> str:
    return resources.files("adah.serve").joinpath("static/index.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- body size
class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, from Content-Length when
    given and counted while streaming otherwise (chunked uploads)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = HTTPException(413, f"request body over the limit of {self.max_bytes} bytes")
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await error_response(400, "bad Content-Length header")(scope, receive, send)
            if int(length) > self.max_bytes:
                return await error_response(413, too_large.detail)(scope, receive, send)
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except HTTPException as exc:
            if exc is not too_large or started:
                raise
            await error_response(413, too_large.detail)(scope, receive, send)
