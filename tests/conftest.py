"""Shared fixtures: tiny scenes data and fast configs so training tests take seconds."""

from __future__ import annotations

import pytest
import torch

from adah.config import Config
from adah.data.base import random_split
from adah.data.scenes import make_scenes
from milvus_server import milvus_server  # noqa: F401 - the session's standalone Milvus server (tests/milvus_server.py)

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def tiny_config(**overrides) -> Config:
    """The demo's config shrunk for tests: small heads, 1 epoch, no progress bars; the paper's G
    (``--preset paper``: G takes steps) on both branches, so the tests exercise G's optimiser, steps
    and resume, and both masks."""
    base = {
        "model.attention": "both",
        "model.text_hidden": [128, 64],
        "model.image_fc_dims": [64, 64],
        "model.bits": 16,
        "train.epochs": 1,
        "train.progress": False,
        "train.lr": 1e-3,
        "train.attention_lr": 1e-3,
    }
    base.update(overrides)
    return Config.load("scenes_demo", preset="paper").override(base)


@pytest.fixture(scope="session")
def scenes_small():
    """600 scenes with a split of 100 queries / 500 retrieval / 360 train + 40 val."""
    data = make_scenes(num_items=600, seed=3)
    split = random_split(len(data), num_query=100, num_train=400, val_fraction=0.1, seed=3)
    return data, split
