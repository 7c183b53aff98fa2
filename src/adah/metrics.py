"""Retrieval metrics for ±1 hash codes, following the DCMH reference code.

Definitions match Jiang & Li (CVPR 2017), MATLAB ``calcMapTopkMapTopkPreTopkRecLabel.m``
and ``calcPreRecRadiusLabel.m``:

* codes are ``(n, bits)`` arrays with values in {-1, +1} (any int or float dtype; torch
  tensors are accepted and converted with ``.detach().cpu().numpy()``);
* labels are ``(n, C)`` multi-hot {0, 1} arrays; query ``i`` and database item ``j`` are
  relevant when they share a label, i.e. ``(query_labels @ db_labels.T)[i, j] > 0``;
* the Hamming distance is ``0.5 * (bits - q @ db.T)``;
* the database is ranked by Hamming distance with ties kept in database order (a stable
  sort, like MATLAB's ``sort``).

Queries are processed ``chunk_size`` at a time, so memory stays at ``(chunk_size, n_db)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral
from typing import Any

import numpy as np

__all__ = [
    "hamming_distance",
    "mean_average_precision",
    "precision_at_k",
    "recall_at_k",
    "pr_curve_by_radius",
]

DEFAULT_CHUNK_SIZE = 1024


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, found {value!r}")
    return int(value)


def _check_codes(x: Any, name: str) -> np.ndarray:
    codes = _to_numpy(x)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, bits), found shape {codes.shape}")
    if codes.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one row, found shape {codes.shape}")
    if codes.shape[1] == 0:
        raise ValueError(f"{name} must have at least one bit, found shape {codes.shape}")
    numeric = codes.dtype != np.bool_ and np.issubdtype(codes.dtype, np.number)
    if numeric and np.all((codes == 1) | (codes == -1)):
        return codes.astype(np.float32)
    if not numeric and codes.dtype != np.bool_:
        raise ValueError(f"{name} must contain only -1/+1 values, found dtype {codes.dtype}")
    if codes.dtype == np.bool_ or np.all((codes == 0) | (codes == 1)):
        raise ValueError(
            f"{name} must contain only -1/+1 values, found {{0, 1}} codes; "
            f"convert them with 2 * b - 1"
        )
    raise ValueError(f"{name} must contain only -1/+1 values (dtype {codes.dtype})")


def _check_labels(x: Any, name: str, n_rows: int, codes_name: str) -> np.ndarray:
    labels = _to_numpy(x)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, classes), found shape {labels.shape}")
    if labels.shape[0] != n_rows:
        raise ValueError(
            f"{name} must have one row per row of {codes_name}: expected {n_rows} rows, "
            f"found shape {labels.shape}"
        )
    if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"{name} must be numeric multi-hot labels, found dtype {labels.dtype}")
    return labels.astype(np.float32)


def _validate(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any = None,
    db_labels: Any = None,
    chunk_size: Any = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, int]:
    """Convert and check inputs; codes come back as float32, labels as float32."""
    q = _check_codes(query_codes, "query_codes")
    db = _check_codes(db_codes, "db_codes")
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query_codes and db_codes must have the same number of bits: "
            f"expected {q.shape[1]} (from query_codes), found {db.shape[1]} in db_codes "
            f"(shapes {q.shape} and {db.shape})"
        )
    chunk = _check_positive_int(chunk_size, "chunk_size")
    if query_labels is None and db_labels is None:
        return q, db, None, None, chunk
    ql = _check_labels(query_labels, "query_labels", q.shape[0], "query_codes")
    dl = _check_labels(db_labels, "db_labels", db.shape[0], "db_codes")
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(
            f"query_labels and db_labels must have the same number of classes: "
            f"expected {ql.shape[1]} (from query_labels), found {dl.shape[1]} in db_labels "
            f"(shapes {ql.shape} and {dl.shape})"
        )
    return q, db, ql, dl, chunk


def _hamming(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Integer Hamming distances between validated float32 ±1 codes (exact for < 2**24 bits)."""
    bits = q.shape[1]
    dist = np.rint(0.5 * (bits - q @ db.T))
    if bits <= np.iinfo(np.uint8).max:
        return dist.astype(np.uint8)  # small dtype: numpy's stable argsort is a radix sort
    if bits <= np.iinfo(np.uint16).max:
        return dist.astype(np.uint16)
    return dist.astype(np.int32)


