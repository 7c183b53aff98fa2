"""Tests for the built-in synthetic "scenes" dataset (adah.data.scenes)."""

from __future__ import annotations

import numpy as np
import pytest

from adah.data.base import CrossModalData
from adah.data.scenes import (
    AMBIGUOUS_TAGS,
    CATEGORY_NAMES,
    CATEGORY_TAGS,
    NOISE_TAGS,
    VOCABULARY,
    ScenesConfig,
    make_scenes,
    make_scenes_with_masks,
)
from adah.errors import AdahError

N = 300


@pytest.fixture(scope="module")
def small():
    return make_scenes_with_masks(num_items=N, seed=0)


@pytest.fixture(scope="module")
def medium():
    """Enough items (~190 positives per category) for stable text statistics."""
    return make_scenes(num_items=1200, seed=3)


def _category_columns(k: int) -> np.ndarray:
    return np.array([VOCABULARY.index(w) for w in CATEGORY_TAGS[k]])


def _has_category_word(texts: np.ndarray, k: int) -> np.ndarray:
    return texts[:, _category_columns(k)].max(axis=1) > 0


# --------------------------------------------------------------------------- structure
def test_shapes_dtypes_and_ranges(small):
    data, masks = small
    assert isinstance(data, CrossModalData)
    assert data.name == "scenes"
    assert len(data) == N
    assert data.images.shape == (N, 3, 64, 64) and data.images.dtype == np.uint8
    assert data.texts.shape == (N, len(VOCABULARY)) and data.texts.dtype == np.float32
    assert data.labels.shape == (N, 12) and data.labels.dtype == np.uint8
    assert masks.shape == (N, 64, 64) and masks.dtype == bool
    assert set(np.unique(data.texts).tolist()) == {0.0, 1.0}
    assert set(np.unique(data.labels).tolist()) == {0, 1}
    assert (data.labels.sum(axis=1) >= 1).all()
    assert (data.labels.sum(axis=1) <= 3).all()
    assert (data.texts.sum(axis=1) >= 1).all()
    # every category occurs, images use the whole intensity range
    assert (data.labels.sum(axis=0) > 0).all()
    assert data.images.min() < 20 and data.images.max() > 235


def test_vocabulary_and_label_names(small):
    data, _ = small
    assert data.label_names == CATEGORY_NAMES
    assert len(CATEGORY_NAMES) == 12 and len(set(CATEGORY_NAMES)) == 12
    assert "red circle" in CATEGORY_NAMES and "blue cross" in CATEGORY_NAMES
    assert data.vocabulary == VOCABULARY
    assert 200 <= len(VOCABULARY) <= 500
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    assert all(8 <= len(tags) <= 12 for tags in CATEGORY_TAGS)
    assert len(NOISE_TAGS) == 150
    assert {"red", "circle"} <= set(AMBIGUOUS_TAGS)
    # specific synonyms are not shared between categories
    flat = [w for tags in CATEGORY_TAGS for w in tags]
    assert len(set(flat)) == len(flat)
    # vocabulary does not depend on the seed
    assert make_scenes(num_items=5, seed=7).vocabulary == VOCABULARY


def test_image_size_and_object_count_parameters():
    data, masks = make_scenes_with_masks(num_items=40, image_size=32, objects_per_image=(1, 1), seed=2)
    assert data.images.shape == (40, 3, 32, 32) and masks.shape == (40, 32, 32)
    assert (data.labels.sum(axis=1) == 1).all()
    many = make_scenes(num_items=60, objects_per_image=(3, 3), seed=2)
    assert many.labels.sum(axis=1).mean() > 2.5  # 3 objects, categories rarely repeat


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_arrays(small):
    data, masks = small
    again, masks_again = make_scenes_with_masks(ScenesConfig(num_items=N, seed=0))
    assert np.array_equal(data.images, again.images)
    assert np.array_equal(data.texts, again.texts)
    assert np.array_equal(data.labels, again.labels)
    assert np.array_equal(masks, masks_again)
    assert data.fingerprint() == again.fingerprint()


def test_different_seed_differs(small):
    data, _ = small
    other = make_scenes(num_items=N, seed=1)
    assert not np.array_equal(data.images, other.images)
    assert not np.array_equal(data.texts, other.texts)
    assert not np.array_equal(data.labels, other.labels)


def test_prefix_stable():
    """The first n items do not depend on how many items are generated."""
    short = make_scenes(num_items=270, seed=5)
    long = make_scenes(num_items=600, seed=5)
    assert np.array_equal(short.images, long.images[:270])
    assert np.array_equal(short.texts, long.texts[:270])
    assert np.array_equal(short.labels, long.labels[:270])


def test_config_with_overrides():
    cfg = ScenesConfig(num_items=20, seed=4)
    a = make_scenes(cfg, num_items=10)
    b = make_scenes(num_items=10, seed=4)
    assert len(a) == 10
    assert np.array_equal(a.images, b.images)
    assert cfg.num_items == 20  # frozen config is not modified


