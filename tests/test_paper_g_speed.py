"""The held-maps path of training on cached maps (adah.training.held_maps): when G takes steps (the
paper's G, ``--preset paper``) the pooled fast path is off, and the maps of the training and
validation rows are held in memory instead of read from the cache at every batch; the model, its
codes and its logged numbers equal those of the path over the cache (float rounding) on a fixed
seed, resuming gives the uninterrupted run, and the path falls back to the cache, saying why,
when the maps would not fit. A small_cnn scenes cache at 32 px: seconds a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.data.registry import make_split
from adah.errors import AdahError
from adah.features.dataset import load_dataset
from adah.features.image_cache import FeatureCache, extract_features
from adah.training import held_maps
from adah.training.precomputed import ENV_SWITCH
from adah.training.trainer import Trainer

from helpers import SCENES_N, assert_same_training, scenes_config, small_cnn_weights


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> tuple[Path, Path]:
    """small_cnn weights with dropout in its fc layers (both paths must draw it in the same order)
    and its maps of the scenes of helpers.scenes_config."""
    root = tmp_path_factory.mktemp("paper_g_speed")
    weights = small_cnn_weights(root / "small_cnn-test.pth", dropout=0.2)
    extract_features(scenes_config(weights, **{"model.dropout": 0.2}), root / "cache", batch_size=32, progress=False)
    return weights, root / "cache"


def paper_config(cache: tuple[Path, Path], **overrides):
    """The paper's G on both branches (G takes steps: 4 E,D steps : 1 G step), 2 epochs."""
    base = {"model.attention": "both", "model.dropout": 0.2, "data.val_fraction": 0.25, "train.epochs": 2,
            "train.batch_size": 16, "train.seed": 5, "train.lr_step_epochs": 1}
    return scenes_config(*cache, **{**base, **overrides}).with_preset("paper")


def fit(cfg, out: Path, monkeypatch, fast: bool, resume: bool = False) -> tuple[Trainer, dict]:
    monkeypatch.setenv(ENV_SWITCH, "1" if fast else "0")
    data = load_dataset(cfg.data)
    assert isinstance(data.images, FeatureCache)
    trainer = Trainer(cfg, data, make_split(cfg.data, len(data)), out)
    trainer.fit(resume=resume)
    return trainer, json.loads((out / "training_path.json").read_text())


@pytest.fixture(scope="module")
def both_paths(cache, tmp_path_factory):
    """The paper's G trained over the cache and on the held maps, same config and seed."""
    root = tmp_path_factory.mktemp("paper_g_runs")
    mp = pytest.MonkeyPatch()
    try:
        cfg = paper_config(cache)
        return cfg, fit(cfg, root / "maps", mp, fast=False), fit(cfg, root / "held", mp, fast=True)
    finally:
        mp.undo()


@pytest.mark.slow
def test_held_maps_give_the_training_of_the_path_over_the_cache(both_paths):
    _, (slow, slow_path), (held, held_path) = both_paths
    assert slow_path["path"] == "maps" and ENV_SWITCH in slow_path["reason"]
    assert held_path["path"] == "held_maps" and "G takes steps" in held_path["reason"]
    assert isinstance(held.fast, held_maps.HeldMaps) and held.use_max_steps
    assert any("g_gain" in r for r in held.history)  # G did take steps
    assert_same_training(slow, held, np.arange(SCENES_N), min_code=0.05)


@pytest.mark.slow
def test_the_held_maps_are_the_caches_rows(both_paths):
    _, (slow, _), (held, _) = both_paths
    rows = np.union1d(held.split.train, held.split.val)
    table = held.fast.data.images
    assert table.shape == slow.data.images.shape and table.table.shape[0] == len(rows) < SCENES_N
    np.testing.assert_array_equal(table[rows[::-1]], slow.data.images[rows[::-1]])
    test_row = np.setdiff1d(np.arange(SCENES_N), rows)[:1]
    with pytest.raises(AdahError, match="did not precompute"):
        table[test_row]


@pytest.mark.slow
def test_resuming_on_the_held_maps_gives_the_uninterrupted_run(cache, both_paths, tmp_path, monkeypatch):
    cfg, _, (held, _) = both_paths
    fit(cfg.override({"train.epochs": 1}), tmp_path / "run", monkeypatch, fast=True)
    resumed, path = fit(cfg, tmp_path / "run", monkeypatch, fast=True, resume=True)
    assert path["path"] == "held_maps" and resumed.epoch == held.epoch == 2
    for (name, a), b in zip(held.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    assert [r["val_map"] for r in resumed.history] == [r["val_map"] for r in held.history]
    assert resumed.best_epoch == held.best_epoch


@pytest.mark.slow
def test_maps_over_the_memory_budget_fall_back_to_the_cache_and_say_why(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(held_maps, "MEMORY_BUDGET", 1 << 10)
    cfg = paper_config(cache, **{"train.epochs": 1, "train.max_batches_per_epoch": 1})
    trainer, path = fit(cfg, tmp_path / "run", monkeypatch, fast=True)
    assert trainer.fast is None and path["path"] == "maps"
    assert path["reason"].startswith("G takes steps") and "maps not held: the maps of the" in path["reason"]
    assert "GiB as float32" in path["reason"]
