"""adah serve's bounds and answers under faults (issue 29): uploads decoded reduced and one at a
time per decode slot, a thumbnail cache bounded in bytes, thumbnails that never show another
item after a remove, a client that disconnects mid-body, no server paths in /api/info. Fast:
an untrained tiny model over a folder of generated pictures, the app in process (TestClient)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from adah.index import Index, build_index
from adah.serve import Limits, create_app
from test_index import make_checkpoint, make_folder

SMALL_CACHE = 300_000


@pytest.fixture(scope="module")
def folder_index(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serve-safety")
    ckpt = make_checkpoint(base / "model.pt")
    folder = make_folder(base / "mine")
    build_index(ckpt, base / "idx", data=folder, progress=False)
    return base / "idx"


@pytest.fixture(scope="module")
def client(folder_index):
    limits = Limits(thumbnail_cache_bytes=SMALL_CACHE)
    with Index.load(folder_index) as ix, TestClient(create_app(ix, limits=limits)) as c:
        yield c


def bilevel_png(side: int) -> bytes:
    """A ``side`` x ``side`` 1-bit PNG: a few KB on the wire, ``side``^2 pixels decoded."""
    image = Image.new("1", (side, side), 0)
    image.paste(1, (0, 0, side // 2, side))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- case 6: bounded memory
def test_a_huge_upload_is_decoded_reduced():
    from adah.utils.images import decode_rgb

    data = bilevel_png(6000)
    assert len(data) < 20_000
    image = decode_rgb(data, max_pixels=40_000_000, side=512)
    assert image.mode == "RGB" and 512 <= min(image.size) and max(image.size) < 1024
    assert image.info["original_size"] == (6000, 6000)
    assert image.getpixel((10, 10)) == (255, 255, 255) and image.getpixel((image.width - 10, 10)) == (0, 0, 0)


def test_a_36_megapixel_upload_is_answered_with_its_size(client):
    r = client.post("/api/search/image?k=3", content=bilevel_png(6000), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert (r.json()["query"]["width"], r.json()["query"]["height"]) == (6000, 6000)
    assert r.json()["count"] == 3


def test_decodes_wait_for_a_free_slot(folder_index, monkeypatch):
    import adah.serve.routes as routes

    running, most = [0], [0]
    guard = threading.Lock()

    def slow_decode(data, max_pixels, side):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return Image.new("RGB", (side, side))

    monkeypatch.setattr(routes, "decode_upload", slow_decode)
    with Index.load(folder_index) as ix:
        svc = create_app(ix, limits=Limits(max_decodes=2)).state.service
        threads = [threading.Thread(target=svc.decode, args=(b"x", ix)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert most[0] == 2


def test_the_thumbnail_cache_is_bounded_in_bytes(client):
    cache = client.app.state.service.thumbnails.cache
    for size in range(100, 160):
        for row in range(6):
            r = client.get(f"/api/thumbnail/{row}?size={size}")
            assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (size, size)
    assert 0 < cache.nbytes <= SMALL_CACHE and len(cache) > 6
    again = client.get("/api/thumbnail/5?size=159")  # the most recent: still cached, same bytes
    assert again.content == r.content


def test_the_bounds_are_settings_shown_in_info(client):
    limits = client.get("/api/info").json()["limits"]
    assert limits["thumbnail_cache_bytes"] == SMALL_CACHE
    assert (limits["max_decodes"], limits["decode_side"], limits["max_image_pixels"]) == (2, 512, 40_000_000)

