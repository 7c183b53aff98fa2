"""adah benchmark: one split for every method, the table agrees with results.json, the CLI's
list options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adah.benchmark import run_benchmark
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
    with pytest.raises(AdahError, match="feature vectors"):
        run_benchmark(cfg, tmp_path, bits=(8,), seeds=1, methods=("cca_itq",), progress=False)


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
