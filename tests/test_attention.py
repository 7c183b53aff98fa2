"""Attention G: the hard threshold, its straight-through gradient, attended/unattended split."""

from __future__ import annotations

import torch

from adah.models.attention import FeatureAttention, NoAttention, SpatialAttention, threshold_ste


def test_threshold_is_exactly_binary_and_at_alpha():
    probs = torch.tensor([[0.10, 0.25, 0.2500001, 0.40, 0.0]])
    mask = threshold_ste(probs, 0.25)
    assert mask.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]  # p >= alpha, the boundary included


def test_threshold_gradient_is_straight_through():
    probs = torch.softmax(torch.randn(3, 7), dim=1).requires_grad_(True)
    weights = torch.randn(3, 7)
    (threshold_ste(probs, 1 / 7) * weights).sum().backward()
    torch.testing.assert_close(probs.grad, weights, rtol=0, atol=0)


def test_spatial_mask_is_exactly_p_at_least_one_over_hw():
    torch.manual_seed(0)
    att = SpatialAttention(channels=5)
    maps = torch.randn(4, 5, 6, 3)
    out = att(maps)
    probs = torch.softmax(att.score(maps).view(4, -1), dim=1).view(4, 1, 6, 3)
    torch.testing.assert_close(out.probs, probs)
    assert torch.equal(out.mask, (probs >= 1 / 18).float())
    assert out.mask.sum() > 0 and (1 - out.mask).sum() > 0
    torch.testing.assert_close(out.attended + out.unattended, maps)
    assert torch.equal(out.attended, out.mask * maps)


def test_spatial_attention_passes_gradients_to_the_score_conv():
    torch.manual_seed(1)
    att = SpatialAttention(channels=3)
    maps = torch.randn(2, 3, 4, 4)
    out = att(maps)
    out.unattended.pow(2).sum().backward()  # depends on G only through the binary mask
    assert att.score.weight.grad is not None
    assert att.score.weight.grad.abs().sum() > 0


def test_feature_attention_threshold_is_one_over_d():
    torch.manual_seed(2)
    att = FeatureAttention(dim=10)
    feats = torch.randn(5, 10)
    out = att(feats)
    probs = torch.softmax(att.score(feats), dim=1)
    assert torch.equal(out.mask, (probs >= 0.1).float())
    torch.testing.assert_close(out.probs.sum(1), torch.ones(5))
    assert torch.equal(out.unattended, (1 - out.mask) * feats)


def test_no_attention_keeps_everything():
    maps = torch.randn(2, 3, 4, 4)
    out = NoAttention(spatial=True)(maps)
    assert torch.equal(out.attended, maps)
    assert torch.equal(out.unattended, torch.zeros_like(maps))
    assert out.mask.shape == (2, 1, 4, 4) and bool((out.mask == 1).all())


def test_spatial_attention_refuses_a_single_position():
    import pytest

    from adah.errors import AdahError

    with pytest.raises(AdahError, match="before_pool"):
        SpatialAttention(channels=4)(torch.randn(2, 4, 1, 1))
