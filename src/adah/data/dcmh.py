"""MATLAB ``.mat`` reading and the DCMH-format datasets (MIRFlickr-25K, NUS-WIDE, IAPR TC-12).

The DCMH distribution (Jiang & Li, CVPR 2017) and the papers that follow its protocol ship each
dataset as three files: ``<prefix>-iall.mat`` (images, MATLAB v7.3 / HDF5, variable ``IAll``),
``<prefix>-yall.mat`` (bag-of-words, v5, ``YAll`` (N, V)) and ``<prefix>-lall.mat`` (labels, v5,
``LAll`` (N, C)); or as one merged file (``FLICKR-25K.mat`` with ``images``, ``YAll``, ``LAll``).
One reader, :func:`read_dcmh`, handles every dataset from a small :class:`DCMHSpec`.

Orientation is never guessed silently:

* v5 files (scipy) keep MATLAB's shapes, so ``YAll`` reads as (N, V).
* v7.3 files are HDF5 written column-major, so h5py shows every array with its axes reversed;
  :func:`read_mat` reverses them back (``hdf5_order="matlab"``, the default) and the reader then
  checks the result against the other arrays' row count and the expected sizes. A file written
  row-major from numpy (some re-packed ``FLICKR-25K.mat`` copies) needs
  ``hdf5_order="row_major"``; the error message says so when the other orientation would fit.
* Image arrays keep their own layout (:data:`adah.data.lazy.H5_LAYOUTS`): by default ``IAll``
  read by h5py as (N, 3, W, H) is the MATLAB H x W x 3 x N array of the DCMH files, and
  (W, H, 3, N) is a MATLAB N x 3 x H x W array; both come out as (N, 3, H, W).
"""

from __future__ import annotations

import contextlib

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adah.data.base import CrossModalData
from adah.data.lazy import H5_LAYOUTS, H5Images, guess_layout, layout_shape, to_nchw
from adah.errors import AdahError

HDF5_ORDERS = ("matlab", "row_major")
ON_EMPTY = ("error", "warn")
MODALITIES = ("both", "text")


# --------------------------------------------------------------------------- .mat files
def is_hdf5(path: str | Path) -> bool:
    """True for MATLAB v7.3 (HDF5) files, False for v4/v5 files scipy can read."""
    import h5py

    return bool(h5py.is_hdf5(str(path)))


