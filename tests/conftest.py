"""Shared fixtures, at session scope so each expensive set-up runs once per test run: tiny scenes
data, one untrained tiny checkpoint, one small_cnn weights file and its feature cache, and the
standalone Milvus server. Builders (plain functions) are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from adah.data.base import random_split
from adah.data.scenes import make_scenes
from helpers import SCENES_N, make_checkpoint, scenes_config, small_cnn_weights, tiny_config  # noqa: F401
from milvus_server import milvus_server  # noqa: F401 - the session's standalone Milvus server (tests/milvus_server.py)

# one thread per worker when the suite runs in parallel (make test: pytest-xdist), two otherwise
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` the tests that talk to a standalone Milvus server
    run in two groups, each in one worker with its own server (about 10 s and 300 MB to start;
    tests/milvus_server.py gives each its own ports): the Lite suite run over a server, and the
    server-only tests. Their time is mostly waiting on the server, so two groups halve it."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("milvus_uri") == "server":
            item.add_marker(pytest.mark.xdist_group("milvus-server-a"))
        elif "milvus_server" in getattr(item, "fixturenames", ()) or item.module.__name__ == "test_milvus_server_faults":
            item.add_marker(pytest.mark.xdist_group("milvus-server-b"))


@pytest.fixture(scope="session")
def scenes_small():
    """600 scenes with a split of 100 queries / 500 retrieval / 360 train + 40 val."""
    data = make_scenes(num_items=600, seed=3)
    split = random_split(len(data), num_query=100, num_train=400, val_fraction=0.1, seed=3)
    return data, split


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """An untrained tiny scenes model (helpers.make_checkpoint, seed 0, 90 items). Read-only:
    a test that changes a checkpoint makes its own."""
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="session")
def built(ckpt, tmp_path_factory) -> Path:
    """A 90-item index of :func:`ckpt`'s model, built once. Read-only: copy it to change it."""
    from adah.index import build_index

    out = tmp_path_factory.mktemp("index") / "idx"
    build_index(ckpt, out, progress=False, batch_size=32)
    return out


@pytest.fixture()
def base_index(ckpt, tmp_path) -> Path:
    """A fresh 90-item index of :func:`ckpt`'s model in this test's folder, to change."""
    from adah.index import build_index

    out = tmp_path / "idx"
    build_index(ckpt, out, progress=False, batch_size=32)
    return out


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """A small_cnn weights file with trained-looking BatchNorm statistics."""
    return small_cnn_weights(tmp_path_factory.mktemp("weights") / "small_cnn-test.pth")


@pytest.fixture(scope="session")
def reference(tmp_path_factory, weights) -> Path:
    """An uninterrupted small_cnn feature cache of the scenes of helpers.scenes_config (batch size 8).
    Read-only: tests that damage a cache copy it first."""
    from adah.features.image_cache import extract_features

    out = tmp_path_factory.mktemp("cache") / "ref"
    result = extract_features(scenes_config(weights), out, batch_size=8, progress=False)
    assert result.complete and result.new_rows == SCENES_N and not result.already_complete
    return out
