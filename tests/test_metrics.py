"""Tests for adah.evaluation.metrics against hand-computed values and a loop-based DCMH reference."""

from __future__ import annotations

import numpy as np
import pytest

from adah.evaluation.metrics import (
    PackedCodes,
    hamming_distance,
    mean_average_precision,
    pack_codes,
    pr_curve_by_radius,
    precision_at_k,
    recall_at_k,
)

# --------------------------------------------------------------------------------------
# Straightforward reference (one query at a time, like the DCMH MATLAB code)
# --------------------------------------------------------------------------------------


def ref_rank(q, db, ql, dl):
    """Per query: relevance of the db in stable Hamming order, and the Hamming row."""
    bits = q.shape[1]
    for i in range(q.shape[0]):
        ham = np.array([(q[i] != db[j]).sum() for j in range(db.shape[0])])
        assert np.array_equal(ham, 0.5 * (bits - db @ q[i]))
        gnd = (dl @ ql[i]) > 0
        order = np.argsort(ham, kind="stable")
        yield gnd[order], gnd, ham


def ref_map(q, db, ql, dl, topk=None):
    total = 0.0
    for ranked, _, _ in ref_rank(q, db, ql, dl):
        if topk is not None:
            ranked = ranked[: min(topk, len(ranked))]
        tindex = np.flatnonzero(ranked) + 1  # 1-based ranks of relevant items
        if len(tindex) == 0:
            continue
        count = np.arange(1, len(tindex) + 1)
        total += np.mean(count / tindex)
    return total / q.shape[0]


def ref_prec_rec_at_k(q, db, ql, dl, k):
    prec, rec = [], []
    for ranked, gnd, _ in ref_rank(q, db, ql, dl):
        kk = min(k, len(ranked))
        hit = ranked[:kk].sum()
        prec.append(hit / kk)
        rec.append(hit / gnd.sum() if gnd.sum() > 0 else 0.0)
    return np.mean(prec), np.mean(rec)


def ref_pr_radius(q, db, ql, dl):
    bits = q.shape[1]
    rows = list(ref_rank(q, db, ql, dl))
    ham = np.stack([h for _, _, h in rows])
    gnd = np.stack([g for _, g, _ in rows])
    prec, rec = [], []
    for r in range(bits + 1):
        retrieved = ham <= r
        good = (retrieved & gnd).sum()
        prec.append(good / retrieved.sum() if retrieved.sum() > 0 else 0.0)
        rec.append(good / gnd.sum() if gnd.sum() > 0 else 0.0)
    return np.array(prec), np.array(rec)


def random_case(seed, nq=23, nd=301, bits=4, n_classes=3, p_label=0.2):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1, 1], size=(nq, bits)).astype(np.int8)
    db = rng.choice([-1, 1], size=(nd, bits)).astype(np.int8)
    ql = (rng.random((nq, n_classes)) < p_label).astype(np.int64)
    dl = (rng.random((nd, n_classes)) < p_label).astype(np.int64)
    ql[0] = 0  # at least one query with no relevant item at all
    return q, db, ql, dl


CASES = [(0, 4), (1, 4), (2, 8), (3, 8), (4, 6)]
TOPKS = [None, 1, 5, 50, 301, 1000]


# --------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------

Q1 = np.array([[1, 1, 1, 1]])
QL1 = np.array([[1, 0]])


