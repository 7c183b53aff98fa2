"""Baselines on separable data with more dimensions than training items (issue 13, like averaged
MobileNetV2 maps and a 3,000-word bag of words on a few thousand photos): no method may return
near-constant codes or rank at chance; ``adah benchmark`` flags near-constant codes."""

from __future__ import annotations

import numpy as np
import pytest

from adah.baselines import BASELINES
from adah.experiments.benchmark import degenerate_codes
from adah.evaluation.retrieval import Codes
from adah.evaluation.metrics import mean_average_precision

C, N_TRAIN, N_TEST, D_IMAGE, D_TEXT = 6, 150, 90, 200, 300


@pytest.fixture(scope="module")
def wide():
    """Non-negative image features with a large shared mean plus a class prototype; sparse binary
    text with class words; labels one-hot. d > n in both modalities."""
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_TEST
    y = rng.integers(0, C, n)
    labels = np.eye(C, dtype=np.uint8)[y]
    image = 5.0 + 0.5 * rng.gamma(1.0, 1.0, (C, D_IMAGE))[y] + rng.gamma(1.0, 1.0, (n, D_IMAGE))
    words = rng.random((C, D_TEXT)) < 0.05
    text = ((rng.random((n, D_TEXT)) < 0.01) | (words[y] & (rng.random((n, D_TEXT)) < 0.5))).astype(np.float64)
    tr, te = np.arange(N_TRAIN), np.arange(N_TRAIN, n)
    return image, text, labels, tr, te


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_codes_are_not_near_constant_and_beat_chance(wide, name):
    image, text, labels, tr, te = wide
    kwargs = {"max_iter": 40} if name == "cmfh" else {}
    model = BASELINES[name](bits=16, random_state=0, **kwargs).fit(image[tr], text[tr], labels[tr])
    q = Codes(model.encode(image[te], "image"), model.encode(text[te], "text"), labels[te])
    db = Codes(model.encode(image[tr], "image"), model.encode(text[tr], "text"), labels[tr])
    for codes in (q, db):
        for modality in ("image", "text"):
            distinct = len(np.unique(codes.of(modality), axis=0))
            assert distinct >= C, (name, modality, distinct)
    assert degenerate_codes(db) == {}
    i2t = mean_average_precision(q.image, db.text, q.labels, db.labels)
    t2i = mean_average_precision(q.text, db.image, q.labels, db.labels)
    chance = 1 / C
    assert i2t > chance + 0.3 and t2i > chance + 0.3, (name, i2t, t2i)


def test_degenerate_codes_are_flagged():
    rng = np.random.default_rng(1)
    good = np.where(rng.random((500, 16)) < 0.5, 1, -1).astype(np.int8)
    constant = np.ones((500, 16), np.int8)
    constant[:3, 0] = -1  # 2 distinct values among 500 items
    labels = np.zeros((500, 2), np.uint8)
    assert degenerate_codes(Codes(good, good, labels)) == {}
    assert degenerate_codes(Codes(good, constant, labels)) == {"text": 2}
    assert degenerate_codes(Codes(None, constant, labels)) == {"text": 2}
