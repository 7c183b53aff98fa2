"""DCMH's algorithm as the paper runs it (Jiang & Li, CVPR 2017, Algorithm 1): a whole pass of the
image net with G and B fixed, then a whole pass of the text net with F and B fixed, then the
closed-form B; and DCMH learns on an easy set with the settings docs/methods.md gives for data
like Wiki. Small synthetic feature vectors, so each test takes a second or two."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adah.config import Config
from adah.data.base import CrossModalData, random_split
from adah.methods import build_method, method_overrides
from adah.training.trainer import Trainer


def prototype_features(n: int = 400, classes: int = 4, seed: int = 0) -> CrossModalData:
    """One label an item; image and text vectors are the class's prototype plus noise."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, n)
    labels = np.eye(classes, dtype=np.uint8)[label]
    images = (3 * rng.normal(size=(classes, 24))[label] + rng.normal(size=(n, 24))).astype(np.float32)
    texts = (rng.normal(size=(classes, 16))[label] + 0.5 * rng.normal(size=(n, 16))).astype(np.float32)
    return CrossModalData(images, texts, labels, name="prototypes")


@pytest.fixture(scope="module")
def prototypes():
    data = prototype_features()
    return data, random_split(len(data), num_query=80, num_train=320, val_fraction=0.1, seed=0)


def dcmh_config(**overrides) -> Config:
    base = {**method_overrides("dcmh"), "model.image_backbone": "mlp", "model.image_fc_dims": [32, 32],
            "model.text_hidden": [32, 32], "model.bits": 8, "train.epochs": 1, "train.batch_size": 32,
            "train.progress": False, "train.device": "cpu"}
    return Config().override({**base, **overrides})


def test_the_text_net_waits_for_the_image_pass(prototypes, tmp_path):
    """During the image pass G (the text outputs) stays as it was and F changes batch by batch; the
    text pass at the epoch's end changes G, then B = sign(F + G). (adah used to step the text net
    after every image step, so G changed during the image pass.)"""
    data, split = prototypes
    trainer = Trainer(dcmh_config(), data, split, tmp_path / "run", method=build_method)
    method = trainer.method
    f0, g0 = method.F.clone(), method.G.clone()
    batches = trainer._epoch_batches(trainer._new_epoch_state()["order"])
    for rows in batches[:3]:
        stats = method.step(rows, *trainer._batch(rows))
        assert set(stats) >= {"objective", "image_nll"} and not any(k.startswith("text_") for k in stats)
    assert torch.equal(method.G, g0)
    seen = method.positions(np.concatenate(batches[:3]))
    assert not torch.equal(method.F[seen], f0[seen])
    record = method.end_epoch()
    assert record["text_nll"] > 0 and method.pending == []
    assert not torch.equal(method.G[seen], g0[seen])
    unseen = torch.ones(len(g0), dtype=torch.bool)
    unseen[seen] = False
    assert torch.equal(method.G[unseen], g0[unseen])  # the text pass covers the image pass's batches only
    assert torch.equal(method.B, torch.where(method.F + method.G >= 0, 1.0, -1.0))


@pytest.mark.slow
def test_dcmh_learns_an_easy_set(prototypes, tmp_path):
    """The settings docs/methods.md gives for data like Wiki (Adam, eta = 0.001) separate four
    classes within a few epochs (random codes: about 0.25)."""
    data, split = prototypes
    cfg = dcmh_config(**{"train.epochs": 8, "train.method_options.optimizer": "adam",
                         "train.method_options.lr_start": 1e-3, "train.method_options.lr_end": 1e-3,
                         "train.method_options.eta": 0.001})
    result = Trainer(cfg, data, split, tmp_path / "run", method=build_method).fit()
    assert result.best_val_map > 0.6


def test_benchmark_keeps_the_users_batch_size():
    """`adah benchmark --methods dcmh --set train.batch_size=32` trains at batch 32: DCMH's published
    batch of 128 comes before the user's --set (the benchmark used to apply it last, so the user's
    value was silently dropped); train.method and `none`'s attention always apply."""
    from adah.experiments.benchmark import method_values

    assert method_values("dcmh")["train.batch_size"] == 128
    chosen = method_values("dcmh", frozenset({"train.batch_size", "train.method"}))
    assert "train.batch_size" not in chosen and chosen["train.method"] == "dcmh"
    assert method_values("none", frozenset({"model.attention"})) == {"model.attention": "none"}
