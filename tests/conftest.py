"""Shared fixtures, at session scope so each expensive set-up runs once per test run: tiny scenes
data, one untrained tiny checkpoint, one small_cnn weights file and its feature cache, and the
standalone Milvus server. Builders (plain functions) are in tests/helpers.py."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch loads: one thread in each worker and each
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # process it starts
        os.environ[_name] = "1"  # (4 workers on 2 cores: more threads only spin against each other)

import torch  # noqa: E402

from adah.data.base import random_split
from adah.data.scenes import make_scenes
from helpers import SCENES_N, make_checkpoint, scenes_config, small_cnn_weights, tiny_config  # noqa: F401
from milvus_server import milvus_server  # noqa: F401 - the session's standalone Milvus server (tests/milvus_server.py)

# one thread per worker when the suite runs in parallel (make test: pytest-xdist), two otherwise
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, torch.get_num_threads())))


#: the modules whose tests all talk to the session's standalone Milvus server
MILVUS_SERVER_MODULES = ("test_index_milvus_server", "test_milvus_replicas", "test_milvus_server_faults")


def xdist_group(nodeid: str, root: Path) -> str | None:
    """The worker group of a test under ``pytest -n N --dist loadgroup`` (None: any worker).

    The tests that talk to a standalone Milvus server run in two groups, each in one worker
    with its own server (about 10 s and 300 MB to start; tests/milvus_server.py gives each its
    own ports): the Lite suite run over a server, and the server-only tests. Their time is
    mostly waiting on the server, so two groups halve it. The tests of a module that defines a
    module-scoped fixture (a trained model, a fitted folder, an index) run in one worker: such a
    fixture is set up once in each worker that runs a test of the module."""
    path, _, rest = nodeid.partition("::")
    module = Path(path).stem
    if module == "test_index_milvus" and re.search(r"\[server[-\]]", rest):
        return "milvus-server-a"
    if module in MILVUS_SERVER_MODULES:
        return "milvus-server-b"
    return f"module-{module}" if _defines_a_module_fixture(root / path) else None


@functools.cache
def _defines_a_module_fixture(path: Path) -> bool:
    return path.suffix == ".py" and path.is_file() and 'scope="module"' in path.read_text(encoding="utf-8")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: pytest without xdist runs too
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with the groups of :func:`xdist_group`, decided from the test ids in
    the controller: pytest-xdist's own ``xdist_group`` markers rename the test ids, which
    pytest 9 no longer allows (each test of a group ran in any worker)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class Groups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid, config.rootpath) or super()._split_scope(nodeid)

    config.option.loadscopereorder = False  # keep the order of pytest_collection_modifyitems
    return Groups(config, log)


def run_order(item: pytest.Item) -> int:
    """Where a test goes in the run, so that under xdist the longest work starts first and the end
    of the run is short tests on every worker: the two Milvus-server groups (minutes of waiting on
    the server), then the slow and e2e tests, then the rest."""
    if xdist_group(item.nodeid, item.config.rootpath) in ("milvus-server-a", "milvus-server-b"):
        return 0
    return 1 if item.get_closest_marker("slow") or item.get_closest_marker("e2e") else 2


def pytest_collection_modifyitems(config, items):
    """Under xdist, each worker sorts its collection by :func:`run_order` (the controller schedules
    in that order); a group's tests keep their order and go where its first test ranks."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank: dict[str, int] = {}
    for item in items:
        key = xdist_group(item.nodeid, config.rootpath) or item.nodeid
        rank[key] = min(rank.get(key, 3), run_order(item))
    items.sort(key=lambda item: rank[xdist_group(item.nodeid, config.rootpath) or item.nodeid])


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
