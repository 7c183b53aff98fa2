"""Hamming top-k search over bit-packed codes: faiss ``IndexBinaryFlat`` (exact), a pure numpy
fallback with identical results, and faiss ``IndexBinaryMultiHash`` (sublinear, approximate).

Codes are packed as :func:`numpy.packbits` does it: ``(n, ceil(bits / 8))`` uint8, bit 1 for
+1, big bit order, zero padding in the last byte (so padding never adds distance). Results are
in the canonical order: ascending Hamming distance, ties by ascending database row. faiss'
binary flat search gives exactly that order (its heaps break ties on the id, and it scans rows
in order; checked by ``tests/test_index_backends.py`` with heavy ties), and the numpy fallback
sorts on the unique key ``distance * n + row``, so both return the same arrays.

Every backend validates its input before calling faiss: faiss checks shapes with bare
``assert`` (gone under ``python -O``), and a wrong array must never give wrong results.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from adah.errors import AdahError
from adah.utils.registry import Registry

BACKENDS = ("auto", "faiss", "numpy", "multihash", "milvus")  # milvus: adah.index.milvus
_NUMPY_CHUNK_PAIRS = 1 << 24  # query x row pairs per numpy distance block (~128 MiB of int64)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def code_bytes(bits: int) -> int:
    return -(-int(bits) // 8)


def check_bits(bits) -> int:
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, Integral) or not 1 <= int(bits) <= 4096:
        raise AdahError(f"bits must be an integer in [1, 4096], got {bits!r}")
    return int(bits)


def check_packed(codes, bits: int, what: str = "codes") -> np.ndarray:
    """``codes`` as a C-contiguous (n, ceil(bits/8)) uint8 array with zero padding bits, or
    AdahError naming what was expected and found."""
    arr = np.asarray(codes)
    nbytes = code_bytes(bits)
    if arr.dtype != np.uint8:
        raise AdahError(f"{what}: packed codes must be uint8 (np.packbits output), found {arr.dtype}")
    if arr.ndim == 1 and arr.shape[0] == nbytes:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != nbytes:
        raise AdahError(f"{what}: packed {bits}-bit codes must have shape (n, {nbytes}), found {arr.shape}")
    pad = nbytes * 8 - bits
    if pad and arr.shape[0] and np.any(arr[:, -1] & np.uint8((1 << pad) - 1)):
        raise AdahError(f"{what}: the {pad} padding bits after bit {bits} must be zero")
    return np.ascontiguousarray(arr)


def pack_pm1(codes, bits: int | None = None, what: str = "codes") -> np.ndarray:
    """(n, bits) codes in {-1, +1} (or {0, 1}, or bool; array or tensor) -> packed uint8."""
    if hasattr(codes, "detach"):
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise AdahError(f"{what}: expected (n, bits) codes, found shape {arr.shape}")
    if bits is not None and arr.shape[1] != bits:
        raise AdahError(f"{what}: expected {bits} bits per code, found {arr.shape[1]}")
    if arr.dtype == np.bool_:
        return np.packbits(arr, axis=1)
    if not np.issubdtype(arr.dtype, np.number):
        raise AdahError(f"{what}: codes must be numeric -1/+1 values, found dtype {arr.dtype}")
    if np.all((arr == 1) | (arr == -1)):
        return np.packbits(arr > 0, axis=1)
    if np.all((arr == 0) | (arr == 1)):
        return np.packbits(arr > 0, axis=1)
    raise AdahError(f"{what}: codes must hold only -1/+1 (or 0/1) values")


def check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, Integral) or int(k) < 1:
        raise AdahError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _words(packed: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n, ceil(nbytes/8)) uint64, zero padded (popcount per word)."""
    n, nbytes = packed.shape
    width = -(-nbytes // 8) * 8
    if width == nbytes:
        return np.ascontiguousarray(packed).view(np.uint64)
    out = np.zeros((n, width), dtype=np.uint8)
    out[:, :nbytes] = packed
    return out.view(np.uint64)


def hamming_distances(queries: np.ndarray, db: np.ndarray) -> np.ndarray:
    """(m, n) int64 Hamming distances between packed codes (numpy; the reference)."""
    q, d = _words(queries), _words(db)
    out = np.zeros((q.shape[0], d.shape[0]), dtype=np.int64)
    for w in range(q.shape[1]):
        out += np.bitwise_count(q[:, w, None] ^ d[None, :, w])
    return out


def numpy_knn(queries: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (distance, row) per query in canonical order; ``k`` is at most ``len(db)``.

    Processed in query chunks so memory stays at about ``_NUMPY_CHUNK_PAIRS`` distances."""
    m, n = queries.shape[0], db.shape[0]
    k = min(k, n)
    dist_out = np.empty((m, k), dtype=np.int32)
    rows_out = np.empty((m, k), dtype=np.int64)
    if m == 0 or k == 0:
        return dist_out, rows_out
    dbw = _words(db)
    qw = _words(queries)
    row_ids = np.arange(n, dtype=np.int64)
    step = max(1, _NUMPY_CHUNK_PAIRS // max(n, 1))
    for start in range(0, m, step):
        stop = min(m, start + step)
        dist = np.zeros((stop - start, n), dtype=np.int64)
        for w in range(dbw.shape[1]):
            dist += np.bitwise_count(qw[start:stop, w, None] ^ dbw[None, :, w])
        key = dist * n + row_ids  # unique per row: sorting it sorts by (distance, row)
        if k < n:
            part = np.argpartition(key, k - 1, axis=1)[:, :k]
            order = np.argsort(np.take_along_axis(key, part, 1), axis=1)
            top = np.take_along_axis(part, order, 1)
        else:
            top = np.argsort(key, axis=1)
        rows_out[start:stop] = top
        dist_out[start:stop] = np.take_along_axis(dist, top, 1)
    return dist_out, rows_out


class HammingBackend:
    """One set of packed codes and a way to search them. ``search(queries, k)`` takes packed
    (m, nbytes) uint8 queries and returns ``(distances (m, k') int32, rows (m, k') int64)``
    with ``k' = min(k, n)``; approximate backends mark missing results with row -1."""

    name = "base"
    exact = True
    options: tuple[str, ...] = ()
    needs_faiss = False

    def __init__(self, packed: np.ndarray, bits: int) -> None:
        self.bits = check_bits(bits)
        self.codes = check_packed(packed, self.bits, "database codes")

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


#: Search engines over packed codes, by ``--backend`` name; an engine is a HammingBackend subclass
#: (``options``: the keyword options it takes; ``needs_faiss``). ``auto`` and ``milvus`` are not
#: engines here: ``auto`` picks faiss or numpy, Milvus searches codes stored in its own server.
ENGINES: Registry[type] = Registry("search engine", key="backend")


@ENGINES.register("numpy")
class NumpyBackend(HammingBackend):
    """Exact search in numpy (XOR + popcount + partial sort); no faiss needed."""

    name = "numpy"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return numpy_knn(queries, self.codes, k)


def _faiss_threads(faiss, num_queries: int) -> None:
    """One OpenMP thread for small query batches, all of them for large ones.

    faiss' binary flat search splits work over queries, so a batch of a few queries gains
    nothing from threads, and it loses a lot after any torch call: torch and faiss each bring
    their own OpenMP runtime, torch's threads keep spinning after its parallel regions, and a
    multi-threaded faiss call then waits on them (measured: 0.1 ms -> 70 ms for one query over
    3,000 codes on 2 cores). ``omp_set_num_threads`` applies to the calling thread only, so
    concurrent searches from a server's worker threads do not affect each other."""
    threads = _FAISS_MAX_THREADS[0] if _FAISS_MAX_THREADS else faiss.omp_get_max_threads()
    if not _FAISS_MAX_THREADS:
        _FAISS_MAX_THREADS.append(threads)
    faiss.omp_set_num_threads(threads if num_queries >= _FAISS_PARALLEL_MIN_QUERIES * threads else 1)


_FAISS_MAX_THREADS: list[int] = []
_FAISS_PARALLEL_MIN_QUERIES = 8  # per thread


class _FaissBackend(HammingBackend):
    needs_faiss = True

    """A faiss binary index in ``self.index``; searches with a thread count fit for the batch."""

    index: object

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if k == 0 or len(queries) == 0:
            return np.empty((len(queries), k), np.int32), np.empty((len(queries), k), np.int64)
        _faiss_threads(self._faiss, len(queries))
        return self.index.search(queries, k)


@ENGINES.register("faiss")
class FaissFlatBackend(_FaissBackend):
    """Exact search with faiss ``IndexBinaryFlat`` (codes padded to whole bytes)."""

    name = "faiss"

    def __init__(self, packed: np.ndarray, bits: int) -> None:
        import faiss

        super().__init__(packed, bits)
        self._faiss = faiss
        self.index = faiss.IndexBinaryFlat(self.codes.shape[1] * 8)
        if len(self.codes):
            self.index.add(self.codes)


@ENGINES.register("multihash")
class MultiHashBackend(_FaissBackend):
    """faiss ``IndexBinaryMultiHash``: the code is cut into ``nhash`` substrings of ``b`` bits,
    each a hash table; a query looks up its substrings with up to ``nflip`` bits flipped and
    ranks the candidates found by their exact full distance. Sublinear but approximate: rows
    outside every probed bucket are missed (row -1 when fewer than k are found). Measure its
    recall against the exact backends (``recall_at_k``) before relying on it."""

    name = "multihash"
    exact = False
    options = ("nhash", "b", "nflip")

    def __init__(self, packed: np.ndarray, bits: int, *, nhash: int | None = None, b: int | None = None,
                 nflip: int = 1) -> None:
        import faiss

        super().__init__(packed, bits)
        d = self.codes.shape[1] * 8
        b = int(b) if b is not None else min(24, max(8, d // 4))
        nhash = int(nhash) if nhash is not None else max(1, d // b)
        if not 1 <= b <= 63 or nhash < 1 or nhash * b > d:
            raise AdahError(f"multihash needs nhash * b <= {d} code bits with 1 <= b <= 63, got nhash={nhash}, b={b}")
        if not isinstance(nflip, Integral) or not 0 <= int(nflip) <= b:
            raise AdahError(f"multihash nflip must be an integer in [0, {b}], got {nflip!r}")
        self.nhash, self.b, self.nflip = nhash, b, int(nflip)
        self._faiss = faiss
        self.index = faiss.IndexBinaryMultiHash(d, nhash, b)
        self.index.nflip = self.nflip
        if len(self.codes):
            self.index.add(self.codes)


def make_backend(packed: np.ndarray, bits: int, backend: str = "auto", **options) -> HammingBackend:
    """``auto``: faiss when it imports, else numpy (both exact and identical); else an engine of
    :data:`ENGINES`: ``faiss``, ``numpy``, ``multihash`` (approximate; options nhash, b, nflip)."""
    if backend == "milvus":
        raise AdahError("backend 'milvus' searches codes stored in Milvus: build the index with `adah index build "
                        "--backend milvus --uri ...` and open it with Index.load")
    if backend == "auto":
        backend = "faiss" if faiss_available() else "numpy"
    if backend not in ENGINES:
        raise AdahError(f"unknown search backend {backend!r}; choose one of {', '.join(('auto', *ENGINES, 'milvus'))}")
    engine = ENGINES.get(backend)
    unknown = sorted(set(options) - set(engine.options))
    if unknown:
        raise AdahError(f"backend {backend!r} takes no options {unknown}" if not engine.options else
                        f"backend {backend!r} takes the options {list(engine.options)}, not {unknown}")
    if engine.needs_faiss and not faiss_available():
        raise AdahError(f"backend {backend!r} needs faiss (pip install faiss-cpu); use backend 'numpy'")
    return engine(packed, bits, **options)


def recall_at_k(exact_rows: np.ndarray, approx_rows: np.ndarray, exact_dist: np.ndarray | None = None,
                approx_dist: np.ndarray | None = None) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k. With distances given, a row counts
    as found when its distance is within the exact k-th distance (ties at the boundary make
    the exact top-k set one arbitrary choice among equals)."""
    exact_rows, approx_rows = np.asarray(exact_rows), np.asarray(approx_rows)
    if exact_rows.shape != approx_rows.shape:
        raise AdahError(f"recall_at_k: shapes differ, {exact_rows.shape} vs {approx_rows.shape}")
    m, k = exact_rows.shape
    if m == 0 or k == 0:
        return float("nan")
    if exact_dist is not None and approx_dist is not None:
        kth = np.asarray(exact_dist)[:, -1:]
        hits = (np.asarray(approx_rows) >= 0) & (np.asarray(approx_dist) <= kth)
        return float(hits.sum() / (m * k))
    found = sum(len(np.intersect1d(e, a[a >= 0])) for e, a in zip(exact_rows, approx_rows))
    return float(found / (m * k))
