"""The service's endpoints (an APIRouter); what they share (the index version, the limits, the
model lock, the thumbnail cache) is the :class:`Service` on ``app.state.service``."""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from adah.errors import AdahError, ServiceUnavailable
from adah.index import ImageQueryError
from adah.serve.images import THUMBNAIL_SIZES, Thumbnails, decode_upload, overlay_png
from adah.serve.limits import Limits
from adah.serve.net import is_loopback
from adah.serve.validation import check_k, check_target, parse_json_object, read_upload, require_type, text_query
from adah.serve.watcher import VersionWatcher

ATTENTION_FORMATS = ("png", "json")
HIDDEN_HIT_FIELDS = ("image_path",)  # absolute paths on the server: the thumbnail URL replaces them
#: the page loads nothing from elsewhere: its own inline script and style, images from here or blobs
PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

router = APIRouter()


class Service:
    """What every request of one app shares: the index version, the limits, the model lock, the
    image decoders and the thumbnail cache.

    Images are decoded on ``limits.max_decodes`` threads of their own (uploads and the pictures
    thumbnails are cut from); other requests wait their turn. Besides bounding the decodes that
    run at once, this bounds the memory the C allocator keeps after them: it keeps freed blocks
    per thread, so decodes spread over the 40 request threads would leave up to 40 decodes'
    worth of memory behind."""

    def __init__(self, watcher: VersionWatcher, limits: Limits) -> None:
        self.watcher, self.limits = watcher, limits
        self.lock = threading.Lock()  # model calls one at a time: on a few cores they only compete
        self.decoder = ThreadPoolExecutor(limits.max_decodes, thread_name_prefix="adah-decode")
        self.thumbnails = Thumbnails(limits.thumbnail_cache_bytes, self.decoder)

    def current(self):
        return self.watcher.current()

    def decode(self, data: bytes, index):
        """An upload decoded (:func:`decode_upload`) on a decoder thread, reduced to what the
        page and ``index``'s model need (:attr:`Limits.decode_side`)."""
        side = max(self.limits.decode_side, int(getattr(index, "query_image_size", None) or 0))
        return self.decoder.submit(decode_upload, data, self.limits.max_image_pixels, side).result()

    async def upload(self, request: Request, index):
        """(the request's upload, its image decoded off the event loop)."""
        upload = await read_upload(request)
        image = await run_in_threadpool(self.decode, upload.data, index)
        upload.data = b""  # the file is not needed any more
        return upload, image

    def call(self, fn, *args, **kwargs):
        """``fn`` under the model lock; ImageQueryError -> 400, other AdahError (unknown words,
        a target the index lacks) -> 422."""
        try:
            with self.lock:
                return fn(*args, **kwargs)
        except ImageQueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except ServiceUnavailable as exc:  # a Milvus server down or restarting: the same request may work later
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        except AdahError as exc:
            raise HTTPException(422, str(exc)) from None

    def close(self) -> None:
        self.decoder.shutdown(wait=False, cancel_futures=True)


def service(request: Request) -> Service:
    return request.app.state.service


def explain_words(index) -> bool:
    """Word-level text attention (minilm): every text answer says which query words G keeps."""
    cfg = getattr(getattr(index, "model", None), "cfg", None)
    return getattr(cfg, "text_encoder", "bow_mlp") != "bow_mlp" and bool(getattr(cfg, "text_attention", False))


def thumbnail_url(hit: dict) -> str | None:
    """The URL of a hit's thumbnail: its row and its item id (``?id=``), so that a URL made
    before the index changed is refused (404) rather than showing the item now in that row."""
    return f"/api/thumbnail/{hit['row']}?id={quote(str(hit['id']), safe='')}" if hit.get("image_path") else None


def answer(result, started: float) -> dict:
    """A SearchResult as the API shows it: a thumbnail URL per hit instead of server paths."""
    out = result.to_dict()
    for hit in out["hits"]:
        hit["thumbnail"] = thumbnail_url(hit)
        for key in HIDDEN_HIT_FIELDS:
            hit.pop(key, None)
    out["count"] = len(out["hits"])
    out["took_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return out


def public_info(index) -> dict:
    """``index.info()`` without this machine's paths: the index folder by its name, the
    checkpoint relative to the index folder when inside it and by its file name otherwise, a
    collection source that is a path by its name."""
    info = index.info()
    folder = Path(info["path"]) if info.get("path") else None
    if folder is not None:
        info["path"] = folder.name
    model, collection = dict(info.get("model") or {}), dict(info.get("collection") or {})
    if model.get("checkpoint"):
        checkpoint = Path(model["checkpoint"])
        inside = folder is not None and checkpoint.is_absolute() and checkpoint.is_relative_to(folder)
        model["checkpoint"] = str(checkpoint.relative_to(folder)) if inside else checkpoint.name
    source = collection.get("source")
    if isinstance(source, str) and Path(source).is_absolute():
        collection["source"] = Path(source).name
    return {**info, "model": model, "collection": collection}


@lru_cache(maxsize=1)
def _page_html() -> str:
    return resources.files("adah.serve").joinpath("static/index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    return HTMLResponse(_page_html(), headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP,
                                               "X-Content-Type-Options": "nosniff"})


