"""The ADAH model: for each modality, feature learning E, attention G and hashing D."""

from __future__ import annotations

import torch
from torch import nn

from adah.config import AttentionConfig, ModelConfig
from adah.errors import AdahError
from adah.models.attention import (AttentionOutput, ChannelAttention, FeatureAttention, NoAttention, SpatialAttention,
                                   attention_kwargs)
from adah.models.backbones import ImageBackbone, get_backbone
from adah.models.hashing import BranchOutput, HashHead
from adah.models.text import TextBranch  # noqa: F401 - re-exported (adah.models.adah.TextBranch)
from adah.models.text_encoders import build_text_branch


def build_backbone(cfg: ModelConfig) -> ImageBackbone:
    """The image backbone ``cfg.image_backbone`` with ``cfg.image_weights``, fc sizes and image size."""
    kwargs = {"weights": cfg.image_weights, "fc_dims": tuple(cfg.image_fc_dims), "dropout": cfg.dropout,
              "input_dim": cfg.image_dim}
    if cfg.image_size:
        kwargs["image_size"] = cfg.image_size
    return get_backbone(cfg.image_backbone, **kwargs)


class ImageBranch(nn.Module):
    """(B, 3, H, W) uint8 images, or (B, C, h, w) float maps of the backbone's conv layers (a
    feature cache), -> BranchOutput. The mask sits on the conv maps before pool5
    (``mask_position='before_pool'``, VGG-19 conv5_4 at 14x14) or after it. With a vector
    backbone (``mlp``), (B, D) features -> BranchOutput with a (B, d) mask, like the text branch.
    ``cfg.freeze_backbone`` keeps ``backbone.features`` fixed: no gradients, always in eval mode.
    ``attention.image_positions='channels'`` puts the mask over the maps' channels instead of their
    cells (on a vector backbone the features are the channels: the same mask either way)."""

    def __init__(self, cfg: ModelConfig, attention: AttentionConfig | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.frozen = cfg.freeze_backbone
        if self.frozen:
            self.backbone.features.requires_grad_(False)
        self.mask_after_pool = cfg.mask_position == "after_pool"
        c = self.backbone.out_channels
        spatial = self.backbone.spatial
        attention = attention or AttentionConfig()
        if cfg.image_attention:
            kw = attention_kwargs(attention)
            if attention.image_region != "all" and not spatial:
                raise AdahError(f"attention.image_region={attention.image_region!r} splits the cells of a conv "
                                f"map; the image backbone {cfg.image_backbone!r} gives vectors")
            if not spatial:
                self.attention = FeatureAttention(c, **kw)
            elif attention.image_positions == "channels":
                self.attention = ChannelAttention(c, **kw)
            else:
                self.attention = SpatialAttention(c, region=attention.image_region, **kw)
        else:
            self.attention = NoAttention(spatial=spatial)
        self.hash = HashHead(self.backbone.fc, self.backbone.out_dim, cfg.bits)

    @property
    def spatial_mask(self) -> bool:
        """True when the image mask is a (B, 1, h, w) map over the cells, one that can be drawn on
        the photo (``none`` gives all ones); False for channel masks and vector backbones."""
        return self.backbone.spatial and not isinstance(self.attention, ChannelAttention)

    def train(self, mode: bool = True) -> "ImageBranch":
        super().train(mode)
        if self.frozen:  # BatchNorm statistics stay those of the pretrained weights
            self.backbone.features.eval()
        return self

    def feature_maps(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (B, 3, H, W) -> conv maps (B, C, h, w) by preprocess + backbone.features;
        float maps (B, C, h, w) with C = backbone.out_channels (cached) are returned as they are."""
        bb = self.backbone
        if bb.spatial and images.ndim == 4 and images.shape[1] != 3:
            if images.is_floating_point() and images.shape[1] == bb.out_channels:
                return images
            raise AdahError(f"image input must be (B, 3, H, W) pixels or (B, {bb.out_channels}, h, w) float maps of "
                            f"the backbone, got {images.dtype} {tuple(images.shape)}")
        return bb.features(bb.preprocess(images))

    def attend(self, images: torch.Tensor) -> AttentionOutput:
        maps = self.feature_maps(images)
        if self.mask_after_pool:
            maps = self.backbone.pool(maps)
        return self.attention(maps)

    def forward(self, images: torch.Tensor) -> BranchOutput:
        att = self.attend(images)
        attended, unattended = att.attended, att.unattended
        if not self.mask_after_pool:
            attended, unattended = self.backbone.pool(attended), self.backbone.pool(unattended)
        return BranchOutput(self.hash(attended), self.hash(unattended), att.mask, att.probs)


class ADAH(nn.Module):
    """Two branches; ``encode_image`` / ``encode_text`` give continuous test codes H = D(attended).
    With ``image_backbone='none'`` there is only the text branch (text-only data, T->T)."""

    def __init__(self, cfg: ModelConfig, attention: AttentionConfig | None = None) -> None:
        super().__init__()
        cfg.validate()
        attention = attention or AttentionConfig()
        attention.validate()
        self.cfg, self.attention_cfg = cfg, attention
        self.image = ImageBranch(cfg, attention) if cfg.has_image_branch else None
        self.text = build_text_branch(cfg, attention)  # bow_mlp (TextBranch) or minilm (adah.models.text_encoders)

    @property
    def has_image_branch(self) -> bool:
        return self.image is not None

    def forward(self, images: torch.Tensor | None, texts: torch.Tensor) -> tuple[BranchOutput | None, BranchOutput]:
        """Both branches; a text-only model (``image_backbone='none'``) returns None for the image."""
        return (self.image(images) if self.image is not None else None), self.text(texts)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        if self.image is None:
            raise AdahError("this model was trained on text only (model.image_backbone='none'); it cannot encode images")
        return self.image(images).codes

    def encode_text(self, texts: torch.Tensor) -> torch.Tensor:
        return self.text(texts).codes

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C) float: the images' own features, before any layer that trains (DJSRH's affinities):
        feature vectors as they are; conv maps (cached, or the backbone's from pixels) averaged over
        their cells."""
        if self.image is None:
            raise AdahError("this model was trained on text only (model.image_backbone='none'); "
                            "it has no image features")
        if images.ndim == 2:
            return images.float()
        return self.image.feature_maps(images).float().mean(dim=(2, 3))

    def attention_parameters(self) -> list[nn.Parameter]:
        """Parameters of G (both modalities); empty for the ``none`` variant."""
        image = list(self.image.attention.parameters()) if self.image is not None else []
        return image + list(self.text.attention.parameters())

    def hashing_parameters(self) -> list[nn.Parameter]:
        """Parameters of E and D (everything but G, and but a frozen backbone's conv layers)."""
        skip = {id(p) for p in self.attention_parameters()}
        if getattr(self.image, "frozen", False):
            skip |= {id(p) for p in self.image.backbone.features.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]


def build_model(cfg: ModelConfig, attention: AttentionConfig | None = None) -> ADAH:
    """The model of ``cfg`` with G as ``attention`` says (default: adah's measured choice)."""
    return ADAH(cfg, attention)
