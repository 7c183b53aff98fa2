"""The index that grows: `adah index add` encodes new items with the index's own model and
`adah search` then finds them; `adah index remove` drops items by id; each writes a new
checksummed version atomically (a SIGKILL in the middle leaves the previous version loadable),
and the service switches to the new version without a restart. Uses an untrained tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adah.cli import app
from adah.errors import AdahError
from adah.index import Index, build_index
from adah.index.update import add_items, remove_items

from helpers import make_checkpoint, make_folder

HERE = Path(__file__).parent
SRC = HERE.parent / "src"


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_add_then_search_finds_the_new_items(base_index, tmp_path):
    runner = CliRunner()
    folder = make_folder(tmp_path / "new")
    with Index.load(base_index, model=None) as before:
        old_codes = {m: before.backends[m].codes.copy() for m in before.modalities}
        old_items = [before.item(r) for r in range(len(before))]
    r = runner.invoke(app, ["index", "add", "--index", str(base_index), "--data", str(folder), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "added 6 items" in r.stdout and "96 items now (generation 1)" in r.stdout
    with Index.load(base_index) as index:
        assert len(index) == 96 and index.manifest["generation"] == 1
        assert index.manifest["updates"][-1]["op"] == "add" and index.manifest["updates"][-1]["count"] == 6
        for m in index.modalities:  # the old rows are unchanged, the new ones appended
            np.testing.assert_array_equal(index.backends[m].codes[:90], old_codes[m])
        assert [index.item(r) for r in range(90)] == old_items
        assert [index.item(r)["id"] for r in range(90, 96)] == [f"x{i}" for i in range(6)]
        assert index.item(93)["image_path"] == str((folder / "photos" / "p3.png").resolve())
        # the codes appended are the model's codes of those photos: each finds itself at distance 0
        for i in range(6):
            code = index.encode_image(folder / "photos" / f"p{i}.png")
            dist, rows = index.search_codes(code, target="image", k=96)
            assert 90 + i in rows[0][dist[0] == 0].tolist()
    # `adah search` finds an added photo (image query -> image codes)
    r = runner.invoke(app, ["search", "--index", str(base_index), "--image", str(folder / "photos" / "p4.png"),
                            "--target", "image", "-k", "96", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)["hits"]
    assert "x4" in [h["id"] for h in hits if h["distance"] == 0]
    # the info command verifies the new version and shows its generation
    r = runner.invoke(app, ["index", "info", "--index", str(base_index)])
    assert r.exit_code == 0 and "generation 1 (1 add/remove recorded)" in r.stdout, r.output


def test_remove_drops_exactly_those_ids(base_index):
    with Index.load(base_index, model=None) as before:
        ids = [before.item(r)["id"] for r in range(len(before))]
        codes = before.backends["text"].codes.copy()
    r = CliRunner().invoke(app, ["index", "remove", "--index", str(base_index), "--ids", f"{ids[3]}, {ids[50]}"])
    assert r.exit_code == 0, r.output
    assert "removed 2 items" in r.stdout and "88 items now (generation 1)" in r.stdout
    keep = [i for i in range(90) if i not in (3, 50)]
    with Index.load(base_index, model=None) as after:
        assert [after.item(r)["id"] for r in range(len(after))] == [ids[i] for i in keep]
        np.testing.assert_array_equal(after.backends["text"].codes, codes[keep])


def test_update_errors_are_one_line_and_change_nothing(base_index, ckpt, tmp_path):
    runner = CliRunner()
    before = _snapshot(base_index)
    folder = make_folder(tmp_path / "new")
    cases = [
        (["index", "remove", "--index", str(base_index), "--ids", "nope,0"], "1 id(s) not in the index"),
        (["index", "remove", "--index", str(base_index), "--ids", " , "], "give at least one item id"),
        (["index", "remove", "--index", str(base_index), "--ids", ",".join(str(i) for i in range(90))],
         "would leave the index"),
        (["index", "add", "--index", str(tmp_path / "none"), "--data", str(folder)], "index not found"),
        (["index", "add", "--index", str(base_index), "--data", str(tmp_path / "missing")], "neither a dataset name"),
        (["index", "add", "--index", str(base_index), "--data", str(folder), "--checkpoint",
          str(make_checkpoint(tmp_path / "other.pt", seed=5))], "differs from the index's"),
    ]
    for args, needle in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.stderr and r.stderr.count("\n") == 1, (needle, r.stderr)
    assert _snapshot(base_index) == before
    # ids stay unique: adding the same items twice is refused and leaves the first add in place
    add_items(base_index, folder, progress=False)
    after_first = _snapshot(base_index)
    with pytest.raises(AdahError, match="id 'x0' is already in the index"):
        add_items(base_index, folder, progress=False)
    assert _snapshot(base_index) == after_first
    with pytest.raises(AdahError, match="non-empty list"):
        remove_items(base_index, [])
    with pytest.raises(AdahError, match="not one string"):
        remove_items(base_index, "x1")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".idx.building")) == []


_KILLED_ADD = """
import os, sys, time
from adah.index import store
from adah.index.update import add_items
point = sys.argv[3]
if point == "append":  # killed while the new version's code files are being written
    real = store.BinaryWriter.append
    def slow(self, rows):
        real(self, rows)
        if self.kind == "codes:text" and self.count > 90:
            print("writing", flush=True); time.sleep(60)
    store.BinaryWriter.append = slow
