"""adah benchmark: one split for every method, the table agrees with results.json, the CLI's
list options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adah.experiments.benchmark import run_benchmark
from adah.cli import expand_list_options
from adah.config import Config
from adah.errors import AdahError

WIKI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "wiki" / "wiki_roph.mat"


def test_list_options_expand():
    assert expand_list_options(["benchmark", "--bits", "16", "32", "--seeds", "2", "--methods", "adah", "none"]) == [
        "benchmark", "--bits", "16", "--bits", "32", "--seeds", "2", "--methods", "adah", "--methods", "none"]
    assert expand_list_options(["train", "--set", "a.b=1"]) == ["train", "--set", "a.b=1"]


def test_baselines_refuse_pixel_datasets(tmp_path):
    cfg = Config.load("scenes_demo").override({"data.num_items": 120, "data.num_query": 20, "data.num_train": 80})
    with pytest.raises(AdahError, match="feature vectors or cached backbone maps.*adah features extract"):
        run_benchmark(cfg, tmp_path, bits=(8,), seeds=1, methods=("cca_itq",), progress=False)


def test_baselines_use_cached_maps_averaged_over_positions():
    from adah.experiments.benchmark import _baseline_codes, image_vectors
    from adah.data.base import CrossModalData, random_split

    rng = np.random.default_rng(0)
    labels = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 200)]
    maps = (rng.random((200, 6, 3, 3)) + labels.argmax(1)[:, None, None, None] * 0.5).astype(np.float32)
    texts = (labels @ rng.random((4, 12)) + rng.random((200, 12)) * 0.1).astype(np.float32)
    on_maps = CrossModalData(maps, texts, labels, name="maps")
    pooled = CrossModalData(maps.mean(axis=(2, 3)), texts, labels, name="pooled")
    rows = np.array([5, 0, 199])
    np.testing.assert_allclose(image_vectors(on_maps, rows, batch=2), maps[rows].mean(axis=(2, 3)), rtol=1e-6)
    split = random_split(200, num_query=40, num_train=120, seed=0)
    for method in ("cca_itq", "seph"):
        a = _baseline_codes(method, 6, 0, on_maps, split)
        b = _baseline_codes(method, 6, 0, pooled, split)
        for x, y in zip(a, b):
            assert np.array_equal(x.image, y.image) and np.array_equal(x.text, y.text)


@pytest.mark.slow
@pytest.mark.skipif(not WIKI.is_file(), reason=f"Wiki data not found at {WIKI}")
def test_wiki_benchmark_table_matches_results(tmp_path):
    cfg = Config.load("wiki").override({"data.root": str(WIKI.parents[1]), "train.epochs": 1})
    result = run_benchmark(cfg, tmp_path, bits=(8,), seeds=2, methods=("none", "scm_seq", "cca_itq"), topk=50,
                           progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["split_sha256"] == json.loads((tmp_path / "split.json").read_text())["sha256"]
    table = (tmp_path / "table.md").read_text()
    for method, name in (("none", "none (deep, no attention)"), ("scm_seq", "SCM-seq"), ("cca_itq", "CCA-ITQ")):
        runs = saved["results"][method]["8"]
        assert len(runs) == 2 and all(r["num_query"] == 693 and r["num_db"] == 2173 for r in runs)
        i2t = [r["map"]["i2t"] for r in runs]
        expected = [r["map_expected"]["i2t"] for r in runs]
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))  # first: Image -> Text
        assert f"{np.mean(i2t):.4f} ± {np.std(i2t):.4f} ({np.mean(expected):.4f} ± {np.std(expected):.4f})" in row
        assert all(0.11 < m < 1 for m in i2t)  # above chance (0.11 on Wiki's 10 classes)
    scm = saved["results"]["scm_seq"]["8"]
    assert scm[0]["map"] == scm[1]["map"]  # SCM-seq is deterministic: the seed changes nothing
    assert (tmp_path / "pr_curves.png").read_bytes()[:4] == b"\x89PNG"
