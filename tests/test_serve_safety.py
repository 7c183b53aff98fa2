"""adah serve's bounds and answers under faults (issue 29): uploads decoded reduced and one at a
time per decode slot, a thumbnail cache bounded in bytes, thumbnails that never show another
item after a remove, a client that disconnects mid-body, no server paths in /api/info. Fast:
an untrained tiny model over a folder of generated pictures, the app in process (TestClient)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from adah.index import Index
from adah.serve import Limits, create_app
from serve_support import Server, benchmark, tiny_folder_index

SMALL_CACHE = 300_000


@pytest.fixture(scope="module")
def folder_index(tmp_path_factory) -> Path:
    return tiny_folder_index(tmp_path_factory.mktemp("serve-safety"))


@pytest.fixture(scope="module")
def client(folder_index):
    limits = Limits(thumbnail_cache_bytes=SMALL_CACHE)
    with Index.load(folder_index) as ix, TestClient(create_app(ix, limits=limits)) as c:
        yield c


bilevel_png = benchmark("bench_serve_memory").bilevel_png  # a side x side 1-bit PNG: a few KB, side^2 pixels


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

    both = threading.Barrier(2, timeout=20)  # two decodes meet here: they run at once, whatever the load

    def slow_decode(data, max_pixels, side):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        both.wait()
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- case 8: thumbnails after a remove
def test_a_thumbnail_url_never_shows_another_item_after_a_remove(folder_index, tmp_path):
    import shutil

    from adah.index.update import remove_items

    idx = tmp_path / "idx"
    shutil.copytree(folder_index, idx)
    with Index.load(idx) as ix, TestClient(create_app(ix, watch_seconds=0.0)) as c:
        hits = c.post("/api/search/text", json={"text": "red_circle", "k": 6}).json()["hits"]
        first = next(h for h in hits if h["row"] == 0)
        assert first["thumbnail"] == f"/api/thumbnail/0?id={first['id']}"
        before = c.get(first["thumbnail"])
        assert before.status_code == 200 and before.headers["cache-control"] == "no-cache"
        etag = before.headers["etag"]
        assert c.get(first["thumbnail"], headers={"If-None-Match": etag}).status_code == 304
        remove_items(idx, [first["id"]])
        gone = c.get(first["thumbnail"])
        assert gone.status_code == 404 and "no longer holds item" in gone.json()["error"]
        by_row = c.get("/api/thumbnail/0", headers={"If-None-Match": etag})  # a cached copy is not confirmed
        assert by_row.status_code == 200 and by_row.headers["etag"] != etag
        assert by_row.content != before.content


# --------------------------------------------------------------------------- case 12: a client gone mid-body
@pytest.mark.slow
def test_a_client_that_disconnects_mid_body_is_one_info_line(folder_index):
    import socket
    from urllib.parse import urlsplit

    server = Server(folder_index, "--log-level", "info")
    try:
        address = urlsplit(server.url)
        for path, ctype in [("/api/search/image", "image/png"), ("/api/search/text", "application/json")]:
            with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                             f"Content-Length: 100000\r\n\r\n".encode() + b"x" * 1000)
                time.sleep(0.3)
        health = httpx2.get(f"{server.url}/api/health", timeout=10)
        time.sleep(0.5)
    finally:
        server.stop()
    log = "".join(server.output)
    assert health.status_code == 200
    assert "Traceback" not in log and "internal error" not in log and "unexpected" not in log, log[-3000:]
    gone = [line for line in log.splitlines() if "disconnected" in line]
    assert len(gone) == 2 and all("INFO" in line for line in gone), log[-3000:]
    assert "/api/search/image" in gone[0] and "/api/search/text" in gone[1]


# --------------------------------------------------------------------------- case 14: no server paths in /api/info
def test_info_shows_no_absolute_path(folder_index):
    with Index.load(folder_index) as ix, TestClient(create_app(ix)) as c:
        r = c.get("/api/info")
    info = r.json()
    assert info["model"]["checkpoint"] == "model.pt" and info["path"] == "idx"
    assert str(folder_index.parent) not in r.text and '"/' not in r.text
    assert info["count"] == 6 and info["model"]["fingerprint"]


def test_an_infinite_bound_is_refused(tmp_path):
    """``--max-body-mb 1e400`` parses to inf: refused as a bound, not taken as "no bound"."""
    from typer.testing import CliRunner

    from adah.cli import app

    r = CliRunner().invoke(app, ["serve", "--index", str(tmp_path), "--max-body-mb", "1e400"])
    assert r.exit_code == 2 and "--max-body-mb must be a finite number" in r.output, r.output
