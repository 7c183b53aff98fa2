"""CNN-F (Chatfield, Simonyan, Vedaldi, Zisserman, BMVC 2014), the image network of DCMH.

Five conv layers and fc6/fc7 as in MatConvNet's ``imagenet-vgg-f.mat``, which DCMH (and the
papers following its protocol) load:

=========  ===============================================  ==================
layer      operation                                         output at 224 px
=========  ===============================================  ==================
conv1      64 x 11x11, stride 4, ReLU, LRN, max 3x3/2        64 x 27 x 27
conv2      256 x 5x5, pad 2, ReLU, LRN, max 3x3/2            256 x 13 x 13
conv3-5    256 x 3x3, pad 1, ReLU each                       256 x 13 x 13 (attention here)
pool5      max 3x3/2                                         256 x 6 x 6
fc6, fc7   4096, ReLU each                                   4096
=========  ===============================================  ==================

MatConvNet pads its max-pools by one on the bottom/right (``pad = [0 1 0 1]``) and its LRN is
``x / (kappa + alpha * sum x^2) ^ beta`` with ``[n kappa alpha beta] = [5 1 1e-4/5 0.75]``,
which is PyTorch's ``LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1)``. Inputs are RGB in
[0, 255] minus the mean colour of ``normalization.averageImage``, not divided by a std.

``weights`` is a path to ``imagenet-vgg-f.mat`` (MATLAB v5; nothing is ever downloaded). Its
filters are MATLAB H x W x Cin x Cout arrays, turned into (Cout, Cin, H, W); fc6 is a 6 x 6
conv there and a Linear over the flattened (C, H, W) pool5 maps here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from adah.errors import AdahError
from adah.models.backbones import ImageBackbone, _fc_stack, register_backbone

#: (name, filter shape H x W x Cin x Cout as MatConvNet stores it) of the learned layers, in order
CNN_F_LAYERS = (
    ("conv1", (11, 11, 3, 64)),
    ("conv2", (5, 5, 64, 256)),
    ("conv3", (3, 3, 256, 256)),
    ("conv4", (3, 3, 256, 256)),
    ("conv5", (3, 3, 256, 256)),
    ("fc6", (6, 6, 256, 4096)),
    ("fc7", (1, 1, 4096, 4096)),
)
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)  # MatConvNet's mean colour, used without a file


def _matconvnet_pool() -> nn.Module:
    """3x3 / 2 max-pool padded by one on the bottom and right, as MatConvNet's [0 1 0 1]."""
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, 2))


def _cnn_f_features() -> nn.Sequential:
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4), nn.ReLU(inplace=True), lrn(), _matconvnet_pool(),
        nn.Conv2d(64, 256, 5, padding=2), nn.ReLU(inplace=True), lrn(), _matconvnet_pool(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
    )