def test_hand_computed_no_ties():
    # Hamming distances to the query: 2, 0, 3, 1, 4 -> ranking d1, d3, d0, d2, d4
    db = np.array(
        [
            [1, 1, -1, -1],  # d0: dist 2, relevant
            [1, 1, 1, 1],  # d1: dist 0, relevant
            [1, -1, -1, -1],  # d2: dist 3, not relevant
            [1, 1, 1, -1],  # d3: dist 1, not relevant
            [-1, -1, -1, -1],  # d4: dist 4, not relevant
        ]
    )
    dl = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [0, 1]])
    assert hamming_distance(Q1, db).tolist() == [[2, 0, 3, 1, 4]]
    assert hamming_distance(Q1, db).dtype == np.int32
    # ranked relevance 1, 0, 1, 0, 0 -> AP = (1/1 + 2/3) / 2 = 5/6
    assert mean_average_precision(Q1, db, QL1, dl) == pytest.approx(5 / 6, abs=1e-12)
    # top 2: only d1 is relevant inside -> AP = 1/1
    assert mean_average_precision(Q1, db, QL1, dl, topk=2) == pytest.approx(1.0, abs=1e-12)
    assert precision_at_k(Q1, db, QL1, dl, 2) == pytest.approx(1 / 2, abs=1e-12)
    assert recall_at_k(Q1, db, QL1, dl, 2) == pytest.approx(1 / 2, abs=1e-12)
    assert recall_at_k(Q1, db, QL1, dl, 3) == pytest.approx(1.0, abs=1e-12)


# Tie case: d1 and d2 are both at distance 1; only d2 is relevant.
DB_TIE = np.array(
    [
        [1, 1, 1, 1],  # d0: dist 0, not relevant
        [1, 1, 1, -1],  # d1: dist 1, not relevant
        [1, 1, -1, 1],  # d2: dist 1, relevant
        [1, -1, -1, 1],  # d3: dist 2, relevant
        [-1, -1, -1, 1],  # d4: dist 3, not relevant
    ]
)
DL_TIE = np.array([[0, 1], [0, 1], [1, 0], [1, 1], [0, 0]])


def test_hand_computed_tie_decided_by_db_order():
    # database order: stable ranking d0, d1, d2, d3, d4 -> relevance 0, 0, 1, 1, 0
    # AP = (1/3 + 2/4) / 2 = 5/12
    assert mean_average_precision(Q1, DB_TIE, QL1, DL_TIE) == pytest.approx(5 / 12, abs=1e-12)
    # top 3: relevance 0, 0, 1 -> AP = 1/3
    assert mean_average_precision(Q1, DB_TIE, QL1, DL_TIE, topk=3) == pytest.approx(1 / 3, abs=1e-12)
    assert precision_at_k(Q1, DB_TIE, QL1, DL_TIE, 2) == 0.0

    # reversed database: distances 3, 2, 1, 1, 0 -> stable ranking (old names)
    # d0, d2, d1, d3, d4 -> relevance 0, 1, 0, 1, 0 -> AP = (1/2 + 2/4) / 2 = 1/2
    db_rev, dl_rev = DB_TIE[::-1], DL_TIE[::-1]
    assert mean_average_precision(Q1, db_rev, QL1, dl_rev) == pytest.approx(1 / 2, abs=1e-12)
    # top 3: relevance 0, 1, 0 -> AP = 1/2
    assert mean_average_precision(Q1, db_rev, QL1, dl_rev, topk=3) == pytest.approx(1 / 2, abs=1e-12)
    assert precision_at_k(Q1, db_rev, QL1, dl_rev, 2) == pytest.approx(1 / 2, abs=1e-12)


def test_query_without_relevant_items_counts_as_zero():
    q = np.array([[1, 1, 1, 1], [-1, -1, -1, -1]])
    ql = np.array([[1, 0], [0, 1]])  # second query: no db item has class 1
    db = np.array([[1, 1, 1, 1], [1, 1, 1, -1]])
    dl = np.array([[1, 0], [0, 0]])
    # query 0: relevance 1, 0 -> AP 1; query 1: no relevant item -> 0; MAP = 1/2
    assert mean_average_precision(q, db, ql, dl) == pytest.approx(0.5, abs=1e-12)
    assert mean_average_precision(q, db, ql, dl, topk=1) == pytest.approx(0.5, abs=1e-12)
    assert recall_at_k(q, db, ql, dl, 1) == pytest.approx(0.5, abs=1e-12)
    # the only relevant item is ranked second: AP = 1/2, but AP@1 = 0 (nothing inside top 1)
    q2 = np.array([[1, 1, 1, -1]])
    ql2 = np.array([[1, 0]])
    db2 = np.array([[1, 1, 1, -1], [1, 1, 1, 1]])  # distances 0, 1
    dl2 = np.array([[0, 0], [1, 0]])  # only the second item (distance 1) is relevant
    assert hamming_distance(q2, db2).tolist() == [[0, 1]]
    assert mean_average_precision(q2, db2, ql2, dl2) == pytest.approx(1 / 2, abs=1e-12)
    assert mean_average_precision(q2, db2, ql2, dl2, topk=1) == 0.0


