"""G's gates: how scores over N positions become attention probabilities p, the threshold alpha
that binarises them, and the soft masks and entropy the trainer reads. One registry
(:data:`GATES`, selected by ``attention.gate``); adding a gate is one :class:`GateSpec`.

- ``softmax`` (the paper): p sums to 1 over the positions, alpha = c/N, weights p*N.
- ``sigmoid``: one independent gate per position, alpha = c/2, weights 2p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from adah.utils.registry import Registry


@dataclass(frozen=True)
class GateSpec:
    """``probs(logits, valid)``: (B, N) logits (invalid positions already -inf when ``valid`` is
    given) -> p; ``alpha(c, n)``: the threshold; ``weights(p, n)``: mean-1 weights (the
    ``weight`` mask); ``soft(p, n)``: the soft mask in [0, 1]; ``entropy(p)``: mean entropy of p
    divided by its maximum (1 for uniform attention, 0 for one position)."""

    name: str
    probs: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    alpha: Callable[[float, int | torch.Tensor], float | torch.Tensor]
    weights: Callable[[torch.Tensor, int | torch.Tensor], torch.Tensor]
    soft: Callable[[torch.Tensor, int | torch.Tensor], torch.Tensor]
    entropy: Callable[[torch.Tensor], float]


GATES: Registry[GateSpec] = Registry("attention gate", key="attention.gate")


def _binary_entropy(probs: torch.Tensor) -> float:
    p, q = probs.clamp_min(1e-12), (1 - probs).clamp_min(1e-12)
    return float((-(p * p.log() + q * q.log()) / math.log(2)).mean())


def _softmax_entropy(probs: torch.Tensor) -> float:
    if probs.shape[1] <= 1:
        return _binary_entropy(probs)
    p = probs.clamp_min(1e-12)
    return float((-(p * p.log()).sum(1) / math.log(probs.shape[1])).mean())


GATES.add("softmax", GateSpec(
    "softmax",
    probs=lambda logits, valid: torch.softmax(logits, dim=1) if valid is None else torch.softmax(logits, dim=1).nan_to_num(0.0),
    alpha=lambda c, n: c / n,
    weights=lambda p, n: p * n,
    soft=lambda p, n: (p * n).clamp(0, 1),
    entropy=_softmax_entropy,
))
GATES.add("sigmoid", GateSpec(
    "sigmoid",
    probs=lambda logits, valid: torch.sigmoid(logits),  # sigmoid(-inf) = 0 at invalid positions
    alpha=lambda c, n: c / 2,
    weights=lambda p, n: 2 * p,
    soft=lambda p, n: p,
    entropy=_binary_entropy,
))