@contextlib.contextmanager
def open_hdf5(path: Path):
    """``h5py.File(path, "r")``; a truncated or damaged file (an OSError from HDF5 when opening or
    reading) becomes an AdahError naming the file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            yield f
    except OSError as exc:
        raise AdahError(f"{path}: cannot read this MATLAB v7.3 / HDF5 file, it is truncated or damaged "
                        f"({exc}); copy or download it again") from None


def load_v5(path: Path, **kwargs) -> dict:
    """``scipy.io.loadmat``; any failure (a truncated file gives OSError) becomes an AdahError naming the file."""
    import scipy.io

    try:
        return scipy.io.loadmat(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - scipy raises many kinds on a bad file
        raise AdahError(f"{path}: cannot read this MATLAB v5 file, it is truncated or damaged ({exc}); copy or "
                        "download it again") from None


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise AdahError(f"{what} not found: {path}")
    return path


def mat_variables(path: str | Path) -> list[str]:
    """Names of the variables in a .mat file (v5 or v7.3)."""
    path = require_file(Path(path), "MATLAB file")
    if is_hdf5(path):
        with open_hdf5(path) as f:
            return sorted(k for k in f.keys() if not k.startswith("#"))
    import scipy.io

    try:
        return sorted(name for name, _, _ in scipy.io.whosmat(str(path)))
    except Exception as exc:  # noqa: BLE001 - scipy raises many kinds on a bad file
        raise AdahError(f"{path}: not a readable MATLAB file ({exc})") from None


def find_variable(path: Path, candidates: tuple[str, ...] | list[str], what: str) -> str:
    """The first of ``candidates`` present in the file; AdahError listing the variables found."""
    found = mat_variables(path)
    for name in candidates:
        if name in found:
            return name
    wanted = " or ".join(repr(c) for c in candidates)
    raise AdahError(f"{path}: no variable {wanted} for the {what}; variables found: {found}")


def read_mat(path: str | Path, var: str, *, hdf5_order: str = "matlab"):
    """One variable of a .mat file as MATLAB sees it: a numpy array or a scipy sparse matrix.

    v5: scipy.io.loadmat, shapes as in MATLAB. v7.3 (HDF5): h5py returns the axes reversed
    (column-major storage); with ``hdf5_order="matlab"`` they are reversed back, with
    ``"row_major"`` the array is returned as stored. MATLAB sparse matrices are rebuilt in both.
    """
    path = require_file(Path(path), "MATLAB file")
    if hdf5_order not in HDF5_ORDERS:
        raise AdahError(f"hdf5_order must be one of {HDF5_ORDERS}, got {hdf5_order!r}")
    if is_hdf5(path):
        import h5py

        with open_hdf5(path) as f:
            if var not in f:
                found = sorted(k for k in f.keys() if not k.startswith("#"))
                raise AdahError(f"{path}: no variable '{var}'; variables found: {found}")
            obj = f[var]
            if isinstance(obj, h5py.Group) and "MATLAB_sparse" in obj.attrs:
                import scipy.sparse

                nrows = int(obj.attrs["MATLAB_sparse"])
                jc = obj["jc"][()]
                data = obj["data"][()] if "data" in obj else np.ones(0)
                ir = obj["ir"][()] if "ir" in obj else np.zeros(0, np.int64)
                mat = scipy.sparse.csc_matrix((data, ir, jc), shape=(nrows, len(jc) - 1))
                return mat if hdf5_order == "matlab" else mat.T
            if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "biuf":
                raise AdahError(f"{path}: variable '{var}' is not a numeric array (found {obj!r})")
            arr = obj[()]
        return arr.T if hdf5_order == "matlab" else arr
    found = mat_variables(path)
    if var not in found:
        raise AdahError(f"{path}: no variable '{var}'; variables found: {found}")
    return load_v5(path, variable_names=[var])[var]


def to_dense(arr, path: Path, var: str) -> np.ndarray:
    import scipy.sparse

    if scipy.sparse.issparse(arr):
        arr = arr.toarray()
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise AdahError(f"{path}: variable '{var}' must be a numeric matrix, found dtype {arr.dtype}")
    return arr


def check_matrix(
    arr: np.ndarray,
    path: Path,
    var: str,
    what: str,
    *,
    rows: int | None = None,
    cols: int | None = None,
    rows_from: str = "",
    hint_transposed: str = "",
) -> None:
    """AdahError naming file, variable, expected and found shape when ``arr`` is not (rows, cols)."""
    exp = f"({rows if rows is not None else 'N'}, {cols if cols is not None else 'D'})"
    if arr.ndim != 2 or (rows is not None and arr.shape[0] != rows) or (cols is not None and arr.shape[1] != cols):
        msg = f"{path}: variable '{var}' ({what}): expected shape {exp}, found {tuple(arr.shape)}"
        if rows is not None and rows_from:
            msg += f" (N from {rows_from})"
        if (
            arr.ndim == 2
            and hint_transposed
            and (rows is None or arr.shape[1] == rows)
            and (cols is None or arr.shape[0] == cols)
        ):
            msg += f"; the transposed array would fit: {hint_transposed}"
        raise AdahError(msg)


def check_values(
    arr: np.ndarray, path: Path, var: str, what: str, on_empty: str = "error", binary: bool = False
) -> None:
    """NaN / infinite values, 0/1 labels, and all-zero rows (error or warning by ``on_empty``)."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise AdahError(f"{path}: variable '{var}' ({what}) contains NaN or infinite values in {len(bad)} rows, "
                        f"first rows {bad[:5].tolist()}")
    if binary and not np.isin(arr, (0, 1)).all():
        found = np.unique(arr[~np.isin(arr, (0, 1))])[:5].tolist()
        raise AdahError(f"{path}: variable '{var}' ({what}) must hold only 0 and 1; found also {found}")
    empty = np.flatnonzero(~arr.any(axis=1))
    if empty.size:
        kind = "no positive label" if binary else "all-zero rows"
        msg = (f"{path}: variable '{var}' ({what}): {empty.size} rows with {kind}, first rows (0-based) "
               f"{empty[:5].tolist()}")
        if on_empty == "error":
            raise AdahError(msg + "; set options.on_empty='warn' to keep them")
        warnings.warn(msg + "; kept (options.on_empty='warn')", stacklevel=3)


