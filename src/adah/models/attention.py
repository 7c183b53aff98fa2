"""Attention module G: soft attention, a hard threshold with a straight-through gradient, and the
split of features into attended Z*f and unattended (1-Z)*f parts.

Image: a 1x1 conv turns (B, C, H, W) maps into (B, 1, H, W) scores, softmax over the H*W
positions gives p, and Z = [p >= 1/(H*W)]. Text: a fc layer over the (B, d) feature, softmax
over d, Z = [p >= 1/d]. ``none`` keeps everything (Z = 1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from adah.errors import AdahError


class AttentionOutput(NamedTuple):
    attended: torch.Tensor  # Z * f, same shape as f
    unattended: torch.Tensor  # (1 - Z) * f
    mask: torch.Tensor  # Z in {0, 1}: (B, 1, H, W) for maps, (B, d) for vectors
    probs: torch.Tensor  # p, same shape as mask, sums to 1 over positions


def threshold_ste(probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Binary mask ``probs >= alpha`` whose gradient w.r.t. ``probs`` is the identity.

    Forward values are exactly 0 or 1 (``hard + (p - p.detach())`` adds an exact zero)."""
    hard = (probs >= alpha).to(probs.dtype)
    return hard + (probs - probs.detach())


class SpatialAttention(nn.Module):
    """(B, C, H, W) maps -> AttentionOutput with a (B, 1, H, W) mask; alpha = 1/(H*W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, maps: torch.Tensor) -> AttentionOutput:
        b, _, h, w = maps.shape
        if h * w < 2:
            raise AdahError(
                f"image attention needs a map with at least 2 positions, got {h}x{w}; "
                "with a globally pooled backbone use model.mask_position='before_pool'"
            )
        scores = self.score(maps).view(b, h * w)
        probs = torch.softmax(scores.float(), dim=1).view(b, 1, h, w)
        mask = threshold_ste(probs, 1.0 / (h * w)).to(maps.dtype)
        return AttentionOutput(mask * maps, (1 - mask) * maps, mask, probs)


class FeatureAttention(nn.Module):
    """(B, d) features -> AttentionOutput with a (B, d) mask; fc -> softmax over d, alpha = 1/d."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, dim)

    def forward(self, feats: torch.Tensor) -> AttentionOutput:
        probs = torch.softmax(self.score(feats).float(), dim=1)
        mask = threshold_ste(probs, 1.0 / feats.shape[1]).to(feats.dtype)
        return AttentionOutput(mask * feats, (1 - mask) * feats, mask, probs)


class NoAttention(nn.Module):
    """Keeps every position: attended = f, unattended = 0, mask = 1 (the ``none`` variant)."""

    def __init__(self, spatial: bool) -> None:
        super().__init__()
        self.spatial = spatial

    def forward(self, feats: torch.Tensor) -> AttentionOutput:
        shape = (feats.shape[0], 1, *feats.shape[2:]) if self.spatial else feats.shape
        ones = feats.new_ones(shape)
        return AttentionOutput(feats, torch.zeros_like(feats), ones, ones / ones[0].numel())
