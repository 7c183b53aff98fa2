"""The Wikipedia cross-modal dataset (Rasiwasia et al., 2010) as precomputed features.

2,866 image-text pairs, 10 classes (one label each), fixed split 2,173 train / 693 test. Two
distributions are read, chosen by ``variant``:

* ``"data"`` (default): ``wiki_data.mat`` (v7.3 / HDF5): ``I_tr``/``I_te`` 128-d SIFT
  bag-of-visual-words histograms, ``T_tr``/``T_te`` 10-d LDA topic proportions,
  ``L_tr``/``L_te`` one-hot labels. h5py shows them feature-major, e.g. ``I_tr`` (128, 2173):
  that is MATLAB's (2173, 128) stored column-major, and :func:`adah.data.dcmh.read_mat` reverses
  it; every part is then checked against the row count of its labels.
* ``"roph"``: ``wiki_roph.mat`` (v5 struct ``data``): ``X1`` (128, 2866) image and ``X2``
  (100, 2866) text features (centred by the RoPH authors, so not nonnegative), ``Y`` (10, 2866)
  sparse labels, ``split.ind_train`` / ``split.ind_test`` 1-based. These are feature-major in
  MATLAB itself and are transposed here, deliberately, and checked the same way.

Rows come out training pairs first (2,173), then test pairs (693): the protocol split in
:mod:`adah.data.registry` relies on that order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adah.data.base import CrossModalData
from adah.data.dcmh import (
    HDF5_ORDERS,
    MODALITIES,
    ON_EMPTY,
    to_dense,
    check_matrix,
    check_values,
    is_hdf5,
    load_v5,
    mat_variables,
    read_mat,
    require_file,
)
from adah.errors import AdahError

WIKI_NUM_TRAIN = 2173
WIKI_NUM_TEST = 693
WIKI_IMAGE_DIM = 128
#: The 10 categories in the column order of the label matrices (the order of the original release).
WIKI_CLASSES = (
    "art & architecture", "biology", "geography & places", "history", "literature & theatre",
    "media", "music", "royalty & nobility", "sport & recreation", "warfare",
)
WIKI_VARIANTS = {"data": ("wiki_data.mat", 10), "roph": ("wiki_roph.mat", 100)}


def read_wiki(
    folder: str | Path,
    *,
    variant: str = "data",
    modalities: str = "both",
    file: str | None = None,
    hdf5_order: str = "matlab",
    check_sizes: bool = True,
    on_empty: str = "error",
) -> CrossModalData:
    """Wiki features from ``folder`` (``<root>/wiki``): images (N, 128) float32, texts (N, 10)
    (``variant="data"``) or (N, 100) (``"roph"``) float32, labels (N, 10) uint8; training rows
    first. ``file`` overrides the file name; ``check_sizes`` checks 2,173 / 693 rows and the
    dimensions above; ``modalities="text"`` leaves ``images`` None."""
    if variant not in WIKI_VARIANTS:
        raise AdahError(f"wiki: options.variant must be one of {sorted(WIKI_VARIANTS)}, got {variant!r}")
    if modalities not in MODALITIES:
        raise AdahError(f"wiki: options.modalities must be one of {MODALITIES}, got {modalities!r}")
    if hdf5_order not in HDF5_ORDERS:
        raise AdahError(f"wiki: options.hdf5_order must be one of {HDF5_ORDERS}, got {hdf5_order!r}")
    if on_empty not in ON_EMPTY:
        raise AdahError(f"wiki: options.on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    default_name, text_dim = WIKI_VARIANTS[variant]
    path = require_file(Path(folder) / (file or default_name), "wiki file")
    sizes = dict(text_dim=text_dim if check_sizes else None, check_sizes=check_sizes, on_empty=on_empty)
    if variant == "data":
        images, texts, labels = _read_data(path, hdf5_order, **sizes)
    else:
        images, texts, labels = _read_roph(path, **sizes)
    return CrossModalData(
        images if modalities == "both" else None, texts, labels, label_names=list(WIKI_CLASSES), name="wiki"
    )


def _labels(arr, path: Path, var: str, rows: int | None, check_sizes: bool) -> np.ndarray:
    labels = to_dense(arr, path, var)
    check_matrix(labels, path, var, "labels", rows=rows, cols=len(WIKI_CLASSES) if check_sizes else None)
    check_values(labels, path, var, "labels", binary=True)
    return labels.astype(np.uint8)


def _read_data(path: Path, hdf5_order: str, text_dim: int | None, check_sizes: bool, on_empty: str):
    parts = {}
    for part, expected in (("tr", WIKI_NUM_TRAIN), ("te", WIKI_NUM_TEST)):
        lvar = f"L_{part}"
        labels = _labels(read_mat(path, lvar, hdf5_order=hdf5_order), path, lvar,
                         expected if check_sizes else None, check_sizes)
        n = labels.shape[0]
        ivar, tvar = f"I_{part}", f"T_{part}"
        images = to_dense(read_mat(path, ivar, hdf5_order=hdf5_order), path, ivar)
        texts = to_dense(read_mat(path, tvar, hdf5_order=hdf5_order), path, tvar)
        hint = "set options.hdf5_order='row_major' if the file was written row-major" if is_hdf5(path) else ""
        check_matrix(images, path, ivar, "image features", rows=n, rows_from=f"'{lvar}'",
                     cols=WIKI_IMAGE_DIM if check_sizes else None, hint_transposed=hint)
        check_matrix(texts, path, tvar, "text features", rows=n, rows_from=f"'{lvar}'", cols=text_dim,
                     hint_transposed=hint)
        images, texts = images.astype(np.float32), texts.astype(np.float32)
        check_values(images, path, ivar, "image features", on_empty="warn")
        check_values(texts, path, tvar, "text features", on_empty=on_empty)
        parts[part] = (images, texts, labels)
    return tuple(np.concatenate([parts["tr"][i], parts["te"][i]]) for i in range(3))


def _read_roph(path: Path, text_dim: int | None, check_sizes: bool, on_empty: str):
    if is_hdf5(path):
        raise AdahError(f"{path}: expected the MATLAB v5 RoPH file (struct 'data'), found an HDF5 / v7.3 file")
    found = mat_variables(path)
    if "data" not in found:
        raise AdahError(f"{path}: no variable 'data'; variables found: {found}")
    data = load_v5(path, squeeze_me=True, struct_as_record=False, variable_names=["data"])["data"]
    fields = list(getattr(data, "_fieldnames", []))
    for name in ("X1", "X2", "Y", "split"):
        if name not in fields:
            raise AdahError(f"{path}: struct 'data' has no field '{name}'; fields found: {fields}")
    # feature-major in MATLAB itself: (D, N) -> (N, D), then checked against the labels' N
    labels = _labels(data.Y.T if hasattr(data.Y, "T") else data.Y, path, "data.Y (transposed)", None, check_sizes)
    n = labels.shape[0]
    images = to_dense(np.asarray(data.X1).T, path, "data.X1 (transposed)")
    texts = to_dense(np.asarray(data.X2).T, path, "data.X2 (transposed)")
    check_matrix(images, path, "data.X1 (transposed)", "image features", rows=n, rows_from="'data.Y'",
                 cols=WIKI_IMAGE_DIM if check_sizes else None)
    check_matrix(texts, path, "data.X2 (transposed)", "text features", rows=n, rows_from="'data.Y'", cols=text_dim)
    split = data.split
    sfields = list(getattr(split, "_fieldnames", []))
    if "ind_train" not in sfields or "ind_test" not in sfields:
        raise AdahError(f"{path}: 'data.split' needs fields 'ind_train' and 'ind_test'; fields found: {sfields}")
    tr = np.atleast_1d(np.asarray(split.ind_train)).astype(np.int64).ravel() - 1  # 1-based in MATLAB
    te = np.atleast_1d(np.asarray(split.ind_test)).astype(np.int64).ravel() - 1
    order = np.concatenate([tr, te])
    if check_sizes and (len(tr), len(te)) != (WIKI_NUM_TRAIN, WIKI_NUM_TEST):
        raise AdahError(f"{path}: 'data.split' has {len(tr)} train / {len(te)} test rows, expected "
                        f"{WIKI_NUM_TRAIN} / {WIKI_NUM_TEST}")
    if order.size != n or not np.array_equal(np.sort(order), np.arange(n)):
        raise AdahError(f"{path}: 'data.split' ind_train + ind_test must name each of the {n} rows (1-based) "
                        f"exactly once")
    images, texts = images.astype(np.float32)[order], texts.astype(np.float32)[order]
    check_values(images, path, "data.X1", "image features", on_empty="warn")
    check_values(texts, path, "data.X2", "text features", on_empty=on_empty)
    return images, texts, labels[order]
