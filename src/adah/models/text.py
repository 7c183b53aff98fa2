"""Text feature learning E: bag-of-words -> MLP (8192 -> 1000 in the paper), and the text branch
(E, G over its features, D) of the ``bow_mlp`` text encoder."""

from __future__ import annotations

import torch
from torch import nn

from adah.config import AttentionConfig, ModelConfig
from adah.errors import AdahError
from adah.models.attention import AttentionOutput, FeatureAttention, NoAttention, attention_kwargs
from adah.models.hashing import BranchOutput, HashHead


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


class TextBranch(nn.Module):
    """(B, V) bag-of-words -> BranchOutput; the mask is over the d = text_hidden[-1] features."""

    def __init__(self, cfg: ModelConfig, attention: AttentionConfig | None = None) -> None:
        super().__init__()
        if cfg.text_dim <= 0:
            raise AdahError(f"model.text_dim must be the vocabulary size (> 0), got {cfg.text_dim}")
        self.encoder = TextEncoder(cfg.text_dim, tuple(cfg.text_hidden), cfg.dropout)
        d = self.encoder.out_dim
        kw = attention_kwargs(attention or AttentionConfig())
        self.attention = FeatureAttention(d, **kw) if cfg.text_attention else NoAttention(spatial=False)
        self.hash = HashHead(nn.Identity(), d, cfg.bits)

    def attend(self, bow: torch.Tensor) -> AttentionOutput:
        """G's attention over the text features of ``bow``: mask and probs (B, d)."""
        return self.attention(self.encoder(bow))

    def forward(self, bow: torch.Tensor) -> BranchOutput:
        att = self.attend(bow)
        return BranchOutput(self.hash(att.attended), self.hash(att.unattended), att.mask, att.probs)
