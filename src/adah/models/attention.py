"""Attention module G: soft attention, a hard mask with a straight-through gradient, and the
split of features into attended and unattended parts.

The paper's G (``AttentionConfig`` with the ``paper`` preset): a 1x1 conv turns (B, C, H, W) maps
into (B, 1, H, W) scores, a softmax over the N = H*W positions gives p, and Z = [p >= 1/N];
text: a fc layer over the (B, d) feature, softmax over d, Z = [p >= 1/d]. Attended Z*f,
unattended (1-Z)*f. ``none`` keeps everything (Z = 1).

The choices the paper leaves open are :class:`adah.config.AttentionConfig` fields, all handled
here in one place (:class:`Gate`):

- ``gate``: ``softmax`` over positions (paper) or ``sigmoid``, one independent gate per position;
- ``temperature``: scores are divided by it before the gate;
- ``noise`` s > 0: in training, s * Gumbel noise is added to the (tempered) scores, so the mask is
  drawn afresh at every step (with ``keep_fraction``, a Gumbel-top-k sample from G's softmax;
  with a zero-initialised G, uniformly random positions); at test time the mask is deterministic;
- ``threshold`` c: alpha = c/N for the softmax, c/2 for the sigmoid;
- ``keep_fraction`` rho > 0: keep the ceil(rho*N) highest-scoring positions of each item instead
  of a threshold (a fixed mask density, immune to the softmax growing peaky);
- ``init``: ``zero`` starts the score layer at zero (p uniform, every position attended: G
  starts from ``none``);
- ``residual`` lam: attended = f * (lam + (1 - lam) Z); lam = 0 is the paper, lam = 1 hashes f
  itself and uses the mask only for the adversarial unattended part (1 - Z) f;
- ``mask``: ``hard`` (paper: binary Z, straight-through gradient), ``soft`` (clamp(p*N, 0, 1)
  for the softmax, p for the sigmoid, in training and at test time) or ``weight`` (w = p*N for
  the softmax, 2p for the sigmoid: weights of mean 1 that can also raise a position above 1, an
  attention pooling; the unattended part is (1 - min(w, 1)) * f, the positions weighted below
  average); a hard mask can still be soft for its first ``attention.soft_epochs`` epochs (the
  trainer switches it per epoch);
- ``rescale``: each part is divided by the mean of its mask over the positions (detached), so an
  erased view keeps the scale of f, as inverted dropout rescales by 1/(1-p): with half of the 7x7
  cells kept, an average pool of (1 - Z) f is the mean of the kept cells, not half of it;
- ``image_positions``: what the image mask is over: the ``cells`` of the conv map (the paper:
  *where* to look, :class:`SpatialAttention`) or its ``channels`` (*what* to look for,
  :class:`ChannelAttention`: G scores the C channels from the map's global average, as a
  squeeze-and-excitation block does, and the mask (B, C, 1, 1) holds for every cell);
- ``image_region``: which cells G's mask splits: ``all`` (the paper) or ``salient``, the cells
  whose mean activation over the channels is at least its mean over the map (SCDA's selective
  pooling, Wei et al., IEEE TIP 2017; fixed by the backbone, no parameters). With ``salient``
  the gate works over each image's salient cells alone (alpha = c/n, ceil(rho*n) kept, n their
  count), the other cells are in neither part, and with ``residual`` 1 D hashes the salient
  cells while the adversarial view is the salient cells G's mask leaves out: erasing inside the
  object, where the paper's complement (1 - Z) f of a saliency mask is the background.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from adah.config import IMAGE_REGIONS
from adah.errors import AdahError
from adah.models.gates import GATES


class AttentionOutput(NamedTuple):
    attended: torch.Tensor  # what D hashes for the codes H: Z * f (paper), same shape as f
    unattended: torch.Tensor  # (1 - Z) * f, hashed into H_hat
    mask: torch.Tensor  # Z in {0, 1} (or soft in [0, 1]): (B, 1, H, W) for maps, (B, d) for vectors
    probs: torch.Tensor  # p, same shape as mask (sums to 1 over positions for the softmax gate)


MASKS = ("hard", "soft", "weight")

# exact 1/N in float64 may sit just above a float32 softmax of equal scores; this keeps uniform p
# (zero-initialised G) fully attended without moving the threshold measurably
_ALPHA_TOLERANCE = 1e-6


def threshold_ste(probs: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """Binary mask ``probs >= alpha`` whose gradient w.r.t. ``probs`` is the identity (``alpha``
    a number, or a tensor that broadcasts against ``probs``, e.g. one alpha per row).

    Forward values are exactly 0 or 1 (``hard + (p - p.detach())`` adds an exact zero)."""
    hard = (probs >= alpha * (1 - _ALPHA_TOLERANCE)).to(probs.dtype)
    return hard + (probs - probs.detach())


def topk_ste(scores: torch.Tensor, probs: torch.Tensor, keep: int | torch.Tensor) -> torch.Tensor:
    """Binary mask of the ``keep`` highest ``scores`` of each row (among equal scores, which are
    kept is up to ``torch.topk`` / ``argsort``), with the straight-through gradient of
    :func:`threshold_ste` w.r.t. ``probs``. (B, N) -> (B, N); ``keep`` one count for every row or
    a (B, 1) tensor of counts, one per row."""
    scores = scores.detach()
    if isinstance(keep, torch.Tensor):  # per row: keep the positions ranked below the row's count
        order = scores.argsort(dim=1, descending=True)
        positions = torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous()
        hard = (torch.empty_like(order).scatter_(1, order, positions) < keep).to(probs.dtype)
    else:
        hard = torch.zeros_like(probs).scatter_(1, scores.topk(keep, dim=1, sorted=False).indices, 1.0)
    return hard + (probs - probs.detach())


class Gate(nn.Module):
    """Scores (B, N) of N positions -> (mask, probs), both (B, N), by the configured gate,
    threshold or fixed fraction, and hard or soft mask."""

    def __init__(self, *, gate: str = "softmax", temperature: float = 1.0, threshold: float = 1.0,
                 keep_fraction: float = 0.0, mask: str = "hard", noise: float = 0.0) -> None:
        super().__init__()
        self.spec = GATES.get(gate)
        if mask not in MASKS:
            raise AdahError(f"attention.mask must be one of {MASKS}, got {mask!r}")
        self.gate, self.temperature, self.threshold, self.keep_fraction = gate, temperature, threshold, keep_fraction
        self.noise = noise
        self.always_soft = mask == "soft"  # soft in training and at test time
        self.weights = mask == "weight"  # mean-1 weights p*N (2p), in training and at test time
        self.soft = False  # set by the trainer for the soft-mask epochs of a hard mask; never saved

    def alpha(self, n: int | torch.Tensor) -> float | torch.Tensor:
        return self.spec.alpha(self.threshold, n)

    def forward(self, scores: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``valid`` (B, N) bool, for items with fewer positions than N (the words of texts of
        different lengths): each row's gate works over its own valid positions (n = their count,
        alpha = c/n, ceil(rho*n) kept); the other positions get p = 0 and Z = 0."""
        logits = scores.float() / self.temperature
        if self.noise > 0 and self.training:  # a fresh draw per step: Gumbel(0, 1) = -log(-log U)
            u = torch.rand_like(logits).clamp_(1e-12, 1 - 1e-7)
            logits = logits - self.noise * torch.log(-torch.log(u))
        if valid is None:
            n, vf = scores.shape[1], None
            probs = self.spec.probs(logits, None)
            keep = max(1, min(n, math.ceil(self.keep_fraction * n)))
        else:  # each row over its own valid positions: n (B, 1); a row with none: p = 0 everywhere
            valid = valid.bool()
            vf = valid.to(logits.dtype)
            n = vf.sum(1, keepdim=True).clamp_min(1)
            logits = logits.masked_fill(~valid, float("-inf"))
            probs = self.spec.probs(logits, valid)
            keep = torch.ceil(self.keep_fraction * n).clamp(min=1)  # at most n
        if self.weights:
            mask = self.spec.weights(probs, n)
        elif self.soft or self.always_soft:
            mask = self.spec.soft(probs, n)
        elif self.keep_fraction > 0:
            mask = topk_ste(logits, probs, keep)
        else:
            mask = threshold_ste(probs, self.alpha(n))
        return (mask, probs) if vf is None else (mask * vf, probs)


