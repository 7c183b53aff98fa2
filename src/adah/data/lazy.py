"""Image arrays read on demand: rows come off disk only when indexed.

A :class:`LazyImages` looks like a read-only (N, 3, H, W) uint8 array to the code that batches
data (``shape``, ``ndim``, ``dtype``, ``len``, ``images[rows]``), so a CrossModalData can hold
20,015 or 195,834 images without loading them. Two sources:

* :class:`H5Images`: a 4-D uint8 dataset in an HDF5 / MATLAB v7.3 file, in one of the
  layouts of :data:`H5_LAYOUTS` (MATLAB writes column-major, so h5py shows the axes reversed).
* :class:`FileImages` (in :mod:`adah.data.folder`): one image file a row, decoded with PIL.
* :class:`~adah.features.image_cache.FeatureCache`: cached backbone maps, (N, C, h, w) float32 rows read from a
  float16 memory-mapped file (a subclass with ``dtype`` float32).

Indexing with an int gives one (3, H, W) image; with a slice, a list, an integer or boolean
array it gives (k, 3, H, W) in the order asked for (duplicates allowed).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from adah.errors import AdahError

#: How the axes of a 4-D image dataset are laid out as h5py (or scipy) returns them, and the
#: transpose that brings one row to (3, H, W). N is the item axis.
#:
#: * ``NCWH``: h5py view of a MATLAB H x W x 3 x N array (the DCMH ``IAll`` / ``images``
#:   convention: MATLAB stacks H x W x 3 images along the 4th dimension). Height and width come
#:   out swapped, so each row is transposed back.
#: * ``WHCN``: h5py view of a MATLAB N x 3 x H x W array.
#: * ``NCHW``: already (N, 3, H, W), e.g. written from numpy with h5py.
#: * ``HWCN``: a MATLAB H x W x 3 x N array read by scipy (v5 files keep MATLAB's order).
#: * ``NHWC``: (N, H, W, 3), channels last.
H5_LAYOUTS = ("NCWH", "WHCN", "NCHW", "HWCN", "NHWC")

_ITEM_AXIS = {"NCWH": 0, "WHCN": 3, "NCHW": 0, "HWCN": 3, "NHWC": 0}
# per layout: the axes permutation taking (rows..., stored order) to (k, 3, H, W) after the item
# axis has been moved first
_TO_NCHW = {
    "NCWH": (0, 1, 3, 2),  # (k, C, W, H) -> (k, C, H, W)
    "WHCN": (0, 3, 2, 1),  # moved: (k, W, H, C) -> (k, C, H, W)
    "NCHW": (0, 1, 2, 3),
    "HWCN": (0, 3, 1, 2),  # moved: (k, H, W, C) -> (k, C, H, W)
    "NHWC": (0, 3, 1, 2),
}


def guess_layout(shape: tuple[int, ...], source: str, hdf5: bool) -> str:
    """The layout of a 4-D image array from where its 3 channels sit.

    HDF5 (MATLAB v7.3, column-major): channels at axis 1 -> ``NCWH`` (MATLAB H x W x 3 x N),
    at axis 2 -> ``WHCN`` (MATLAB N x 3 x H x W). v5 / numpy: axis 1 -> ``NCHW``, axis 2 ->
    ``HWCN``, axis 3 -> ``NHWC``. Ambiguous or impossible shapes raise AdahError; pass the layout
    explicitly then.
    """
    if len(shape) != 4:
        raise AdahError(f"{source}: expected a 4-D image array, found shape {tuple(shape)}")
    threes = [i for i, s in enumerate(shape) if s == 3]
    candidates = [1, 2] if hdf5 else [1, 2, 3]
    hits = [i for i in threes if i in candidates]
    if len(hits) != 1:
        raise AdahError(
            f"{source}: cannot tell the image layout from shape {tuple(shape)} (need exactly one axis of "
            f"size 3 at position {' or '.join(map(str, candidates))}); set options.image_layout to one of {H5_LAYOUTS}"
        )
    if hdf5:
        return {1: "NCWH", 2: "WHCN"}[hits[0]]
    return {1: "NCHW", 2: "HWCN", 3: "NHWC"}[hits[0]]


def layout_shape(shape: tuple[int, ...], layout: str, source: str) -> tuple[int, int, int, int]:
    """(N, 3, H, W) of a stored array in ``layout``; AdahError when its channel axis is not 3."""
    if layout not in H5_LAYOUTS:
        raise AdahError(f"{source}: unknown image layout {layout!r}; use one of {H5_LAYOUTS}")
    if len(shape) != 4:
        raise AdahError(f"{source}: expected a 4-D image array for layout {layout}, found shape {tuple(shape)}")
    item = _ITEM_AXIS[layout]
    moved = (shape[item], *(s for i, s in enumerate(shape) if i != item))
    row = tuple(moved[p] for p in _TO_NCHW[layout][1:])
    if row[0] != 3:
        raise AdahError(
            f"{source}: layout {layout} puts the channels on an axis of size {row[0]} in shape {tuple(shape)}; "
            f"expected 3 (RGB)"
        )
    return (int(shape[item]), *map(int, row))


def to_nchw(block: np.ndarray, layout: str) -> np.ndarray:
    """Rows read in ``layout`` (item axis anywhere) -> (k, 3, H, W), C-contiguous."""
    block = np.moveaxis(block, _ITEM_AXIS[layout], 0)
    return np.ascontiguousarray(block.transpose(_TO_NCHW[layout]))


def normalize_index(key, n: int) -> tuple[np.ndarray, bool]:
    """Turn an index into int64 row numbers in [0, n); the flag says the key was a scalar."""
    if isinstance(key, (int, np.integer)):
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for {n} images")
        return np.array([i % n], dtype=np.int64), True
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key], False
    if isinstance(key, tuple):
        raise IndexError("lazy image arrays take one index (rows); index the returned array for more")
    arr = np.asarray(key)
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise IndexError(f"boolean index of shape {arr.shape} for {n} images")
        return np.flatnonzero(arr).astype(np.int64), False
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), False
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise IndexError(f"rows must be an int, a slice or a 1-D integer / boolean array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    if arr.min() < -n or arr.max() >= n:
        raise IndexError(f"row indices out of range for {n} images")
    return np.where(arr < 0, arr + n, arr), False


class LazyImages:
    """Base class: a read-only (N, 3, H, W) uint8 image array whose rows are read on demand.

    Subclasses set ``_shape`` and implement :meth:`_read` (sorted unique rows -> (k, 3, H, W))
    and :meth:`_identity` (bytes naming the source, without machine-specific absolute paths); a
    subclass holding other rows (cached feature maps) sets ``dtype`` and ``_shape`` to match.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4
    _shape: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape

    def __len__(self) -> int:
        return self._shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows, scalar = normalize_index(key, len(self))
        if rows.size == 0:
            return np.zeros((0, *self._shape[1:]), dtype=self.dtype)
        uniq, inverse = np.unique(rows, return_inverse=True)  # sorted: h5py needs increasing indices
        block = self._read(uniq)
        if block.shape != (len(uniq), *self._shape[1:]) or block.dtype != self.dtype:
            expected = (len(uniq), *self._shape[1:])
            raise AdahError(f"{self!r}: read {block.dtype} {block.shape}, expected {self.dtype} {expected}")
        out = block if len(uniq) == len(rows) and np.array_equal(uniq, rows) else block[inverse.reshape(-1)]
        return out[0] if scalar else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """All rows at once (loads everything: mind the memory for large sets)."""
        arr = self[np.arange(len(self))]
        return arr if dtype is None else arr.astype(dtype)

    def to_numpy(self) -> np.ndarray:
        return self.__array__()

    def content_digest(self, sample: int = 32) -> str:
        """sha256 over shape, source identity and ``sample`` evenly spaced rows (not all of them:
        the point is to identify the data in a run record without reading gigabytes)."""
        h = hashlib.sha256()
        h.update(str((self.shape, self.dtype.str)).encode())
        h.update(self._identity())
        n = len(self)
        if n:
            rows = np.unique(np.linspace(0, n - 1, num=min(sample, n)).round().astype(np.int64))
            h.update(np.ascontiguousarray(self[rows]).tobytes())
        return h.hexdigest()

    def _read(self, rows: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _identity(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


class H5Images(LazyImages):
    """A 4-D uint8 image dataset in an HDF5 file (MATLAB v7.3 ``.mat`` included), read lazily.

    path: the file; dataset: the variable name (e.g. ``IAll``); layout: one of
    :data:`H5_LAYOUTS` or ``"auto"`` (:func:`guess_layout` with ``hdf5=True``). The file is
    opened on first access in each process (safe to pickle into DataLoader workers) and read
    with sorted unique indices, then put back in the order asked for.
    """

    def __init__(self, path: str | os.PathLike, dataset: str, layout: str = "auto") -> None:
        import h5py

        self.path = Path(path)
        self.dataset = dataset
        source = f"{self.path}: variable '{dataset}'"
        try:
            with h5py.File(self.path, "r") as f:
                if dataset not in f:
                    found = sorted(k for k in f.keys() if not k.startswith("#"))
                    raise AdahError(f"{self.path}: no variable '{dataset}'; variables found: {found}")
                ds = f[dataset]
                if not isinstance(ds, h5py.Dataset):
                    raise AdahError(f"{source} is not an array (found an HDF5 {type(ds).__name__})")
                stored_shape, stored_dtype = tuple(ds.shape), ds.dtype
        except OSError as exc:
            raise AdahError(f"{self.path}: cannot read as HDF5 / MATLAB v7.3 ({exc})") from None
        if stored_dtype != np.uint8:
            raise AdahError(f"{source}: expected uint8 pixels, found {stored_dtype} with shape {stored_shape}")
        self.layout = guess_layout(stored_shape, source, hdf5=True) if layout == "auto" else layout
        self.stored_shape = stored_shape
        self._shape = layout_shape(stored_shape, self.layout, source)
        self._file = None
        self._pid = None

    def __repr__(self) -> str:
        return f"H5Images({str(self.path)!r}, {self.dataset!r}, layout={self.layout!r}, shape={self.shape})"

    def _ds(self):
        import h5py

        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.dataset]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        ds = self._ds()
        item = _ITEM_AXIS[self.layout]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        sel = slice(lo, hi) if hi - lo == len(rows) else rows  # a contiguous run reads as one slice
        index = [slice(None)] * 4
        index[item] = sel
        return to_nchw(ds[tuple(index)], self.layout)

    def _identity(self) -> bytes:
        return f"h5:{self.path.name}:{self.dataset}:{self.layout}:{self.stored_shape}".encode()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
