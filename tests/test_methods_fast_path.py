"""The deep baselines (adah.methods) on the fast path of training on cached maps
(adah.training.precomputed): with a frozen backbone and no attention, DCMH, SSAH and DJSRH train on
pooled vectors computed once per item, and their parameters, codes, buffers and logged numbers
equal those of the path over the maps (float rounding) on a fixed seed. small_cnn's pool5 is a
global max, so DJSRH's image features (the maps averaged over their cells) are not the pooled
vector: the fast path must keep them apart. A small_cnn scenes cache of 160 items at 32 px: seconds a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.features.image_cache import FeatureCache
from adah.methods import build_method, method_overrides
from adah.training.precomputed import ENV_SWITCH
from adah.training.trainer import Trainer

from helpers import SCENES_N, assert_same_training, scenes_config, small_cnn_weights


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> tuple[Path, Path]:
    """small_cnn weights whose fc has dropout (so both paths must draw it in the same order), and
    its maps of the scenes of helpers.scenes_config."""
    from adah.features.image_cache import extract_features

    root = tmp_path_factory.mktemp("methods_fast")
    weights = small_cnn_weights(root / "small_cnn-test.pth", dropout=0.2)
    extract_features(scenes_config(weights, **{"model.dropout": 0.2}), root / "cache", batch_size=32, progress=False)
    return weights, root / "cache"


def method_config(weights: Path, cache: Path, name: str, **overrides):
    base = {**method_overrides(name), "data.val_fraction": 0.2, "model.dropout": 0.2, "model.bits": 16,
            "train.epochs": 2, "train.batch_size": 16, "train.seed": 3}
    if name == "ssah":
        base["train.method_options"] = {"label_hidden": 64, "disc_hidden": 32}
    return scenes_config(weights, cache, **{**base, **overrides})


def train_method(cfg, out: Path, monkeypatch, fast: bool) -> tuple[Trainer, dict]:
    monkeypatch.setenv(ENV_SWITCH, "1" if fast else "0")
    data = load_dataset(cfg.data)
    assert isinstance(data.images, FeatureCache)
    trainer = Trainer(cfg, data, make_split(cfg.data, len(data)), out, method=build_method)
    trainer.fit()
    return trainer, json.loads((out / "training_path.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcmh", "ssah", "djsrh"])
def test_a_method_trains_the_same_on_the_fast_path(tmp_path, cache, monkeypatch, name):
    cfg = method_config(*cache, name)
    slow, slow_path = train_method(cfg, tmp_path / "maps", monkeypatch, fast=False)
    fast, fast_path = train_method(cfg, tmp_path / "fast", monkeypatch, fast=True)
    assert slow_path["path"] == "maps" and ENV_SWITCH in slow_path["reason"]
    assert fast_path["path"] == "precomputed"
    assert_same_training(slow, fast, np.arange(SCENES_N), min_code=0.01)
    assert all("objective" in r and "val_map" in r for r in fast.history)  # the method's losses and validation
    state_a, state_b = slow.method.state_dict(), fast.method.state_dict()  # buffers (F, G, B, LabNet, ...)
    for key in ("F", "G", "B"):
        if key in state_a:
            torch.testing.assert_close(state_a[key], state_b[key], atol=2e-5, rtol=1e-4, msg=key)
    for key in ("nets", "buffers"):
        if key in state_a:
            for name, tensor in state_a[key].items():
                torch.testing.assert_close(tensor, state_b[key][name], atol=2e-5, rtol=1e-4, msg=f"{key} {name}")


def test_the_fast_path_keeps_djsrh_s_image_features_apart(tmp_path, cache, monkeypatch):
    """DJSRH's image features on the fast path are the cached maps averaged over their cells, as
    over the maps, not small_cnn's max-pooled vector; a method run says it took the fast path."""
    monkeypatch.setenv(ENV_SWITCH, "1")
    cfg = method_config(*cache, "djsrh", **{"train.epochs": 1})
    data = load_dataset(cfg.data)
    trainer = Trainer(cfg, data, make_split(cfg.data, len(data)), tmp_path / "run", method=build_method)
    assert trainer.training_path["path"] == "precomputed" and trainer.method.branches is trainer.fast.net
    rows = np.asarray(trainer.split.train[:8])
    pooled, _, _ = trainer._batch(rows)
    maps = torch.from_numpy(data.images[rows])
    own = trainer.fast.net.image_features(pooled)
    torch.testing.assert_close(own, maps.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(own, trainer.model.image_features(maps), atol=1e-5, rtol=1e-5)
    d = int(np.prod(trainer.fast.pooled_shape))
    assert not torch.allclose(pooled[:, :d], own, atol=1e-3)  # the max-pooled vector is another thing
    trainer.fit()
    assert json.loads((tmp_path / "run" / "training_path.json").read_text())["path"] == "precomputed"


def test_a_method_without_image_features_keeps_none_in_the_table(tmp_path, cache, monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "1")
    cfg = method_config(*cache, "dcmh", **{"train.epochs": 1})
    data = load_dataset(cfg.data)
    trainer = Trainer(cfg, data, make_split(cfg.data, len(data)), tmp_path / "run", method=build_method)
    assert trainer.training_path["path"] == "precomputed" and trainer.fast.feature_columns == 0
    pooled, _, _ = trainer._batch(np.asarray(trainer.split.train[:4]))
    assert pooled.shape[1] == 2 * int(np.prod(trainer.fast.pooled_shape)) + 1
    with pytest.raises(Exception, match="holds no image features"):
        trainer.fast.net.image_features(pooled)