def split_parts(feats: torch.Tensor, mask: torch.Tensor, residual: float, rescale: bool = False,
                valid: torch.Tensor | None = None,
                region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """attended = f * (lam + (1 - lam) Z) (lam = 0: Z * f), unattended = (1 - min(Z, 1)) * f
    (Z is in [0, 1] but for ``mask='weight'``, where it may exceed 1). With ``rescale`` each part
    is divided by the mean over the positions of its factor (per item, no gradient through the
    scale; at least 1/N, so a part that keeps nothing stays 0). ``valid`` (0/1, shaped like
    ``mask``): only those positions are in either part, and the means are over them (padding:
    the positions an item does not have). ``region`` (0/1, shaped like ``mask``, Z inside it):
    only those positions are in either part, 1 replaced by the region (attended R * (lam + (1 -
    lam) Z) * f, unattended (R - Z) * f), but the means stay over all N positions (cells outside
    the region are part of the image: an average pool of a rescaled part is the mean of its
    cells)."""
    if valid is not None and region is not None:
        raise AdahError("split_parts takes valid positions or a region, not both")
    full = valid if valid is not None else (region if region is not None else 1)
    keep = mask if residual == 0 else full * residual + (1 - residual) * mask
    drop = full - mask.clamp(max=1)
    if rescale:
        keep, drop = _rescaled(keep, valid), _rescaled(drop, valid)
    return keep * feats, drop * feats


def _rescaled(factor: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """factor / mean(factor) over the positions of each item: (B, 1, H, W) maps or (B, d) vectors;
    with ``valid``, over each item's valid positions."""
    dims = tuple(range(1, factor.ndim))
    if valid is None:
        n = math.prod(factor.shape[1:])
        mean = factor.detach().mean(dim=dims, keepdim=True).clamp(min=1.0 / n)
    else:
        n = valid.sum(dim=dims, keepdim=True).clamp(min=1)
        mean = (factor.detach().sum(dim=dims, keepdim=True) / n).clamp(min=1.0 / n)
    return factor / mean


class SpatialAttention(nn.Module):
    """(B, C, H, W) maps -> AttentionOutput with a (B, 1, H, W) mask; the paper's alpha = 1/(H*W)."""

    def __init__(self, channels: int, *, init: str = "random", residual: float = 0.0, rescale: bool = False,
                 region: str = "all", **gate) -> None:
        super().__init__()
        if region not in IMAGE_REGIONS:
            raise AdahError(f"attention.image_region must be one of {IMAGE_REGIONS}, got {region!r}")
        self.score = nn.Conv2d(channels, 1, kernel_size=1)
        self.gate = Gate(**gate)
        self.residual, self.rescale, self.region = residual, rescale, region
        init_score_layer(self.score, init)

    def forward(self, maps: torch.Tensor) -> AttentionOutput:
        b, _, h, w = maps.shape
        if h * w < 2:
            raise AdahError(
                f"image attention needs a map with at least 2 positions, got {h}x{w}; "
                "with a globally pooled backbone use model.mask_position='before_pool'"
            )
        scores = self.score(maps).view(b, h * w)
        region = None
        if self.region == "salient":  # SCDA: the cells whose mean activation is at least the map's mean
            act = maps.detach().float().mean(dim=1).view(b, h * w)
            salient = act >= act.mean(dim=1, keepdim=True)
            mask, probs = self.gate(scores, salient)
            region = salient.view(b, 1, h, w).to(maps.dtype)
        else:
            mask, probs = self.gate(scores)
        mask, probs = mask.view(b, 1, h, w).to(maps.dtype), probs.view(b, 1, h, w)
        return AttentionOutput(*split_parts(maps, mask, self.residual, self.rescale, region=region), mask, probs)


class FeatureAttention(nn.Module):
    """(B, d) features -> AttentionOutput with a (B, d) mask; fc -> gate over d; the paper's alpha = 1/d."""

    def __init__(self, dim: int, *, init: str = "random", residual: float = 0.0, rescale: bool = False,
                 **gate) -> None:
        super().__init__()
        self.score = nn.Linear(dim, dim)
        self.gate = Gate(**gate)
        self.residual, self.rescale = residual, rescale
        init_score_layer(self.score, init)

    def forward(self, feats: torch.Tensor) -> AttentionOutput:
        mask, probs = self.gate(self.score(feats))
        mask = mask.to(feats.dtype)
        return AttentionOutput(*split_parts(feats, mask, self.residual, self.rescale), mask, probs)


class ChannelAttention(FeatureAttention):
    """(B, C, H, W) maps -> AttentionOutput with a (B, C, 1, 1) mask over the channels: G's fc
    (FeatureAttention's, over d = C) scores the C channels from the global average of the maps (a
    squeeze-and-excitation style squeeze), the gate works over the N = C channels (the paper's
    alpha = 1/C), and each channel is kept or erased at every cell."""

    def forward(self, maps: torch.Tensor) -> AttentionOutput:
        if maps.ndim != 4 or maps.shape[1] < 2:
            raise AdahError(f"channel attention needs (B, C, h, w) maps with at least 2 channels, got "
                            f"{tuple(maps.shape)}")
        b, c = maps.shape[:2]
        mask, probs = self.gate(self.score(maps.mean(dim=(2, 3))))
        mask, probs = mask.view(b, c, 1, 1).to(maps.dtype), probs.view(b, c, 1, 1)
        return AttentionOutput(*split_parts(maps, mask, self.residual, self.rescale), mask, probs)


def init_score_layer(layer: nn.Module, init: str) -> None:
    """``random``: PyTorch's default initialisation (the paper says nothing); ``zero``: weights and
    bias 0, so p is uniform and every position is attended until G's first step; ``saliency``: the
    score of a position is its own activation, as in SCDA's selective pooling (Wei et al., IEEE TIP
    2017): a cell scores the mean of its channels (the 1x1 conv's weights all 1/C), a feature or
    channel its own value (an identity fc); with a large ``temperature`` the softmax threshold 1/N
    keeps the positions above the mean score, SCDA's rule."""
    if init == "zero":
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    elif init == "saliency":
        with torch.no_grad():
            if isinstance(layer, nn.Conv2d):  # (1, C, 1, 1): the mean over the channels
                layer.weight.fill_(1.0 / layer.weight.shape[1])
            elif isinstance(layer, nn.Linear) and layer.in_features == layer.out_features:
                layer.weight.copy_(torch.eye(layer.in_features))
            else:
                raise AdahError(f"attention.init='saliency' needs a 1x1 conv or a square fc score layer, got {layer}")
            layer.bias.zero_()
    elif init != "random":
        raise AdahError(f"attention.init must be 'random', 'zero' or 'saliency', got {init!r}")


class NoAttention(nn.Module):
    """Keeps every position: attended = f, unattended = 0, mask = 1 (the ``none`` variant)."""

    def __init__(self, spatial: bool) -> None:
        super().__init__()
        self.spatial = spatial

    def forward(self, feats: torch.Tensor) -> AttentionOutput:
        shape = (feats.shape[0], 1, *feats.shape[2:]) if self.spatial else feats.shape
        ones = feats.new_ones(shape)
        return AttentionOutput(feats, torch.zeros_like(feats), ones, ones / ones[0].numel())


def attention_kwargs(cfg) -> dict:
    """Keyword arguments of SpatialAttention / FeatureAttention from an ``AttentionConfig``."""
    return {"init": cfg.init, "residual": cfg.residual, "gate": cfg.gate, "temperature": cfg.temperature,
            "threshold": cfg.threshold, "keep_fraction": cfg.keep_fraction, "mask": cfg.mask, "noise": cfg.noise,
            "rescale": cfg.rescale}


def gates(module: nn.Module) -> list[Gate]:
    """Every :class:`Gate` inside ``module`` (the trainer switches their soft/hard mode)."""
    return [m for m in module.modules() if isinstance(m, Gate)]
