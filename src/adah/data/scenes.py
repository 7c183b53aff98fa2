"""The built-in synthetic dataset "scenes": small coloured objects on a cluttered background.

Every item is an RGB image with 1-3 (configurable) small objects drawn from 12 categories,
4 shapes (circle, square, triangle, cross) x 3 colours (red, green, blue), placed at random
on a muted, blotchy background with per-pixel noise and a few *distractor* shapes that are
not categories (category shapes in non-category colours such as yellow or magenta, or other
shapes: ring, diamond). The objects cover only a few percent of the pixels, so a model that
looks at the right places (attention) has an advantage over one that pools everything.

The paired text is a Flickr-like bag of tags over a fixed vocabulary (:data:`VOCABULARY`):

* category tags: each category has 9 synonyms, colour synonym x shape synonym, e.g.
  ``red_circle``, ``crimson_disc``, ``scarlet_ball``; a present category gets 1-3 of them,
  except that with probability ``drop_prob`` it gets no word at all (a missing tag);
* ambiguous tags shared between categories: colour-only (``red``, ``azure``) and shape-only
  (``circle``, ``box``) words, emitted with some probability for present categories and
  for distractors of that shape;
* distractor tags (``yellow``, ``ring``, ...) sometimes emitted for distractors;
* noise tags: Poisson(``noise_tags``) words from 150 camera/holiday words with a power-law
  popularity (``sunset``, ``nikon``, ``bw``, ..., ``misc_149``);
* rarely (2% of items) one wrong category tag.

Generation is deterministic: the same :class:`ScenesConfig` gives byte-identical arrays,
and items are generated in fixed chunks with their own seeds, so the first ``n`` items of a
larger dataset equal a dataset of ``n`` items with otherwise the same config.
:func:`make_scenes_with_masks` also returns where the category objects are, (N, H, W) bool,
for checking attention maps.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from adah.data.base import CrossModalData
from adah.data.vocab import Vocabulary
from adah.errors import AdahError

__all__ = [
    "AMBIGUOUS_TAGS",
    "CATEGORY_NAMES",
    "CATEGORY_TAGS",
    "COLOURS",
    "NOISE_TAGS",
    "SHAPES",
    "ScenesConfig",
    "VOCABULARY",
    "make_scenes",
    "make_scenes_with_masks",
]

# --------------------------------------------------------------------------- categories
COLOURS: list[str] = ["red", "green", "blue"]
SHAPES: list[str] = ["circle", "square", "triangle", "cross"]
CATEGORY_NAMES: list[str] = [f"{c} {s}" for c in COLOURS for s in SHAPES]
"""Category ``k`` is colour ``k // 4`` and shape ``k % 4``: red circle, red square, ..."""

_COLOUR_SYNONYMS: list[list[str]] = [
    ["red", "crimson", "scarlet"],
    ["green", "emerald", "lime"],
    ["blue", "azure", "cobalt"],
]
_SHAPE_SYNONYMS: list[list[str]] = [
    ["circle", "disc", "ball"],
    ["square", "box", "block"],
    ["triangle", "wedge", "pyramid"],
    ["cross", "plus", "cruciform"],
]
CATEGORY_TAGS: list[list[str]] = [
    [f"{c}_{s}" for c in _COLOUR_SYNONYMS[ci] for s in _SHAPE_SYNONYMS[si]]
    for ci in range(len(COLOURS))
    for si in range(len(SHAPES))
]
"""The category-specific synonyms, ``CATEGORY_TAGS[k]`` for category ``k`` (9 each)."""

AMBIGUOUS_TAGS: list[str] = [w for group in _COLOUR_SYNONYMS for w in group] + [
    w for group in _SHAPE_SYNONYMS for w in group
]
"""Colour-only and shape-only words, shared by several categories (and distractors)."""