def test_pr_curve_hand_computed():
    # distances 0, 1, 1, 2, 3; relevance 0, 0, 1, 1, 0 (2 relevant pairs in all)
    radii, prec, rec = pr_curve_by_radius(Q1, DB_TIE, QL1, DL_TIE)
    assert radii.tolist() == [0, 1, 2, 3, 4]
    assert np.issubdtype(radii.dtype, np.integer)
    np.testing.assert_allclose(prec, [0 / 1, 1 / 3, 2 / 4, 2 / 5, 2 / 5], atol=1e-12)
    np.testing.assert_allclose(rec, [0 / 2, 1 / 2, 2 / 2, 2 / 2, 2 / 2], atol=1e-12)


def test_pr_curve_nothing_retrieved_and_no_relevant_pairs():
    db = np.array([[-1, -1, -1, -1], [-1, -1, -1, 1]])  # distances 4 and 3
    _, prec, rec = pr_curve_by_radius(Q1, db, QL1, np.array([[0, 1], [0, 1]]))
    np.testing.assert_array_equal(prec, np.zeros(5))  # radius < 3 retrieves nothing; no good pairs
    np.testing.assert_array_equal(rec, np.zeros(5))
    _, prec, rec = pr_curve_by_radius(Q1, db, QL1, np.array([[1, 0], [0, 1]]))
    np.testing.assert_allclose(prec, [0, 0, 0, 0, 1 / 2], atol=1e-12)
    np.testing.assert_allclose(rec, [0, 0, 0, 0, 1], atol=1e-12)


# --------------------------------------------------------------------------------------
# Against the reference on random cases with many ties
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "bits"), CASES)
def test_map_matches_reference(seed, bits):
    q, db, ql, dl = random_case(seed, bits=bits)
    for topk in TOPKS:
        expected = ref_map(q, db, ql, dl, topk)
        big = mean_average_precision(q, db, ql, dl, topk=topk, chunk_size=10_000)
        assert big == pytest.approx(expected, abs=1e-9), topk
        for chunk in (1, 3, 7):
            assert mean_average_precision(q, db, ql, dl, topk=topk, chunk_size=chunk) == big
    # the whole database equals topk=None
    assert mean_average_precision(q, db, ql, dl, topk=db.shape[0]) == pytest.approx(
        mean_average_precision(q, db, ql, dl), abs=1e-12
    )


def test_map_reference_is_order_sensitive():
    # guards the test itself: with this many ties, an unstable order would differ
    q, db, ql, dl = random_case(0, bits=4)
    perm = np.random.default_rng(1).permutation(db.shape[0])
    a = mean_average_precision(q, db, ql, dl)
    b = mean_average_precision(q, db[perm], ql, dl[perm])
    assert a != pytest.approx(b, abs=1e-6)
    assert b == pytest.approx(ref_map(q, db[perm], ql, dl[perm]), abs=1e-9)


@pytest.mark.parametrize(("seed", "bits"), CASES)
def test_precision_recall_at_k_match_reference(seed, bits):
    q, db, ql, dl = random_case(seed, bits=bits)
    for k in (1, 5, 50, 301, 1000):
        exp_p, exp_r = ref_prec_rec_at_k(q, db, ql, dl, k)
        for chunk in (3, 7, 10_000):
            assert precision_at_k(q, db, ql, dl, k, chunk_size=chunk) == pytest.approx(exp_p, abs=1e-9)
            assert recall_at_k(q, db, ql, dl, k, chunk_size=chunk) == pytest.approx(exp_r, abs=1e-9)


