"""Run by tests/test_distributed.py, alone or under torchrun: train a tiny feature dataset."""

from __future__ import annotations

import sys

import numpy as np

from adah.config import Config
from adah.data.base import CrossModalData, random_split
from adah.training.trainer import Trainer


def tiny_features(seed: int = 0, n: int = 240) -> CrossModalData:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 5)) < 0.3).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    images = (labels @ rng.normal(size=(5, 24)) + 0.7 * rng.normal(size=(n, 24))).astype(np.float32)
    texts = (labels @ rng.normal(size=(5, 16)) + 0.7 * rng.normal(size=(n, 16))).astype(np.float32)
    return CrossModalData(images, texts, labels, name="tiny-features")


def train_tiny_features(out) -> None:
    """Train the paper's G on :func:`tiny_features` into ``out`` (alone, in-process or under torchrun)."""
    data = tiny_features()
    split = random_split(len(data), num_query=40, num_train=180, val_fraction=0.1, seed=0)
    cfg = Config().with_preset("paper").override({  # the paper's G: G steps and its optimiser state too
        "model.image_backbone": "mlp", "model.image_fc_dims": [32, 32], "model.text_hidden": [32, 32],
        "model.bits": 16, "train.epochs": 3, "train.batch_size": 32, "train.lr": 1e-3, "train.attention_lr": 1e-3,
        "train.progress": False, "train.device": "cpu",
    })
    Trainer(cfg, data, split, out).fit()


if __name__ == "__main__":
    train_tiny_features(sys.argv[1])