@router.get("/api/health")
def health(request: Request) -> dict:
    return {"status": "ok", "count": len(service(request).current())}


@router.get("/api/info")
def info(request: Request) -> dict:
    svc = service(request)
    return jsonable_encoder({**public_info(svc.current()), "limits": dataclasses.asdict(svc.limits)})


@router.post("/api/reload")
async def reload(request: Request) -> dict:
    """Switch to the folder's current version now (loopback clients only)."""
    host = request.client.host if request.client else ""
    if not is_loopback(host):
        raise HTTPException(403, "reload is allowed from this machine only (loopback)")
    svc = service(request)
    changed = await run_in_threadpool(svc.watcher.reload, True)
    index = svc.current()
    return {"reloaded": changed, "count": len(index), "generation": int(index.info().get("generation") or 0)}


@router.post("/api/search/text")
async def search_text(request: Request) -> dict:
    started, svc = time.perf_counter(), service(request)
    require_type(request, ("application/json",), "a JSON body {\"text\": ..., \"k\": 10, \"target\": \"image\"}")
    text, k, target = text_query(parse_json_object(await request.body()), svc.limits)
    index = svc.current()
    result = await run_in_threadpool(svc.call, index.search_text, text, k=k, target=target, explain=explain_words(index))
    return answer(result, started)


@router.post("/api/search/image")
async def search_image(request: Request) -> dict:
    started, svc = time.perf_counter(), service(request)
    index = svc.current()
    upload, image = await svc.upload(request, index)
    k = check_k(upload.params.get("k", svc.limits.default_k), svc.limits)
    target = check_target(upload.params.get("target", "text"))
    result = await run_in_threadpool(svc.call, index.search_image, image, k=k, target=target,
                                     name=upload.filename or "upload")
    width, height = image.info.get("original_size", image.size)
    result.query.update(width=width, height=height)
    return answer(result, started)


@router.post("/api/attention")
async def attention(request: Request) -> Response:
    svc = service(request)
    index = svc.current()
    upload, image = await svc.upload(request, index)
    fmt = upload.params.get("format", "png")
    if fmt not in ATTENTION_FORMATS:
        raise HTTPException(422, f"format must be one of {list(ATTENTION_FORMATS)}, got {fmt!r}")
    kind = (index.info().get("model") or {}).get("attention")
    if kind in ("none", "text"):
        raise HTTPException(422, f"this index's model has no image attention (model.attention={kind!r}), so "
                                 "there is no mask to show")
    att = await run_in_threadpool(svc.call, index.attention, image)
    if att is None:
        raise HTTPException(422, "this index's model has no spatial attention mask to show (it reads image "
                                 "feature vectors, or its mask is over channels)")
    if fmt == "json":
        return JSONResponse(att.to_dict())
    png = await run_in_threadpool(overlay_png, image, np.asarray(att.mask, dtype=bool))
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/api/thumbnail/{row}")
async def thumbnail(request: Request, row: int, size: int = 128, item_id: str | None = Query(None, alias="id")):
    """The PNG of row ``row``'s image. With ``id`` (as in search answers), 404 unless the row
    still holds that item. Browsers revalidate every time (``no-cache``) against an ETag of the
    item, its file and the size: a cached picture is shown only while it is still right."""
    svc = service(request)
    index = svc.current()
    if not 0 <= row < len(index):
        raise HTTPException(404, f"no row {row}: the index has rows 0..{len(index) - 1}")
    lo, hi = THUMBNAIL_SIZES
    if not lo <= size <= hi:
        raise HTTPException(422, f"size must be in {lo}..{hi}, got {size}")
    item = index.item(row)
    if item_id is not None and str(item["id"]) != item_id:
        raise HTTPException(404, f"row {row} no longer holds item {item_id!r} (the index changed): search again")
    if not item.get("image_path"):
        raise HTTPException(404, f"row {row} has no image file to show")
    etag = svc.thumbnails.etag(str(item["id"]), item["image_path"], size)
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    png = await run_in_threadpool(svc.thumbnails.png, item["image_path"], size)
    return Response(png, media_type="image/png", headers=headers)
