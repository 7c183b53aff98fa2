"""Portable outputs (issue 28 item 6): an index records its checkpoint and image root relative
to itself (and absolute, as built), so a folder moved, copied or mounted elsewhere searches and
serves as before; indexes that record absolute paths only (written before) still load; `adah
serve --checkpoint` points the service at a checkpoint. Uses an untrained tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adah.cli import app
from adah.index import Index, build_index, store
from adah.index.update import add_items, copy_index

from helpers import make_checkpoint, make_folder


@pytest.fixture()
def fit_like(tmp_path) -> Path:
    """A folder as `adah fit` leaves it: best.pt, the photos, and index/ built from both."""
    root = tmp_path / "mine"
    make_checkpoint(root / "best.pt")
    make_folder(root / "data")  # data/items.jsonl, data/photos/p0.png ...
    build_index(root / "best.pt", root / "index", data=root / "data", progress=False)
    return root


def _serves(folder: Path, **load) -> None:
    from fastapi.testclient import TestClient

    from adah.serve import create_app

    with Index.load(folder, **load) as index, TestClient(create_app(index, watch_seconds=None)) as client:
        assert client.get("/api/info").json()["count"] == len(index)
        hits = client.post("/api/search/text", json={"text": "red_circle sunset", "k": 6}).json()["hits"]
        assert sorted(h["id"] for h in hits) == [f"x{i}" for i in range(6)]
        thumb = client.get(hits[0]["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"].startswith("image/")


def test_a_moved_folder_searches_and_serves_as_before(fit_like, tmp_path):
    manifest = store.read_manifest(fit_like / "index")
    assert manifest["model"]["checkpoint_relative"] == "../best.pt"
    assert manifest["collection"]["image_root_relative"] == "../data"
    moved = tmp_path / "elsewhere" / "deeper" / "mine2"
    moved.parent.mkdir(parents=True)
    shutil.move(fit_like, moved)  # the absolute paths recorded at build time are gone
    with Index.load(moved / "index") as index:
        hit = index.search_image(moved / "data" / "photos" / "p2.png", target="image", k=6).hits
        assert "x2" in [h.id for h in hit if h.distance == 0]
        assert index.item(2)["image_path"] == str(moved / "data" / "photos" / "p2.png")
    r = CliRunner().invoke(app, ["search", "--index", str(moved / "index"), "--text", "red_circle", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)["hits"]) == 6, r.output
    _serves(moved / "index")
    # a copy elsewhere records its paths relative to itself too
    copy_index(moved / "index", tmp_path / "copies" / "c1")
    copied = store.read_manifest(tmp_path / "copies" / "c1")
    assert copied["model"]["checkpoint_relative"] == "../../elsewhere/deeper/mine2/best.pt"
    _serves(tmp_path / "copies" / "c1")
    # items added from another folder are recorded relative to the index's image root
    more = make_folder(moved / "more", n=2)
    (more / "items.jsonl").write_text((more / "items.jsonl").read_text().replace('"x', '"y'))
    add_items(moved / "index", more, progress=False)
    with Index.load(moved / "index", model=None) as index:
        assert index.item(6)["image"] == "../more/photos/p0.png"
        assert Path(index.item(6)["image_path"]).is_file()


def test_an_index_moved_alone_uses_the_absolute_paths(fit_like, tmp_path):
    shutil.move(fit_like / "index", tmp_path / "alone")
    _serves(tmp_path / "alone")


def test_indexes_with_absolute_paths_only_still_load(fit_like):
    folder = fit_like / "index"
    manifest = store.read_manifest(folder)
    for section, key in (("model", "checkpoint"), ("collection", "image_root")):
        del manifest[section][f"{key}_relative"]
    store.write_manifest(folder, manifest)  # as an index written before relative paths
    _serves(folder)


def test_serve_takes_the_checkpoint_option(fit_like, tmp_path):
    other = make_checkpoint(tmp_path / "other.pt", seed=3)
    runner = CliRunner()
    for name in ("--checkpoint", "--model"):  # --model: the hidden old name
        r = runner.invoke(app, ["serve", "--index", str(fit_like / "index"), name, str(other), "--port", "0"])
        assert r.exit_code == 2 and "differs from the index's" in r.stderr, r.output
    assert "--model" not in runner.invoke(app, ["serve", "--help"]).stdout
    # the index moved without its checkpoint: found through --checkpoint
    shutil.move(fit_like / "index", tmp_path / "alone")
    shutil.move(fit_like / "best.pt", tmp_path / "kept.pt")
    r = runner.invoke(app, ["search", "--index", str(tmp_path / "alone"), "--text", "red_circle"])
    assert r.exit_code == 2 and "is not there; pass the checkpoint" in r.stderr, r.output
    _serves(tmp_path / "alone", model=tmp_path / "kept.pt")
