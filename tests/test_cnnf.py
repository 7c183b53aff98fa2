"""CNN-F (adah.models.cnnf): MatConvNet's imagenet-vgg-f.mat layout read into the network, checked
against a direct numpy computation from the MATLAB-layout arrays (filter orientation, fc6 flatten
order, mean colour), and clear errors for malformed files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from adah.errors import AdahError
from adah.models import get_backbone
from adah.models.cnnf import CNN_F_LAYERS, read_vgg_f_mat

MEAN = np.array([120.0, 110.0, 100.0], dtype=np.float32)


def matconvnet_layers(rng, *, old_style: bool = False, skip: str | None = None, bad: str | None = None,
                      small_fc: bool = False):
    """A MatConvNet ``layers`` cell array: conv layers with random filters, plus relu layers.
    ``small_fc`` writes tiny fc6/fc7 (for files that must fail before them: fast to write)."""
    layers = []
    for name, shape in CNN_F_LAYERS:
        if name == skip:
            continue
        if name == bad:
            shape = shape[:3] + (shape[3] + 1,)
        if small_fc and name.startswith("fc"):
            shape = (1, 1, 2, 2)
        filters = (rng.standard_normal(shape, dtype=np.float32) * 0.01).astype(np.float32)
        biases = rng.standard_normal(shape[3], dtype=np.float32) * 0.1
        layer = {"name": name, "type": "conv", "stride": 1}
        if old_style:
            layer.update(filters=filters, biases=biases)
        else:
            weights = np.empty((1, 2), dtype=object)
            weights[0, 0], weights[0, 1] = filters, biases.reshape(-1, 1)
            layer["weights"] = weights
        layers.append(layer)
        layers.append({"name": f"relu_{name}", "type": "relu"})
    cell = np.empty((1, len(layers)), dtype=object)
    for i, layer in enumerate(layers):
        cell[0, i] = layer
    return cell


def write_mat(path, layers, mean_image: bool = True):
    average = np.broadcast_to(MEAN, (224, 224, 3)).copy() if mean_image else MEAN
    scipy.io.savemat(str(path), {"layers": layers, "meta": {"normalization": {"averageImage": average}}})
    return path


@pytest.fixture(scope="module")
def vgg_f_file(tmp_path_factory):
    return write_mat(tmp_path_factory.mktemp("cnnf") / "imagenet-vgg-f.mat", matconvnet_layers(np.random.default_rng(0)))


@pytest.mark.slow
def test_loaded_network_matches_the_matlab_layout(vgg_f_file):
    layers, mean = read_vgg_f_mat(vgg_f_file)
    assert np.allclose(mean, MEAN)
    net = get_backbone("cnn_f", weights=str(vgg_f_file), image_size=224, fc_dims=(4096, 4096)).eval()
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(1, 3, 224, 224), dtype=np.uint8)
    x = net.preprocess(torch.from_numpy(pixels))
    # MatConvNet's input: RGB in [0, 255] minus the mean colour, no std
    assert torch.allclose(x[0, :, 5, 7], torch.from_numpy(pixels[0, :, 5, 7].astype(np.float32) - MEAN), atol=1e-3)
    # conv1 at output (y, x) = sum_{i,j,c} F[i, j, c, o] * input[c, 4y + i, 4x + j] + b[o]
    f1, b1 = layers["conv1"]
    conv1 = net.features[0](x)[0].detach().numpy()
    xin = x[0].numpy()
    for (y, xx) in ((0, 0), (3, 10), (53, 20)):
        patch = xin[:, 4 * y : 4 * y + 11, 4 * xx : 4 * xx + 11]  # (c, i, j)
        want = np.einsum("cij,ijco->o", patch, f1) + b1
        assert np.allclose(conv1[:, y, xx], want, rtol=1e-4, atol=1e-3)
    maps = net.features(x)
    assert maps.shape == (1, 256, 13, 13)
    pool5 = net.pool(maps)
    assert pool5.shape == (1, 256, 6, 6)
    # MatConvNet pads its pools on the bottom/right: the last pool5 cell sees rows/cols 12 (and padding)
    assert torch.allclose(pool5[0, :, 5, 5], maps[0, :, 10:13, 10:13].amax(dim=(1, 2)))
    # fc6 as MatConvNet's 6x6 conv: out[o] = sum_{i,j,c} F6[i, j, c, o] * pool5[c, i, j] + b[o]
    f6, b6 = layers["fc6"]
    fc6 = net.fc[2](net.fc[1](net.fc[0](pool5)))  # flatten, linear, relu
    want6 = np.maximum(np.einsum("cij,ijco->o", pool5[0].detach().numpy(), f6) + b6, 0)
    assert np.allclose(fc6[0].detach().numpy(), want6, rtol=1e-3, atol=1e-3)


def test_old_style_fields_are_read(tmp_path):
    # conv1-5 come from the separate filters/biases fields of old MatConvNet releases; the tiny
    # fc6 written here is then the first layer to be refused
    layers = matconvnet_layers(np.random.default_rng(2), old_style=True, small_fc=True)
    with pytest.raises(AdahError, match=r"layer 'fc6': expected filters \(6, 6, 256, 4096\)"):
        read_vgg_f_mat(write_mat(tmp_path / "old.mat", layers, mean_image=False))


def test_malformed_files_give_clear_errors(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(AdahError, match="not found"):
        read_vgg_f_mat(tmp_path / "missing.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(AdahError, match="junk.mat: not a readable MATLAB file"):
        read_vgg_f_mat(tmp_path / "junk.mat")
    scipy.io.savemat(str(tmp_path / "other.mat"), {"net": np.zeros(3)})
    with pytest.raises(AdahError, match="no variable 'layers'"):
        read_vgg_f_mat(tmp_path / "other.mat")
    with pytest.raises(AdahError, match="conv layer 'conv3' not found"):
        read_vgg_f_mat(write_mat(tmp_path / "skip.mat", matconvnet_layers(rng, skip="conv3", small_fc=True)))
    with pytest.raises(AdahError, match=r"layer 'conv2': expected filters \(5, 5, 64, 256\)"):
        read_vgg_f_mat(write_mat(tmp_path / "bad.mat", matconvnet_layers(rng, bad="conv2", small_fc=True)))
    with pytest.raises(AdahError, match="imagenet-vgg-f.mat"):
        get_backbone("cnn_f", weights="DEFAULT")
    with pytest.raises(AdahError, match="4096"):
        get_backbone("cnn_f", fc_dims=(512, 512))
