"""Bounded load test: 1,000 requests (text searches, thumbnails, image uploads) over 8 concurrent
connections against ``adah serve`` on loopback with a real coco_mini index. Prints p50/p99
latency; asserts every answer is right and none failed (speed goals live in benchmarks/)."""

from __future__ import annotations

import pytest

from adah.index import Index
from serve_support import COCO_WORDS, Server, benchmark, coco_index, needs_coco

pytestmark = [pytest.mark.slow, pytest.mark.e2e, needs_coco]

REQUESTS, CONCURRENCY = 1000, 8


@pytest.mark.slow
def test_1000_requests_over_8_connections(tmp_path_factory):
    index_dir = coco_index()
    with Index.load(index_dir, model=None) as index:
        words = [w for w in COCO_WORDS if w in index.vocabulary]
    assert len(words) >= 8
    server = Server(index_dir)
    try:
        report = benchmark("load_serve").run_load(server.url, requests=REQUESTS, concurrency=CONCURRENCY, words=words)
    finally:
        server.stop()
    print("\n" + report.table())
    summary = report.summary()
    assert report.errors == [], report.errors[:5]
    assert sum(k["count"] for k in summary["by_kind"].values()) == REQUESTS
    assert set(summary["by_kind"]) == {"text", "thumbnail", "image"}
