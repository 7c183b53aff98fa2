"""Tie-aware MAP (``ties="expected"``): hand-computed values, exact enumeration of every
database order on tiny cases, and Monte-Carlo averages over random tie orders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from adah.evaluation.metrics import _harmonic, _harmonic_table, mean_average_precision


def dist_rel(q, db, ql, dl):
    """Hamming distances and relevance, computed directly."""
    return (q[:, None, :] != db[None, :, :]).sum(axis=2), (ql @ dl.T) > 0


def map_of_orders(dist, rel, orders, topk):
    """MAP for each row of ``orders`` ((R, nd) database orders, each ranked stably by
    distance): returns an (R,) array. The stable sort of a permuted database is the
    ranking with ties broken by that permutation."""
    nd = dist.shape[1]
    k = nd if topk is None else min(topk, nd)
    d = dist[:, orders]  # (nq, R, nd) distances in each database order
    r = rel[:, orders]
    rank = np.argsort(d, axis=2, kind="stable")[:, :, :k]
    ranked = np.take_along_axis(r, rank, axis=2)
    prec = np.cumsum(ranked, axis=2) / np.arange(1, k + 1)
    n_hit = ranked.sum(axis=2)
    ap = np.where(n_hit > 0, (prec * ranked).sum(axis=2) / np.maximum(n_hit, 1), 0.0)
    return ap.mean(axis=0)


def mc_map(q, db, ql, dl, topk, n_draws=4000, seed=0, batch=500):
    """Mean and standard error of MAP over ``n_draws`` random database orders."""
    dist, rel = dist_rel(q, db, ql, dl)
    rng = np.random.default_rng(seed)
    maps = np.concatenate(
        [
            map_of_orders(dist, rel, np.argsort(rng.random((batch, db.shape[0])), axis=1), topk)
            for _ in range(n_draws // batch)
        ]
    )
    return maps.mean(), maps.std(ddof=1) / math.sqrt(len(maps))


def tie_case(seed, nq=6, nd=40, bits=3, n_classes=3, p_label=0.3):
    rng = np.random.default_rng(seed)
    q = rng.choice([-1, 1], size=(nq, bits)).astype(np.int8)
    db = rng.choice([-1, 1], size=(nd, bits)).astype(np.int8)
    ql = (rng.random((nq, n_classes)) < p_label).astype(np.int64)
    dl = (rng.random((nd, n_classes)) < p_label).astype(np.int64)
    ql[0] = 0  # a query with no relevant item
    ql[1] = 1  # a query with many relevant items
    return q, db, ql, dl


# --------------------------------------------------------------------------------------
# Hand-computed
# --------------------------------------------------------------------------------------

Q = np.array([[1, 1]])
DB3 = np.array([[1, -1], [-1, 1], [1, -1]])  # all three at distance 1
QL = np.array([[1, 0]])


def test_one_relevant_among_three_tied():
    dl = np.array([[0, 1], [1, 0], [0, 1]])  # only the middle item is relevant
    # it is at rank 1, 2 or 3 with probability 1/3 each
    assert mean_average_precision(Q, DB3, QL, dl, ties="expected") == pytest.approx(
        (1 + 1 / 2 + 1 / 3) / 3, abs=1e-15
    )
    assert mean_average_precision(Q, DB3, QL, dl) == pytest.approx(1 / 2, abs=1e-15)  # stable: rank 2
    # top 1: AP 1 when it comes first, else 0; top 2: 1, 1/2 or 0
    assert mean_average_precision(Q, DB3, QL, dl, topk=1, ties="expected") == pytest.approx(1 / 3, abs=1e-15)
    assert mean_average_precision(Q, DB3, QL, dl, topk=2, ties="expected") == pytest.approx(1 / 2, abs=1e-15)


def test_two_relevant_among_three_tied():
    dl = np.array([[1, 0], [0, 1], [1, 1]])  # items 0 and 2 are relevant
    # relevant at ranks {1,2}: AP 1; {1,3}: (1 + 2/3)/2; {2,3}: (1/2 + 2/3)/2
    full = (1 + 5 / 6 + 7 / 12) / 3
    assert mean_average_precision(Q, DB3, QL, dl, ties="expected") == pytest.approx(full, abs=1e-15)
    # top 2: {1,2}: 1; {1,3}: 1 (only rank 1 inside); {2,3}: 1/2
    assert mean_average_precision(Q, DB3, QL, dl, topk=2, ties="expected") == pytest.approx(5 / 6, abs=1e-15)


def test_tie_group_after_a_closer_item():
    db = np.array([[1, 1], [1, -1], [-1, 1], [1, -1]])  # distances 0, 1, 1, 1
    dl = np.array([[1, 0], [0, 1], [0, 1], [1, 0]])  # relevant: the closest and the last
    # rank 1 relevant; the other relevant at rank 2, 3 or 4: AP = (1 + 2/r) / 2
    expected = np.mean([(1 + 2 / r) / 2 for r in (2, 3, 4)])
    assert mean_average_precision(Q, db, QL, dl, ties="expected") == pytest.approx(expected, abs=1e-15)
    # top 3: rank 4 falls outside, leaving AP 1
    expected = np.mean([(1 + 2 / 2) / 2, (1 + 2 / 3) / 2, 1.0])
    assert mean_average_precision(Q, db, QL, dl, topk=3, ties="expected") == pytest.approx(expected, abs=1e-15)


# --------------------------------------------------------------------------------------
# Exact: every database order of a tiny database
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_equals_average_over_all_database_orders(seed):
    q, db, ql, dl = tie_case(seed, nq=4, nd=7, bits=2, n_classes=2, p_label=0.5)
    dist, rel = dist_rel(q, db, ql, dl)
    orders = np.array(list(itertools.permutations(range(db.shape[0]))))  # 5040 orders
    for topk in (None, 1, 2, 3, 4, 5, 6, 7, 9):
        exact = map_of_orders(dist, rel, orders, topk).mean()
        got = mean_average_precision(q, db, ql, dl, topk=topk, ties="expected")
        assert got == pytest.approx(exact, abs=1e-12), topk


# --------------------------------------------------------------------------------------
# Monte-Carlo over random tie orders
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_matches_monte_carlo_small_buckets(seed):
    q, db, ql, dl = tie_case(seed)
    for topk in (None, 1, 3, 7, 15, 40, 100):
        mean, se = mc_map(q, db, ql, dl, topk, seed=seed)
        got = mean_average_precision(q, db, ql, dl, topk=topk, ties="expected")
        assert abs(got - mean) <= 4 * se + 1e-12, (topk, got, mean, se)


def test_matches_monte_carlo_large_buckets():
    # 2 bits, 400 items: buckets of ~100 items (the harmonic-table path), cut-offs inside them
    q, db, ql, dl = tie_case(7, nq=4, nd=400, bits=2, n_classes=4, p_label=0.3)
    for topk in (None, 50, 150, 333):
        mean, se = mc_map(q, db, ql, dl, topk, n_draws=2000, seed=1)
        got = mean_average_precision(q, db, ql, dl, topk=topk, ties="expected")
        assert abs(got - mean) <= 4 * se + 1e-12, (topk, got, mean, se)


def test_matches_shuffled_stable_map():
    # the same expectation, sampled through adah's own stable MAP on shuffled databases
    q, db, ql, dl = tie_case(3, nq=4, nd=30)
    rng = np.random.default_rng(0)
    for topk in (None, 5):
        samples = []
        for _ in range(600):
            perm = rng.permutation(db.shape[0])
            samples.append(mean_average_precision(q, db[perm], ql, dl[perm], topk=topk))
        mean, se = np.mean(samples), np.std(samples, ddof=1) / math.sqrt(len(samples))
        got = mean_average_precision(q, db, ql, dl, topk=topk, ties="expected")
        assert abs(got - mean) <= 4 * se + 1e-12, (topk, got, mean, se)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_without_ties_expected_equals_stable(seed):
    # every database item at a different distance from the (single) query
    rng = np.random.default_rng(seed)
    bits = 12
    q = rng.choice([-1, 1], size=(1, bits))
    flips = np.tril(np.ones((bits + 1, bits), dtype=bool), k=-1)  # item t: first t bits flipped
    db = np.where(flips, -q, q)[rng.permutation(bits + 1)]
    ql = np.array([[1, 0, 1]])
    dl = (rng.random((bits + 1, 3)) < 0.4).astype(int)
    assert len(np.unique(dist_rel(q, db, ql, dl)[0])) == bits + 1
    for topk in (None, 1, 2, 5, 12, 13, 20):
        stable = mean_average_precision(q, db, ql, dl, topk=topk)
        assert mean_average_precision(q, db, ql, dl, topk=topk, ties="expected") == pytest.approx(
            stable, abs=1e-12
        )


def test_query_without_relevant_items_counts_as_zero():
    q, db, ql, dl = tie_case(1)
    ql[0] = 0
    for topk in (None, 5):
        alone = mean_average_precision(q[1:2], db, ql[1:2], dl, topk=topk, ties="expected")
        both = mean_average_precision(q[:2], db, ql[:2], dl, topk=topk, ties="expected")
        assert both == pytest.approx(alone / 2, abs=1e-15)
        assert mean_average_precision(q[:1], db, ql[:1], dl, topk=topk, ties="expected") == 0.0


def test_independent_of_database_order_and_chunks():
    q, db, ql, dl = tie_case(2, nq=9, nd=120, bits=4)
    perm = np.random.default_rng(5).permutation(db.shape[0])
    for topk in (None, 10, 37):
        a = mean_average_precision(q, db, ql, dl, topk=topk, ties="expected")
        assert mean_average_precision(q, db[perm], ql, dl[perm], topk=topk, ties="expected") == pytest.approx(
            a, abs=1e-12
        )
        for chunk in (1, 4):
            assert mean_average_precision(q, db, ql, dl, topk=topk, ties="expected", chunk_size=chunk) == a


def test_bad_ties_rejected():
    q, db, ql, dl = tie_case(0)
    with pytest.raises(ValueError, match=r"ties must be 'stable' or 'expected', found 'random'"):
        mean_average_precision(q, db, ql, dl, ties="random")


def test_harmonic_sums_accurate():
    hi, lo = _harmonic_table(300_000)
    for a, t in ((0, 1), (0, 40), (5, 33), (1000, 100), (200_000, 50), (100, 299_900)):
        exact = math.fsum(1 / (a + p) for p in range(1, t + 1))
        assert _harmonic(a, t, hi, lo) == pytest.approx(exact, rel=1e-14, abs=0)
