"""Backbone registry, VGG-19 layout (conv5_4 maps, pool5, fc6/fc7) and offline weights handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adah.config import ModelConfig
from adah.errors import AdahError
from adah.models import build_model
from adah.models import backbones
from adah.models.backbones import get_backbone, list_backbones, register_backbone


def test_registry_lists_and_refuses_duplicates():
    assert {"small_cnn", "vgg19"} <= set(list_backbones())
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("small_cnn")(lambda **kw: None)
    with pytest.raises(AdahError, match="model.image_backbone must be one of .*small_cnn.*got 'alexnet'"):
        get_backbone("alexnet")


def test_small_cnn_shapes_and_preprocessing():
    net = get_backbone("small_cnn", image_size=64, fc_dims=(32, 16))
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    x = net.preprocess(images)
    torch.testing.assert_close(x, (images.float() / 255 - 0.5) / 0.25)
    maps = net.features(x)
    assert maps.shape == (2, 64, 8, 8)
    assert net.fc(net.pool(maps)).shape == (2, 16)
    # other sizes are resized to the input size
    assert net.preprocess(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 3, 64, 64)


def test_small_cnn_loads_weights_from_a_file(tmp_path):
    torch.manual_seed(0)
    src = get_backbone("small_cnn", fc_dims=(32, 32))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    dst = get_backbone("small_cnn", fc_dims=(32, 32), weights=str(tmp_path / "w.pth"))
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(AdahError, match="bad.pth"):
        get_backbone("small_cnn", fc_dims=(32, 32), weights=str(tmp_path / "bad.pth"))
    with pytest.raises(AdahError, match="not found"):
        get_backbone("small_cnn", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(AdahError, match="no published pretrained"):
        get_backbone("small_cnn", weights="DEFAULT")


@pytest.mark.slow
def test_vgg19_weights_names_resolve_without_downloading(monkeypatch):
    import torchvision.models as tvm
    from torchvision.models import VGG19_Weights

    seen = []
    real_vgg19 = tvm.vgg19

    def fake_vgg19(*, weights=None, **kw):
        seen.append(weights)
        return real_vgg19(weights=None)

    monkeypatch.setattr(tvm, "vgg19", fake_vgg19)
    get_backbone("vgg19", weights="DEFAULT")
    get_backbone("vgg19", weights="imagenet1k_v1")
    get_backbone("vgg19", weights=None)
    assert seen == [VGG19_Weights.DEFAULT, VGG19_Weights.IMAGENET1K_V1, None]
    with pytest.raises(AdahError, match="IMAGENET1K_V1"):
        get_backbone("vgg19", weights="resnet_weights")
    with pytest.raises(AdahError, match="4096"):
        get_backbone("vgg19", fc_dims=(256, 256))


@pytest.mark.slow
def test_vgg19_layout_conv5_4_maps_pool5_fc7_and_file_weights(tmp_path):
    torch.manual_seed(0)
    net = get_backbone("vgg19")
    last_conv = [m for m in net.features if isinstance(m, nn.Conv2d)][-1]
    assert (last_conv.in_channels, last_conv.out_channels) == (512, 512)  # conv5_4
    assert sum(isinstance(m, nn.Conv2d) for m in net.features) == 16  # all 16 conv layers of VGG-19
    assert isinstance(net.features[-1], nn.ReLU)
    net.eval()
    with torch.no_grad():
        maps = net.features(net.preprocess(torch.zeros(1, 3, 224, 224, dtype=torch.uint8)))
        assert maps.shape == (1, 512, 14, 14)
        pooled = net.pool(maps)
        assert pooled.shape == (1, 512, 7, 7)
        assert net.fc(pooled).shape == (1, 4096)
    # weights from a torchvision-layout file land in conv5_4 and fc7
    import torchvision.models as tvm

    ref = tvm.vgg19(weights=None)
    torch.save(ref.state_dict(), tmp_path / "vgg19.pth")
    loaded = get_backbone("vgg19", weights=str(tmp_path / "vgg19.pth"))
    assert torch.equal(loaded.features[34].weight, ref.features[34].weight)
    fc7 = [m for m in loaded.fc if isinstance(m, nn.Linear)][-1]
    assert torch.equal(fc7.weight, ref.classifier[3].weight)


@pytest.mark.slow
def test_adah_on_vgg19_attends_over_14x14_conv5_4_positions():
    from adah.config import Config

    cfg = ModelConfig(image_backbone="vgg19", image_fc_dims=(4096, 4096), text_dim=20, text_hidden=(16, 8), bits=12)
    model = build_model(cfg, Config().with_preset("paper").attention).eval()  # the paper's threshold 1/196
    with torch.no_grad():
        img = model.image(torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8))
    assert img.codes.shape == (1, 12) and img.mask.shape == (1, 1, 14, 14)
    assert torch.equal(img.mask, (img.probs >= 1 / 196).float())


def test_checkpoint_rebuild_never_fetches_pretrained_weights(monkeypatch):
    """A config that asked for DEFAULT weights is rebuilt with weights=None when loading."""
    calls = []
    original = backbones.BACKBONES.get("small_cnn")
    monkeypatch.setitem(backbones.BACKBONES._entries, "small_cnn", lambda **kw: calls.append(kw["weights"]) or original(
        **{**kw, "weights": None}))
    import dataclasses

    from adah.training.checkpoint import load_model, save_checkpoint
    from adah.config import Config

    cfg = Config(model=ModelConfig(text_dim=10, text_hidden=(8,), image_fc_dims=(8,), image_weights="DEFAULT"))
    model = build_model(dataclasses.replace(cfg.model, image_weights=None))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(f"{d}/c.pt", model=model, config=cfg, epoch=1)
        calls.clear()
        loaded, _, _ = load_model(f"{d}/c.pt")
    assert calls == [None]
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_feature_vector_images_use_an_mlp_and_attention_over_dimensions():
    from adah.config import Config
    from adah.data.base import CrossModalData
    from adah.training.trainer import complete_config

    rng = np.random.default_rng(0)
    labels = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 20)]
    feats = CrossModalData(rng.normal(size=(20, 12)).astype(np.float32), rng.random((20, 7)).astype(np.float32), labels)
    cfg = complete_config(Config().with_preset("paper").override({"model.image_backbone": "mlp", "model.image_fc_dims": [16, 10],
                                             "model.text_hidden": [8]}), feats)
    assert cfg.model.image_dim == 12 and cfg.model.text_dim == 7
    model = build_model(cfg.model, cfg.attention)
    out = model.image(torch.from_numpy(feats.images[:4]))
    assert out.mask.shape == (4, 10)  # attention over the 10 features E_I produces, alpha = 1/10
    assert torch.equal(out.mask, (out.probs >= 0.1).float())
    with pytest.raises(AdahError, match="image features must be"):
        model.image(torch.zeros(2, 5))
    with pytest.raises(AdahError, match="'mlp'"):
        complete_config(Config(), feats)  # small_cnn on feature vectors
    pixels = CrossModalData(np.zeros((20, 3, 32, 32), np.uint8), feats.texts, labels)
    with pytest.raises(AdahError, match="pixels"):
        complete_config(Config().override({"model.image_backbone": "mlp"}), pixels)