def read_vgg_f_mat(path: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """``{layer: (filters H x W x Cin x Cout, biases (Cout,))}`` for :data:`CNN_F_LAYERS` and the
    mean RGB colour (3,) from a MatConvNet ``imagenet-vgg-f.mat``; AdahError on anything else."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise AdahError(f"cnn_f weights file not found: {path} (MatConvNet's imagenet-vgg-f.mat)")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise AdahError(f"{path}: a MATLAB v7.3 (HDF5) file; save imagenet-vgg-f.mat as MATLAB v5 "
                        "(MatConvNet's release is v5)") from None
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files
        raise AdahError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from None
    if "layers" not in mat:
        raise AdahError(f"{path}: no variable 'layers'; expected MatConvNet's imagenet-vgg-f.mat")
    found = {}
    for layer in np.atleast_1d(mat["layers"]):
        name = str(getattr(layer, "name", ""))
        if getattr(layer, "type", None) != "conv":
            continue
        if hasattr(layer, "weights"):  # MatConvNet >= beta-10: weights = {filters, biases}
            parts = np.atleast_1d(layer.weights)
            if len(parts) != 2:
                raise AdahError(f"{path}: layer '{name}': field 'weights' must hold {{filters, biases}}")
            filters, biases = parts
        else:  # older releases: separate fields
            filters, biases = getattr(layer, "filters", None), getattr(layer, "biases", None)
        found[name] = (np.asarray(filters, dtype=np.float32), np.asarray(biases, dtype=np.float32).reshape(-1))
    out = {}
    for name, shape in CNN_F_LAYERS:
        if name not in found:
            raise AdahError(f"{path}: conv layer '{name}' not found (found: {', '.join(found) or 'none'})")
        filters, biases = found[name]
        if filters.ndim == 2 and shape[:2] == (1, 1):  # MATLAB drops trailing/singleton dims
            filters = filters.reshape(shape)
        if filters.shape != shape or biases.shape != (shape[3],):
            raise AdahError(f"{path}: layer '{name}': expected filters {shape} and biases ({shape[3]},), "
                            f"found {filters.shape} and {biases.shape}")
        out[name] = (filters, biases)
    meta = mat.get("meta", mat)
    norm = getattr(meta, "normalization", None) if not isinstance(meta, dict) else meta.get("normalization")
    average = getattr(norm, "averageImage", None)
    mean = np.asarray(IMAGENET_MEAN_RGB, dtype=np.float32) if average is None else np.asarray(average, np.float32)
    if mean.ndim == 3:  # a full mean image H x W x 3
        mean = mean.reshape(-1, 3).mean(0)
    if mean.shape != (3,) or not np.isfinite(mean).all():
        raise AdahError(f"{path}: normalization.averageImage must be 3 values or an H x W x 3 image, "
                        f"found shape {mean.shape}")
    return out, mean


def _load_into(features: nn.Sequential, fc: nn.Sequential, layers: dict) -> None:
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    linears = [m for m in fc if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for module, (name, _) in zip(convs + linears, CNN_F_LAYERS):
            filters, biases = layers[name]
            weight = torch.from_numpy(np.ascontiguousarray(filters.transpose(3, 2, 0, 1)))  # (Cout, Cin, H, W)
            if isinstance(module, nn.Linear):
                weight = weight.reshape(weight.shape[0], -1)  # (Cout, Cin*H*W): torch's flatten order
            module.weight.copy_(weight)
            module.bias.copy_(torch.from_numpy(biases))


@register_backbone("cnn_f")
def cnn_f(
    *, weights: str | None = None, image_size: int = 224, fc_dims: tuple[int, ...] = (4096, 4096),
    dropout: float = 0.0, input_dim: int = 0,
) -> ImageBackbone:
    """CNN-F: conv5 maps (256 x 13 x 13) for attention, pool5, fc6/fc7 (4096 each).
    ``weights``: None (random) or a path to MatConvNet's ``imagenet-vgg-f.mat``. Images of any
    ``image_size`` are resized to 224 px, the size fc6 (6 x 6 pool5 maps) was trained at."""
    if tuple(fc_dims) != (4096, 4096):
        raise AdahError(f"cnn_f brings its own fc6/fc7 of (4096, 4096); got model.image_fc_dims={tuple(fc_dims)}")
    if weights is not None and str(weights).upper() in ("DEFAULT", "IMAGENET1K_V1"):
        raise AdahError("cnn_f weights are not in torchvision; pass the path of MatConvNet's imagenet-vgg-f.mat")
    features = _cnn_f_features()
    fc = _fc_stack(256 * 6 * 6, (4096, 4096), dropout)
    mean = np.asarray(IMAGENET_MEAN_RGB, dtype=np.float32)
    if weights is not None:
        layers, mean = read_vgg_f_mat(weights)
        _load_into(features, fc, layers)
    return ImageBackbone(
        features, _matconvnet_pool(), fc, out_channels=256, out_dim=4096, input_size=224,
        mean=tuple(float(m) / 255.0 for m in mean), std=(1 / 255.0,) * 3,  # x*255 - mean: MatConvNet's input
    )
