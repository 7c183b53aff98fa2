"""The triplet ranking terms: a brute-force reference and constructed codes with known values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from adah.config import LossConfig
from adah.training.losses import (
    adah_objective,
    adversarial_objective,
    code_distance,
    label_similarity,
    total_min_objective,
    triplet_ranking_loss,
)
from adah.models.adah import BranchOutput


def reference_triplet_loss(a, b, la, lb, margin, distance="euclidean", reduction="mean"):
    """Loop over every (i, j, k) with S(i,j)=1 and S(i,k)=0."""
    q = a.shape[1]
    values = []
    for i, j, k in itertools.product(range(len(a)), range(len(b)), range(len(b))):
        if (la[i] @ lb[j]) > 0 and (la[i] @ lb[k]) == 0:
            dj, dk = (a[i] - b[j]).norm(), (a[i] - b[k]).norm()
            if distance == "squared":
                dj, dk = dj**2 / q, dk**2 / q
            else:
                dj, dk = dj / math.sqrt(q), dk / math.sqrt(q)
            values.append(max(0.0, margin + float(dj) - float(dk)))
    if not values:
        return 0.0
    if reduction == "sum":
        return sum(values)
    if reduction == "mean_nonzero":
        nz = [v for v in values if v > 0]
        return sum(nz) / max(len(nz), 1)
    return sum(values) / len(values)


@pytest.mark.parametrize("distance", ["euclidean", "squared"])
@pytest.mark.parametrize("reduction", ["mean", "mean_nonzero", "sum"])
def test_triplet_loss_equals_brute_force(distance, reduction):
    g = torch.Generator().manual_seed(0)
    a = torch.tanh(torch.randn(7, 8, generator=g, dtype=torch.float64))
    b = torch.tanh(torch.randn(9, 8, generator=g, dtype=torch.float64))
    la = (torch.rand(7, 4, generator=g) < 0.35).double()
    lb = (torch.rand(9, 4, generator=g) < 0.35).double()
    got = triplet_ranking_loss(a, b, la, lb, margin=0.3, distance=distance, reduction=reduction)
    want = reference_triplet_loss(a, b, la, lb, 0.3, distance, reduction)
    assert float(got) == pytest.approx(want, abs=1e-9)


def test_zero_when_positives_coincide_and_negatives_are_far():
    codes = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1]])
    labels = torch.tensor([[1.0, 0], [1, 0], [0, 1]])
    # d(pos) = 0 and d(neg) = ||2*1||/sqrt(4) = 2 > margin: every triplet is satisfied
    assert float(triplet_ranking_loss(codes, codes, labels, labels, margin=0.5)) == 0.0




def test_hand_computed_violation_value():
    q = torch.tensor([[1.0, 1, 1, 1]])
    db = torch.tensor([[1.0, 1, 1, -1], [1.0, 1, 1, 1]])  # positive differs in 1 bit: ||(0,0,0,2)||/2 = 1
    loss = triplet_ranking_loss(q, db, torch.tensor([[1.0, 0]]), torch.tensor([[1.0, 0], [0, 1]]), margin=0.5)
    assert float(loss) == pytest.approx(1.5)  # 0.5 + 1 - 0


def test_no_valid_triplet_gives_zero_with_a_graph():
    codes = torch.randn(4, 8, requires_grad=True)
    labels = torch.ones(4, 3)  # everyone shares a label: no negatives
    loss = triplet_ranking_loss(codes, codes, labels, labels, margin=0.5)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(codes.grad, torch.zeros_like(codes))


def test_distance_scaling_matches_hamming_for_binary_codes():
    a = torch.tensor([[1.0, -1, 1, -1, 1, 1]])
    b = torch.tensor([[1.0, 1, 1, 1, -1, 1]])  # Hamming 3 of 6
    assert float(code_distance(a, b, "squared")) == pytest.approx(4 * 3 / 6)
    assert float(code_distance(a, b, "euclidean")) == pytest.approx(math.sqrt(4 * 3) / math.sqrt(6))


def test_label_similarity_is_share_a_label():
    la = torch.tensor([[1.0, 0, 1], [0, 0, 1]])
    lb = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert label_similarity(la, lb).tolist() == [[True, True, False], [True, False, False]]


def _branch(codes, codes_hat):
    return BranchOutput(codes, codes_hat, torch.ones(len(codes), 1), torch.ones(len(codes), 1))


def test_adversarial_terms_zero_or_margin_where_they_must_be():
    labels = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    good = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, -1], [-1, -1, -1, -1]])
    constant = torch.zeros(4, 4)  # unattended codes carry no information
    cfg = LossConfig(margin=0.5)
    terms = adah_objective(_branch(good, constant), _branch(good, good), labels, cfg)
    for name in ("t2i", "i2t", "i2i", "t2t", "i2t_hat"):
        assert float(terms[name]) == 0.0, name  # perfectly separated codes
    # query text codes against constant image codes: d(pos) = d(neg), so each triplet costs the margin
    assert float(terms["t2i_hat"]) == pytest.approx(0.5)
    assert float(adversarial_objective(terms)) == pytest.approx(0.5)
    assert float(total_min_objective(terms, LossConfig(margin=0.5, adversarial_weight=2.0))) == pytest.approx(1.0)


def test_swapped_codes_give_a_positive_cross_modal_term():
    labels = torch.tensor([[1.0, 0], [0, 1]])
    img = torch.tensor([[1.0, 1], [-1, -1]])
    txt = torch.tensor([[-1.0, -1], [1, 1]])  # each text sits on the other class's image
    terms = adah_objective(_branch(img, img), _branch(txt, txt), labels, LossConfig(margin=0.5))
    assert float(terms["i2i"]) == 0.0 and float(terms["t2t"]) == 0.0
    # d(pos) = ||(2,2)||/sqrt(2) = 2, d(neg) = 0: 0.5 + 2 - 0
    assert float(terms["t2i"]) == pytest.approx(2.5)
    assert float(terms["i2t"]) == pytest.approx(2.5)


def test_detached_queries_stop_gradient_to_query_codes():
    labels = torch.tensor([[1.0, 0], [0, 1], [1, 0]])
    sign = torch.tensor([[1.0], [-1.0], [1.0]])  # class 0: +, class 1: -
    img = (sign * torch.ones(3, 4)).requires_grad_()
    txt = (sign * torch.ones(3, 4)).requires_grad_()
    # the unattended image codes sit on the other class: every t2i_hat triplet is violated, so the
    # term is positive and must send gradient to img_hat (random codes could leave it at 0)
    img_hat = (-sign * torch.ones(3, 4)).requires_grad_()
    terms = adah_objective(_branch(img, img_hat), _branch(txt, txt.detach()), labels, LossConfig(),
                           adversarial=("t2i_hat",), detach_queries_of_adversarial=True)
    assert float(terms["t2i_hat"]) > 0
    terms["t2i_hat"].backward()
    assert txt.grad is None
    assert img_hat.grad is not None and img_hat.grad.abs().sum() > 0
