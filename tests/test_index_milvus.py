"""The milvus backend on embedded Milvus Lite: exact top-k equal to faiss IndexBinaryFlat (same
distances, ties in canonical order), the Index API, `adah search` and the service over an index
built with `--backend milvus`, add/remove, one-line errors for a wrong model, a missing
collection, an unreachable URI and a version mismatch, and a build killed with SIGKILL that
leaves the previous collections searchable. Skipped without `adah[milvus]` (make test installs it)."""

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
from adah.index import Index, faiss_available
from adah.index.backends import make_backend

from helpers import rewrite_manifest, make_checkpoint, make_folder
from helpers import brute_force, random_packed

from adah.index import milvus as milvus_module

HAVE_MILVUS = milvus_module.available()

pytestmark = [pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus / milvus-lite not installed: pip install "
                                 "'adah[milvus]' (make test installs it)"),
              pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")]

HERE = Path(__file__).parent
SRC = HERE.parent / "src"


@pytest.fixture(scope="module", params=["lite", pytest.param("server", marks=[pytest.mark.milvus, pytest.mark.slow])])
def milvus_uri(request, tmp_path_factory) -> Path | str:
    """Where this module's suite writes: one Milvus Lite file (one embedded server per file and
    process), then the session's standalone Milvus server (tests/milvus_server.py; skipped with
    the reason where its package is missing): the same tests over both."""
    if request.param == "server":
        return request.getfixturevalue("milvus_server").uri
    return tmp_path_factory.mktemp("milvus") / "lite.db"


@pytest.fixture(scope="module")
def on_milvus(ckpt, milvus_uri, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "idx"
    r = CliRunner().invoke(app, ["index", "build", "--checkpoint", str(ckpt), "--out", str(out), "--quiet",
                                 "--backend", "milvus", "--uri", str(milvus_uri), "--collection", "adah_test"])
    assert r.exit_code == 0, r.output
    return out


# --------------------------------------------------------------------------- equality with faiss
@pytest.mark.slow
@pytest.mark.parametrize("bits,n,k", [(8, 3000, 100), (12, 500, 500), (16, 5000, 64), (64, 2000, 10),
                                      (32, 4000, 300)])
def test_exact_topk_equals_faiss_with_heavy_ties(milvus_uri, bits, n, k):
    """8-bit codes over 3,000 rows: each distance is shared by hundreds of rows, so the tie order
    (canonical: distance, then row) and the ties at the k-th distance are both exercised."""
    from adah.index.milvus import make_milvus_backend

    rng = np.random.default_rng(n + bits)
    db, q = random_packed(rng, n, bits), random_packed(rng, 30, bits)
    md, mi = make_milvus_backend(db, bits, uri=milvus_uri, name=f"eq_{bits}_{n}").search(q, k)
    fd, fi = make_backend(db, bits, "faiss").search(q, k)
    np.testing.assert_array_equal(md, fd)
    np.testing.assert_array_equal(mi, fi)
    bd, bi = brute_force(q, db, bits, k)
    np.testing.assert_array_equal(mi, bi)
    assert md.dtype == np.int32 and mi.dtype == np.int64 and mi.shape == (30, min(k, n))


@pytest.mark.slow
def test_index_api_and_cli_over_milvus_equal_local(on_milvus, milvus_uri):
    with Index.load(on_milvus) as m, Index.load(on_milvus, backend="faiss") as f:
        assert m.backend_name == "milvus" and m.exact and f.backend_name == "faiss"
        assert m.info()["backend"] == "milvus" and len(m) == 90
        for target in ("image", "text"):
            q = f.backends["text" if target == "image" else "image"].codes
            np.testing.assert_array_equal(m.search_codes(q, target=target, k=25)[1],
                                          f.search_codes(q, target=target, k=25)[1])
        a, b = m.search_text("red_circle", k=12), f.search_text("red_circle", k=12)
        assert [h.to_dict() for h in a.hits] == [h.to_dict() for h in b.hits]
    runner = CliRunner()
    r = runner.invoke(app, ["search", "--index", str(on_milvus), "--text", "red_circle", "-k", "12", "--json"])
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.stdout)["hits"]] == [h.id for h in b.hits]
    r = runner.invoke(app, ["index", "info", "--index", str(on_milvus)])
    assert r.exit_code == 0 and "codes served by Milvus" in r.stdout and "adah_test_image_g0_" in r.stdout


