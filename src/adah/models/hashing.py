"""Hashing module D: features -> q continuous codes in (-1, 1) by fc + tanh; sign() at test time."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class HashHead(nn.Module):
    """``pre`` (fc6, fc7 for images; identity for text) then fc to ``bits`` and tanh.

    (B, ...) features -> (B, bits) codes in (-1, 1)."""

    def __init__(self, pre: nn.Module, in_dim: int, bits: int) -> None:
        super().__init__()
        self.pre = pre
        self.fc = nn.Linear(in_dim, bits)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(self.pre(feats)))


def binarize(codes: torch.Tensor) -> torch.Tensor:
    """Continuous codes -> int8 codes in {-1, +1} (0 maps to +1, so every bit is defined)."""
    return torch.where(codes >= 0, 1, -1).to(torch.int8)


class BranchOutput(NamedTuple):
    codes: torch.Tensor  # H = D(attended): (B, bits) in (-1, 1)
    codes_hat: torch.Tensor  # H_hat = D(unattended): (B, bits)
    mask: torch.Tensor  # Z: (B, 1, h, w) image, (B, d) text
    probs: torch.Tensor  # soft attention p, same shape as mask