# Distractors: non-category colours (any of the 6 shapes) and their words.
_DISTRACTOR_COLOUR_WORDS: list[list[str]] = [
    ["yellow", "gold"],
    ["magenta", "pink"],
    ["cyan", "teal"],
    ["white", "silver"],
    ["black", "dark"],
]
_EXTRA_SHAPE_WORDS: list[list[str]] = [["ring", "donut"], ["diamond", "rhombus"]]
_DISTRACTOR_TAGS: list[str] = [w for g in _DISTRACTOR_COLOUR_WORDS + _EXTRA_SHAPE_WORDS for w in g]

_NOISE_REAL = (
    "sunset nikon canon holiday bw travel summer beach family friends party city night "
    "nature sky clouds water sea street architecture portrait macro flower tree park dog "
    "cat snow winter autumn spring vacation trip wedding birthday art music concert food "
    "car bridge building church mountain lake river landscape light urban people kids baby "
    "garden museum festival europe usa london paris newyork tokyo berlin rome 2006 2007 "
    "2008 2009 iphone film analog hdr explore geotagged d80 eos 50mm bokeh reflection "
    "window door wall graffiti sign train station airport road shadow morning evening "
    "fog rain sand hills forest"
).split()
_NUM_NOISE = 150
NOISE_TAGS: list[str] = _NOISE_REAL + [f"misc_{i:03d}" for i in range(len(_NOISE_REAL), _NUM_NOISE)]
"""The 150 label-independent noise words, most popular first."""

VOCABULARY: list[str] = [w for tags in CATEGORY_TAGS for w in tags] + AMBIGUOUS_TAGS + _DISTRACTOR_TAGS + NOISE_TAGS
"""All tags, in the fixed column order of ``texts`` (independent of the seed)."""

_WORD_INDEX = {w: i for i, w in enumerate(VOCABULARY)}
assert len(_WORD_INDEX) == len(VOCABULARY), "duplicate tag in the scenes vocabulary"
_CATEGORY_TAG_IDS = np.array([[_WORD_INDEX[w] for w in tags] for tags in CATEGORY_TAGS], dtype=np.int64)
_COLOUR_WORD_IDS = [[_WORD_INDEX[w] for w in g] for g in _COLOUR_SYNONYMS]
_SHAPE_WORD_IDS = [[_WORD_INDEX[w] for w in g] for g in _SHAPE_SYNONYMS + _EXTRA_SHAPE_WORDS]
_DISTRACTOR_COLOUR_WORD_IDS = [[_WORD_INDEX[w] for w in g] for g in _DISTRACTOR_COLOUR_WORDS]
_NOISE_IDS = np.array([_WORD_INDEX[w] for w in NOISE_TAGS], dtype=np.int64)
_NOISE_P = 1.0 / (np.arange(_NUM_NOISE) + 8.0)
_NOISE_CDF = np.cumsum(_NOISE_P / _NOISE_P.sum())

# Text probabilities (fixed; the configurable ones are in ScenesConfig).
_AMBIGUOUS_COLOUR_PROB = 0.3  # a present, tagged category also gets its colour-only word
_AMBIGUOUS_SHAPE_PROB = 0.3  # ... and its shape-only word
_DISTRACTOR_WORD_PROB = 0.2  # a distractor gets a word for its colour / its shape
_MISTAG_PROB = 0.02  # an item gets one synonym of a category it does not show

# --------------------------------------------------------------------------- pixels
# Saturated category colours and non-category distractor colours (RGB).
_CATEGORY_RGB = np.array([[212, 36, 36], [36, 178, 52], [40, 64, 214]], dtype=np.float32)
_DISTRACTOR_RGB = np.array(
    [[218, 206, 42], [204, 52, 204], [44, 192, 204], [232, 232, 232], [24, 24, 28]], dtype=np.float32
)
_CATEGORY_JITTER = 24.0  # uniform +- per channel, per object
_DISTRACTOR_JITTER = np.array([24.0, 24.0, 24.0, 10.0, 8.0], dtype=np.float32)  # white/black stay grey
_PIXEL_NOISE = 7.0  # Gaussian std per pixel and channel
_OBJECT_SIDE = (0.155, 0.25)  # bounding-box side as a fraction of the image side
_MIN_SIDE = 5
_MAX_OVERLAP = 0.15  # of the smaller bounding box, tolerated when placing a shape
_PLACEMENT_TRIES = 25
# Items are generated in chunks, each with its own seeds, of at most _MAX_CHUNK items and
# about _CHUNK_PIXELS values (256 items at 64 x 64, 5 at 512 x 512).
_CHUNK_PIXELS = 1 << 22
_MAX_CHUNK = 256

