"""Text feature learning E: bag-of-words -> MLP (8192 -> 1000 in the paper)."""

from __future__ import annotations

import torch
from torch import nn


class TextEncoder(nn.Module):
    """(B, V) bag-of-words -> (B, hidden[-1]) features through Linear + ReLU layers."""

    def __init__(self, vocab_size: int, hidden: tuple[int, ...] = (8192, 1000), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = vocab_size
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, bow: torch.Tensor) -> torch.Tensor:
        return self.net(bow.float())
