"""The deep baselines of adah.methods: each loss term against a direct formula on small tensors,
DCMH's closed-form B update, DJSRH's affinity, the registry and the trainer hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adah.errors import AdahError
from adah.methods import METHODS, method_overrides
from adah.methods.dcmh import batch_similarity, closed_form_codes, dcmh_terms

from conftest import tiny_config


@pytest.fixture
def small():
    g = torch.Generator().manual_seed(0)
    m, n, c = 3, 5, 4
    f = torch.randn(m, c, generator=g)
    g_all = torch.randn(n, c, generator=g)
    sim = (torch.rand(m, n, generator=g) > 0.5).float()
    b = torch.where(torch.randn(m, c, generator=g) >= 0, 1.0, -1.0)
    rest = torch.randn(c, generator=g)
    return f, g_all, sim, b, rest


def test_dcmh_nll_is_the_negative_log_likelihood(small):
    f, g_all, sim, b, rest = small
    expected = 0.0
    for i in range(len(f)):
        for j in range(len(g_all)):
            theta = 0.5 * float(f[i] @ g_all[j])
            expected -= float(sim[i, j]) * theta - math.log(1 + math.exp(theta))
    assert float(dcmh_terms(f, g_all, sim, b, rest)["nll"]) == pytest.approx(expected, rel=1e-5)


def test_dcmh_quantization_and_balance_terms(small):
    f, g_all, sim, b, rest = small
    terms = dcmh_terms(f, g_all, sim, b, rest)
    quant = sum(float(b[i, k] - f[i, k]) ** 2 for i in range(f.shape[0]) for k in range(f.shape[1]))
    ones = [float(f[:, k].sum() + rest[k]) for k in range(f.shape[1])]  # F^T 1 over the whole set
    assert float(terms["quantization"]) == pytest.approx(quant, rel=1e-5)
    assert float(terms["balance"]) == pytest.approx(sum(v * v for v in ones), rel=1e-5)


def test_dcmh_nll_is_stable_for_large_inner_products():
    f = torch.full((1, 64), 10.0)
    terms = dcmh_terms(f, f, torch.ones(1, 1), torch.ones(1, 64), torch.zeros(64))
    assert torch.isfinite(terms["nll"]) and float(terms["nll"]) < 1e-6  # log(1 + e^-3200) ~ 0


def test_closed_form_b_update_is_the_sign_of_f_plus_g():
    f = torch.tensor([[0.5, -2.0, 0.1], [-0.3, 0.3, 0.0]])
    g = torch.tensor([[-1.0, 1.0, -0.2], [0.1, 0.2, 0.0]])
    b = closed_form_codes(f, g, gamma=1.0)
    assert b.tolist() == [[-1.0, -1.0, -1.0], [-1.0, 1.0, 1.0]]
    # it minimises gamma (||B - F||^2 + ||B - G||^2) over B in {-1, 1}: no single flip does better
    cost = lambda codes: float((codes - f).pow(2).sum() + (codes - g).pow(2).sum())  # noqa: E731
    for i in range(2):
        for k in range(3):
            flipped = b.clone()
            flipped[i, k] *= -1
            assert cost(flipped) >= cost(b)


def test_batch_similarity_labels_pairs_both():
    batch = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    train = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    pos = torch.tensor([2, 1])
    assert batch_similarity("labels", batch, train, pos).tolist() == [[1, 0, 0], [0, 0, 0]]
    assert batch_similarity("pairs", batch, train, pos).tolist() == [[0, 0, 1], [0, 1, 0]]
    assert batch_similarity("both", batch, train, pos).tolist() == [[1, 0, 1], [0, 1, 0]]


def test_registry_names_and_errors():
    assert {"adah", "dcmh"} <= set(METHODS.names())
    assert method_overrides("dcmh")["train.method"] == "dcmh"
    with pytest.raises(AdahError, match="train.method must be one of"):
        method_overrides("nope")


@pytest.mark.slow
def test_dcmh_trains_resumes_exactly_and_updates_b(scenes_small, tmp_path):
    data, split = scenes_small
    cfg = tiny_config(**{"train.epochs": 2, "train.max_batches_per_epoch": 2}).override(method_overrides("dcmh"))
    from adah.training.trainer import Trainer

    full = Trainer(cfg, data, split, tmp_path / "full").fit()
    assert [h["b_changed"] > 0 for h in full.history] == [True, True]
    assert all(np.isfinite(h["objective"]) for h in full.history)
    part = Trainer(cfg.override({"train.epochs": 1}), data, split, tmp_path / "part").fit()
    assert part.history[0]["objective"] == full.history[0]["objective"]
    resumed = Trainer(cfg, data, split, tmp_path / "part").fit(resume=True)
    assert resumed.history[-1]["objective"] == pytest.approx(full.history[-1]["objective"], rel=1e-6)
    assert resumed.best_val_map == pytest.approx(full.best_val_map, rel=1e-6)


def test_method_options_are_checked(scenes_small, tmp_path):
    data, split = scenes_small
    from adah.training.trainer import Trainer

    cfg = tiny_config().override({**method_overrides("dcmh"), "train.method_options.gamma2": 1.0})
    with pytest.raises(AdahError, match=r"unknown key\(s\) \['gamma2'\] for method 'dcmh'"):
        Trainer(cfg, data, split, tmp_path / "a")
    cfg = tiny_config().override({"train.method": "dcmh"})  # attention 'both' left on
    with pytest.raises(AdahError, match="trains no attention"):
        Trainer(cfg, data, split, tmp_path / "b")