_CIRCLE, _SQUARE, _TRIANGLE, _CROSS, _RING, _DIAMOND = range(6)
_NUM_DISTRACTOR_SHAPES = 6

_MIN_IMAGE_SIZE, _MAX_IMAGE_SIZE = 24, 512
_MAX_OBJECTS = 8
_MAX_DISTRACTORS = 8
_MAX_ITEMS = 1_000_000


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ScenesConfig:
    """Parameters of the scenes generator; validated on construction (AdahError)."""

    num_items: int = 3000
    image_size: int = 64
    objects_per_image: tuple[int, int] = (1, 3)  # inclusive range
    distractors_per_image: tuple[int, int] = (0, 3)  # inclusive range
    drop_prob: float = 0.15
    noise_tags: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("num_items", _check_int("num_items", self.num_items, 1, _MAX_ITEMS))
        set_("image_size", _check_int("image_size", self.image_size, _MIN_IMAGE_SIZE, _MAX_IMAGE_SIZE))
        set_("objects_per_image", _check_range("objects_per_image", self.objects_per_image, 1, _MAX_OBJECTS))
        set_(
            "distractors_per_image",
            _check_range("distractors_per_image", self.distractors_per_image, 0, _MAX_DISTRACTORS),
        )
        set_("drop_prob", _check_float("drop_prob", self.drop_prob, 0.0, 1.0))
        set_("noise_tags", _check_float("noise_tags", self.noise_tags, 0.0, 50.0))
        set_("seed", _check_int("seed", self.seed, 0, 2**63 - 1))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= int(value) <= hi:
        raise AdahError(f"scenes: parameter '{name}' must be an integer in [{lo}, {hi}], found {value!r}")
    return int(value)


def _check_float(name: str, value, lo: float, hi: float) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(float(value)) or not lo <= float(value) <= hi:
        raise AdahError(f"scenes: parameter '{name}' must be a number in [{lo}, {hi}], found {value!r}")
    return float(value)


def _check_range(name: str, value, lo: int, hi: int) -> tuple[int, int]:
    expected = f"a (min, max) pair of integers with {lo} <= min <= max <= {hi}"
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(_is_int(v) for v in value)
        or not lo <= int(value[0]) <= int(value[1]) <= hi
    ):
        raise AdahError(f"scenes: parameter '{name}' must be {expected}, found {value!r}")
    return int(value[0]), int(value[1])


