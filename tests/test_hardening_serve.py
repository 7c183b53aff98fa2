"""adah serve under hostile input (issue 13): bodies that used to give a plain-text HTTP 500, a
last-resort handler that answers JSON, a mixed load that leaves the server healthy, and
thumbnails of a huge indexed image served within a memory bound. Uses an untrained tiny model
over a folder of generated pictures (seconds), not coco_mini."""

from __future__ import annotations

import io
import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from adah.index import Index, build_index
from adah.serve import create_app
from serve_support import Server, tiny_folder_index
from helpers import make_checkpoint

SURROGATE = b'{"text": "dog \\ud800", "k": 3}'
DEEP = b'{"text": "dog", "k": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
HUGE_K = b'{"text": "dog", "k": ' + b"7" * 5000 + b"}"
HOSTILE = {"lone surrogate": SURROGATE, "200,000 nested arrays": DEEP, "5,000-digit k": HUGE_K}


@pytest.fixture(scope="module")
def folder_index(tmp_path_factory) -> Path:
    return tiny_folder_index(tmp_path_factory.mktemp("hardening-serve"))


@pytest.fixture(scope="module")
def client(folder_index):
    with Index.load(folder_index) as ix, TestClient(create_app(ix), raise_server_exceptions=False) as c:
        yield c


def assert_json_error(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    return body


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_json_bodies_get_a_json_400(client, name):
    r = client.post("/api/search/text", content=HOSTILE[name], headers={"Content-Type": "application/json"})
    body = assert_json_error(r, 400)
    assert len(body["error"]) < 300  # the 5,000 digits are not echoed back


def test_unexpected_errors_are_a_json_500_naming_no_internals(folder_index):
    with Index.load(folder_index) as ix:
        def broken(*args, **kwargs):
            raise RuntimeError("secret internal detail /srv/adah/model.pt")

        ix.search_text = broken
        with TestClient(create_app(ix), raise_server_exceptions=False) as c:
            r = c.post("/api/search/text", json={"text": "red_circle", "k": 3})
    body = assert_json_error(r, 500)
    assert "secret" not in body["error"] and "/srv" not in body["error"] and "RuntimeError" not in body["error"]


@pytest.mark.slow
def test_mixed_load_leaves_the_server_healthy(folder_index):
    """A real ``adah serve`` (subprocess) takes 240 requests, 8 at a time, a third of them invalid
    (the three hostile bodies among them): every answer is 200 or a JSON 4xx, and /api/health
    still answers after."""
    valid = [("post", "/api/search/text", json.dumps({"text": "red_circle sunset", "k": 3}).encode()),
             ("get", "/api/thumbnail/1?size=32", None), ("get", "/api/info", None)]
    invalid = [("post", "/api/search/text", body) for body in HOSTILE.values()] + [
        ("post", "/api/search/text", b"{not json"), ("post", "/api/search/text", b'{"text": 5}'),
        ("get", "/api/thumbnail/999", None), ("get", "/api/thumbnail/1?size=9999", None),
        ("post", "/api/search/text", b'{"text": "dog", "k": [1, 2]}'), ("post", "/api/search/text", b"\xff\xfe")]
    rng = random.Random(0)
    plan = [rng.choice(invalid if i % 3 == 0 else valid) for i in range(240)]
    server = Server(folder_index)
    try:
        with httpx2.Client(base_url=server.url, timeout=30.0) as http:
            def send(req):
                method, path, body = req
                if method == "get":
                    r = http.get(path)
                else:
                    r = http.post(path, content=body, headers={"Content-Type": "application/json"})
                return r.status_code, r.headers.get("content-type", ""), r.content

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(send, plan))
            health = http.get("/api/health")
    finally:
        server.stop()
    unexpected = [(s, b[:120]) for s, _, b in answers if s >= 500]
    assert unexpected == []
    for status, ctype, body in answers:
        if status >= 400:
            assert ctype == "application/json" and json.loads(body)["status"] == status
    assert sum(s == 200 for s, _, _ in answers) >= 120
    assert health.status_code == 200 and health.json()["status"] == "ok"


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of process ``pid`` so far, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc to read a process's peak memory")
def test_thumbnails_of_a_huge_image_stay_within_a_memory_bound(tmp_path_factory):
    """An 8000 x 8000 PNG (64 MP, 183 MiB decoded): 16 thumbnail requests of 16 sizes, 8 at a time,
    raise the server's peak memory by less than 700 MiB (decoded once, reduced while decoding,
    cached), where decoding it per request took gigabytes."""
    base = tmp_path_factory.mktemp("huge")
    ckpt = make_checkpoint(base / "model.pt")
    (base / "data").mkdir()
    Image.new("RGB", (8000, 8000), (30, 120, 200)).save(base / "data" / "huge.png", compress_level=1)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(base / "data" / "small.png")
    rows = [{"image": "huge.png", "text": "red_circle big", "labels": ["a"]},
            {"image": "small.png", "text": "red_circle small", "labels": ["b"]}]
    (base / "data" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(ckpt, base / "idx", data=base / "data", progress=False)
    server = Server(base / "idx")
    try:
        before = peak_rss_mb(server.proc.pid)
        with httpx2.Client(base_url=server.url, timeout=120.0) as http, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda size: http.get(f"/api/thumbnail/0?size={size}"), range(16, 32)))
        after = peak_rss_mb(server.proc.pid)
    finally:
        server.stop()
    assert [r.status_code for r in answers] == [200] * 16
    sizes = [Image.open(io.BytesIO(r.content)).size for r in answers]
    assert sizes == [(s, s) for s in range(16, 32)]
    assert Image.open(io.BytesIO(answers[0].content)).convert("RGB").getpixel((8, 8)) == (30, 120, 200)
    assert after - before < 700, f"peak memory grew by {after - before:.0f} MiB serving thumbnails"
