"""Tests for adah.data.base (CrossModalData, validate_arrays, Split, random_split) and
adah.utils.fileio (atomic writes)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from adah.data.base import CrossModalData, Split, random_split, validate_arrays
from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text

FIELDS = ("query", "retrieval", "train", "val")


# --------------------------------------------------------------------------- random_split
@pytest.mark.parametrize(
    "num_items, num_query, num_train, val_fraction, seed",
    [
        (100, 10, 50, 0.1, 0),
        (240, 40, 160, 0.1, 0),
        (57, 7, 33, 0.25, 3),  # 8.25 validation rows -> 8
        (20, 5, 15, 0.0, 1),  # no validation rows
        (30, 1, 29, 0.5, 7),  # the whole retrieval set is used for training; 14.5 -> 14
        (13, 11, 2, 0.0, 2),  # smallest retrieval set that can hold 2 training rows
    ],
)
def test_random_split_sizes_and_disjointness(num_items, num_query, num_train, val_fraction, seed):
    s = random_split(num_items, num_query, num_train, val_fraction, seed=seed)
    assert s.seed == seed
    num_val = int(round(num_train * val_fraction))
    assert len(s.query) == num_query
    assert len(s.retrieval) == num_items - num_query
    assert len(s.val) == num_val
    assert len(s.train) == num_train - num_val
    for k in FIELDS:
        arr = getattr(s, k)
        assert np.issubdtype(arr.dtype, np.integer)
        assert len(np.unique(arr)) == len(arr), f"{k} has duplicates"
        assert np.array_equal(arr, np.sort(arr)), f"{k} is not sorted"
    # query / retrieval: disjoint and together exactly the rows 0..N-1
    assert np.intersect1d(s.query, s.retrieval).size == 0
    assert np.array_equal(np.sort(np.concatenate([s.query, s.retrieval])), np.arange(num_items))
    # train / val: disjoint, both inside the retrieval set (never a test query)
    assert np.intersect1d(s.train, s.val).size == 0
    assert np.isin(s.train, s.retrieval).all()
    assert np.isin(s.val, s.retrieval).all()
    assert np.intersect1d(s.train, s.query).size == 0


def test_random_split_same_seed_is_identical_and_other_seed_differs():
    a = random_split(200, 20, 100, 0.1, seed=5)
    b = random_split(200, 20, 100, 0.1, seed=5)
    c = random_split(200, 20, 100, 0.1, seed=6)
    for k in FIELDS:
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.digest() == b.digest()
    assert not np.array_equal(a.query, c.query)
    assert not np.array_equal(a.train, c.train)
    assert a.digest() != c.digest()


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(num_items=50, num_query=50, num_train=10), "num_query"),
        (dict(num_items=50, num_query=60, num_train=10), "num_query"),
        (dict(num_items=50, num_query=0, num_train=10), "num_query"),
        (dict(num_items=50, num_query=10, num_train=41), "num_train"),
        (dict(num_items=50, num_query=10, num_train=1), "num_train"),
        (dict(num_items=50, num_query=10, num_train=20, val_fraction=1.0), "val_fraction"),
        (dict(num_items=50, num_query=10, num_train=20, val_fraction=-0.1), "val_fraction"),
    ],
)
def test_random_split_rejects_bad_arguments(kwargs, param):
    with pytest.raises(AdahError, match=param):
        random_split(**kwargs)


def test_random_split_largest_valid_arguments():
    s = random_split(50, 10, 40, 0.0)
    assert len(s.train) == 40 and len(s.val) == 0
    assert np.array_equal(s.train, s.retrieval)


def test_random_split_never_returns_an_empty_training_set():
    try:
        s = random_split(10, 2, 2, val_fraction=0.75, seed=0)
    except AdahError:
        return  # rejecting the combination is fine
    assert len(s.train) >= 2


# --------------------------------------------------------------------------- Split save / load
@pytest.fixture
def split() -> Split:
    return random_split(120, 20, 60, 0.2, seed=11)


def test_split_save_load_round_trip(split, tmp_path):
    path = tmp_path / "split.json"
    split.save(path)
    raw = json.loads(path.read_text())
    assert raw["sha256"] == split.digest()
    assert raw["seed"] == 11
    loaded = Split.load(path, num_items=120)
    for k in FIELDS:
        assert np.array_equal(getattr(loaded, k), getattr(split, k)), k
        assert getattr(loaded, k).dtype == np.int64
    assert loaded.seed == split.seed
    assert loaded.digest() == split.digest()
    # saving does not leave temporary files beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.json"]


def _edit(path, fn) -> None:
    raw = json.loads(path.read_text())
    fn(raw)
    path.write_text(json.dumps(raw))


def test_split_edited_field_fails_checksum(split, tmp_path):
    path = tmp_path / "split.json"
    split.save(path)
    # swap a query row for a retrieval row: still valid indices, but not the saved split
    swap = int(split.retrieval[0])
    _edit(path, lambda raw: raw["query"].__setitem__(0, swap))
    with pytest.raises(AdahError, match="checksum") as exc:
        Split.load(path, num_items=120)
    assert str(path) in str(exc.value)


def test_split_missing_field(split, tmp_path):
    path = tmp_path / "split.json"
    split.save(path)
    _edit(path, lambda raw: raw.pop("val"))
    with pytest.raises(AdahError, match="'val'") as exc:
        Split.load(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("bad_index", [120, 500, -1])
def test_split_indices_out_of_range(split, tmp_path, bad_index):
    path = tmp_path / "split.json"
    split.save(path)
    _edit(path, lambda raw: raw["train"].__setitem__(0, bad_index))
    with pytest.raises(AdahError, match=r"'train'.*outside \[0, 120\)") as exc:
        Split.load(path, num_items=120)
    assert str(path) in str(exc.value)


def test_split_indices_checked_against_num_items(split, tmp_path):
    path = tmp_path / "split.json"
    split.save(path)
    top = int(max(getattr(split, k).max() for k in FIELDS))
    Split.load(path, num_items=top + 1)  # exactly enough rows: fine
    with pytest.raises(AdahError, match=rf"outside \[0, {top}\)") as exc:
        Split.load(path, num_items=top)
    assert str(path) in str(exc.value)


def test_split_nested_list_rejected(split, tmp_path):
    path = tmp_path / "split.json"
    split.save(path)
    _edit(path, lambda raw: raw.__setitem__("query", [[1, 2], [3, 4]]))
    with pytest.raises(AdahError, match="'query'.*flat list") as exc:
        Split.load(path)
    assert str(path) in str(exc.value)


def test_split_non_json_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text("query: [1, 2, 3]\n{not json")
    with pytest.raises(AdahError, match="JSON") as exc:
        Split.load(path)
    assert str(path) in str(exc.value)


def test_split_missing_file(tmp_path):
    path = tmp_path / "nope" / "split.json"
    with pytest.raises(AdahError, match="not found") as exc:
        Split.load(path)
    assert str(path) in str(exc.value)


def test_split_top_level_not_an_object(tmp_path):
    path = tmp_path / "split.json"
    path.write_text("5")
    with pytest.raises(AdahError) as exc:
        Split.load(path)
    assert str(path) in str(exc.value)


def test_split_non_integer_entries(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"query": ["a"], "retrieval": [1], "train": [1], "val": []}))
    with pytest.raises(AdahError) as exc:
        Split.load(path)
    assert str(path) in str(exc.value)


# --------------------------------------------------------------------------- CrossModalData
N, V, C = 6, 7, 3


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N, 3, 8, 8), dtype=np.uint8)
    texts = rng.integers(0, 2, size=(N, V)).astype(np.float32)
    labels = rng.integers(0, 2, size=(N, C)).astype(np.uint8)
    return images, texts, labels


def test_valid_data_properties():
    images, texts, labels = _arrays()
    d = CrossModalData(images, texts, labels, vocabulary=[f"w{i}" for i in range(V)], name="tiny")
    assert len(d) == N
    assert d.text_dim == V
    assert d.num_labels == C
    # (N, D) float feature vectors are accepted as images too
    feats = CrossModalData(np.zeros((N, 5), np.float32), texts, labels)
    assert feats.images.shape == (N, 5)


def _bad(case: str):
    images, texts, labels = _arrays()
    if case == "images_rows":
        images = np.concatenate([images, images[:1]])
    elif case == "texts_rows":
        texts = texts[:-1]
    elif case == "labels_rows":
        labels = np.concatenate([labels, labels[:2]])
    elif case == "labels_two":
        labels = labels.copy()
        labels[2, 1] = 2
    elif case == "labels_negative":
        labels = labels.astype(np.int64)
        labels[0, 0] = -1
    elif case == "texts_nan":
        texts = texts.copy()
        texts[3, 4] = np.nan
    elif case == "images_inf":
        images = np.zeros((N, 5), np.float32)
        images[1, 1] = np.inf
    elif case == "images_4ch":
        images = np.zeros((N, 4, 8, 8), np.uint8)
    elif case == "images_3d":
        images = np.zeros((N, 8, 8), np.uint8)
    elif case == "texts_1d":
        texts = texts[:, 0].copy()
    elif case == "labels_1d":
        labels = labels[:, 0].copy()
    elif case == "images_list":
        images = images.tolist()
    return images, texts, labels


@pytest.mark.parametrize(
    "case, field, extra",
    [
        ("images_rows", "images", "7 rows"),
        ("texts_rows", "texts", "5 rows"),
        ("labels_rows", "labels", "8"),
        ("labels_two", "labels", "0 and 1"),
        ("labels_negative", "labels", "0 and 1"),
        ("texts_nan", "texts", "NaN"),
        ("images_inf", "images", "infinite"),
        ("images_4ch", "images", "(6, 4, 8, 8)"),
        ("images_3d", "images", "(6, 8, 8)"),
        ("texts_1d", "texts", "(6,)"),
        ("labels_1d", "labels", "(6,)"),
        ("images_list", "images", "numpy array"),
    ],
)
def test_cross_modal_data_validation_names_the_field(case, field, extra):
    images, texts, labels = _bad(case)
    with pytest.raises(AdahError) as exc:
        CrossModalData(images, texts, labels, name="mydata")
    msg = str(exc.value)
    assert f"'{field}'" in msg
    assert extra in msg
    assert msg.startswith("mydata:")
    # the bare validator says the same
    with pytest.raises(AdahError, match=f"'{field}'"):
        validate_arrays(images, texts, labels)


def test_fingerprint_equal_for_equal_data_and_sensitive_to_values():
    images, texts, labels = _arrays(seed=1)
    a = CrossModalData(images, texts, labels)
    b = CrossModalData(images.copy(), texts.copy(), labels.copy(), name="other")
    fp = a.fingerprint()
    assert isinstance(fp, str) and len(fp) == 16
    assert b.fingerprint() == fp
    assert CrossModalData(*_arrays(seed=1)).fingerprint() == fp

    t2 = texts.copy()
    t2[0, 0] += 1.0
    assert CrossModalData(images, t2, labels).fingerprint() != fp
    i2 = images.copy()
    i2[N - 1, 2, 7, 7] ^= 1
    assert CrossModalData(i2, texts, labels).fingerprint() != fp
    l2 = labels.copy()
    l2[2, 0] = 1 - l2[2, 0]
    assert CrossModalData(images, texts, l2).fingerprint() != fp
    # same values, different dtype: a different dataset
    assert CrossModalData(images, texts.astype(np.float64), labels).fingerprint() != fp


# --------------------------------------------------------------------------- atomic writes
def test_atomic_write_text_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "deeper" / "f.txt"
    atomic_write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("fail_at", ["replace", "fsync"])
def test_atomic_write_text_failure_keeps_old_content(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old content")

    def boom(*args, **kwargs):
        raise OSError(f"simulated failure in {fail_at}")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="simulated failure"):
        atomic_write_text(path, "new content that must not appear")
    monkeypatch.undo()
    assert path.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"], "temporary file left behind"


def test_atomic_write_text_failure_on_new_file_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("simulated")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "new.txt", "x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "f.txt"
        atomic_write_text(path, "x")
        assert (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)
