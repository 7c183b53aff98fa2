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
``GET /api/thumbnail/{row}`` PNG thumbnail of an indexed image file (``size``, default 128;
                            ``id``: 404 unless the row holds that item; ETag, ``no-cache``)
``POST /api/reload``        switch to the index folder's new version now (loopback only; the
                            service also notices one by itself within ``watch_seconds``)
==========================  ===============================================================

Every error is a JSON body ``{"error": message, "status": code}`` with a 4xx code: 400 empty or
malformed input, 404 unknown path or row, 413 body or image over :class:`Limits`, 415 wrong
content type, 422 a value out of range or a query the model cannot answer (the AdahError text,
e.g. no query word in the vocabulary). Anything unexpected is answered with the same shape and
status 500, naming no internals (the traceback goes to the server log). Model calls are
serialized by a lock: on a few CPU cores concurrent forward passes only compete for the same cores.

The parts: :mod:`~adah.serve.routes` (the endpoints), :mod:`~adah.serve.validation` (request
checks), :mod:`~adah.serve.images` (uploads, thumbnails, overlay), :mod:`~adah.serve.errors`
(JSON errors, body limit), :mod:`~adah.serve.watcher` (new index versions).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from adah.serve.errors import BodyLimit, install_error_handlers
from adah.serve.limits import Limits
from adah.serve.routes import Service, router
from adah.serve.watcher import VersionWatcher


def create_app(index, *, limits: Limits | None = None, watch_seconds: float | None = 1.0) -> FastAPI:
    """The service over ``index`` (an :class:`adah.index.Index`). ``watch_seconds``: how often a
    request may check whether the index folder holds a new version (``adah index add/remove``,
    a rebuild) and switch to it without a restart; None: never (``POST /api/reload`` from
    loopback still does)."""
    limits = limits or Limits()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.service.close()  # the decoder threads

    app = FastAPI(title="adah search", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.state.index, app.state.limits = index, limits
    app.state.service = Service(VersionWatcher(app, watch_seconds), limits)
    install_error_handlers(app)
    app.include_router(router)
    return app
