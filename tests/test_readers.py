"""Readers of real datasets (adah.data.dcmh, adah.data.wiki, adah.data.lazy) and the protocol
splits of adah.data.registry, on small generated .mat files of every layout and, when
../shared/data is there, on the real MIRFlickr-25K text/labels and Wikipedia files."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from adah.config import DataConfig
from adah.data.base import CrossModalData, Split
from adah.data.dcmh import DCMH_SPECS, DCMHSpec, mat_variables, read_dcmh, read_mat
from adah.data.lazy import H5Images
from adah.data.registry import PROTOCOLS, make_split, resolve_data_root
from adah.features.dataset import load_dataset
from adah.data.wiki import WIKI_CLASSES, read_wiki
from adah.errors import AdahError

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
N, V, C, H, W = 12, 7, 3, 6, 8  # H != W so a height/width swap cannot pass unnoticed
TINY = DCMHSpec(
    name="tiny", folders=("tiny",), image_file="tiny-iall.mat", text_file="tiny-yall.mat",
    label_file="tiny-lall.mat", merged_file="TINY.mat", num_items=N, text_dim=V, num_labels=C,
)


# --------------------------------------------------------------------------- file writers
def write_v73(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A MATLAB v7.3-like file: HDF5 behind a 512-byte MATLAB header, arrays stored as given
    (callers pass MATLAB arrays already reversed, as MATLAB's column-major writer leaves them)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            ds = f.create_dataset(name, data=arr)
            ds.attrs["MATLAB_class"] = np.bytes_({"u": "uint8", "f": "double"}.get(arr.dtype.kind, "double"))
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by adah tests. HDF5 schema 1.00 .".ljust(116))
    return path


def arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, 3, H, W), dtype=np.uint8)  # (N, 3, H, W)
    texts = (rng.random((N, V)) < 0.4).astype(np.uint8)
    texts[np.arange(N), rng.integers(0, V, N)] = 1  # every row has a tag
    labels = (rng.random((N, C)) < 0.4).astype(np.uint8)
    labels[np.arange(N), rng.integers(0, C, N)] = 1
    return images, texts, labels


def as_matlab_h5(images: np.ndarray, layout: str) -> np.ndarray:
    """What h5py shows for a v7.3 file holding these (N, 3, H, W) images."""
    if layout == "NCWH":  # MATLAB H x W x 3 x N (DCMH IAll)
        return np.ascontiguousarray(images.transpose(0, 1, 3, 2))
    if layout == "WHCN":  # MATLAB N x 3 x H x W
        return np.ascontiguousarray(images.transpose(3, 2, 1, 0))
    raise ValueError(layout)


def write_dcmh(folder: Path, *, image_layout="NCWH", images=True, y=None, lab=None, imgs=None) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    i, t, l = arrays()
    i = i if imgs is None else imgs
    t = t if y is None else y
    l = l if lab is None else lab
    scipy.io.savemat(folder / TINY.text_file, {"YAll": t})
    scipy.io.savemat(folder / TINY.label_file, {"LAll": l})
    if images:
        write_v73(folder / TINY.image_file, {"IAll": as_matlab_h5(i, image_layout)})
    return i, t, l


# --------------------------------------------------------------------------- .mat basics
def test_read_mat_v5_and_v73_give_the_matlab_shape(tmp_path):
    _, texts, _ = arrays()
    scipy.io.savemat(tmp_path / "v5.mat", {"YAll": texts})
    write_v73(tmp_path / "v73.mat", {"YAll": texts.T.copy()})  # column-major: h5py shows (V, N)
    assert h5py.File(tmp_path / "v73.mat", "r")["YAll"].shape == (V, N)
    for name in ("v5.mat", "v73.mat"):
        got = read_mat(tmp_path / name, "YAll")
        assert got.shape == (N, V) and np.array_equal(got, texts), name
        assert mat_variables(tmp_path / name) == ["YAll"]
    assert read_mat(tmp_path / "v73.mat", "YAll", hdf5_order="row_major").shape == (V, N)


def test_read_mat_v73_sparse(tmp_path):
    import scipy.sparse

    dense = np.array([[0, 1, 0], [2, 0, 0], [0, 0, 3], [0, 4, 0]], dtype=np.float64)  # MATLAB (4, 3)
    csc = scipy.sparse.csc_matrix(dense)
    with h5py.File(tmp_path / "s.mat", "w") as f:
        g = f.create_group("YAll")
        g.attrs["MATLAB_sparse"] = np.uint64(4)
        g.create_dataset("data", data=csc.data)
        g.create_dataset("ir", data=csc.indices.astype(np.uint64))
        g.create_dataset("jc", data=csc.indptr.astype(np.uint64))
    assert np.array_equal(read_mat(tmp_path / "s.mat", "YAll").toarray(), dense)


# --------------------------------------------------------------------------- DCMH reader
@pytest.mark.parametrize("image_layout", ["NCWH", "WHCN"])
def test_dcmh_separate_files_lazy_images(tmp_path, image_layout):
    images, texts, labels = write_dcmh(tmp_path, image_layout=image_layout)
    data = read_dcmh(TINY, tmp_path)
    assert isinstance(data.images, H5Images)
    assert data.images.layout == image_layout  # told apart by where the 3 channels sit
    assert data.images.shape == (N, 3, H, W) and data.images.ndim == 4 and data.images.dtype == np.uint8
    assert len(data) == len(data.images) == N
    assert data.texts.dtype == np.float32 and np.array_equal(data.texts, texts)
    assert data.labels.dtype == np.uint8 and np.array_equal(data.labels, labels)
    # lazy rows in the order asked for, equal to the eager array
    got = data.images[[5, 1, 3]]
    assert got.shape == (3, 3, H, W) and got.dtype == np.uint8
    assert np.array_equal(got, images[[5, 1, 3]])
    eager = read_dcmh(TINY, tmp_path, lazy=False)
    assert isinstance(eager.images, np.ndarray) and np.array_equal(eager.images, images)
    assert np.array_equal(np.asarray(data.images), images)


def test_lazy_images_indexing_and_pickling(tmp_path):
    images, _, _ = write_dcmh(tmp_path)
    lazy = H5Images(tmp_path / TINY.image_file, "IAll")
    assert np.array_equal(lazy[4], images[4])
    assert np.array_equal(lazy[-1], images[-1])
    assert np.array_equal(lazy[2:9:3], images[2:9:3])
    assert np.array_equal(lazy[np.array([7, 7, 0])], images[[7, 7, 0]])  # duplicates kept
    mask = np.zeros(N, bool)
    mask[[1, 10]] = True
    assert np.array_equal(lazy[mask], images[mask])
    assert lazy[np.array([], dtype=np.int64)].shape == (0, 3, H, W)
    with pytest.raises(IndexError):
        lazy[[N]]
    clone = pickle.loads(pickle.dumps(lazy))  # DataLoader workers reopen the file themselves
    assert np.array_equal(clone[[3, 2]], images[[3, 2]])
    # a CrossModalData holds it, and its fingerprint reads only a sample of rows
    data = CrossModalData(lazy, np.ones((N, V), np.float32), np.ones((N, C), np.uint8))
    assert data.fingerprint() == CrossModalData(clone, data.texts, data.labels).fingerprint()


def test_dcmh_v5_images_and_features(tmp_path):
    images, texts, labels = write_dcmh(tmp_path, images=False)
    # a v5 file keeps MATLAB's H x W x 3 x N
    scipy.io.savemat(tmp_path / TINY.image_file, {"IAll": images.transpose(2, 3, 1, 0)})
    data = read_dcmh(TINY, tmp_path)
    assert isinstance(data.images, np.ndarray) and np.array_equal(data.images, images)
    # a 2-D image variable is read as feature vectors
    feats = np.random.default_rng(1).random((N, 5))
    scipy.io.savemat(tmp_path / TINY.image_file, {"XAll": feats})
    data = read_dcmh(TINY, tmp_path, image_var="XAll")
    assert data.images.dtype == np.float32 and data.images.shape == (N, 5)


def test_dcmh_text_only_when_images_are_missing(tmp_path):
    _, texts, labels = write_dcmh(tmp_path, images=False)
    with pytest.raises(AdahError) as exc:
        read_dcmh(TINY, tmp_path)
    assert str(tmp_path / TINY.image_file) in str(exc.value) and "modalities='text'" in str(exc.value)
    data = read_dcmh(TINY, tmp_path, modalities="text")
    assert data.images is None and not data.has_images
    assert np.array_equal(data.texts, texts) and np.array_equal(data.labels, labels)
    assert len(data.fingerprint()) == 16


@pytest.mark.parametrize("row_major", [False, True])
def test_dcmh_merged_file(tmp_path, row_major):
    images, texts, labels = arrays()
    if row_major:  # re-packed from numpy: stored as (N, V), not column-major
        write_v73(tmp_path / "TINY.mat", {"images": as_matlab_h5(images, "NCWH"), "tags": texts, "LAll": labels})
    else:
        write_v73(tmp_path / "TINY.mat", {"images": as_matlab_h5(images, "NCWH"), "tags": texts.T.copy(),
                                          "LAll": labels.T.copy()})
    order = "row_major" if row_major else "matlab"
    data = read_dcmh(TINY, tmp_path, hdf5_order=order)  # 'tags' is one of the default names
    assert np.array_equal(data.texts, texts) and np.array_equal(data.labels, labels)
    assert np.array_equal(data.images[[0, 11]], images[[0, 11]])
    if row_major:  # read the default way, it does not fit, and the message says what to set
        with pytest.raises(AdahError, match="row_major") as exc:
            read_dcmh(TINY, tmp_path)
        assert "TINY.mat" in str(exc.value) and "'LAll'" in str(exc.value) and f"({C}, {N})" in str(exc.value)


def _malformed(tmp_path: Path, case: str) -> tuple[str, str]:
    """Write a broken dataset; return (file name, variable) the error must name."""
    _, texts, labels = arrays()
    if case == "wrong_variable":
        write_dcmh(tmp_path, images=False)
        scipy.io.savemat(tmp_path / TINY.label_file, {"Labels": labels})
        return TINY.label_file, "Labels"  # the variable found is listed
    if case == "rows":
        write_dcmh(tmp_path, images=False, y=texts[:-1])
        return TINY.text_file, "YAll"
    if case == "nan":
        t = texts.astype(np.float64)
        t[3, 2] = np.nan
        write_dcmh(tmp_path, images=False, y=t)
        return TINY.text_file, "YAll"
    if case == "zero_text_row":
        t = texts.copy()
        t[4] = 0
        write_dcmh(tmp_path, images=False, y=t)
        return TINY.text_file, "YAll"
    if case == "no_positive_label":
        lab = labels.copy()
        lab[6] = 0
        write_dcmh(tmp_path, images=False, lab=lab)
        return TINY.label_file, "LAll"
    if case == "label_values":
        lab = labels.copy()
        lab[0, 0] = 2
        write_dcmh(tmp_path, images=False, lab=lab)
        return TINY.label_file, "LAll"
    if case == "text_dim":
        write_dcmh(tmp_path, images=False, y=np.ones((N, V + 1), np.uint8))
        return TINY.text_file, "YAll"
    if case == "image_rows":
        imgs = np.zeros((N - 2, 3, H, W), np.uint8)
        write_dcmh(tmp_path, imgs=imgs)
        return TINY.image_file, "IAll"
    raise ValueError(case)


@pytest.mark.parametrize(
    "case, words",
    [
        ("wrong_variable", ["variables found", "'LAll'"]),
        ("rows", [f"({N}, {V})", f"({N - 1}, {V})"]),
        ("nan", ["NaN", "[3]"]),
        ("zero_text_row", ["all-zero", "[4]"]),
        ("no_positive_label", ["no positive label", "[6]"]),
        ("label_values", ["0 and 1"]),
        ("text_dim", [f"({N}, {V})", f"({N}, {V + 1})"]),
        ("image_rows", [f"({N}, 3, H, W)", f"({N - 2}, 3, {H}, {W})"]),
    ],
)
def test_dcmh_malformed_files_name_file_and_variable(tmp_path, case, words):
    fname, var = _malformed(tmp_path, case)
    with pytest.raises(AdahError) as exc:
        read_dcmh(TINY, tmp_path, modalities="both" if case == "image_rows" else "text")
    msg = str(exc.value)
    assert str(tmp_path / fname) in msg, msg
    assert f"'{var}'" in msg, msg
    for w in words:
        assert w in msg, msg


def test_dcmh_on_empty_warn_keeps_rows(tmp_path):
    _malformed(tmp_path, "zero_text_row")
    with pytest.warns(UserWarning, match="all-zero"):
        data = read_dcmh(TINY, tmp_path, modalities="text", on_empty="warn")
    assert len(data) == N and not data.texts[4].any()


def test_dcmh_missing_files_are_named(tmp_path):
    with pytest.raises(AdahError, match="tiny-yall.mat.*TINY.mat"):
        read_dcmh(TINY, tmp_path)
    write_dcmh(tmp_path, images=False)
    (tmp_path / TINY.text_file).unlink()
    with pytest.raises(AdahError) as exc:
        read_dcmh(TINY, tmp_path, modalities="text")
    assert str(tmp_path / TINY.text_file) in str(exc.value)


# --------------------------------------------------------------------------- registry
def test_resolve_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("ADAH_DATA", raising=False)
    assert resolve_data_root(str(tmp_path)) == tmp_path
    with pytest.raises(AdahError, match="data.root") as exc:
        resolve_data_root(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(exc.value)
    monkeypatch.setenv("ADAH_DATA", str(tmp_path))
    assert resolve_data_root("") == tmp_path
    monkeypatch.setenv("ADAH_DATA", str(tmp_path / "gone"))
    with pytest.raises(AdahError, match=r"\$ADAH_DATA") as exc:
        resolve_data_root(None)
    assert str(tmp_path / "gone") in str(exc.value)
    monkeypatch.delenv("ADAH_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AdahError, match="shared/data") as exc:
        resolve_data_root(None)
    assert str(tmp_path.parent / "shared" / "data") in str(exc.value)


@pytest.mark.parametrize("name, folder, prefix", [
    ("mirflickr25k", "mirflickr25k", "mirflickr25k"),
    ("nuswide", "nuswide", "nus-wide-tc21"),
    ("iapr", "iapr-tc12", "iapr-tc12"),
])
def test_load_dataset_dispatches_dcmh_names(tmp_path, name, folder, prefix, monkeypatch):
    monkeypatch.delenv("ADAH_DATA", raising=False)
    spec = DCMH_SPECS[name]
    assert spec.text_file == f"{prefix}-yall.mat" and folder in spec.folders
    d = tmp_path / folder
    d.mkdir()
    images, texts, labels = arrays()
    scipy.io.savemat(d / spec.text_file, {"YAll": texts})
    scipy.io.savemat(d / spec.label_file, {"LAll": labels})
    write_v73(d / spec.image_file, {"IAll": as_matlab_h5(images, "NCWH")})
    cfg = DataConfig(name=name, root=str(tmp_path), options={"check_sizes": False, "protocol": "config"})
    data = load_dataset(cfg)
    assert data.name == name and np.array_equal(data.images[[2, 0]], images[[2, 0]])
    # the real sizes are checked by default, naming what was expected
    with pytest.raises(AdahError, match=rf"\({spec.num_items}, {spec.num_labels}\)"):
        load_dataset(DataConfig(name=name, root=str(tmp_path)))
    with pytest.raises(AdahError, match="unknown option.*'bogus'.*known:.*modalities"):
        load_dataset(DataConfig(name=name, root=str(tmp_path), options={"bogus": 1}))


def test_protocol_table_and_splits(tmp_path):
    assert (PROTOCOLS["mirflickr25k"].num_query, PROTOCOLS["mirflickr25k"].num_train) == (2000, 10000)
    assert (PROTOCOLS["iapr"].num_query, PROTOCOLS["iapr"].num_train) == (2000, 10000)
    assert (PROTOCOLS["nuswide"].num_query, PROTOCOLS["nuswide"].num_train) == (2100, 10500)
    assert PROTOCOLS["wiki"].fixed and PROTOCOLS["scenes"] is None
    for name, n in (("mirflickr25k", 20015), ("iapr", 20000), ("nuswide", 195834)):
        p = PROTOCOLS[name]
        s = make_split(DataConfig(name=name, val_fraction=0.1, seed=4), n)
        assert len(s.query) == p.num_query and len(s.retrieval) == n - p.num_query
        assert len(s.train) + len(s.val) == p.num_train and len(s.val) == round(0.1 * p.num_train)
        assert np.isin(s.train, s.retrieval).all() and np.isin(s.val, s.retrieval).all()
        assert np.intersect1d(s.train, s.val).size == 0
    # options.protocol='config' takes the DataConfig sizes
    s = make_split(DataConfig(name="mirflickr25k", num_query=30, num_train=50, options={"protocol": "config"}), 200)
    assert len(s.query) == 30 and len(s.train) + len(s.val) == 50
    # wiki: fixed; val carved from training by seed; saved and reloaded
    s = make_split(DataConfig(name="wiki", val_fraction=0.1, seed=2), 2866)
    assert np.array_equal(s.query, np.arange(2173, 2866)) and np.array_equal(s.retrieval, np.arange(2173))
    assert len(s.val) == 217 and len(s.train) == 2173 - 217
    assert not np.array_equal(s.val, make_split(DataConfig(name="wiki", seed=3), 2866).val)
    s.save(tmp_path / "split.json")
    back = Split.load(tmp_path / "split.json", num_items=2866)
    assert back.digest() == s.digest()
    with pytest.raises(AdahError, match="2866"):
        make_split(DataConfig(name="wiki"), 100)
    # scenes: unchanged
    s = make_split(DataConfig(name="scenes", num_query=10, num_train=40), 100)
    assert len(s.query) == 10 and len(s.train) + len(s.val) == 40


# --------------------------------------------------------------------------- wiki, generated
def _write_wiki_data(folder: Path, n_tr=9, n_te=4, text_dim=10, break_rows=False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for part, n in (("tr", n_tr), ("te", n_te)):
        lab = np.eye(10)[rng.integers(0, 10, n)]
        img = rng.random((n, 128))
        txt = rng.random((n, text_dim))
        if break_rows and part == "te":
            txt = txt[:-1]
        out[part] = (img, txt, lab)
    # MATLAB (n, D) saved column-major -> h5py shows (D, n), like the real wiki_data.mat
    write_v73(folder / "wiki_data.mat", {f"{k}_{p}": v.T.copy() for p, (i, t, l) in out.items()
                                          for k, v in (("I", i), ("T", t), ("L", l))})
    return out


def test_wiki_data_generated(tmp_path):
    parts = _write_wiki_data(tmp_path)
    data = read_wiki(tmp_path, check_sizes=False)
    assert data.images.shape == (13, 128) and data.texts.shape == (13, 10) and data.labels.shape == (13, 10)
    assert np.allclose(data.images[:9], parts["tr"][0]) and np.allclose(data.images[9:], parts["te"][0])
    assert data.label_names == list(WIKI_CLASSES)
    with pytest.raises(AdahError, match="2173"):  # the real sizes are checked by default
        read_wiki(tmp_path)


def test_wiki_data_mismatched_rows(tmp_path):
    _write_wiki_data(tmp_path, break_rows=True)
    with pytest.raises(AdahError) as exc:
        read_wiki(tmp_path, check_sizes=False)
    msg = str(exc.value)
    assert str(tmp_path / "wiki_data.mat") in msg and "'T_te'" in msg and "(4, D)" in msg and "(3, 10)" in msg


def test_wiki_roph_generated(tmp_path):
    rng = np.random.default_rng(0)
    n = 7
    x1, x2 = rng.normal(size=(128, n)), rng.normal(size=(100, n))  # feature-major in MATLAB
    y = np.eye(10)[:, rng.integers(0, 10, n)]
    ind_train, ind_test = np.array([3, 1, 7, 5]), np.array([2, 6, 4])  # 1-based
    scipy.io.savemat(tmp_path / "wiki_roph.mat", {"data": {
        "X1": x1, "X2": x2, "Y": y, "split": {"ind_train": ind_train, "ind_test": ind_test}}})
    data = read_wiki(tmp_path, variant="roph", check_sizes=False)
    order = np.concatenate([ind_train, ind_test]) - 1
    assert data.texts.shape == (n, 100)
    assert np.allclose(data.images, x1.T[order]) and np.array_equal(data.labels, y.T[order])
    scipy.io.savemat(tmp_path / "wiki_roph.mat", {"data": {
        "X1": x1, "X2": x2, "Y": y, "split": {"ind_train": ind_train, "ind_test": np.array([2, 6, 6])}}})
    with pytest.raises(AdahError, match="exactly once"):
        read_wiki(tmp_path, variant="roph", check_sizes=False)
    scipy.io.savemat(tmp_path / "wiki_roph.mat", {"D": x1})
    with pytest.raises(AdahError, match=r"no variable 'data'; variables found: \['D'\]"):
        read_wiki(tmp_path, variant="roph")


# --------------------------------------------------------------------------- real data
def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


def test_real_mirflickr_text_and_labels():
    folder = _shared("mirflickr25k")
    data = load_dataset(DataConfig(name="mirflickr25k", root=str(folder.parent), options={"modalities": "text"}))
    assert data.images is None
    assert data.texts.shape == (20015, 1386) and data.texts.dtype == np.float32
    assert data.labels.shape == (20015, 24) and data.labels.dtype == np.uint8
    assert data.labels.any(axis=1).all() and data.texts.any(axis=1).all()
    assert set(np.unique(data.texts)) <= {0.0, 1.0}
    split = make_split(DataConfig(name="mirflickr25k"), len(data))
    assert (len(split.query), len(split.retrieval), len(split.train) + len(split.val)) == (2000, 18015, 10000)
    with pytest.raises(AdahError, match="mirflickr25k-iall.mat"):  # the image part is not distributed here
        load_dataset(DataConfig(name="mirflickr25k", root=str(folder.parent)))


@pytest.mark.parametrize("variant, text_dim", [("data", 10), ("roph", 100)])
def test_real_wiki(variant, text_dim):
    folder = _shared("wiki")
    cfg = DataConfig(name="wiki", root=str(folder.parent), options={"variant": variant})
    data = load_dataset(cfg)
    assert data.images.shape == (2866, 128) and data.images.dtype == np.float32
    assert data.texts.shape == (2866, text_dim)
    assert data.labels.shape == (2866, 10) and (data.labels.sum(axis=1) == 1).all()
    split = make_split(cfg, len(data))
    assert len(split.query) == 693 and len(split.retrieval) == 2173 and len(split.train) + len(split.val) == 2173
    assert data.labels[:2173].sum(axis=0).min() > 0 and data.labels[2173:].sum(axis=0).min() > 0
    if variant == "data":
        # rows are items, not features: SIFT BoVW histograms and LDA topic proportions sum to 1
        assert (data.images >= 0).all() and np.allclose(data.images.sum(axis=1), 1.0, atol=1e-4)
        assert (data.texts >= 0).all() and np.allclose(data.texts.sum(axis=1), 1.0, atol=1e-4)