def test_service_over_milvus(on_milvus):
    from fastapi.testclient import TestClient

    from adah.serve import create_app

    with Index.load(on_milvus) as m, Index.load(on_milvus, backend="faiss") as f:
        with TestClient(create_app(m)) as c:
            assert c.get("/api/info").json()["backend"] == "milvus"
            got = c.post("/api/search/text", json={"text": "red_circle", "k": 7}).json()["hits"]
        assert [h["id"] for h in got] == [h.id for h in f.search_text("red_circle", k=7).hits]


@pytest.mark.slow
def test_add_and_remove_on_milvus_switch_collections(ckpt, milvus_uri, tmp_path):
    from adah.index.milvus import build_on_milvus, connect
    from adah.index.update import add_items, remove_items

    out = tmp_path / "grow"
    build_on_milvus(ckpt, out, uri=milvus_uri, name="adah_grow", progress=False)
    first = set(json.loads((out / "index.json").read_text())["milvus"]["collections"].values())
    folder = make_folder(tmp_path / "new")
    add_items(out, folder, progress=False)
    with Index.load(out) as m:
        assert len(m) == 96
        hits = m.search_image(folder / "photos" / "p2.png", target="image", k=96).hits
        assert "x2" in [h.id for h in hits if h.distance == 0]
    remove_items(out, ["x2"])
    section = json.loads((out / "index.json").read_text())["milvus"]
    names = set(connect(str(milvus_uri)).list_collections())
    assert set(section["collections"].values()) <= names and not first & names  # old versions dropped
    with Index.load(out) as m, Index.load(out, backend="faiss") as f:
        assert len(m) == 95 and "x2" not in [m.item(r)["id"] for r in range(len(m))]
        q = f.backends["image"].codes
        np.testing.assert_array_equal(m.search_codes(q, k=95)[1], f.search_codes(q, k=95)[1])


