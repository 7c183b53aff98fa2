"""The demo: its attention-on-objects measure (hand-checked) and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from adah.cli import app
from adah.config import Config
from adah.recipes.demo import attention_on_objects


def test_attention_on_objects_hand_case():
    # a 2x2 mask over a 4x4 image: only the top-left cell attended; the object fills that cell
    # and one pixel of the bottom-right cell
    masks = np.array([[[[1, 0], [0, 0]]]], dtype=np.float32)
    objects = np.zeros((1, 4, 4), bool)
    objects[0, :2, :2] = True
    objects[0, 3, 3] = True
    f = attention_on_objects(masks, objects)
    assert f["attended_object_fraction"] == 1.0  # all 4 attended pixels are object pixels
    assert f["object_recall"] == pytest.approx(4 / 5)
    assert f["image_object_fraction"] == pytest.approx(5 / 16)
    assert f["attended_area"] == pytest.approx(4 / 16)
    assert f["weight_on_objects"] == 1.0  # a binary Z: the same as the attended share
    weights = np.array([[[[3, 0.5], [0.25, 0.25]]]], dtype=np.float32)  # attention.mask='weight' (mean 1)
    w = attention_on_objects(weights, objects)
    # weight on object pixels: 4 pixels x 3 + 1 pixel x 0.25, of 4 x (3 + 0.5 + 0.25 + 0.25)
    assert w["weight_on_objects"] == pytest.approx((12 + 0.25) / 16)
    assert w["attended_object_fraction"] == 1.0 and w["attended_area"] == pytest.approx(4 / 16)  # cells above 0.5


@pytest.mark.slow
def test_demo_prints_the_table_and_writes_both_pngs(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--epochs", "1", "--num-items", "150",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    for row in ("ADAH (adah default)", "none (no attention)", "ADAH (paper preset)", "random codes"):
        assert row in result.output
    # adah's default G on scenes attends on the text branch alone: no image mask picture for it
    assert Config.load("scenes_demo").model.attention == "text"
    assert not (tmp_path / "attention.png").exists() and "no image mask to draw" in result.output
    for name in ("pr_curves.png", "attention_paper.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert f"wrote {tmp_path / 'pr_curves.png'}" in result.output and "attention_paper.png" in result.output
    assert (tmp_path / "adah" / "metrics.jsonl").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("ADAH (adah default)", "ADAH (paper preset)"):
        table_line = next(line for line in result.output.splitlines() if line.startswith(name))
        assert float(table_line.split()[-4]) == pytest.approx(saved["results"][name]["map"]["i2t"], abs=5e-5)
        assert set(saved["results"][name]["pr"]) == {"i2t", "t2i", "i2i", "t2t"}
    assert saved["results"]["ADAH (paper preset)"] != saved["results"]["ADAH (adah default)"]
    first = json.loads((tmp_path / "both-paper" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= first["diag_object_recall"] <= 1 and 0 <= first["diag_attended_on_objects"] <= 1
    assert (tmp_path / "both-paper" / "training.png").read_bytes()[:4] == b"\x89PNG"
