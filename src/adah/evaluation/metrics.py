"""Retrieval metrics for ±1 hash codes, following the DCMH reference code.

Definitions match Jiang & Li (CVPR 2017), MATLAB ``calcMapTopkMapTopkPreTopkRecLabel.m``
and ``calcPreRecRadiusLabel.m``:

* codes are ``(n, bits)`` arrays with values in {-1, +1} (any int or float dtype; torch
  tensors are accepted and converted with ``.detach().cpu().numpy()``), or
  :class:`PackedCodes` (see :func:`pack_codes`) for codes that are already bit-packed;
* labels are ``(n, C)`` multi-hot {0, 1} arrays; query ``i`` and database item ``j`` are
  relevant when they share a label, i.e. ``(query_labels @ db_labels.T)[i, j] > 0``
  (labels must be non-negative, so this is "some class is > 0 in both");
* the Hamming distance is ``0.5 * (bits - q @ db.T)``;
* the database is ranked by Hamming distance with ties kept in database order (a stable
  sort, like MATLAB's ``sort``). ``mean_average_precision(..., ties="expected")`` gives
  instead the expected AP under a uniformly random order inside each tie group.

How it is computed (exactly, with no sort): codes are packed to bits (+1 -> 1) in uint64
words and labels to bitmasks, so a distance is ``popcount(q ^ d)`` and relevance is
``(ql & dl) != 0``. One numba kernel, :func:`_scan`, makes per query the bucket counts
(items and relevant items at each distance ``0..bits``) and, when asked, walks the
database once in order: the stable rank of item ``j`` at distance ``d`` is (items at
distance < d) + (items at distance d before ``j`` in database order) + 1, and the count
of relevant items at or above it is the same sum over relevant items only (a counting
sort). The results equal those of a per-query stable argsort exactly (up to the order of
floating-point additions, ~1e-16). Queries are processed ``chunk_size`` at a time, each
chunk in parallel over numba's threads (chunks of fewer than ~4M query-item pairs on one
thread), so memory stays at ``O(chunk_size * bits + threads * n_db)`` beyond the packed
inputs. The kernels are compiled on first use and cached on disk (numba ``cache=True``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from adah.evaluation.packing import pack_bits, to_words

__all__ = [
    "PackedCodes",
    "pack_codes",
    "hamming_distance",
    "mean_average_precision",
    "precision_at_k",
    "recall_at_k",
    "paired_recall_at_k",
    "pr_curve_by_radius",
]

DEFAULT_CHUNK_SIZE = 1024
_DIRECT_SUM_MAX = 32  # harmonic sums over at most this many terms are added up directly
_PARALLEL_MIN_PAIRS = 1 << 22  # smaller chunks of (query, db item) pairs run on one thread


@dataclass(frozen=True)
class PackedCodes:
    """±1 codes packed 8 per byte, as made by :func:`pack_codes`.

    ``data`` is ``np.packbits(codes > 0, axis=1)``: a ``(n, ceil(bits / 8))`` uint8 array,
    +1 -> bit 1, big bit order (numpy's default); ``bits`` is the code length. Bits past
    ``bits`` in the last byte are ignored. Every metric accepts it in place of ±1 codes.
    """

    data: np.ndarray
    bits: int

    @property
    def shape(self) -> tuple[int, int]:
        """The shape of the unpacked codes, ``(n, bits)``."""
        return (int(np.shape(self.data)[0]), self.bits)


def pack_codes(codes: Any) -> PackedCodes:
    """Pack ``(n, bits)`` ±1 codes (array or tensor) into :class:`PackedCodes`."""
    c = _check_pm1(codes, "codes")
    return PackedCodes(pack_bits(c), c.shape[1])


# --------------------------------------------------------------------------------------
# Validation and packing
# --------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, found {value!r}")
    return int(value)


def _check_pm1(x: Any, name: str) -> np.ndarray:
    codes = _to_numpy(x)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, bits), found shape {codes.shape}")
    if codes.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one row, found shape {codes.shape}")
    if codes.shape[1] == 0:
        raise ValueError(f"{name} must have at least one bit, found shape {codes.shape}")
    numeric = codes.dtype != np.bool_ and np.issubdtype(codes.dtype, np.number)
    if numeric and np.all((codes == 1) | (codes == -1)):
        return codes
    if not numeric and codes.dtype != np.bool_:
        raise ValueError(f"{name} must contain only -1/+1 values, found dtype {codes.dtype}")
    if codes.dtype == np.bool_ or np.all((codes == 0) | (codes == 1)):
        raise ValueError(
            f"{name} must contain only -1/+1 values, found {{0, 1}} codes; "
            f"convert them with 2 * b - 1"
        )
    raise ValueError(f"{name} must contain only -1/+1 values (dtype {codes.dtype})")


def _check_codes(x: Any, name: str) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """Return ``(words, bits, shape)``: packed uint64 ``(n, ceil(bits / 64))`` codes."""
    if not isinstance(x, PackedCodes):
        codes = _check_pm1(x, name)
        return to_words(pack_bits(codes)), codes.shape[1], codes.shape
    data, bits = np.asarray(x.data), _check_positive_int(x.bits, f"{name}.bits")
    if data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(
            f"{name}.data must be a 2-D uint8 array (np.packbits(codes > 0, axis=1)), "
            f"found dtype {data.dtype} and shape {data.shape}"
        )
    if data.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one row, found shape {data.shape}")
    if data.shape[1] != -(-bits // 8):
        raise ValueError(
            f"{name}.data must have ceil(bits / 8) = {-(-bits // 8)} bytes per row for "
            f"{bits} bits, found shape {data.shape}"
        )
    data = data.copy()
    data[:, -1] &= np.uint8((0xFF << (-bits % 8)) & 0xFF)  # clear the padding bits
    return to_words(data), bits, x.shape


def _check_labels(x: Any, name: str, n_rows: int, codes_name: str) -> tuple[np.ndarray, int]:
    """Return ``(bitmasks, C)``: the labels as ``(n, ceil(C / 64))`` uint64 (bit: value > 0)."""
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
    if labels.dtype != np.bool_ and not np.all(labels >= 0):
        raise ValueError(f"{name} must be non-negative multi-hot labels (negative or NaN found)")
    return to_words(pack_bits(labels)), labels.shape[1]


def _validate(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any = None,
    db_labels: Any = None,
    chunk_size: Any = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, int, int]:
    """Check inputs; return ``(q, db_t, ql, dl_t, chunk_size, bits)``: packed query codes
    ``(nq, words)``, packed database codes transposed ``(words, nd)``, the same for label
    bitmasks, the chunk size and the code length."""
    q, bits, q_shape = _check_codes(query_codes, "query_codes")
    db, db_bits, db_shape = _check_codes(db_codes, "db_codes")
    if bits != db_bits:
        raise ValueError(
            f"query_codes and db_codes must have the same number of bits: "
            f"expected {bits} (from query_codes), found {db_bits} in db_codes "
            f"(shapes {q_shape} and {db_shape})"
        )
    chunk = _check_positive_int(chunk_size, "chunk_size")
    if query_labels is None and db_labels is None:
        return q, np.ascontiguousarray(db.T), None, None, chunk, bits
    ql, n_ql = _check_labels(query_labels, "query_labels", q.shape[0], "query_codes")
    dl, n_dl = _check_labels(db_labels, "db_labels", db.shape[0], "db_codes")
    if n_ql != n_dl:
        raise ValueError(
            f"query_labels and db_labels must have the same number of classes: "
            f"expected {n_ql} (from query_labels), found {n_dl} in db_labels "
            f"(shapes {(q.shape[0], n_ql)} and {(db.shape[0], n_dl)})"
        )
    return q, np.ascontiguousarray(db.T), ql, np.ascontiguousarray(dl.T), chunk, bits


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------


@intrinsic
def _popcount(typingctx, x):  # noqa: ARG001 (numba's intrinsic signature)
    """LLVM ``ctpop`` of a 64-bit int, as int64 (the popcnt instruction on x86-64)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None
    return types.int64(x), lambda context, builder, sig, args: builder.ctpop(args[0])


@njit(cache=True, inline="always")
def _add_distances(q, db_t, scale, out):
    """``out[j] += scale * popcount(q ^ db_t[:, j])`` for one query's packed code ``q``;
    the database comes transposed (one row per word), so that each loop streams."""
    for w in range(db_t.shape[0]):
        qw = q[w]
        for j in range(db_t.shape[1]):
            out[j] += scale * _popcount(qw ^ db_t[w, j])


@njit(cache=True)
def _hamming_kernel(q, db_t, out):  # pragma: no cover (jit)
    for i in range(q.shape[0]):
        out[i, :] = 0
        _add_distances(q[i], db_t, 1, out[i])


@njit(cache=True)
def _scan(q, db_t, ql, dl_t, k, walk, key_dtype, lo, hi, total, relevant, prec_sum, hits):  # pragma: no cover
    """The kernel, for queries ``lo <= i < hi``: ``total[i, d]`` / ``relevant[i, d]`` =
    items / relevant items at Hamming distance ``d``. With ``walk``, also the stable
    ranking cut at ``k``: ``hits[i]`` = relevant items in the top ``k`` and
    ``prec_sum[i]`` = the sum of the precision at each of them (AP@k = prec_sum / hits).

    Database codes and labels come transposed, ``(words, n_db)``, so that loops stream;
    ``key_dtype`` holds ``2 * bits + 1``."""
    nd, nbins = db_t.shape[1], total.shape[1]
    key = np.empty(nd, dtype=key_dtype)  # 2 * distance + relevant, per db item
    hist = np.empty(2 * nbins, dtype=np.int64)  # items per key
    seen = np.empty(nbins, dtype=np.int64)  # walk: (relevant << 32) + items, ranked so far
    found_at = np.empty(nd if walk else 0, dtype=np.int64)  # seen[d] at each relevant item
    for i in range(lo, hi):
        key[:] = 0
        for w in range(dl_t.shape[0]):
            lw = ql[i, w]
            for j in range(nd):
                key[j] |= (lw & dl_t[w, j]) != 0
        _add_distances(q[i], db_t, 2, key)
        hist[:] = 0
        for j in range(nd):
            hist[key[j]] += 1
        ranked, found = 0, 0
        for d in range(nbins):
            seen[d] = (found << 32) + ranked  # the walk enters bucket d after buckets < d
            total[i, d] = hist[2 * d] + hist[2 * d + 1]
            relevant[i, d] = hist[2 * d + 1]
            ranked += total[i, d]
            found += relevant[i, d]
        if not walk:
            continue
        h = 0
        for j in range(nd):  # database order = stable order inside each bucket
            r, d = np.int64(key[j] & 1), np.int64(key[j] >> 1)
            v = seen[d] + (r << 32) + 1  # low half: rank of j; high: relevant at or above j
            seen[d] = v
            found_at[h] = v
            h += r  # branch-free: kept only for relevant items
        s, n = 0.0, 0
        for t in range(h):
            rank = found_at[t] & 0xFFFFFFFF
            if rank <= k:
                s += (found_at[t] >> 32) / rank
                n += 1
        prec_sum[i], hits[i] = s, n


@njit(parallel=True, cache=True)
def _scan_parallel(q, db_t, ql, dl_t, k, walk, key_dtype, nblocks, total, relevant, prec_sum, hits):  # pragma: no cover
    """:func:`_scan` over ``nblocks`` blocks of queries in parallel."""
    nq = q.shape[0]
    for b in prange(nblocks):
        lo, hi = b * nq // nblocks, (b + 1) * nq // nblocks
        _scan(q, db_t, ql, dl_t, k, walk, key_dtype, lo, hi, total, relevant, prec_sum, hits)


@njit(cache=True)
def _harmonic(a, t, h_hi, h_lo):
    """``sum_{p=1..t} 1 / (a + p)`` (the table is H_n as a double-double)."""
    if t <= _DIRECT_SUM_MAX:
        s = 0.0
        for p in range(t, 0, -1):
            s += 1.0 / (a + p)
        return s
    return (h_hi[a + t] - h_hi[a]) + (h_lo[a + t] - h_lo[a])


@njit(cache=True)
def _bucket_precision(above, found, t, x, h_hi, h_lo):
    """Expected sum of the precision at the relevant items when ``x`` relevant items lie
    uniformly at random among ``t`` positions at ranks ``above + 1 .. above + t``, with
    ``found`` relevant items ranked above them.

    Position ``p`` holds a relevant item with probability ``x / t``; given that, the
    other ``x - 1`` fill the other ``t - 1`` positions uniformly, so ``(x - 1)(p - 1) /
    (t - 1)`` of them are expected ahead of it and the precision there is
    ``(found + 1 + that) / (above + p)``. Summing over ``p`` with ``T0 = sum 1 / (above
    + p)`` and ``T1 = sum (p - 1) / (above + p) = t - (above + 1) T0`` gives
    ``(x / t) ((found + 1) T0 + (x - 1) / (t - 1) T1)``. Sums of up to
    ``_DIRECT_SUM_MAX`` terms are added directly; longer ones come from the harmonic
    table, where ``T1``'s cancellation costs at most ~``2 eps above / t`` relative
    (below 1e-11 for a million items).
    """
    t0 = _harmonic(above, t, h_hi, h_lo)
    e = (found + 1) * t0
    if t > 1 and x > 1:
        if t <= _DIRECT_SUM_MAX:
            t1 = 0.0
            for p in range(t, 1, -1):
                t1 += (p - 1) / (above + p)
        else:
            t1 = t - (above + 1) * t0
        e += (x - 1) / (t - 1) * t1
    return x / t * e


@njit(cache=True)
def _expected_ap(total, relevant, k, h_hi, h_lo, out):  # pragma: no cover (jit)
    """Expected AP@k per query under a uniformly random order inside each distance bucket.

    Buckets wholly inside the top ``k`` add :func:`_bucket_precision` with ``t = n``,
    ``x = m`` (its size and relevant count). For the bucket straddling the cut, with
    ``t = k - above`` of its ``n`` items inside, the number ``X`` of its relevant items
    inside is hypergeometric (``n`` items, ``m`` relevant, ``t`` drawn) and, given ``X =
    x``, they are a uniform subset of those ``t`` positions; since AP@k divides by the
    relevant items inside the cut, ``E[AP@k] = sum_x P(X = x) (S + bucket(x)) / (found
    + x)`` with ``S`` the sum from the buckets above (0 when ``found + x = 0``).
    """
    for i in range(total.shape[0]):
        above, found, s, straddled = 0, 0, 0.0, False
        for d in range(total.shape[1]):
            n, m = total[i, d], relevant[i, d]
            if above >= k:
                break
            if above + n <= k:
                if m > 0:
                    s += _bucket_precision(above, found, n, m, h_hi, h_lo)
                above += n
                found += m
                continue
            t, straddled = k - above, True
            x_lo, x_hi = max(0, t - (n - m)), min(t, m)
            w = np.empty(x_hi - x_lo + 1)  # hypergeometric pmf up to a factor, from the mode
            mode = min(max((t + 1) * (m + 1) // (n + 2), x_lo), x_hi)
            w[mode - x_lo] = 1.0
            for x in range(mode, x_hi):
                w[x + 1 - x_lo] = w[x - x_lo] * ((m - x) * (t - x)) / ((x + 1) * (n - m - t + x + 1))
            for x in range(mode, x_lo, -1):
                w[x - 1 - x_lo] = w[x - x_lo] * (x * (n - m - t + x)) / ((m - x + 1) * (t - x + 1))
            ap = 0.0
            for x in range(x_lo, x_hi + 1):
                if found + x > 0:
                    bucket = _bucket_precision(above, found, t, x, h_hi, h_lo) if x > 0 else 0.0
                    ap += w[x - x_lo] * (s + bucket) / (found + x)
            out[i] = ap / w.sum()
            break
        if not straddled:
            out[i] = s / found if found > 0 else 0.0


def _harmonic_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``H_0 .. H_n`` as a double-double ``(hi, lo)``, summed in extended precision."""
    h = np.zeros(n + 1, dtype=np.longdouble)
    np.cumsum(1 / np.arange(1, n + 1, dtype=np.longdouble), out=h[1:])
    hi = h.astype(np.float64)
    return hi, (h - hi).astype(np.float64)


def _scan_chunks(
    q: np.ndarray,
    db_t: np.ndarray,
    ql: np.ndarray,
    dl_t: np.ndarray,
    bits: int,
    chunk_size: int,
    k: int,
    walk: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Run :func:`_scan` on each chunk of queries; yield ``(total, relevant, prec_sum, hits)``."""
    if db_t.shape[1] >= 1 << 32:  # the walk packs two counts of db items in an int64
        raise ValueError(f"at most 2**32 - 1 database items are supported, found {db_t.shape[1]}")
    key_dtype = np.uint16 if 2 * bits + 1 <= np.iinfo(np.uint16).max else np.int32
    for start in range(0, q.shape[0], chunk_size):
        qc, lc = q[start : start + chunk_size], ql[start : start + chunk_size]
        n = qc.shape[0]
        total = np.empty((n, bits + 1), dtype=np.int64)
        relevant = np.empty((n, bits + 1), dtype=np.int64)
        prec_sum, hits = np.zeros(n), np.zeros(n, dtype=np.int64)
        if n * db_t.shape[1] < _PARALLEL_MIN_PAIRS or numba.get_num_threads() == 1:
            _scan(qc, db_t, lc, dl_t, k, walk, key_dtype, 0, n, total, relevant, prec_sum, hits)
        else:  # (waking the threads costs milliseconds on a busy machine)
            with numba.parallel_chunksize(1):  # blocks go to the threads dynamically
                blocks = min(n, 64)
                _scan_parallel(qc, db_t, lc, dl_t, k, walk, key_dtype, blocks, total, relevant, prec_sum, hits)
        yield total, relevant, prec_sum, hits


# --------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------


def hamming_distance(
    query_codes: Any, db_codes: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """Hamming distances between ±1 codes (or :class:`PackedCodes`).

    ``query_codes`` is ``(nq, bits)``, ``db_codes`` is ``(nd, bits)``; returns an int32
    ``(nq, nd)`` array equal to ``0.5 * (bits - query_codes @ db_codes.T)``.
    """
    q, db_t, _, _, chunk, _ = _validate(query_codes, db_codes, chunk_size=chunk_size)
    out = np.empty((q.shape[0], db_t.shape[1]), dtype=np.int32)
    for start in range(0, q.shape[0], chunk):
        _hamming_kernel(q[start : start + chunk], db_t, out[start : start + chunk])
    return out


def mean_average_precision(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = None,
    *,
    ties: str = "stable",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Mean average precision of Hamming ranking (MAP, or MAP@topk).

    Codes are ``(n, bits)`` ±1 (or :class:`PackedCodes`), labels ``(n, C)`` multi-hot.
    For each query the database is ranked by Hamming distance and cut at ``topk`` (the
    whole database when None, or when ``topk`` exceeds it). AP is the mean, over the
    relevant items inside the cut, of (relevant items at or above its rank) / (its
    1-based rank); a query with no relevant item inside the cut has AP 0 and still
    counts. Returns the sum of AP divided by the number of queries.

    ``ties="stable"`` (default) keeps ties in database order, like DCMH.
    ``ties="expected"`` returns the exact expected value of that MAP when each group of
    items at equal distance is put in a uniformly random order (McSherry & Najork, ECIR
    2008), in closed form per distance bucket, for the full ranking and for ``topk``
    alike (the bucket straddling the cut is averaged over the hypergeometric number of
    its relevant items inside the cut); it does not depend on the database order.
    """
    if ties not in ("stable", "expected"):
        raise ValueError(f"ties must be 'stable' or 'expected', found {ties!r}")
    q, db_t, ql, dl_t, chunk, bits = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    nd = db_t.shape[1]
    k = nd if topk is None else min(_check_positive_int(topk, "topk"), nd)
    expected = ties == "expected"
    table = _harmonic_table(nd) if expected else None
    ap = np.empty(q.shape[0], dtype=np.float64)
    start = 0
    for total, relevant, prec_sum, hits in _scan_chunks(q, db_t, ql, dl_t, bits, chunk, k, not expected):
        stop = start + len(hits)
        if expected:
            _expected_ap(total, relevant, k, *table, ap[start:stop])
        else:
            ap[start:stop] = np.divide(prec_sum, hits, out=np.zeros_like(prec_sum), where=hits > 0)
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

    Codes are ``(n, bits)`` ±1 (or :class:`PackedCodes`), labels ``(n, C)`` multi-hot;
    ranking is the stable Hamming ranking; ``k`` is clipped to the database size.
    """
    q, db_t, ql, dl_t, chunk, bits = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    kk = min(_check_positive_int(k, "k"), db_t.shape[1])
    hits = np.concatenate([h for *_, h in _scan_chunks(q, db_t, ql, dl_t, bits, chunk, kk, True)])
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

    Codes are ``(n, bits)`` ±1 (or :class:`PackedCodes`), labels ``(n, C)`` multi-hot;
    ranking is the stable Hamming ranking; ``k`` is clipped to the database size. A
    query with no relevant item contributes 0 and still counts.
    """
    q, db_t, ql, dl_t, chunk, bits = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    kk = min(_check_positive_int(k, "k"), db_t.shape[1])
    recall = np.empty(q.shape[0], dtype=np.float64)
    start = 0
    for _, relevant, _, hits in _scan_chunks(q, db_t, ql, dl_t, bits, chunk, kk, True):
        stop = start + len(hits)
        n_rel = relevant.sum(axis=1)
        hit = hits.astype(np.float64)
        recall[start:stop] = np.divide(hit, n_rel, out=np.zeros_like(hit), where=n_rel > 0)
        start = stop
    return float(recall.mean())


def paired_recall_at_k(
    query_codes: Any,
    db_codes: Any,
    ks: tuple[int, ...] = (1, 5, 10),
    *,
    ties: str = "expected",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[int, float]:
    """Recall@K of the paired item, the standard image-text retrieval measure (no labels).

    ``query_codes`` and ``db_codes`` are ``(n, bits)`` ±1 codes (or :class:`PackedCodes`) of
    the same n items in two modalities: query ``i``'s one relevant item is database row ``i``.
    Returns ``{K: fraction of queries whose pair ranks in the top K}`` by Hamming distance.
    ``ties="expected"`` (default) counts a pair tied with ``t`` other items at its distance,
    after ``a`` strictly closer ones, as found with probability ``clip((K - a) / (t + 1), 0, 1)``
    (a uniformly random order inside the tie); ``"stable"`` keeps ties in database order.
    """
    if ties not in ("stable", "expected"):
        raise ValueError(f"ties must be 'stable' or 'expected', found {ties!r}")
    ks = tuple(_check_positive_int(k, "k") for k in ks)
    if not ks:
        raise ValueError("ks must name at least one K")
    n_q, n_d = _check_codes(query_codes, "query_codes")[2][0], _check_codes(db_codes, "db_codes")[2][0]
    if n_q != n_d:
        raise ValueError(f"paired recall needs one database item per query (row i pairs with row i): "
                         f"query_codes has {n_q} rows, db_codes {n_d}")
    found = {k: 0.0 for k in ks}
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        q = query_codes.data[start:stop] if isinstance(query_codes, PackedCodes) else _to_numpy(query_codes)[start:stop]
        q = PackedCodes(q, query_codes.bits) if isinstance(query_codes, PackedCodes) else q
        dist = hamming_distance(q, db_codes, chunk_size=chunk_size)  # (m, n)
        rows = np.arange(stop - start)
        own = dist[rows, rows + start][:, None]
        closer = (dist < own).sum(axis=1)
        tied = (dist == own).sum(axis=1) - 1  # other items at the pair's distance
        if ties == "stable":
            earlier = np.arange(dist.shape[1])[None, :] < (rows + start)[:, None]
            before = ((dist == own) & earlier).sum(axis=1)
            rank = closer + before + 1
            for k in ks:
                found[k] += float((rank <= k).sum())
        else:
            for k in ks:
                found[k] += float(np.clip((k - closer) / (tied + 1), 0.0, 1.0).sum())
    return {k: found[k] / max(n_q, 1) for k in ks}


def pr_curve_by_radius(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of Hamming-radius retrieval, pooled over all query-db pairs.

    Codes are ``(n, bits)`` ±1 (or :class:`PackedCodes`), labels ``(n, C)`` multi-hot.
    Returns ``(radii, precision, recall)``, each of length ``bits + 1``: ``radii`` is the
    int array ``0..bits``; at radius ``r`` the retrieved pairs are those with Hamming
    distance <= ``r``; precision = relevant retrieved / retrieved (0 when nothing is
    retrieved) and recall = relevant retrieved / all relevant pairs (0 when there are none).
    """
    q, db_t, ql, dl_t, chunk, bits = _validate(query_codes, db_codes, query_labels, db_labels, chunk_size)
    retrieved = np.zeros(bits + 1, dtype=np.int64)
    good = np.zeros(bits + 1, dtype=np.int64)
    for total, relevant, _, _ in _scan_chunks(q, db_t, ql, dl_t, bits, chunk, db_t.shape[1], False):
        retrieved += total.sum(axis=0)
        good += relevant.sum(axis=0)
    retrieved = np.cumsum(retrieved).astype(np.float64)
    good = np.cumsum(good).astype(np.float64)
    total_good = good[-1]
    precision = np.divide(good, retrieved, out=np.zeros_like(good), where=retrieved > 0)
    recall = good / total_good if total_good > 0 else np.zeros_like(good)
    return np.arange(bits + 1), precision, recall