else:  # killed with every file staged, just before the swap
    real = store.write_manifest
    def slow(folder, manifest):
        out = real(folder, manifest)
        print("writing", flush=True); time.sleep(60)
        return out
    store.write_manifest = slow
add_items(sys.argv[1], sys.argv[2], progress=False, batch_size=2)
"""


@pytest.mark.slow
@pytest.mark.parametrize("point", ["append", "manifest"])
def test_sigkill_during_add_leaves_the_previous_version_loadable(base_index, tmp_path, point):
    before = _snapshot(base_index)
    folder = make_folder(tmp_path / "new")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", _KILLED_ADD, str(base_index), str(folder), point], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "writing", p.stderr.read()[-2000:]
        staged = [q for q in tmp_path.iterdir() if q.name.startswith(".idx.building-")]
        assert len(staged) == 1  # the new version is half written beside the index
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert _snapshot(base_index) == before
    with Index.load(base_index) as index:  # verifies every checksum
        assert len(index) == 90 and "generation" not in index.manifest
        assert index.search_text("red_circle", k=5).hits
    # the next add succeeds despite the leftover staging folder
    result = add_items(base_index, folder, progress=False)
    assert result.count == 96 and result.generation == 1


def test_the_service_switches_to_the_new_version_without_restart(base_index, tmp_path):
    from fastapi.testclient import TestClient

    from adah.serve import create_app

    folder = make_folder(tmp_path / "new")
    with Index.load(base_index) as index:
        model = index.model
        application = create_app(index, watch_seconds=0.0)
        with TestClient(application, client=("127.0.0.1", 50000)) as local, \
                TestClient(application, client=("203.0.113.9", 50000)) as remote:
            assert local.get("/api/health").json()["count"] == 90
            add_items(base_index, folder, progress=False)
            assert local.get("/api/health").json()["count"] == 96  # noticed on the next request
            assert application.state.index.model is model  # same fingerprint: the model is reused
            hits = local.post("/api/search/text", json={"text": "red_circle sunset", "k": 96}).json()["hits"]
            assert {f"x{i}" for i in range(6)} <= {h["id"] for h in hits}
            assert local.get("/api/info").json()["generation"] == 1
            r = remote.post("/api/reload")
            assert r.status_code == 403 and "loopback" in r.json()["error"]
        # with watching off, POST /api/reload (from loopback) switches
        application = create_app(Index.load(base_index), watch_seconds=None)
        with TestClient(application, client=("127.0.0.1", 50000)) as local:
            remove_items(base_index, ["x0"])
            assert local.get("/api/health").json()["count"] == 96
            assert local.post("/api/reload").json() == {"reloaded": True, "count": 95, "generation": 2}
            assert local.get("/api/health").json()["count"] == 95
            assert local.post("/api/reload").json()["reloaded"] is False
