"""Hamming top-k backends: faiss IndexBinaryFlat and the numpy fallback give identical results
(canonical order: distance, then row), both equal a brute-force sort, inputs are validated
before faiss sees them, and the multi-hash backend's recall is measured against exact."""

from __future__ import annotations

import numpy as np
import pytest

from adah.errors import AdahError
from adah.index import Index, faiss_available, hamming_distances, numpy_knn, recall_at_k
from adah.index.backends import check_packed, make_backend, pack_pm1

from helpers import brute_force, random_packed

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")


@pytest.mark.parametrize("bits,n,k", [(8, 3000, 50), (12, 500, 100), (16, 4000, 64), (64, 2000, 10), (40, 300, 300),
                                      (8, 40, 100)])
def test_numpy_matches_brute_force_with_heavy_ties(bits, n, k):
    rng = np.random.default_rng(bits + n)
    db, q = random_packed(rng, n, bits), random_packed(rng, 25, bits)
    want_d, want_i = brute_force(q, db, bits, k)
    got_d, got_i = numpy_knn(q, db, k)
    np.testing.assert_array_equal(got_d, want_d)
    np.testing.assert_array_equal(got_i, want_i)
    assert got_i.shape == (25, min(k, n))


@needs_faiss
@pytest.mark.parametrize("bits,n,k", [(8, 5000, 100), (12, 700, 50), (16, 20000, 100), (32, 30000, 1000),
                                      (64, 20000, 100), (128, 3000, 7), (8, 200, 200), (16, 50, 80)])
def test_faiss_and_numpy_are_identical(bits, n, k):
    """8-bit codes over 5,000 rows: every distance is shared by hundreds of rows, so any
    difference in tie order would show."""
    rng = np.random.default_rng(n * 7 + bits)
    db, q = random_packed(rng, n, bits), random_packed(rng, 40, bits)
    fd, fi = make_backend(db, bits, "faiss").search(q, k)
    nd, ni = make_backend(db, bits, "numpy").search(q, k)
    np.testing.assert_array_equal(fd, nd)
    np.testing.assert_array_equal(fi, ni)
    bd, bi = brute_force(q, db, bits, k)
    np.testing.assert_array_equal(fi, bi)
    np.testing.assert_array_equal(fd, bd)


def test_hamming_distances_match_unpacked_count():
    rng = np.random.default_rng(0)
    a, b = random_packed(rng, 7, 70), random_packed(rng, 9, 70)
    ua, ub = np.unpackbits(a, axis=1)[:, :70], np.unpackbits(b, axis=1)[:, :70]
    np.testing.assert_array_equal(hamming_distances(a, b), (ua[:, None] != ub[None]).sum(-1))


@pytest.mark.parametrize("backend", ["numpy", pytest.param("faiss", marks=needs_faiss)])
def test_index_search_codes_accepts_pm1_and_packed(backend):
    rng = np.random.default_rng(1)
    codes = rng.choice(np.array([-1, 1], np.int8), size=(300, 24))
    index = Index.from_codes(bits=24, image=codes, packed=False, backend=backend)
    d1, i1 = index.search_codes(codes[:5], target="image", k=3)
    d2, i2 = index.search_codes(np.packbits(codes[:5] > 0, axis=1), target="image", k=3)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
    assert (d1[:, 0] == 0).all() and (i1[:, 0] == np.arange(5)).all()  # each code finds itself first
    d, i = index.search_codes(codes[:2], k=10_000)  # k beyond the collection: all rows, ranked
    assert i.shape == (2, 300) and sorted(i[0].tolist()) == list(range(300))


def test_validation_before_faiss():
    rng = np.random.default_rng(2)
    db = random_packed(rng, 50, 16)
    with pytest.raises(AdahError, match="uint8"):
        check_packed(db.astype(np.int16), 16)
    with pytest.raises(AdahError, match=r"shape \(n, 2\)"):
        check_packed(db[:, :1], 16)
    with pytest.raises(AdahError, match="padding bits"):
        check_packed(np.full((3, 2), 255, np.uint8), 12)
    with pytest.raises(AdahError, match="-1/\\+1"):
        pack_pm1(np.full((2, 16), 3), 16)
    with pytest.raises(AdahError, match="expected 16 bits"):
        pack_pm1(np.ones((2, 8)), 16)
    index = Index.from_codes(bits=16, text=db, backend="numpy")
    for bad_k in (0, -1, 2.5, True):
        with pytest.raises(AdahError, match="k must be"):
            index.search_codes(db[:1], target="text", k=bad_k)
    with pytest.raises(AdahError, match="no image codes"):
        index.search_codes(db[:1], target="image")
    with pytest.raises(AdahError, match="unknown search backend"):
        make_backend(db, 16, "annoy")


@needs_faiss
def test_multihash_recall_is_measured_against_exact():
    """Clustered codes (as a trained model makes): the multi-hash backend finds most exact
    neighbours, and with enough flips all of them."""
    rng = np.random.default_rng(3)
    bits, n = 64, 20_000
    centres = rng.integers(0, 2, size=(200, bits))
    members = centres[rng.integers(0, 200, n)]
    flips = rng.random((n, bits)) < 0.04
    db = np.packbits(members ^ flips, axis=1)
    q = np.packbits(centres[:50] ^ (rng.random((50, bits)) < 0.04), axis=1)
    exact_d, exact_i = make_backend(db, bits, "faiss").search(q, 20)
    approx_d, approx_i = make_backend(db, bits, "multihash", nhash=4, b=16, nflip=1).search(q, 20)
    r = recall_at_k(exact_i, approx_i, exact_d, approx_d)
    assert 0.8 <= r <= 1.0
    # the found distances are exact ones: never better than the exact k-th
    assert (approx_d[approx_i >= 0] >= exact_d[:, :1].min()).all()
    full_d, full_i = make_backend(db, bits, "multihash", nhash=4, b=16, nflip=4).search(q, 20)
    assert recall_at_k(exact_i, full_i, exact_d, full_d) == 1.0


def test_recall_at_k_counts_ties_as_found():
    exact_i = np.array([[0, 1, 2]])
    exact_d = np.array([[0, 1, 1]])
    approx_i = np.array([[0, 5, -1]])  # 5 ties with 1 and 2 at distance 1; -1 is a miss
    approx_d = np.array([[0, 1, 2**31 - 1]])
    assert recall_at_k(exact_i, approx_i, exact_d, approx_d) == pytest.approx(2 / 3)
    assert recall_at_k(exact_i, approx_i) == pytest.approx(1 / 3)
