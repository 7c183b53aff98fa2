"""The deep baselines of adah.methods: each loss term against a direct formula on small tensors,
DCMH's closed-form B update, DJSRH's affinity, the registry and the trainer hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adah.errors import AdahError
from adah.methods import METHODS, build_method, method_overrides
from adah.methods.dcmh import batch_similarity, closed_form_codes, dcmh_terms

from helpers import tiny_config


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

    full = Trainer(cfg, data, split, tmp_path / "full", method=build_method).fit()
    assert [h["b_changed"] > 0 for h in full.history] == [True, True]
    assert all(np.isfinite(h["objective"]) for h in full.history)
    part = Trainer(cfg.override({"train.epochs": 1}), data, split, tmp_path / "part", method=build_method).fit()
    assert part.history[0]["objective"] == full.history[0]["objective"]
    resumed = Trainer(cfg, data, split, tmp_path / "part", method=build_method).fit(resume=True)
    assert resumed.history[-1]["objective"] == pytest.approx(full.history[-1]["objective"], rel=1e-6)
    assert resumed.best_val_map == pytest.approx(full.best_val_map, rel=1e-6)


def test_method_options_are_checked(scenes_small, tmp_path):
    data, split = scenes_small
    from adah.training.trainer import Trainer

    cfg = tiny_config().override({**method_overrides("dcmh"), "train.method_options.gamma2": 1.0})
    with pytest.raises(AdahError, match=r"unknown key\(s\) \['gamma2'\] for method 'dcmh'"):
        Trainer(cfg, data, split, tmp_path / "a", method=build_method)
    cfg = tiny_config().override({"train.method": "dcmh"})  # attention 'both' left on
    with pytest.raises(AdahError, match="trains no attention"):
        Trainer(cfg, data, split, tmp_path / "b", method=build_method)


def test_djsrh_joint_affinity_against_the_formula():
    from adah.methods.djsrh import joint_affinity

    g = torch.Generator().manual_seed(1)
    fi, ft = torch.rand(4, 6, generator=g), torch.rand(4, 3, generator=g)
    beta, eta, m = 0.3, 0.4, 4
    cos = lambda x: [[float(x[i] @ x[j] / (x[i].norm() * x[j].norm())) for j in range(m)] for i in range(m)]  # noqa: E731
    ci, ct = cos(fi), cos(ft)
    st = [[beta * (2 * ci[i][j] - 1) + (1 - beta) * (2 * ct[i][j] - 1) for j in range(m)] for i in range(m)]
    expected = [[(1 - eta) * st[i][j] + eta * sum(st[i][k] * st[j][k] for k in range(m)) / m for j in range(m)]
                for i in range(m)]
    assert joint_affinity(fi, ft, beta, eta).tolist() == pytest.approx(np.array(expected), rel=1e-5)
    # identical rows in both modalities are fully similar: S~ = 1 there, and S is symmetric
    same = joint_affinity(torch.ones(2, 3), torch.ones(2, 5), beta, eta)
    assert same.tolist() == pytest.approx(np.ones((2, 2)), rel=1e-6)


def test_djsrh_terms_are_mean_squared_gaps_of_cosines():
    from adah.methods.djsrh import djsrh_terms

    bi = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    bt = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    target = torch.tensor([[1.5, 0.0], [0.0, 1.5]])
    r = 1 / math.sqrt(2)
    cos_it = [[r, -1.0], [r, 0.0]]  # cos(bi_i, bt_j)
    expected_i2t = sum((target[i, j].item() - cos_it[i][j]) ** 2 for i in range(2) for j in range(2)) / 4
    expected_i2i = ((1.5 - 1) ** 2 * 2 + 0 + 0) / 4  # cos(bi, bi) = identity
    terms = djsrh_terms(bi, bt, target)
    assert float(terms["i2t"]) == pytest.approx(expected_i2t, rel=1e-6)
    assert float(terms["i2i"]) == pytest.approx(expected_i2i, rel=1e-6)
    cos_tt = [[1.0, -r], [-r, 1.0]]
    assert float(terms["t2t"]) == pytest.approx(sum((target[i, j].item() - cos_tt[i][j]) ** 2 for i in range(2)
                                                    for j in range(2)) / 4, rel=1e-6)


def test_djsrh_trains_without_labels_and_takes_wiki_settings(scenes_small, tmp_path):
    data, split = scenes_small
    from adah.training.trainer import Trainer

    cfg = tiny_config(**{"train.max_batches_per_epoch": 3}).override(method_overrides("djsrh"))
    trainer = Trainer(cfg, data, split, tmp_path / "run", method=build_method)
    assert trainer.method.opts.beta == 0.9 and trainer.method.opts.lambda1 == 0.1  # MIRFlickr's settings
    before = [p.detach().clone() for p in trainer.method.text_params]
    record = trainer.run_epoch()
    assert np.isfinite(record["objective"]) and {"i2t", "i2i", "t2t"} <= set(record)
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.method.text_params))
    wiki = cfg.override({"data.name": "wiki", "train.method_options.lambda2": 0.5})
    from adah.methods.djsrh import DATASET_DEFAULTS, DJSRHOptions
    from adah.methods.base import parse_options

    opts = parse_options("djsrh", DJSRHOptions, {**DATASET_DEFAULTS["wiki"], **wiki.train.method_options})
    assert (opts.beta, opts.lambda1, opts.lambda2) == (0.3, 0.3, 0.5)


def test_ssah_terms_against_the_formula():
    from adah.methods.ssah import ssah_terms

    g = torch.Generator().manual_seed(2)
    feat, lab_feat = torch.randn(2, 3, generator=g), torch.randn(4, 3, generator=g)
    codes, lab_codes = torch.randn(2, 5, generator=g).tanh(), torch.randn(4, 5, generator=g).tanh()
    sim = torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0]])
    b = torch.ones(2, 5)
    labels, labels_hat = torch.tensor([[1.0, 0], [0, 1]]), torch.tensor([[0.8, 0.1], [0.3, 0.6]])
    terms = ssah_terms(feat, codes, labels_hat, lab_feat, lab_codes, sim, b, labels)

    def nll(a, c):
        t = [[0.5 * float(a[i] @ c[j]) for j in range(4)] for i in range(2)]
        return -sum(float(sim[i, j]) * t[i][j] - math.log(1 + math.exp(t[i][j])) for i in range(2) for j in range(4))

    assert float(terms["j1"]) == pytest.approx(nll(feat, lab_feat), rel=1e-5)
    assert float(terms["j2"]) == pytest.approx(nll(codes, lab_codes), rel=1e-5)
    assert float(terms["quantization"]) == pytest.approx(float(((1 - codes) ** 2).sum()), rel=1e-6)
    assert float(terms["label"]) == pytest.approx(0.04 + 0.01 + 0.09 + 0.16, rel=1e-5)


def test_ssah_trains_its_label_net_discriminators_and_updates_b(scenes_small, tmp_path):
    data, split = scenes_small
    from adah.training.trainer import Trainer

    cfg = tiny_config(**{"train.max_batches_per_epoch": 2, "model.image_fc_dims": [64, 64],
                         "model.text_hidden": [128, 64]}).override(method_overrides("ssah"))
    trainer = Trainer(cfg, data, split, tmp_path / "run", method=build_method)
    disc_before = [p.detach().clone() for p in trainer.method.nets["disc_image"].parameters()]
    record = trainer.run_epoch()
    assert {"disc", "image_adversarial", "text_j1", "label_objective", "b_changed"} <= set(record)
    assert all(np.isfinite(v) for v in record.values())
    assert any(not torch.equal(a, p) for a, p in zip(disc_before, trainer.method.nets["disc_image"].parameters()))
    bad = tiny_config(**{"model.image_fc_dims": [64, 32], "model.text_hidden": [128, 64]}).override(
        method_overrides("ssah"))
    with pytest.raises(AdahError, match="sizes must agree"):
        Trainer(bad, data, split, tmp_path / "bad", method=build_method)


def test_benchmark_offers_every_registered_method():
    from adah.experiments.benchmark import DEEP_METHODS, METHOD_NAMES

    for name in METHODS.names():
        if name != "adah":
            assert DEEP_METHODS[name]["train.method"] == name and name in METHOD_NAMES
    assert DEEP_METHODS["adah_paper"]["train.steps_max"] == 1 and DEEP_METHODS["none"] == {"model.attention": "none"}


def test_layer_tap_keeps_the_attended_call_not_the_zeros_of_none():
    """Without attention a branch hashes the features, then zeros (the unattended view): DCMH's F
    and SSAH's semantic features must come from the first call."""
    from adah.methods.base import LayerTap
    from adah.models import build_model

    cfg = tiny_config(**{"model.attention": "none", "model.text_dim": 12})
    model = build_model(cfg.model, cfg.attention)
    tap_out, tap_in = LayerTap(model.text.hash.fc, "output"), LayerTap(model.text.hash.fc, "input")
    texts = torch.rand(5, 12)
    out, linear = tap_out.output_of(lambda: model.text(texts))
    _, feats = tap_in.output_of(lambda: model.text(texts))
    assert torch.allclose(torch.tanh(linear), out.codes)
    assert feats.abs().sum() > 0 and len({tuple(r) for r in linear.detach().numpy().round(5)}) == 5


def test_a_diverging_method_stops_with_a_message(scenes_small, tmp_path):
    data, split = scenes_small
    from adah.training.trainer import Trainer

    cfg = tiny_config(**{"train.max_batches_per_epoch": 2}).override(
        {**method_overrides("dcmh"), "train.method_options.lr_start": 1e30, "train.method_options.lr_end": 1e30})
    with pytest.raises(AdahError, match="'dcmh': the (image|text) loss is (nan|inf).*lower the learning rate"):
        Trainer(cfg, data, split, tmp_path / "run", method=build_method).fit()


def test_the_trainer_alone_refuses_another_method(scenes_small, tmp_path):
    """adah.training sits below adah.methods: it runs a method only through the hook."""
    data, split = scenes_small
    from adah.training.trainer import Trainer

    with pytest.raises(AdahError, match="train it with adah.methods.train"):
        Trainer(tiny_config().override(method_overrides("dcmh")), data, split, tmp_path / "run")
