"""Builders the test modules share (plain functions, no fixtures: those live in conftest.py at
session scope). Import them as ``from helpers import ...``; never import one test module from
another."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.config import Config, ModelConfig


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


# --------------------------------------------------------------------------- models and indexes
def make_checkpoint(path: Path, seed: int = 0, num_items: int = 90, vocabulary: bool = True) -> Path:
    """An untrained tiny scenes model saved as a checkpoint (the index tests' model)."""
    from adah.features.dataset import load_dataset
    from adah.models import build_model
    from adah.training.checkpoint import save_checkpoint
    from adah.training.trainer import complete_config

    cfg = tiny_config(**{"data.num_items": num_items, "data.num_query": 10, "data.num_train": 60})
    data = load_dataset(cfg.data)
    cfg = complete_config(cfg, data)
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    save_checkpoint(path, model=model, config=cfg, epoch=0, data_fingerprint=data.fingerprint(),
                    text_vocabulary=data.text_vocabulary.to_dict() if vocabulary else None)
    return path


def make_folder(root: Path, n: int = 6) -> Path:
    """A folder collection of ``n`` small PNGs with items.jsonl (ids x0.., captions, labels)."""
    from PIL import Image

    (root / "photos").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (48 + i, 40), (40 * i, 200 - 30 * i, 90)).save(root / "photos" / f"p{i}.png")
        rows.append({"id": f"x{i}", "image": f"photos/p{i}.png", "text": f"red_circle sunset picture {i}",
                     "captions": [f"caption {i}", "another"], "labels": ["thing"] if i % 2 else ["thing", "other"]})
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def rewrite_manifest(folder: Path, **changes) -> None:
    """Change index.json's fields and write it back with a valid checksum: only the change is wrong."""
    from adah.index import store

    manifest = json.loads((folder / "index.json").read_text())
    manifest.update(changes)
    store.write_manifest(folder, manifest)


# --------------------------------------------------------------------------- codes
def brute_force(queries: np.ndarray, db: np.ndarray, bits: int, k: int):
    """Unpack, count differing bits, stable-sort per query: the reference."""
    q = np.unpackbits(queries, axis=1)[:, :bits].astype(np.int64)
    d = np.unpackbits(db, axis=1)[:, :bits].astype(np.int64)
    dist = (q[:, None, :] != d[None, :, :]).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), order


def random_packed(rng, n: int, bits: int) -> np.ndarray:
    from adah.index.backends import pack_pm1

    return pack_pm1(rng.choice(np.array([-1, 1], np.int8), size=(n, bits)), bits)


# --------------------------------------------------------------------------- small_cnn feature caches
SCENES_N = 160  # scenes in the feature-cache tests


def scenes_config(weights: Path, cache: Path | None = None, **overrides) -> Config:
    """A frozen small_cnn scenes config (32 px, 160 items) reading ``cache`` when given."""
    options = {"image_size": 32, **({"features": str(cache)} if cache else {})}
    base = {
        "data.num_items": SCENES_N, "data.num_query": 30, "data.num_train": 100, "data.options": options,
        "model.image_weights": str(weights), "model.image_size": 32, "model.image_fc_dims": [32, 32],
        "model.text_hidden": [64, 32], "model.bits": 16, "model.freeze_backbone": True,
        "train.epochs": 1, "train.progress": False, "train.lr": 1e-3, "train.attention_lr": 1e-3,
    }
    base.update(overrides)
    return Config.load("scenes_demo").override(base)


def small_cnn_weights(path: Path, dropout: float = 0.0) -> Path:
    """A small_cnn weights file with trained-looking BatchNorm statistics (fc layers with dropout
    layers between them when ``dropout``: the layout a model with ``model.dropout`` loads)."""
    from adah.models.adah import build_backbone

    torch.manual_seed(0)
    net = build_backbone(ModelConfig(image_backbone="small_cnn", image_size=32, image_fc_dims=(32, 32),
                                     dropout=dropout))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), path)
    return path


def assert_same_training(slow, fast, rows: np.ndarray, min_code: float) -> None:
    """Two Trainers after ``fit`` (over the maps, and on the fast path) hold the same weights and
    logged numbers, and give the same image codes of ``rows`` from the maps (float rounding);
    ``min_code``: the least mean |code|, so that untrained zeros do not pass."""
    assert slow.fast is None and fast.fast is not None
    for (name, a), b in zip(slow.model.state_dict().items(), fast.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)
    with torch.no_grad():  # every item asked for, test queries included: the checkpoint's codes
        maps = torch.from_numpy(slow.data.images[rows])
        a, b = slow.model.encode_image(maps), fast.model.encode_image(maps)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert (torch.sign(a) == torch.sign(b)).float().mean() > 0.999
    assert a.abs().mean() > min_code
    assert len(slow.history) == len(fast.history) > 0
    for r, s in zip(slow.history, fast.history):  # losses, mask density, validation MAP, probes
        assert set(r) == set(s)
        for k in r:
            if k != "seconds":
                assert r[k] == pytest.approx(s[k], abs=1e-4, rel=1e-4), k
    assert fast.history[-1]["step"] == slow.history[-1]["step"] > 0


# --------------------------------------------------------------------------- CLI
def one_line_error(result) -> str:
    """Exit 2, exactly one line 'error: ...' on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