@pytest.mark.parametrize(("seed", "bits"), CASES)
def test_pr_curve_matches_reference(seed, bits):
    q, db, ql, dl = random_case(seed, bits=bits)
    exp_p, exp_r = ref_pr_radius(q, db, ql, dl)
    for chunk in (3, 7, 10_000):
        radii, prec, rec = pr_curve_by_radius(q, db, ql, dl, chunk_size=chunk)
        np.testing.assert_array_equal(radii, np.arange(bits + 1))
        np.testing.assert_allclose(prec, exp_p, atol=1e-12)
        np.testing.assert_allclose(rec, exp_r, atol=1e-12)
        assert rec[-1] == 1.0
        assert np.all(np.diff(rec) >= 0)


def test_hamming_distance_matches_bit_count():
    q, db, _, _ = random_case(5, nq=11, nd=37, bits=16)
    expected = (q[:, None, :] != db[None, :, :]).sum(axis=2)
    for chunk in (2, 1024):
        d = hamming_distance(q, db, chunk_size=chunk)
        assert d.dtype == np.int32 and d.shape == (11, 37)
        np.testing.assert_array_equal(d, expected)


def test_float_codes_and_bool_labels_accepted():
    q, db, ql, dl = random_case(2, bits=8)
    expected = mean_average_precision(q, db, ql, dl, topk=50)
    got = mean_average_precision(q.astype(np.float64), db.astype(np.float32), ql > 0, dl > 0, topk=50)
    assert got == expected


def test_torch_tensors_give_same_result():
    torch = pytest.importorskip("torch")
    q, db, ql, dl = random_case(3, bits=8)
    tq, tdb = torch.from_numpy(q.astype(np.float32)), torch.from_numpy(db).requires_grad_(False)
    tq.requires_grad_(True)
    tql, tdl = torch.from_numpy(ql), torch.from_numpy(dl)
    assert mean_average_precision(tq, tdb, tql, tdl) == mean_average_precision(q, db, ql, dl)
    assert mean_average_precision(tq, tdb, tql, tdl, topk=5) == mean_average_precision(q, db, ql, dl, topk=5)
    assert precision_at_k(tq, tdb, tql, tdl, 5) == precision_at_k(q, db, ql, dl, 5)
    assert recall_at_k(tq, tdb, tql, tdl, 5) == recall_at_k(q, db, ql, dl, 5)
    np.testing.assert_array_equal(hamming_distance(tq, tdb), hamming_distance(q, db))
    for a, b in zip(pr_curve_by_radius(tq, tdb, tql, tdl), pr_curve_by_radius(q, db, ql, dl)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def test_zero_one_codes_rejected_with_hint():
    q, db, ql, dl = random_case(0)
    with pytest.raises(ValueError, match=r"query_codes.*\{0, 1\}.*2 \* b - 1"):
        mean_average_precision((q > 0).astype(int), db, ql, dl)
    with pytest.raises(ValueError, match=r"db_codes.*2 \* b - 1"):
        hamming_distance(q, db > 0)
    with pytest.raises(ValueError, match=r"db_codes.*-1/\+1"):
        precision_at_k(q, db * 0.5, ql, dl, 3)


def test_mismatched_bits_rejected():
    q, db, ql, dl = random_case(0, bits=4)
    with pytest.raises(ValueError, match=r"query_codes and db_codes.*bits.*4.*8"):
        mean_average_precision(q, np.ones((db.shape[0], 8)), ql, dl)


def test_mismatched_label_rows_rejected():
    q, db, ql, dl = random_case(0)
    with pytest.raises(ValueError, match=r"db_labels.*db_codes.*301 rows.*\(300, 3\)"):
        mean_average_precision(q, db, ql, dl[:-1])
    with pytest.raises(ValueError, match=r"query_labels.*query_codes"):
        recall_at_k(q, db, ql[:-1], dl, 3)
    with pytest.raises(ValueError, match=r"query_labels and db_labels.*classes"):
        pr_curve_by_radius(q, db, ql, dl[:, :2])
    with pytest.raises(ValueError, match=r"db_labels must be 2-D"):
        pr_curve_by_radius(q, db, ql, dl[:, 0])


def test_bad_shapes_and_arguments_rejected():
    q, db, ql, dl = random_case(0)
    with pytest.raises(ValueError, match=r"query_codes must be 2-D.*\(4,\)"):
        mean_average_precision(q[0], db, ql[:1], dl)
    with pytest.raises(ValueError, match=r"db_codes must be 2-D"):
        hamming_distance(q, db.ravel())
    with pytest.raises(ValueError, match=r"query_codes is empty"):
        mean_average_precision(q[:0], db, ql[:0], dl)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"topk must be a positive int"):
            mean_average_precision(q, db, ql, dl, topk=bad)
        with pytest.raises(ValueError, match=r"\bk must be a positive int"):
            precision_at_k(q, db, ql, dl, bad)
        with pytest.raises(ValueError, match=r"chunk_size must be a positive int"):
            recall_at_k(q, db, ql, dl, 3, chunk_size=bad)
    assert precision_at_k(q, db, ql, dl, np.int64(5)) == precision_at_k(q, db, ql, dl, 5)