def _chunks(
    q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, chunk_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(dist, relevant)`` for each chunk of queries, both ``(chunk, n_db)``."""
    for start in range(0, q.shape[0], chunk_size):
        stop = start + chunk_size
        yield _hamming(q[start:stop], db), (ql[start:stop] @ dl.T) > 0


def _ranked_relevance(
    q: np.ndarray,
    db: np.ndarray,
    ql: np.ndarray,
    dl: np.ndarray,
    chunk_size: int,
    k: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ranked, n_relevant)`` per chunk of queries.

    ``ranked`` is a ``(chunk, K)`` bool array: relevance of the database items in stable
    Hamming order, cut at ``K = min(k, n_db)`` (the whole database when ``k`` is None).
    ``n_relevant`` is the ``(chunk,)`` count of relevant items in the whole database.
    """
    for dist, rel in _chunks(q, db, ql, dl, chunk_size):
        order = np.argsort(dist, axis=1, kind="stable")
        if k is not None:
            order = order[:, :k]
        yield np.take_along_axis(rel, order, axis=1), rel.sum(axis=1)


def hamming_distance(
    query_codes: Any, db_codes: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """Hamming distances between ±1 codes.

    ``query_codes`` is ``(nq, bits)``, ``db_codes`` is ``(nd, bits)``; returns an int32
    ``(nq, nd)`` array equal to ``0.5 * (bits - query_codes @ db_codes.T)``.
    """
    q, db, _, _, chunk = _validate(query_codes, db_codes, chunk_size=chunk_size)
    out = np.empty((q.shape[0], db.shape[0]), dtype=np.int32)
    for start in range(0, q.shape[0], chunk):
        out[start : start + chunk] = _hamming(q[start : start + chunk], db)
    return out


def mean_average_precision(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Mean average precision of Hamming ranking (MAP, or MAP@topk).

    Codes are ``(n, bits)`` ±1, labels ``(n, C)`` multi-hot. For each query the database
    is ranked by Hamming distance (stable: ties stay in database order) and cut at
    ``topk`` (the whole database when None, or when ``topk`` exceeds it). AP is the mean,
    over the relevant items inside the cut, of (relevant items at or above its rank) /
    (its 1-based rank); a query with no relevant item inside the cut has AP 0 and still
    counts. Returns the sum of AP divided by the number of queries.
    """
    q, db, ql, dl, chunk = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    k = None if topk is None else min(_check_positive_int(topk, "topk"), db.shape[0])
    ap = np.empty(q.shape[0], dtype=np.float64)
    start = 0
    for ranked, _ in _ranked_relevance(q, db, ql, dl, chunk, k):
        rows, cols = np.nonzero(ranked)
        # precision at each relevant item: (relevant at or above it) / (its 1-based rank)
        prec = np.cumsum(ranked, axis=1, dtype=np.int32)[rows, cols] / (cols + 1.0)
        # (bincount returns int64 when there are no hits at all)
        prec_sum = np.bincount(rows, weights=prec, minlength=ranked.shape[0]).astype(np.float64)
        n_hit = ranked.sum(axis=1, dtype=np.float64)
        stop = start + ranked.shape[0]
        ap[start:stop] = np.divide(prec_sum, n_hit, out=np.zeros_like(prec_sum), where=n_hit > 0)
        start = stop
    return float(ap.mean())


def precision_at_k(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    k: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Mean over queries of (relevant items in the top ``k``) / ``k``.

    Codes are ``(n, bits)`` ±1, labels ``(n, C)`` multi-hot; ranking is the stable
    Hamming ranking; ``k`` is clipped to the database size.
    """
    q, db, ql, dl, chunk = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    kk = min(_check_positive_int(k, "k"), db.shape[0])
    hits = np.concatenate([r.sum(axis=1) for r, _ in _ranked_relevance(q, db, ql, dl, chunk, kk)])
    return float(np.mean(hits / kk))


def recall_at_k(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    k: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Mean over queries of (relevant items in the top ``k``) / (relevant items in the db).

    Codes are ``(n, bits)`` ±1, labels ``(n, C)`` multi-hot; ranking is the stable
    Hamming ranking; ``k`` is clipped to the database size. A query with no relevant
    item contributes 0 and still counts.
    """
    q, db, ql, dl, chunk = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    kk = min(_check_positive_int(k, "k"), db.shape[0])
    recall = np.empty(q.shape[0], dtype=np.float64)
    start = 0
    for ranked, n_rel in _ranked_relevance(q, db, ql, dl, chunk, kk):
        stop = start + ranked.shape[0]
        hit = ranked.sum(axis=1, dtype=np.float64)
        recall[start:stop] = np.divide(hit, n_rel, out=np.zeros_like(hit), where=n_rel > 0)
        start = stop
    return float(recall.mean())


def pr_curve_by_radius(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of Hamming-radius retrieval, pooled over all query-db pairs.

    Codes are ``(n, bits)`` ±1, labels ``(n, C)`` multi-hot. Returns ``(radii, precision,
    recall)``, each of length ``bits + 1``: ``radii`` is the int array ``0..bits``; at
    radius ``r`` the retrieved pairs are those with Hamming distance <= ``r``;
    precision = relevant retrieved / retrieved (0 when nothing is retrieved) and
    recall = relevant retrieved / all relevant pairs (0 when there are none).
    """
    q, db, ql, dl, chunk = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    bits = q.shape[1]
    retrieved = np.zeros(bits + 1, dtype=np.int64)
    good = np.zeros(bits + 1, dtype=np.int64)
    for dist, rel in _chunks(q, db, ql, dl, chunk):
        retrieved += np.bincount(dist.ravel(), minlength=bits + 1)
        good += np.bincount(dist[rel], minlength=bits + 1)
    retrieved = np.cumsum(retrieved).astype(np.float64)
    good = np.cumsum(good).astype(np.float64)
    total_good = good[-1]
    precision = np.divide(good, retrieved, out=np.zeros_like(good), where=retrieved > 0)
    recall = good / total_good if total_good > 0 else np.zeros_like(good)
    return np.arange(bits + 1), precision, recall
