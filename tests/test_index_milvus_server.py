"""The milvus backend on a standalone Milvus server (issue 32). The Milvus Lite suite of
tests/test_index_milvus.py runs over the server too (its ``milvus_uri`` fixture has both: exact
BIN_FLAT equal to faiss with ties, the Index API, CLI and service, add/remove, copy, a version
mismatch); here is what only a server has: BIN_IVF_FLAT probing every cluster equals faiss, ties included; with fewer probes
every query still gets k hits, each at its true distance, and recall@k is measured (printed and
recorded, not asserted equal); `adah index build|add|remove --backend milvus --uri http://...`,
`adah search` and the service on an IVF index. Needs the `milvus` package (tests/milvus_server.py);
skipped with the reason without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_folder
from helpers import random_packed
from typer.testing import CliRunner

from adah.cli import app
from adah.index import Index, faiss_available, hamming_distances, recall_at_k
from adah.index import milvus as milvus_module
from adah.index.backends import make_backend

pytestmark = [pytest.mark.milvus, pytest.mark.slow,
              pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")]


@pytest.fixture(scope="module")
def milvus_uri(milvus_server) -> str:
    """The session's server."""
    return milvus_server.uri


def clustered(rng, n: int, bits: int, clusters: int = 200, flip: float = 0.04) -> np.ndarray:
    """Codes as a trained model makes them: copies of a few centres with a few bits flipped."""
    centres = rng.integers(0, 2, size=(clusters, bits))
    return np.packbits(centres[rng.integers(0, clusters, n)] ^ (rng.random((n, bits)) < flip), axis=1)


@pytest.fixture(scope="module")
def ivf_data():
    rng = np.random.default_rng(32)
    db, q = clustered(rng, 20_000, 64), clustered(rng, 60, 64)
    exact = make_backend(db, 64, "faiss").search(q, 100)
    return db, q, exact


@pytest.mark.slow
@pytest.mark.parametrize("bits,n,k", [(8, 3000, 100), (64, 20_000, 100)])
def test_ivf_probing_every_cluster_equals_faiss_with_ties(milvus_uri, bits, n, k):
    """Right after the insert (no wait in between) and with heavy ties (8-bit codes)."""
    rng = np.random.default_rng(bits * n)
    db = random_packed(rng, n, bits) if bits == 8 else clustered(rng, n, bits)
    q = random_packed(rng, 30, bits)
    backend = milvus_module.make_milvus_backend(db, bits, uri=milvus_uri, name=f"ivf_all_{bits}",
                                                index_type="BIN_IVF_FLAT", nlist=32, nprobe=32)
    assert backend.exact
    md, mi = backend.search(q, k)
    fd, fi = make_backend(db, bits, "faiss").search(q, k)
    np.testing.assert_array_equal(md, fd)
    np.testing.assert_array_equal(mi, fi)


@pytest.mark.slow
def test_ivf_recall_with_fewer_probes_is_measured(milvus_uri, ivf_data, record_property):
    """nprobe < nlist: approximate. Every query gets its k hits (queries whose probed clusters
    held fewer are asked again with more probes), every hit at its true distance; recall@100
    grows with nprobe and reaches 1 at nprobe = nlist."""
    db, q, (exact_d, exact_i) = ivf_data
    built = milvus_module.make_milvus_backend(db, 64, uri=milvus_uri, name="ivf_recall", index_type="BIN_IVF_FLAT",
                                              nlist=64)
    recalls = {}
    for nprobe in (1, 4, 16, 64):
        backend = milvus_module.MilvusBackend(built.client, "ivf_recall", 64, len(db), exact=False, nprobe=nprobe,
                                              nlist=64)
        d, i = backend.search(q, 100)
        assert (i >= 0).all() and i.shape == (60, 100)  # all k hits, right after the insert
        true = np.take_along_axis(hamming_distances(q, db), i, 1)
        np.testing.assert_array_equal(d, true)
        assert (np.diff(d, axis=1) >= 0).all()
        recalls[nprobe] = recall_at_k(exact_i, i, exact_d, d)
    print(f"BIN_IVF_FLAT nlist=64 recall@100 by nprobe: {recalls}")
    record_property("ivf_recall_at_100", recalls)
    assert all(0.0 < r <= 1.0 for r in recalls.values())
    assert recalls[64] == 1.0 and recalls[1] <= recalls[16] <= recalls[64]


@pytest.mark.slow
def test_cli_build_add_remove_search_on_the_server_with_ivf(ckpt, milvus_uri, milvus_server, tmp_path):
    """`adah index build|add|remove --backend milvus --uri http://...` (BIN_IVF_FLAT), `adah
    search` and `adah index info` on it, answers equal to the local index of the same version."""
    runner = CliRunner()
    out = tmp_path / "idx"

    def ok(*args: str) -> str:
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, r.output
        return r.stdout

    ok("index", "build", "--model", str(ckpt), "--out", str(out), "--quiet", "--backend", "milvus", "--uri",
       milvus_server.uri, "--index-type", "BIN_IVF_FLAT", "--nlist", "8")
    section = json.loads((out / "index.json").read_text())["milvus"]
    assert section["uri"] == milvus_server.uri and section["index_type"] == "BIN_IVF_FLAT"
    assert "BIN_IVF_FLAT" in ok("index", "info", "--index", str(out))
    ok("index", "add", "--index", str(out), "--data", str(make_folder(tmp_path / "new")), "--quiet")
    ok("index", "remove", "--index", str(out), "--ids", "x2")
    assert milvus_module.connect(milvus_server.uri).has_collection(
        json.loads((out / "index.json").read_text())["milvus"]["collections"]["image"])
    got = json.loads(ok("search", "--index", str(out), "--text", "red_circle", "-k", "10", "--nprobe", "8", "--json"))
    with Index.load(out, backend="faiss") as local, Index.load(out, nprobe=8) as served:
        assert len(local) == 95 and served.backend_name == "milvus" and served.exact
        want = local.search_text("red_circle", k=10).hits
        assert [(h["id"], h["distance"]) for h in got["hits"]] == [(h.id, h.distance) for h in want]
        q = local.backends["image"].codes
        np.testing.assert_array_equal(served.search_codes(q, k=95)[1], local.search_codes(q, k=95)[1])
    with Index.load(out, nprobe=1) as approx:  # fewer probes: approximate, still k hits each
        assert not approx.exact and len(approx.search_text("red_circle", k=10).hits) == 10
