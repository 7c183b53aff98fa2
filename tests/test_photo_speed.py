"""The fast path of training on cached maps (adah.training.precomputed): with a frozen backbone and
a G that takes no step, D trains on pooled parts computed once per item, and the model, its
codes and its logged numbers equal those of the path over the maps (float rounding) on a fixed
seed; the fast path switches itself off, saying why, whenever its assumptions fail. A small CNN
on small scenes, its maps cached: seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.config import Config, ModelConfig
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.features.image_cache import FeatureCache, extract_features
from adah.models.adah import build_backbone
from adah.training.precomputed import ENV_SWITCH
from adah.training.trainer import Trainer

from helpers import assert_same_training

N = 120


def config(weights: Path, cache: Path | None, preset: str = "salient_erase", **overrides) -> Config:
    options = {"image_size": 32, **({"features": str(cache)} if cache else {})}
    base = {
        "data.num_items": N, "data.num_query": 20, "data.num_train": 80, "data.options": options,
        "data.val_fraction": 0.25, "model.image_weights": str(weights), "model.image_size": 32,
        "model.image_fc_dims": [32, 32], "model.text_hidden": [64, 32], "model.bits": 16,
        "model.freeze_backbone": True, "model.attention": "image", "model.dropout": 0.2,
        "train.epochs": 2, "train.batch_size": 16, "train.progress": False, "train.lr": 1e-3,
        "train.attention_lr": 1e-3, "train.lr_step_epochs": 1, "loss.adversarial_weight": 1.0,
    }
    base.update(overrides)
    return Config.load("scenes_demo").with_preset(preset).override(base)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> tuple[Path, Path]:
    """small_cnn weights with trained-looking BatchNorm statistics, and its maps of 120 scenes."""
    torch.manual_seed(0)
    net = build_backbone(ModelConfig(image_backbone="small_cnn", image_size=32, image_fc_dims=(32, 32), dropout=0.2))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    root = tmp_path_factory.mktemp("photo_speed")
    weights = root / "small_cnn-test.pth"
    torch.save(net.state_dict(), weights)
    extract_features(config(weights, None), root / "cache", batch_size=32, progress=False)
    return weights, root / "cache"


def run(cfg: Config, out: Path, monkeypatch, fast: bool) -> tuple[Trainer, dict]:
    monkeypatch.setenv(ENV_SWITCH, "1" if fast else "0")
    data = load_dataset(cfg.data)
    assert isinstance(data.images, FeatureCache)
    trainer = Trainer(cfg, data, make_split(cfg.data, len(data)), out)
    trainer.fit()
    return trainer, json.loads((out / "training_path.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("preset, attention", [("salient_erase", "image"), ("adah", "none")])
def test_fast_path_gives_the_codes_of_the_path_over_the_maps(tmp_path, cache, monkeypatch, preset, attention):
    weights, folder = cache
    cfg = config(weights, folder, preset, **{"model.attention": attention})
    slow, slow_path = run(cfg, tmp_path / "maps", monkeypatch, fast=False)
    fast, fast_path = run(cfg, tmp_path / "fast", monkeypatch, fast=True)
    assert slow_path["path"] == "maps" and ENV_SWITCH in slow_path["reason"]
    assert fast_path["path"] == "precomputed" and fast.fast is not None and slow.fast is None
    assert_same_training(slow, fast, np.arange(N), min_code=0.05)


@pytest.mark.parametrize("overrides, reason", [
    ({"train.steps_max": 1}, "G takes steps"),
    ({"attention.noise": 0.5}, "attention.noise"),
    ({"attention.soft_epochs": 1}, "soft_epochs"),
])
def test_fast_path_switches_itself_off_and_says_why(tmp_path, cache, monkeypatch, overrides, reason):
    """G's mask changes: the pooled path is off, saying why; the maps, still fixed, are held in
    memory instead (adah.training.held_maps, tests/test_paper_g_speed.py)."""
    weights, folder = cache
    cfg = config(weights, folder, **{"train.epochs": 1, "train.max_batches_per_epoch": 1, **overrides})
    trainer, path = run(cfg, tmp_path / "run", monkeypatch, fast=True)
    assert type(trainer.fast).__name__ == "HeldMaps" and path["path"] == "held_maps" and reason in path["reason"]


def test_fast_path_is_off_on_pixels(tmp_path, cache, monkeypatch):
    weights, _ = cache
    cfg = config(weights, None, **{"train.epochs": 1, "train.max_batches_per_epoch": 1})
    monkeypatch.setenv(ENV_SWITCH, "1")
    data = load_dataset(cfg.data)
    trainer = Trainer(cfg, data, make_split(cfg.data, len(data)), tmp_path / "run")
    assert trainer.fast is None and "not cached backbone maps" in trainer.training_path["reason"]


# --------------------------------------------------------------------------- the compact cache
@pytest.fixture(scope="module")
def compact(tmp_path_factory) -> tuple[Config, Path]:
    """A MobileNetV2 cache (random weights with trained-looking BatchNorm statistics) of 120
    scenes at 64 px: format version 3, the 320-channel maps before the last 1x1 conv."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(1)
    net = mobilenet_v2(weights=None)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    root = tmp_path_factory.mktemp("compact")
    torch.save(net.state_dict(), root / "mobilenet_v2-test.pth")
    cfg = config(root / "mobilenet_v2-test.pth", None, **{
        "model.image_backbone": "mobilenet_v2", "model.image_size": 64, "data.options": {"image_size": 64}})
    extract_features(cfg, root / "cache", batch_size=32, progress=False)
    return cfg, root / "cache"