def test_negative_labels_rejected():
    q, db, ql, dl = random_case(0)
    with pytest.raises(ValueError, match=r"db_labels must be non-negative"):
        mean_average_precision(q, db, ql, dl - 1)
    with pytest.raises(ValueError, match=r"query_labels must be non-negative"):
        precision_at_k(q, db, np.where(ql > 0, np.nan, 0.0), dl, 3)


# --------------------------------------------------------------------------------------
# Multi-word codes and labels, packed codes
# --------------------------------------------------------------------------------------


def all_metrics(q, db, ql, dl, **kw):
    out = [mean_average_precision(q, db, ql, dl, topk=t, **kw) for t in (None, 1, 7, 60)]
    out += [precision_at_k(q, db, ql, dl, k, **kw) for k in (1, 7, 60)]
    out += [recall_at_k(q, db, ql, dl, k, **kw) for k in (1, 7, 60)]
    out += [mean_average_precision(q, db, ql, dl, topk=t, ties="expected", **kw) for t in (None, 7)]
    return out, pr_curve_by_radius(q, db, ql, dl, **kw), hamming_distance(q, db, **kw)


@pytest.mark.parametrize("bits", [1, 7, 64, 65, 70, 130])
def test_many_bits_and_classes_match_reference(bits):
    # codes over several 64-bit words (and not a multiple of 8), labels over two words
    q, db, ql, dl = random_case(bits, nq=9, nd=80, bits=bits, n_classes=70, p_label=0.03)
    q, db = q.astype(np.int16), db.astype(np.int16)  # the reference's dot products exceed int8
    assert hamming_distance(q, db).tolist() == (q[:, None, :] != db[None]).sum(axis=2).tolist()
    for topk in (None, 1, 7, 60):
        assert mean_average_precision(q, db, ql, dl, topk=topk) == pytest.approx(
            ref_map(q, db, ql, dl, topk), abs=1e-12
        )
    exp_p, exp_r = ref_prec_rec_at_k(q, db, ql, dl, 7)
    assert precision_at_k(q, db, ql, dl, 7) == pytest.approx(exp_p, abs=1e-12)
    assert recall_at_k(q, db, ql, dl, 7) == pytest.approx(exp_r, abs=1e-12)
    exp_p, exp_r = ref_pr_radius(q, db, ql, dl)
    _, prec, rec = pr_curve_by_radius(q, db, ql, dl, chunk_size=4)
    np.testing.assert_allclose(prec, exp_p, atol=1e-12)
    np.testing.assert_allclose(rec, exp_r, atol=1e-12)