# --------------------------------------------------------------------------- DCMH datasets
@dataclass(frozen=True)
class DCMHSpec:
    """Where a DCMH-format dataset lives and what it must look like.

    folders: sub-folders of the data root searched in order (the root itself last); the
    ``*_file`` names are relative to that folder; ``*_vars``: accepted variable names, first
    found wins (a user-given name replaces them). ``num_items`` / ``text_dim`` /
    ``num_labels``: expected sizes, checked unless ``check_sizes=False``.
    """

    name: str
    folders: tuple[str, ...]
    image_file: str
    text_file: str
    label_file: str
    merged_file: str
    num_items: int | None
    text_dim: int | None
    num_labels: int | None
    image_vars: tuple[str, ...] = ("IAll",)
    text_vars: tuple[str, ...] = ("YAll",)
    label_vars: tuple[str, ...] = ("LAll",)
    merged_image_vars: tuple[str, ...] = ("images", "IAll")
    merged_text_vars: tuple[str, ...] = ("YAll", "tags", "texts")
    merged_label_vars: tuple[str, ...] = ("LAll", "labels")


#: The DCMH distributions. File names follow the DCMH release (``mirflickr25k-*all.mat``,
#: ``nus-wide-tc21-*all.mat``); for IAPR TC-12 the same pattern (``iapr-tc12-*all.mat``) is
#: assumed, and the merged ``IAPR-TC12.mat`` (IAll / YAll / LAll) of DADH is accepted too.
DCMH_SPECS: dict[str, DCMHSpec] = {
    "mirflickr25k": DCMHSpec(
        name="mirflickr25k",
        folders=("mirflickr25k", "mirflickr", "MIRFLICKR25K", "FLICKR-25K"),
        image_file="mirflickr25k-iall.mat",
        text_file="mirflickr25k-yall.mat",
        label_file="mirflickr25k-lall.mat",
        merged_file="FLICKR-25K.mat",
        num_items=20015,
        text_dim=1386,
        num_labels=24,
    ),
    "nuswide": DCMHSpec(
        name="nuswide",
        folders=("nuswide", "nus-wide", "NUS-WIDE", "NUS-WIDE-TC21", "nus-wide-tc21"),
        image_file="nus-wide-tc21-iall.mat",
        text_file="nus-wide-tc21-yall.mat",
        label_file="nus-wide-tc21-lall.mat",
        merged_file="NUS-WIDE-TC21.mat",
        num_items=195834,
        text_dim=1000,
        num_labels=21,
    ),
    "iapr": DCMHSpec(
        name="iapr",
        folders=("iapr", "iapr-tc12", "IAPR-TC12", "iapr_tc12"),
        image_file="iapr-tc12-iall.mat",
        text_file="iapr-tc12-yall.mat",
        label_file="iapr-tc12-lall.mat",
        merged_file="IAPR-TC12.mat",
        num_items=20000,
        text_dim=2912,
        num_labels=255,
    ),
}