def test_compact_cache_reads_back_the_maps_of_the_whole_backbone(compact):
    from adah.features.image_cache import HEAD_FILE, read_header, without_cache

    cfg, folder = compact
    header = read_header(folder)
    assert header["version"] == 3 and header["shape"] == [N, 320, 2, 2] and header["head"]["channels"] == 1280
    assert (folder / HEAD_FILE).is_file()
    per_item = (folder / "maps.npy").stat().st_size / N
    assert per_item == pytest.approx(320 * 2 * 2 * 2, abs=2)  # a quarter of 1280 channels (plus the .npy header)
    cache = FeatureCache(folder)
    assert cache.shape == (N, 1280, 2, 2) and cache.dtype == np.float32
    backbone = build_backbone(cfg.model).eval()
    pixels = torch.from_numpy(load_dataset(without_cache(cfg.data)).images[:40])
    with torch.no_grad():
        direct = backbone.features(backbone.preprocess(pixels)).numpy()
    read = cache[np.arange(40)]
    scale = np.abs(direct).max()
    assert scale > 0.05 and (read != 0).mean() > 0.2
    error = np.abs(read - direct).max() / scale
    assert error < 2e-3, error  # float16 rounding of the 320-channel maps (float16's step is 1e-3 of a value)


def test_an_old_cache_still_reads_and_a_changed_head_is_refused(compact, tmp_path):
    from adah.features.image_cache import HEAD_FILE, CacheDamaged, chunk_digest, read_header

    cfg, folder = compact
    maps = FeatureCache(folder)[np.arange(N)]
    old = tmp_path / "v2"
    old.mkdir()
    np.save(old / "maps.npy", maps.astype(np.float16))  # version 2: the 1280-channel maps themselves
    header = read_header(folder)
    header.update(version=2, shape=[N, 1280, 2, 2], chunk_sha256=[chunk_digest(maps[s : s + 32].astype(np.float16))
                                                                   for s in range(0, N, 32)])
    del header["head"]
    (old / "header.json").write_text(json.dumps(header))
    np.testing.assert_array_equal(FeatureCache(old)[np.arange(N)], maps.astype(np.float16).astype(np.float32))
    assert extract_features(cfg, old, progress=False).already_complete  # left alone, not refused
    header["version"] = 1
    (old / "header.json").write_text(json.dumps(header))
    with pytest.raises(Exception, match="rebuild it with adah features extract --overwrite"):
        FeatureCache(old)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("maps.npy", "header.json"):
        (damaged / name).write_bytes((folder / name).read_bytes())
    state = torch.load(folder / HEAD_FILE, weights_only=True)
    state["0.weight"] = state["0.weight"] * 1.01
    torch.save(state, damaged / HEAD_FILE)
    with pytest.raises(CacheDamaged, match="does not match its checksum"):
        FeatureCache(damaged)
    (damaged / HEAD_FILE).unlink()
    with pytest.raises(CacheDamaged, match="missing"):
        FeatureCache(damaged)


@pytest.mark.slow
def test_fit_evaluates_from_the_index_codes_as_encoding_again_would(tmp_path):
    """``adah fit`` scores the held-out rows with the codes its index wrote (one pass over the maps
    instead of two): the same MAP and recall as encoding the rows again with best.pt, and the
    time of each stage in fit.json."""
    from PIL import Image

    from adah.data.registry import make_split
    from adah.evaluation.retrieval import encode, evaluate_codes
    from adah.recipes.fit import fit_config, fit_folder
    from adah.training.checkpoint import load_model

    (tmp_path / "photos" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((64, 48)).save(
            tmp_path / "photos" / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "text": f"item {i % 4} word{i % 7}", "labels": [f"l{i % 4}"],
                     "split": "test" if i % 5 == 0 else "train"})
    (tmp_path / "photos" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "fit"
    fit = fit_folder(tmp_path / "photos", out, text_encoder="bow_mlp", bits=16, epochs=2, device="cpu",
                     progress=False, fast=True)
    saved = json.loads((out / "fit.json").read_text())
    assert set(saved["seconds"]) == {"image_features", "text_features", "train", "index", "evaluate", "total"}
    cfg, _ = fit_config(tmp_path / "photos" / "items.jsonl", out, similarity="auto", ignore_labels=False,
                        text_encoder="bow_mlp", bits=16, epochs=2, seed=0, attention=None, device="cpu", fast=True)
    data = load_dataset(cfg.data)
    split = make_split(cfg.data, len(data))
    model, _, _ = load_model(out / "best.pt", torch.device("cpu"))
    again = evaluate_codes(encode(model, data, split.query), encode(model, data, split.retrieval),
                           directions=("i2t", "t2i"))
    assert fit.num_query == 8 and set(fit.map) == {"i2t", "t2i"}
    assert fit.map == again.map and fit.recall == again.recall