@pytest.mark.slow
def test_copy_moves_a_local_index_onto_milvus_and_back_without_re_encoding(ckpt, milvus_uri, tmp_path):
    from adah.index import build_index, copy_index

    local = tmp_path / "local"
    build_index(ckpt, local, progress=False)
    runner = CliRunner()
    onto = tmp_path / "onto"
    r = runner.invoke(app, ["index", "copy", "--index", str(local), "--out", str(onto), "--backend", "milvus",
                            "--uri", str(milvus_uri), "--collection", "adah_copy"])
    assert r.exit_code == 0 and "copied 90 items" in r.stdout and "codes on Milvus" in r.stdout, r.output
    man = json.loads((onto / "index.json").read_text())
    assert man["updates"][-1]["op"] == "copy" and man["updates"][-1]["from"] == str(local.resolve())
    with Index.load(local, backend="faiss") as f, Index.load(onto) as m, Index.load(onto, backend="faiss") as c:
        assert m.backend_name == "milvus" and len(m) == len(f) == 90
        for modality in ("image", "text"):
            np.testing.assert_array_equal(c.backends[modality].codes, f.backends[modality].codes)
        assert [m.item(i) for i in range(90)] == [f.item(i) for i in range(90)]
        q = f.backends["image"].codes
        np.testing.assert_array_equal(m.search_codes(q, target="text", k=20)[1],
                                      f.search_codes(q, target="text", k=20)[1])
    back = copy_index(onto, tmp_path / "back")  # and off Milvus again: a plain local index
    assert "milvus" not in back.manifest and back.count == 90
    with Index.load(tmp_path / "back") as b:
        assert b.backend_name != "milvus"
    for args, needle in ((["--index", str(local), "--out", str(local)], "another folder"),
                         (["--index", str(local), "--out", str(onto)], "exists"),
                         (["--index", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")], "nothing")):
        r = runner.invoke(app, ["index", "copy", *args])
        assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1 and needle in r.output, r.output


# --------------------------------------------------------------------------- failures
def _one_line_error(args: list[str], needle: str, env: dict | None = None) -> None:
    r = CliRunner().invoke(app, args, env=env)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and r.stderr.count("\n") == 1, (needle, r.stderr)


@pytest.mark.slow
def test_wrong_model_missing_collection_unreachable_uri(on_milvus, ckpt, milvus_uri, tmp_path):
    import shutil

    from adah.index.milvus import build_on_milvus, connect

    copy = tmp_path / "copy"
    shutil.copytree(on_milvus, copy)
    # another model's checkpoint for this index
    other = make_checkpoint(tmp_path / "other.pt", seed=7)
    _one_line_error(["search", "--index", str(copy), "--text", "red_circle", "--checkpoint", str(other)],
                    "differs from the index's")
    # the manifest pointing at collections of another model
    build_on_milvus(other, tmp_path / "other_idx", uri=milvus_uri, name="adah_other", progress=False)
    foreign = json.loads((tmp_path / "other_idx" / "index.json").read_text())["milvus"]
    rewrite_manifest(copy, milvus=foreign)
    _one_line_error(["index", "info", "--index", str(copy)], "holds codes of model")
    # a collection that is gone
    shutil.rmtree(copy)
    shutil.copytree(tmp_path / "other_idx", copy)
    connect(str(milvus_uri)).drop_collection(foreign["collections"]["text"])
    _one_line_error(["search", "--index", str(copy), "--text", "red_circle"], "not found at")
    # Milvus not reachable (nothing listens on port 9), and a Lite file that is not there
    _one_line_error(["search", "--index", str(on_milvus), "--text", "red_circle"], "cannot reach Milvus at "
                    "http://127.0.0.1:9", env={"ADAH_MILVUS_URI": "http://127.0.0.1:9", "ADAH_MILVUS_TIMEOUT": "1"})
    _one_line_error(["search", "--index", str(on_milvus), "--text", "x", "--uri", str(tmp_path / "none.db")],
                    "Milvus Lite file not found")
    # credentials never on the command line; BIN_IVF_FLAT needs a server (Lite refuses it)
    _one_line_error(["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "z"), "--backend", "milvus",
                     "--uri", "http://me:secret@127.0.0.1:19530"], "must not hold credentials")
    if milvus_module.is_lite(str(milvus_uri)):
        _one_line_error(["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "z"), "--backend",
                         "milvus", "--uri", str(milvus_uri), "--index-type", "BIN_IVF_FLAT"], "supports BIN_FLAT only")
    assert not (tmp_path / "z").exists()


@pytest.mark.slow
def test_version_mismatch_is_refused(ckpt, milvus_uri, tmp_path, monkeypatch):
    from adah.index import milvus

    monkeypatch.setattr(milvus, "FORMAT_VERSION", 0)  # an index written by an older adah
    milvus.build_on_milvus(ckpt, tmp_path / "old", uri=milvus_uri, name="adah_old", progress=False)
    monkeypatch.undo()
    _one_line_error(["search", "--index", str(tmp_path / "old"), "--text", "red_circle"],
                    "Milvus layout version 0; this adah reads 1")
    section = json.loads((tmp_path / "old" / "index.json").read_text())["milvus"]
    rewrite_manifest(tmp_path / "old", milvus={**section, "version": 1})  # the collections still say 0
    _one_line_error(["search", "--index", str(tmp_path / "old"), "--text", "red_circle"],
                    "format version 0; this adah reads 1")


_KILLED_BUILD = """
import sys, time
from adah.index import milvus
real = milvus.MilvusTarget._create
def slow(self, client, name, codes, *args):
    out = real(self, client, name, codes, *args)
    print("created", name, flush=True); time.sleep(60)
    return out
milvus.MilvusTarget._create = slow
milvus.build_on_milvus(sys.argv[1], sys.argv[2], uri=sys.argv[3], name="adah_killed", progress=False, force=True)
"""


@pytest.mark.slow
def test_sigkill_during_a_rebuild_leaves_the_previous_collection_searchable(ckpt, tmp_path):
    """Built in subprocesses on a Lite file of its own (one process may hold a Lite file)."""
    lite, out = tmp_path / "killed.db", tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "adah", "index", "build", "--checkpoint", str(ckpt), "--out", str(out),
                        "--quiet", "--backend", "milvus", "--uri", str(lite), "--collection", "adah_killed"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    before = json.loads((out / "index.json").read_text())
    other = make_checkpoint(tmp_path / "other.pt", seed=3)
    p = subprocess.Popen([sys.executable, "-c", _KILLED_BUILD, str(other), str(out), str(lite)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("created adah_killed_image_g0_"), p.stderr.read()[-2000:]
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait(timeout=30)
    assert json.loads((out / "index.json").read_text()) == before
    with Index.load(out) as m, Index.load(out, backend="faiss") as f:  # the old model, the old collections
        assert m.manifest["milvus"]["collections"] == before["milvus"]["collections"]
        a, b = m.search_text("red_circle", k=10), f.search_text("red_circle", k=10)
        assert len(a.hits) == 10 and [h.to_dict() for h in a.hits] == [h.to_dict() for h in b.hits]
    from adah.index.milvus import connect

    names = connect(str(lite)).list_collections()
    leftover = [n for n in names if n not in before["milvus"]["collections"].values()]
    assert len(leftover) == 1  # the killed build's half-written collection
    from adah.index.update import remove_items

    remove_items(out, [Index.load(out, model=None, backend="faiss").item(0)["id"]])  # next write cleans up
    names = connect(str(lite)).list_collections()
    assert len(names) == 2 and not set(leftover) & set(names)


def test_milvus_options_are_validated(milvus_uri):
    from adah.index.milvus import MilvusTarget, make_milvus_backend, resolve_uri

    with pytest.raises(AdahError, match="letters, digits and _"):
        MilvusTarget(str(milvus_uri), "bad-name")
    with pytest.raises(AdahError, match="scheme must be"):
        resolve_uri("ftp://host:1")
    with pytest.raises(AdahError, match="must be uint8"):
        make_milvus_backend(np.zeros((3, 8), np.int64), 64, uri=milvus_uri, name="v")
    backend = make_milvus_backend(np.zeros((3, 8), np.uint8), 64, uri=milvus_uri, name="v")
    with pytest.raises(AdahError, match=r"shape \(n, 8\)"):
        backend.search(np.zeros((2, 4), np.uint8), 2)
    with pytest.raises(AdahError, match="k must be a positive integer"):
        backend.search(np.zeros((2, 8), np.uint8), 0)


@pytest.mark.slow
def test_adah_serve_over_a_lite_index_answers_like_the_local_one(ckpt, tmp_path):
    """`adah serve` in a process of its own over an index on Milvus Lite (built by another
    process: a Lite file is held by one process at a time)."""
    import httpx2

    from serve_support import Server

    folder = make_folder(tmp_path / "photos")
    out = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "adah", "index", "build", "--checkpoint", str(ckpt), "--out", str(out),
                        "--data", str(folder), "--quiet", "--backend", "milvus", "--uri", str(tmp_path / "s.db")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    srv = Server(out)
    try:
        info = httpx2.get(f"{srv.url}/api/info").json()
        assert info["backend"] == "milvus" and info["count"] == 6
        got = httpx2.post(f"{srv.url}/api/search/text", json={"text": "red_circle sunset", "k": 6}).json()["hits"]
        with open(folder / "photos" / "p3.png", "rb") as f:
            by_image = httpx2.post(f"{srv.url}/api/search/image", files={"image": ("p3.png", f, "image/png")},
                                   data={"k": "6", "target": "image"}).json()["hits"]
        thumb = httpx2.get(f"{srv.url}{got[0]['thumbnail']}")
    finally:
        srv.stop()
    with Index.load(out, backend="faiss") as local:
        want = local.search_text("red_circle sunset", k=6).hits
        want_image = local.search_image(folder / "photos" / "p3.png", target="image", k=6).hits
    assert [(h["id"], h["distance"]) for h in got] == [(h.id, h.distance) for h in want]
    assert [(h["id"], h["distance"]) for h in by_image] == [(h.id, h.distance) for h in want_image]
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"


@pytest.mark.slow
def test_a_collection_altered_behind_adahs_back_is_detected_on_open(ckpt, milvus_uri, tmp_path):
    """Rows deleted, rows inserted, the schema changed (a collection of the same name and
    description made again with another field): each refused on open with one line naming the
    collection and what differs."""
    import shutil

    from adah.index.milvus import build_on_milvus, connect

    base = tmp_path / "base"
    build_on_milvus(ckpt, base, uri=milvus_uri, name="adah_altered", progress=False)
    client = connect(str(milvus_uri))
    section = json.loads((base / "index.json").read_text())["milvus"]
    name = section["collections"]["image"]
    client.delete(name, ids=[0, 1])
    _one_line_error(["search", "--index", str(base), "--text", "red_circle"], "holds 88 rows but the index")
    client.insert(name, [{"row": 0, "code": bytes(2)}, {"row": 1, "code": bytes(2)}, {"row": 999, "code": bytes(2)}])
    _one_line_error(["search", "--index", str(base), "--text", "red_circle"], "holds 91 rows but the index")
    described = client.describe_collection(name)
    client.drop_collection(name)
    from adah.index.milvus import _pymilvus

    pymilvus = _pymilvus()
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                 description=described["description"])
    schema.add_field("row", pymilvus.DataType.INT64, is_primary=True)
    schema.add_field("code", pymilvus.DataType.BINARY_VECTOR, dim=16)
    schema.add_field("note", pymilvus.DataType.INT64)
    params = client.prepare_index_params()
    params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
    client.create_collection(name, schema=schema, index_params=params)
    _one_line_error(["search", "--index", str(base), "--text", "red_circle"], "its schema was changed")
    shutil.rmtree(base)