def find_dataset_folder(spec: DCMHSpec, root: Path, merged_file: str | None = None) -> Path:
    """The first of ``root/<folder>`` (then ``root`` itself) holding the spec's text, label or
    merged file; AdahError naming every place and file tried."""
    names = (spec.text_file, spec.label_file, merged_file or spec.merged_file)
    places = [root / f for f in spec.folders] + [root]
    for place in places:
        if any((place / n).is_file() for n in names):
            return place
    raise AdahError(
        f"{spec.name}: no data files found; looked for {', '.join(names)} in "
        + ", ".join(str(p) for p in places)
    )


def read_dcmh(
    spec: DCMHSpec,
    folder: str | Path,
    *,
    modalities: str = "both",
    layout: str = "auto",
    image_file: str | None = None,
    text_file: str | None = None,
    label_file: str | None = None,
    merged_file: str | None = None,
    image_var: str | None = None,
    text_var: str | None = None,
    label_var: str | None = None,
    image_layout: str = "auto",
    hdf5_order: str = "matlab",
    lazy: bool = True,
    check_sizes: bool = True,
    on_empty: str = "error",
) -> CrossModalData:
    """Read a DCMH-format dataset from ``folder``.

    modalities: ``"both"`` (images needed) or ``"text"`` (texts and labels only; ``images`` is
    None and no image file is opened). layout: ``"separate"`` (``*-iall/-yall/-lall.mat``),
    ``"merged"`` (one file) or ``"auto"`` (separate when its text or label file exists).
    ``*_file`` / ``*_var`` override the spec's names. image_layout: ``"auto"`` or one of
    :data:`~adah.data.lazy.H5_LAYOUTS`. hdf5_order: ``"matlab"`` (column-major, reverse h5py's
    axes) or ``"row_major"``. lazy: HDF5 images as :class:`~adah.data.lazy.H5Images` (read
    per batch) instead of loaded at once (v5 images always load at once). A 2-D image variable
    is read as (N, D) feature vectors. on_empty: all-zero BoW rows and label rows with no
    positive raise (``"error"``) or warn and stay (``"warn"``).
    """
    folder = Path(folder)
    if modalities not in MODALITIES:
        raise AdahError(f"{spec.name}: options.modalities must be one of {MODALITIES}, got {modalities!r}")
    if layout not in ("auto", "separate", "merged"):
        raise AdahError(f"{spec.name}: options.layout must be 'auto', 'separate' or 'merged', got {layout!r}")
    if image_layout != "auto" and image_layout not in H5_LAYOUTS:
        raise AdahError(
            f"{spec.name}: options.image_layout must be 'auto' or one of {H5_LAYOUTS}, got {image_layout!r}"
        )
    if hdf5_order not in HDF5_ORDERS:
        raise AdahError(f"{spec.name}: options.hdf5_order must be one of {HDF5_ORDERS}, got {hdf5_order!r}")
    if on_empty not in ON_EMPTY:
        raise AdahError(f"{spec.name}: options.on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    text_path = folder / (text_file or spec.text_file)
    label_path = folder / (label_file or spec.label_file)
    merged_path = folder / (merged_file or spec.merged_file)
    if layout == "auto":
        if text_path.is_file() or label_path.is_file():
            layout = "separate"
        elif merged_path.is_file():
            layout = "merged"
        else:
            raise AdahError(
                f"{spec.name}: no data files in {folder}: looked for {text_path.name} and {label_path.name} "
                f"(separate DCMH files) or {merged_path.name} (merged)"
            )
    if layout == "merged":
        text_path = label_path = image_path = merged_path
        text_vars, label_vars, image_vars = spec.merged_text_vars, spec.merged_label_vars, spec.merged_image_vars
    else:
        image_path = folder / (image_file or spec.image_file)
        text_vars, label_vars, image_vars = spec.text_vars, spec.label_vars, spec.image_vars
    require_file(label_path, f"{spec.name} label file")
    require_file(text_path, f"{spec.name} text file")
    if modalities == "both" and not image_path.is_file():  # before reading anything large
        raise AdahError(
            f"{spec.name} image file not found: {image_path}; set options.modalities='text' to load "
            "the texts and labels only"
        )
    hint = "set options.hdf5_order='row_major' if the file was written row-major (e.g. from numpy with h5py)"

    def orient_hint(path: Path) -> str:
        return hint if is_hdf5(path) and hdf5_order == "matlab" else ""

    # labels first: they fix N
    lvar = label_var or find_variable(label_path, label_vars, "labels")
    labels = to_dense(read_mat(label_path, lvar, hdf5_order=hdf5_order), label_path, lvar)
    check_matrix(
        labels, label_path, lvar, "labels",
        rows=spec.num_items if check_sizes else None,
        cols=spec.num_labels if check_sizes else None,
        hint_transposed=orient_hint(label_path),
    )
    n = labels.shape[0]
    check_values(labels, label_path, lvar, "labels", on_empty=on_empty, binary=True)
    labels = labels.astype(np.uint8)

    tvar = text_var or find_variable(text_path, text_vars, "bag-of-words texts")
    texts = to_dense(read_mat(text_path, tvar, hdf5_order=hdf5_order), text_path, tvar)
    check_matrix(
        texts, text_path, tvar, "bag-of-words texts",
        rows=n, cols=spec.text_dim if check_sizes else None,
        rows_from=f"'{lvar}' in {label_path.name}", hint_transposed=orient_hint(text_path),
    )
    texts = texts.astype(np.float32)
    check_values(texts, text_path, tvar, "bag-of-words texts", on_empty=on_empty)

    images = None
    if modalities == "both":
        images = read_images(
            image_path, image_var or find_variable(image_path, image_vars, "images"), n=n,
            rows_from=f"'{lvar}' in {label_path.name}", image_layout=image_layout, hdf5_order=hdf5_order, lazy=lazy,
        )
    return CrossModalData(images, texts, labels, name=spec.name)


def read_images(
    path: Path,
    var: str,
    *,
    n: int,
    rows_from: str = "",
    image_layout: str = "auto",
    hdf5_order: str = "matlab",
    lazy: bool = True,
):
    """A 4-D pixel variable as (N, 3, H, W) uint8 (lazy for HDF5 when ``lazy``), or a 2-D one as
    (N, D) float32 features; its item count must be ``n``."""
    src = f"{path}: variable '{var}'"
    if is_hdf5(path):
        with open_hdf5(path) as f:
            if var not in f:
                raise AdahError(f"{path}: no variable '{var}'; variables found: {sorted(f.keys())}")
            ndim = getattr(f[var], "ndim", 0)
        if ndim == 4:
            imgs = H5Images(path, var, layout=image_layout)
            if len(imgs) != n:
                raise AdahError(
                    f"{src} (images): stored shape {imgs.stored_shape} read as layout {imgs.layout} gives "
                    f"{imgs.shape}, expected ({n}, 3, H, W) (N from {rows_from or 'the labels'}); "
                    f"set options.image_layout (one of {H5_LAYOUTS}) if the layout is different"
                )
            return imgs if lazy else imgs.to_numpy()
    arr = read_mat(path, var, hdf5_order=hdf5_order)
    if getattr(arr, "ndim", 0) == 2:
        feats = to_dense(arr, path, var)
        check_matrix(feats, path, var, "image features", rows=n, rows_from=rows_from)
        feats = feats.astype(np.float32)
        check_values(feats, path, var, "image features", on_empty="warn")
        return feats
    arr = np.asarray(arr)
    if arr.ndim != 4:
        raise AdahError(f"{src} (images): expected a 4-D pixel array or (N, D) features, found shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise AdahError(f"{src} (images): expected uint8 pixels, found {arr.dtype} with shape {arr.shape}")
    lay = guess_layout(arr.shape, src, hdf5=False) if image_layout == "auto" else image_layout
    shape = layout_shape(arr.shape, lay, src)
    if shape[0] != n:
        raise AdahError(
            f"{src} (images): shape {arr.shape} read as layout {lay} gives {shape}, expected ({n}, 3, H, W)"
        )
    return to_nchw(arr, lay)