@pytest.mark.parametrize("bits", [4, 13, 64, 70])
def test_packed_codes_give_identical_results(bits):
    q, db, ql, dl = random_case(bits, nq=7, nd=90, bits=bits)
    plain = all_metrics(q, db, ql, dl, chunk_size=3)
    pq, pdb = pack_codes(q), pack_codes(db)
    assert isinstance(pq, PackedCodes) and pq.bits == bits and pq.shape == q.shape
    assert pq.data.dtype == np.uint8 and pq.data.shape == (7, -(-bits // 8))
    np.testing.assert_array_equal(pq.data, np.packbits(q > 0, axis=1))
    # garbage in the padding bits of the last byte is ignored
    noisy = pdb.data.copy()
    noisy[:, -1] |= np.uint8((1 << (-bits % 8)) - 1)
    for a, b in [(pq, pdb), (q, PackedCodes(noisy, bits)), (PackedCodes(np.packbits(q > 0, axis=1), bits), db)]:
        got = all_metrics(a, b, ql, dl, chunk_size=3)
        assert got[0] == plain[0]
        for x, y in zip(got[1], plain[1]):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(got[2], plain[2])


def test_packed_codes_validated():
    q, db, ql, dl = random_case(0, bits=8)
    pq = pack_codes(q)
    with pytest.raises(ValueError, match=r"query_codes and db_codes.*bits.*12.*8"):
        mean_average_precision(PackedCodes(np.zeros((q.shape[0], 2), np.uint8), 12), db, ql, dl)
    with pytest.raises(ValueError, match=r"db_codes.data must be a 2-D uint8 array"):
        mean_average_precision(pq, PackedCodes(pack_codes(db).data.astype(np.int16), 8), ql, dl)
    with pytest.raises(ValueError, match=r"query_codes.data must have ceil\(bits / 8\) = 2 bytes"):
        hamming_distance(PackedCodes(pq.data, 9), db)
    with pytest.raises(ValueError, match=r"query_codes.bits must be a positive int"):
        hamming_distance(PackedCodes(pq.data, 0), db)
    with pytest.raises(ValueError, match=r"query_codes is empty"):
        hamming_distance(PackedCodes(pq.data[:0], 8), db)
    with pytest.raises(ValueError, match=r"query_labels must have one row per row of query_codes"):
        recall_at_k(pq, db, ql[:-1], dl, 3)
    with pytest.raises(ValueError, match=r"codes must contain only -1/\+1"):
        pack_codes(q > 0)


def test_benchmark_runs_small(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_metrics.py"
    spec = importlib.util.spec_from_file_location("bench_metrics", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--queries", "12", "--db", "300", "--bits", "16", "64", "--ref-queries", "5"])
    out = capsys.readouterr().out
    assert "GOAL 64 bits" in out and "equal values: True" in out
    qb, rb, ql, rl = bench.make_data(12, 300, 21, 64)
    assert bench.reference_map(qb, rb, ql, rl) == pytest.approx(mean_average_precision(qb, rb, ql, rl), abs=1e-12)


@pytest.mark.slow
def test_parallel_path_gives_identical_results(monkeypatch):
    import adah.evaluation.metrics

    q, db, ql, dl = random_case(4, nq=40, nd=120, bits=6)
    serial = all_metrics(q, db, ql, dl, chunk_size=17)
    monkeypatch.setattr(adah.evaluation.metrics, "_PARALLEL_MIN_PAIRS", 0)  # every chunk on all threads
    parallel = all_metrics(q, db, ql, dl, chunk_size=17)
    assert parallel[0] == serial[0]
    for x, y in zip(parallel[1], serial[1]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(parallel[2], serial[2])


def test_very_long_codes():
    # 2 * bits + 1 no longer fits the kernel's uint16 keys
    q, db, ql, dl = random_case(9, nq=3, nd=6, bits=33_000)
    q, db = q.astype(np.int32), db.astype(np.int32)
    assert hamming_distance(q, db).tolist() == (q[:, None, :] != db[None]).sum(axis=2).tolist()
    assert mean_average_precision(q, db, ql, dl) == pytest.approx(ref_map(q, db, ql, dl), abs=1e-12)
    assert len(pr_curve_by_radius(q, db, ql, dl)[0]) == 33_001