# --------------------------------------------------------------------------- text
def test_text_is_informative_but_imperfect(medium):
    texts, labels = medium.texts, medium.labels
    for k, name in enumerate(CATEGORY_NAMES):
        has_word = _has_category_word(texts, k)
        pos = labels[:, k] == 1
        assert pos.sum() >= 100, name
        recall = has_word[pos].mean()
        assert 0.7 <= recall <= 0.95, (name, recall)
        false_rate = has_word[~pos].mean()
        assert false_rate < 0.02, (name, false_rate)


def test_drop_prob_controls_silent_categories():
    full = make_scenes(num_items=200, drop_prob=0.0, seed=1)
    silent = make_scenes(num_items=200, drop_prob=1.0, seed=1)
    assert np.array_equal(full.labels, silent.labels)  # images do not depend on text settings
    assert np.array_equal(full.images, silent.images)
    for k in range(12):
        pos = full.labels[:, k] == 1
        assert _has_category_word(full.texts, k)[pos].all()
        assert _has_category_word(silent.texts, k)[pos].mean() < 0.05
    assert (silent.texts.sum(axis=1) >= 1).all()


def test_noise_and_ambiguous_tags(medium):
    texts = medium.texts
    noise_cols = np.array([VOCABULARY.index(w) for w in NOISE_TAGS])
    mean_noise = texts[:, noise_cols].sum(axis=1).mean()
    assert 2.0 < mean_noise < 4.0  # Poisson(3), a few collisions
    quiet = make_scenes(num_items=200, noise_tags=0.0, seed=3)
    with_noise = quiet.texts[:, noise_cols].sum(axis=1) > 0
    assert with_noise.mean() < 0.15
    assert (quiet.texts[with_noise].sum(axis=1) == 1).all()  # only fill-ins for empty texts
    # ambiguous words show up and are shared between categories
    red_col = VOCABULARY.index("red")
    has_red = texts[:, red_col] > 0
    assert 0.02 < has_red.mean() < 0.3
    red_cats = [k for k, n in enumerate(CATEGORY_NAMES) if n.startswith("red")]
    assert (medium.labels[has_red][:, red_cats].sum(axis=1) > 0).mean() > 0.9
    shown = medium.labels[has_red][:, red_cats].sum(axis=0)
    assert (shown > 0).all()  # "red" is not specific to one red category


# --------------------------------------------------------------------------- pixels
def test_objects_are_small_and_visible(small):
    data, masks = small
    coverage = masks.mean(axis=(1, 2))
    assert (coverage > 0.005).all() and (coverage < 0.30).all()
    assert 0.02 < coverage.mean() < 0.15
    images = data.images.astype(np.float32)
    checked = 0
    for colour in range(3):  # red, green, blue
        others = [c for c in range(3) if c != colour]
        cats = [colour * 4 + s for s in range(4)]
        only_this = (data.labels[:, cats].sum(axis=1) > 0) & (data.labels.sum(axis=1) == data.labels[:, cats].sum(axis=1))
        for i in np.flatnonzero(only_this)[:20]:
            inside = images[i][:, masks[i]]  # (3, pixels)
            mean = inside.mean(axis=1)
            assert mean[colour] > mean[others].max() + 80, (i, colour, mean)
            checked += 1
    assert checked >= 30


def test_background_is_muted_and_cluttered(small):
    data, masks = small
    rgb = data.images.astype(np.int16)
    saturation = rgb.max(axis=1) - rgb.min(axis=1)  # (N, H, W)
    # category objects are saturated, almost nothing else is as saturated in a category hue
    dominant = np.zeros_like(masks)
    for c in range(3):
        others = np.delete(rgb, c, axis=1).max(axis=1)
        dominant |= rgb[:, c] - others > 90
    assert dominant[masks].mean() > 0.9
    assert dominant[~masks].mean() < 0.01
    assert np.median(saturation[~masks]) < 60
    # clutter: the background varies a lot within an image
    bg_std = [rgb[i][:, ~masks[i]].std() for i in range(20)]
    assert min(bg_std) > 10


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"num_items": 0}, "num_items"),
        ({"num_items": 2.5}, "num_items"),
        ({"objects_per_image": (3, 1)}, "objects_per_image"),
        ({"objects_per_image": (0, 2)}, "objects_per_image"),
        ({"objects_per_image": 2}, "objects_per_image"),
        ({"distractors_per_image": (-1, 2)}, "distractors_per_image"),
        ({"image_size": 8}, "image_size"),
        ({"drop_prob": 1.5}, "drop_prob"),
        ({"drop_prob": float("nan")}, "drop_prob"),
        ({"noise_tags": -1.0}, "noise_tags"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
    ],
)
def test_bad_parameters_raise(overrides, name):
    with pytest.raises(AdahError, match=name) as info:
        make_scenes(**overrides)
    message = str(info.value)
    assert "found" in message and "must be" in message
    with pytest.raises(AdahError, match=name):
        ScenesConfig(**overrides)


def test_unknown_parameter_and_bad_config():
    with pytest.raises(AdahError, match="num_item"):
        make_scenes(num_item=10)
    with pytest.raises(AdahError, match="ScenesConfig"):
        make_scenes({"num_items": 10})


def test_list_ranges_are_accepted():
    cfg = ScenesConfig(num_items=5, objects_per_image=[2, 2])
    assert cfg.objects_per_image == (2, 2)
    assert (make_scenes(cfg).labels.sum(axis=1) <= 2).all()
