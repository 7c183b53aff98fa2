"""Several `adah serve` replicas over one Milvus server (issue 32, Deliver 4): two replicas of one
index folder whose codes live on the session's standalone server, `adah index add` from a third
process while both are queried in a loop. Both switch to the new version by themselves (the
service's version watcher), once, within a bound; no request gets a 5xx at any time; afterwards
both answer as the local index of the new version. Needs the `milvus` package
(tests/milvus_server.py); skipped with the reason without it."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import make_folder

from adah.index import Index, faiss_available

pytestmark = [pytest.mark.milvus, pytest.mark.slow,
              pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")]

SRC = Path(__file__).resolve().parents[1] / "src"
SWITCH_S = 60  # a bound, not a measurement: the watcher checks every second, a reload loads 2 collections
QUERY = {"text": "red_circle", "k": 10}


class Poller(threading.Thread):
    """Queries one replica in a loop until stopped: a text search, then /api/health (the count
    of the version it serves); records (status, count) per round and any transport error."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.rounds, self.errors = url, [], []
        self.stopping = threading.Event()

    def run(self) -> None:
        import httpx2

        with httpx2.Client(timeout=60) as client:
            while not self.stopping.is_set():
                try:
                    search = client.post(f"{self.url}/api/search/text", json=QUERY)
                    health = client.get(f"{self.url}/api/health")
                except httpx2.TransportError as exc:
                    self.errors.append(repr(exc))
                    continue
                count = health.json().get("count") if health.status_code == 200 else None
                self.rounds.append((search.status_code, health.status_code, count, time.monotonic(), search.text))

    def first_time_with(self, count: int) -> float | None:
        return next((t for *_, n, t, _ in self.rounds if n == count), None)


@pytest.mark.slow
def test_two_replicas_switch_to_the_version_added_by_a_third_process(milvus_server, ckpt, tmp_path, monkeypatch):
    from serve_support import Server

    from adah.index.milvus import build_on_milvus, connect

    out, t0 = tmp_path / "idx", time.monotonic()
    build_on_milvus(ckpt, out, uri=milvus_server.uri, name="adah_replicas", progress=False)
    first = set(json.loads((out / "index.json").read_text())["milvus"]["collections"].values())
    monkeypatch.setenv("PYTHONPATH", str(SRC))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with ThreadPoolExecutor(2) as pool:  # started side by side: each imports torch and loads the model
        futures = [pool.submit(Server, out) for _ in range(2)]
    replicas = [f.result() for f in futures if f.exception() is None]
    if len(replicas) < 2:
        for r in replicas:
            r.stop()
        raise next(f.exception() for f in futures if f.exception() is not None)
    pollers, t_up = [Poller(r.url) for r in replicas], time.monotonic()
    try:
        for p in pollers:
            p.start()
        while any(len(p.rounds) < 3 for p in pollers):  # both answered on the old version first
            time.sleep(0.1)
        add = subprocess.run([sys.executable, "-m", "adah", "index", "add", "--index", str(out), "--data",
                              str(make_folder(tmp_path / "new")), "--quiet"], capture_output=True, text=True,
                             timeout=600, check=False)
        assert add.returncode == 0, add.stderr[-3000:]
        added = time.monotonic()
        print(f"built + replicas up {t_up - t0:.1f}s, index add {added - t_up:.1f}s")
        deadline = added + SWITCH_S
        while any(p.first_time_with(96) is None for p in pollers) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a few more rounds on the new version
    finally:
        for p in pollers:
            p.stopping.set()
        for p in pollers:
            p.join(timeout=120)
        for r in replicas:
            r.stop()
    for p, r in zip(pollers, replicas):
        logs = "".join(r.output)[-3000:]
        assert not p.errors, (p.errors[:3], logs)
        bad = [(s, h, text[:300]) for s, h, _, _, text in p.rounds if s != 200 or h != 200]
        assert not bad, (bad[:3], f"{len(bad)} of {len(p.rounds)} rounds failed", logs)
        counts = [n for _, _, n, _, _ in p.rounds]
        assert counts[0] == 90 and counts[-1] == 96, counts
        switches = sum(a != b for a, b in itertools.pairwise(counts))
        assert switches == 1, f"the replica switched versions {switches} times: {counts}"  # never back to the old one
        assert p.first_time_with(96) - added <= SWITCH_S
        print(f"{r.url}: {len(p.rounds)} rounds, on the new version from {p.first_time_with(96) - added:+.1f}s "
              "after the add process exited")
        assert "cannot be loaded" not in logs, logs
    with Index.load(out, backend="faiss") as local:
        assert local.info()["generation"] == 1
        want = [h.id for h in local.search_text(QUERY["text"], k=QUERY["k"]).hits]
    for p in pollers:
        last = json.loads(p.rounds[-1][-1])
        assert [h["id"] for h in last["hits"]] == want
    # the replaced version's collections stay until the next write, for replicas not yet switched
    assert first <= set(connect(milvus_server.uri).list_collections())