def _resolve_config(config: ScenesConfig | None, overrides: dict) -> ScenesConfig:
    if config is None:
        config = ScenesConfig()
    elif not isinstance(config, ScenesConfig):
        raise AdahError(f"scenes: config must be a ScenesConfig or None, found {type(config).__name__}")
    if overrides:
        known = {f.name for f in dataclasses.fields(ScenesConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise AdahError(
                f"scenes: unknown parameter {unknown[0]!r}; expected one of {', '.join(sorted(known))}"
            )
        config = dataclasses.replace(config, **overrides)
    return config


# --------------------------------------------------------------------------- public API
def make_scenes(config: ScenesConfig | None = None, **overrides) -> CrossModalData:
    """Generate the synthetic "scenes" dataset.

    ``config`` (default :class:`ScenesConfig`) may be adjusted by keyword ``overrides``,
    e.g. ``make_scenes(num_items=300, seed=1)``. Returns a :class:`CrossModalData` named
    ``"scenes"`` with images (N, 3, S, S) uint8, texts (N, 293) float32 in {0, 1}, labels
    (N, 12) uint8, ``vocabulary=VOCABULARY`` and ``label_names=CATEGORY_NAMES``.
    """
    data, _ = make_scenes_with_masks(config, **overrides)
    return data


def make_scenes_with_masks(config: ScenesConfig | None = None, **overrides) -> tuple[CrossModalData, np.ndarray]:
    """Like :func:`make_scenes`, also returning (N, S, S) bool masks: True on the pixels
    covered by category objects (distractors and background are False)."""
    cfg = _resolve_config(config, dict(overrides))
    n, size = cfg.num_items, cfg.image_size
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    texts = np.zeros((n, len(VOCABULARY)), dtype=np.float32)
    labels = np.zeros((n, len(CATEGORY_NAMES)), dtype=np.uint8)
    chunk_size = _chunk_size(size)
    for chunk, start in enumerate(range(0, n, chunk_size)):
        stop = min(start + chunk_size, n)
        views = (images[start:stop], masks[start:stop], texts[start:stop], labels[start:stop])
        _make_chunk(cfg, chunk, chunk_size, *views)
    data = CrossModalData(
        images=images,
        texts=texts,
        labels=labels,
        label_names=list(CATEGORY_NAMES),
        name="scenes",
        text_vocabulary=Vocabulary(list(VOCABULARY), tokenizer="words"),  # tags are single \w+ tokens
    )
    return data, masks


# --------------------------------------------------------------------------- generation
def _chunk_size(image_size: int) -> int:
    return max(1, min(_MAX_CHUNK, _CHUNK_PIXELS // (3 * image_size * image_size)))


def _make_chunk(cfg: ScenesConfig, chunk: int, chunk_size: int, images, masks, texts, labels) -> None:
    """Fill the given views (m <= chunk_size items) in place. Random draws always use the
    full chunk size so item i does not depend on how many items follow it."""
    m, size = labels.shape[0], cfg.image_size
    rng_bg = np.random.default_rng([cfg.seed, chunk, 0])
    rng_obj = np.random.default_rng([cfg.seed, chunk, 1])
    rng_txt = np.random.default_rng([cfg.seed, chunk, 2])
    canvas = _backgrounds(rng_bg, chunk_size, size)[:m]
    grids = {}
    for j in range(m):
        objects, distractors = _paint_item(rng_obj, cfg, canvas[j], masks[j], grids)
        cats = sorted({c for c in objects})
        labels[j, cats] = 1
        texts[j, _item_tags(rng_txt, cfg, cats, distractors)] = 1.0
    noise = rng_bg.standard_normal((chunk_size, 3, size, size), dtype=np.float32)[:m]
    noise *= np.float32(_PIXEL_NOISE)
    canvas += noise
    np.clip(canvas, 0.0, 255.0, out=canvas)
    np.rint(canvas, out=canvas)
    images[...] = canvas


def _upsampler(size: int, k: int) -> np.ndarray:
    """(size, k) matrix interpolating a k-point grid to size pixels (smoothstep weights)."""
    pos = np.clip((np.arange(size) + 0.5) / size * k - 0.5, 0.0, k - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), k - 2)
    w = pos - i0
    w = w * w * (3.0 - 2.0 * w)
    a = np.zeros((size, k), dtype=np.float32)
    a[np.arange(size), i0] = 1.0 - w
    a[np.arange(size), i0 + 1] = w
    return a


def _smooth(rng, n: int, channels: int, k: int, size: int, lo: float, hi: float) -> np.ndarray:
    low = rng.uniform(lo, hi, size=(n, channels, k, k)).astype(np.float32)
    a = _upsampler(size, k)
    return a @ low @ a.T  # (n, channels, size, size)


def _backgrounds(rng, n: int, size: int) -> np.ndarray:
    """(n, 3, size, size) float32 muted clutter: smooth luminance at two scales, a weak
    colour tint, and soft blobs of muted colour."""
    bg = _smooth(rng, n, 1, 4, size, 70.0, 185.0)  # coarse luminance
    bg = bg + _smooth(rng, n, 1, max(4, round(size / 6.5)), size, -30.0, 30.0)  # texture
    bg = bg + _smooth(rng, n, 1, max(4, round(size / 3.5)), size, -14.0, 14.0)  # fine texture
    bg = bg + _smooth(rng, n, 3, 4, size, -15.0, 15.0)  # tint
    bg = bg + _smooth(rng, n, 3, max(4, round(size / 8)), size, -8.0, 8.0)  # tint texture
    k = 5  # soft blobs
    centre = rng.uniform(0.0, size, size=(n, k, 2)).astype(np.float32)
    sigma = rng.uniform(0.04, 0.12, size=(n, k, 1)).astype(np.float32) * size
    amp = rng.uniform(-45.0, 45.0, size=(n, k, 1)) + rng.uniform(-10.0, 10.0, size=(n, k, 3))
    coord = np.arange(size, dtype=np.float32) + 0.5
    gy = np.exp(-((coord[None, None, :] - centre[:, :, :1]) ** 2) / (2 * sigma**2))  # (n, k, S)
    gx = np.exp(-((coord[None, None, :] - centre[:, :, 1:]) ** 2) / (2 * sigma**2))
    weighted = gy.transpose(0, 2, 1)[:, None, :, :] * amp.astype(np.float32).transpose(0, 2, 1)[:, :, None, :]
    bg = bg + weighted @ gx[:, None, :, :]  # (n, 3, S, k) @ (n, 1, k, S)
    return bg.astype(np.float32, copy=False)


def _grid(side: int, grids: dict) -> tuple[np.ndarray, np.ndarray]:
    if side not in grids:
        c = (np.arange(side, dtype=np.float32) + 0.5) / side * 2.0 - 1.0
        grids[side] = (c[:, None], c[None, :])
    return grids[side]


def _shape_mask(kind: int, side: int, angle: float, grids: dict) -> np.ndarray:
    """(side, side) bool mask of a shape in its bounding box; y points down."""
    yy, xx = _grid(side, grids)
    if kind in (_SQUARE, _TRIANGLE, _CROSS):
        ca, sa = math.cos(angle), math.sin(angle)
        xx, yy = ca * xx + sa * yy, -sa * xx + ca * yy
    if kind == _CIRCLE:
        return xx * xx + yy * yy <= 0.95
    if kind == _SQUARE:
        return (np.abs(xx) <= 0.78) & (np.abs(yy) <= 0.78)
    if kind == _TRIANGLE:
        t = (yy + 0.88) / 1.76
        return (t >= 0.0) & (t <= 1.0) & (np.abs(xx) <= 0.98 * t)
    if kind == _CROSS:
        ax, ay = np.abs(xx), np.abs(yy)
        return ((ax <= 0.3) & (ay <= 0.95)) | ((ay <= 0.3) & (ax <= 0.95))
    if kind == _RING:
        r2 = xx * xx + yy * yy
        return (r2 <= 0.95) & (r2 >= 0.3)
    if kind == _DIAMOND:
        return np.abs(xx) + np.abs(yy) <= 0.98
    raise ValueError(kind)


def _place(rng, size: int, side: int, boxes: list) -> tuple[int, int]:
    """Top-left corner for a side x side box, rejection-sampled to overlap the boxes already
    placed by at most _MAX_OVERLAP of the smaller box (else the least overlapping try)."""
    tries = rng.integers(0, size - side + 1, size=(_PLACEMENT_TRIES, 2)).tolist()
    best, best_overlap = tries[0], math.inf
    for y, x in tries:
        worst = 0.0
        for by, bx, bs in boxes:
            iy = min(y + side, by + bs) - max(y, by)
            ix = min(x + side, bx + bs) - max(x, bx)
            if iy > 0 and ix > 0:
                worst = max(worst, iy * ix / min(side, bs) ** 2)
        if worst <= _MAX_OVERLAP:
            return y, x
        if worst < best_overlap:
            best, best_overlap = (y, x), worst
    return best


def _paint_item(rng, cfg: ScenesConfig, canvas: np.ndarray, mask: np.ndarray, grids: dict):
    """Place and paint one item's objects and distractors on ``canvas`` (3, S, S) float32,
    marking category pixels in ``mask``. Returns (object categories, distractor (colour,
    shape) pairs)."""
    size = cfg.image_size
    n_obj = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    n_dis = int(rng.integers(cfg.distractors_per_image[0], cfg.distractors_per_image[1] + 1))
    categories = [int(c) for c in rng.integers(0, len(CATEGORY_NAMES), size=n_obj)]
    distractors = [
        (int(c), int(s))
        for c, s in zip(
            rng.integers(0, len(_DISTRACTOR_RGB), size=n_dis), rng.integers(0, _NUM_DISTRACTOR_SHAPES, size=n_dis)
        )
    ]
    # Objects are placed first (they get the free space) and painted last (on top).
    object_flags = [True] * n_obj + [False] * n_dis
    kinds = [c % len(SHAPES) for c in categories] + [k for _, k in distractors]
    base = np.concatenate(
        [_CATEGORY_RGB[[c // len(SHAPES) for c in categories]], _DISTRACTOR_RGB[[c for c, _ in distractors]]]
    )
    jitter = np.concatenate(
        [np.full(n_obj, _CATEGORY_JITTER, dtype=np.float32), _DISTRACTOR_JITTER[[c for c, _ in distractors]]]
    )
    total = n_obj + n_dis
    sides = np.maximum(_MIN_SIDE, np.rint(rng.uniform(*_OBJECT_SIDE, size=total) * size)).astype(int).tolist()
    angles = rng.uniform(-0.26, 0.26, size=total).tolist()
    colours = (base + rng.uniform(-1.0, 1.0, size=(total, 3)) * jitter[:, None]) * rng.uniform(
        0.85, 1.08, size=(total, 1)
    )
    colours = np.clip(colours, 0.0, 255.0).astype(np.float32)
    boxes, placed = [], []
    for i in range(total):
        y, x = _place(rng, size, sides[i], boxes)
        boxes.append((y, x, sides[i]))
        placed.append((object_flags[i], colours[i], kinds[i], sides[i], angles[i], y, x))
    for is_object, colour, kind, side, angle, y, x in reversed(placed):
        m = _shape_mask(kind, side, angle, grids)
        region = canvas[:, y : y + side, x : x + side]
        region[:, m] = colour[:, None]
        if is_object:
            mask[y : y + side, x : x + side] |= m
        else:  # a later (higher-priority) shape may cover an object painted earlier
            mask[y : y + side, x : x + side] &= ~m
    return categories, distractors


def _item_tags(rng, cfg: ScenesConfig, categories: list[int], distractors: list) -> list[int]:
    """Vocabulary indices of one item's tags (at least one)."""
    tags: set[int] = set()
    for cat in categories:
        if rng.random() < cfg.drop_prob:
            continue  # a silent category: no word at all
        k = int(rng.integers(1, 4))
        tags.update(int(t) for t in rng.choice(_CATEGORY_TAG_IDS[cat], size=k, replace=False))
        if rng.random() < _AMBIGUOUS_COLOUR_PROB:
            tags.add(_pick(rng, _COLOUR_WORD_IDS[cat // len(SHAPES)]))
        if rng.random() < _AMBIGUOUS_SHAPE_PROB:
            tags.add(_pick(rng, _SHAPE_WORD_IDS[cat % len(SHAPES)]))
    for colour, kind in distractors:
        if rng.random() < _DISTRACTOR_WORD_PROB:
            tags.add(_pick(rng, _DISTRACTOR_COLOUR_WORD_IDS[colour]))
        if rng.random() < _DISTRACTOR_WORD_PROB:
            tags.add(_pick(rng, _SHAPE_WORD_IDS[kind]))
    if rng.random() < _MISTAG_PROB:
        absent = [c for c in range(len(CATEGORY_NAMES)) if c not in categories]
        if absent:
            tags.add(_pick(rng, _CATEGORY_TAG_IDS[_pick(rng, absent)]))
    n_noise = int(rng.poisson(cfg.noise_tags))
    if n_noise or not tags:
        draws = np.searchsorted(_NOISE_CDF, rng.random(max(1, n_noise)), side="right")
        tags.update(int(_NOISE_IDS[min(d, _NUM_NOISE - 1)]) for d in draws)
    return sorted(tags)


def _pick(rng, options):
    return options[int(rng.integers(0, len(options)))]
