"""G's open choices (the ``attention`` config section), each on constructed inputs; the paper
preset; the per-epoch diagnostics, ``adah plot`` and ``adah study``."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adah.training.checkpoint import config_of
from adah.cli import app
from adah.config import PRESETS, AttentionConfig, Config
from adah.errors import AdahError
from adah.models.attention import ChannelAttention, FeatureAttention, SpatialAttention, attention_kwargs
from adah.models.parts import check_parts
from adah.training.diagnostics import normalised_entropy
from adah.training.trainer import Trainer

from helpers import tiny_config


def _spatial(**kw) -> SpatialAttention:
    torch.manual_seed(0)
    cfg = AttentionConfig(**{**PAPER_G, **kw})
    return SpatialAttention(6, region=cfg.image_region, **attention_kwargs(cfg))  # as ImageBranch builds it


PAPER_G = {k.split(".", 1)[1]: v for k, v in PRESETS["paper"].items() if k.startswith("attention.")}


def test_zero_init_gives_uniform_p_and_a_full_mask():
    maps = torch.randn(3, 6, 5, 7)
    out = _spatial(init="zero")(maps)
    torch.testing.assert_close(out.probs, torch.full_like(out.probs, 1 / 35))
    assert bool((out.mask == 1).all())
    assert torch.equal(out.attended, maps) and bool((out.unattended == 0).all())
    torch.manual_seed(0)
    feat = FeatureAttention(9, **attention_kwargs(AttentionConfig(**{**PAPER_G, "init": "zero"})))
    assert bool((feat(torch.randn(4, 9)).mask == 1).all())


def test_residual_form_equals_f_when_z_is_one_and_for_lam_one():
    maps = torch.randn(2, 6, 4, 4)
    full = _spatial(init="zero", residual=0.5)(maps)  # Z = 1 everywhere
    torch.testing.assert_close(full.attended, maps)
    out = _spatial(residual=1.0)(maps)  # any Z: D hashes f
    assert 0 < float(out.mask.detach().mean()) < 1
    torch.testing.assert_close(out.attended, maps)
    torch.testing.assert_close(out.unattended, (1 - out.mask) * maps)
    half = _spatial(residual=0.25)(maps)
    torch.testing.assert_close(half.attended, maps * (0.25 + 0.75 * half.mask))


def test_rescale_gives_an_erased_view_the_scale_of_f():
    maps = torch.rand(3, 6, 4, 4) + 0.5
    plain = _spatial(keep_fraction=0.5, residual=1.0)(maps)
    out = _spatial(keep_fraction=0.5, residual=1.0, rescale=True)(maps)
    torch.testing.assert_close(out.mask, plain.mask)
    torch.testing.assert_close(out.attended, maps)  # residual 1: D hashes f, nothing to rescale
    torch.testing.assert_close(out.unattended, 2 * plain.unattended)  # half the cells kept: x 2
    # the average pool of the erased view is the mean of the cells it keeps
    drop = (1 - out.mask)
    kept_mean = (drop * maps).sum(dim=(2, 3)) / drop.sum(dim=(2, 3))
    torch.testing.assert_close(out.unattended.mean(dim=(2, 3)), kept_mean)
    # the paper's Z*f with a quarter of 16 positions kept: x 4; vectors likewise
    quarter = _spatial(keep_fraction=0.25, residual=0.0, rescale=True)(maps)
    torch.testing.assert_close(quarter.attended, 4 * quarter.mask * maps)
    torch.testing.assert_close(quarter.unattended, 4 / 3 * (1 - quarter.mask) * maps)
    torch.manual_seed(0)
    kw = attention_kwargs(AttentionConfig(**{**PAPER_G, "keep_fraction": 0.25, "rescale": True}))
    feat = FeatureAttention(8, **kw)(torch.randn(2, 8))
    assert feat.mask.sum(1).tolist() == [2.0, 2.0]
    # a part that keeps nothing stays 0 (none-like Z = 1: the unattended part is empty)
    full = _spatial(init="zero", rescale=True)(maps)
    assert bool((full.unattended == 0).all()) and torch.equal(full.attended, maps)
    with pytest.raises(AdahError, match="attention.rescale"):
        AttentionConfig(rescale="yes").validate()


def test_channel_positions_mask_whole_channels_chosen_from_the_pooled_map():
    torch.manual_seed(0)
    kw = attention_kwargs(AttentionConfig(**{**PAPER_G, "keep_fraction": 0.5, "residual": 1.0}))
    att = ChannelAttention(8, **kw)
    maps = torch.randn(3, 8, 4, 5)
    out = att(maps)
    assert out.mask.shape == (3, 8, 1, 1) and out.probs.shape == (3, 8, 1, 1)
    assert out.mask.flatten(1).sum(1).tolist() == [4.0] * 3  # half of each item's channels
    torch.testing.assert_close(out.attended, maps)  # residual 1: D hashes f
    kept = out.mask[:, :, 0, 0].bool()
    erased = out.unattended.permute(0, 2, 3, 1)  # (B, h, w, C)
    assert bool((erased[kept.unsqueeze(1).unsqueeze(1).expand_as(erased)] == 0).all())  # a kept channel: 0 everywhere
    torch.testing.assert_close(out.unattended, (1 - out.mask) * maps)
    # the scores are G's fc on the global average of the maps: the same mean, the same mask
    noise = torch.randn_like(maps)
    again = att(maps + noise - noise.mean(dim=(2, 3), keepdim=True))  # other cells, the same channel means
    torch.testing.assert_close(again.mask, out.mask)
    # zero-initialised: p uniform over the channels, the paper's threshold 1/C keeps all
    zero = ChannelAttention(8, **attention_kwargs(AttentionConfig(**{**PAPER_G, "init": "zero"})))(maps)
    torch.testing.assert_close(zero.probs, torch.full_like(zero.probs, 1 / 8))
    assert bool((zero.mask == 1).all())
    with pytest.raises(AdahError, match="attention.image_positions"):
        AttentionConfig(image_positions="pixels").validate()


def test_saliency_init_attends_the_cells_of_high_activation():
    maps = torch.rand(2, 6, 5, 5) * 0.1
    maps[0, :, 1:3, 1:4] += 2.0  # item 0: a 2x3 "object"
    maps[1, :4, 4, :] += 3.0  # item 1: one bright row in most channels
    att = _spatial(init="saliency", temperature=100.0)  # ~ SCDA: keep the cells above the mean score
    out = att(maps)
    obj = torch.zeros(2, 1, 5, 5)
    obj[0, 0, 1:3, 1:4] = 1
    obj[1, 0, 4, :] = 1
    assert torch.equal(out.mask.detach(), obj)
    torch.testing.assert_close(att.score(maps), maps.mean(dim=1, keepdim=True))  # the mean over channels
    torch.manual_seed(0)
    kw = attention_kwargs(AttentionConfig(**{**PAPER_G, "init": "saliency", "keep_fraction": 0.25}))
    feats = torch.tensor([[0.1, 5.0, 0.2, 0.3, 4.0, 0.0, 0.1, 0.2]])
    assert FeatureAttention(8, **kw)(feats).mask.tolist() == [[0, 1, 0, 0, 1, 0, 0, 0]]  # the strongest units
    chans = ChannelAttention(8, **kw)(feats.view(1, 8, 1, 1).expand(1, 8, 3, 3))
    assert chans.mask.flatten().tolist() == [0, 1, 0, 0, 1, 0, 0, 0]
    with pytest.raises(AdahError, match="attention.init"):
        AttentionConfig(init="learned").validate()


def test_salient_region_erases_inside_the_object_and_hashes_the_object():
    maps = torch.rand(2, 6, 5, 5) * 0.1
    maps[0, :, 1:3, 1:4] += 2.0  # item 0: a 2x3 object (6 of 25 cells)
    maps[1, :, 0:2, :] += 3.0  # item 1: two bright rows (10 cells)
    obj = torch.zeros(2, 1, 5, 5)
    obj[0, 0, 1:3, 1:4] = 1
    obj[1, 0, 0:2, :] = 1
    att = _spatial(image_region="salient", keep_fraction=0.5, residual=1.0, rescale=True)
    out = att(maps)
    z = out.mask.detach()
    assert bool((z <= obj).all())  # G's mask lies inside the salient cells
    assert z.flatten(1).sum(1).tolist() == [3.0, 5.0]  # half of each item's salient cells
    assert bool((out.probs[obj == 0] == 0).all())  # the gate sees the salient cells alone
    # D hashes the salient cells, rescaled: its average pool is their mean (SCDA's selective pooling)
    obj_mean = (obj * maps).sum(dim=(2, 3)) / obj.sum(dim=(2, 3))
    torch.testing.assert_close(out.attended.mean(dim=(2, 3)), obj_mean)
    torch.testing.assert_close(out.attended, obj * maps / obj.mean(dim=(2, 3), keepdim=True))
    # the adversarial view: the salient cells G's mask leaves out, never the background
    drop = obj - z
    torch.testing.assert_close(out.unattended, drop * maps / drop.mean(dim=(2, 3), keepdim=True))
    # the paper's form inside the region: Z * f and (R - Z) * f, no rescale
    paper = _spatial(image_region="salient", keep_fraction=0.5)(maps)
    torch.testing.assert_close(paper.attended, paper.mask * maps)
    torch.testing.assert_close(paper.unattended, (obj - paper.mask.detach()) * maps)
    # the region is the maps', not G's: the same maps, the same region, whatever G's weights
    other = _spatial(image_region="salient", keep_fraction=0.5, residual=1.0, rescale=True, init="zero")(maps)
    torch.testing.assert_close(other.attended, out.attended)
    with pytest.raises(AdahError, match="attention.image_region"):
        AttentionConfig(image_region="object").validate()
    with pytest.raises(AdahError, match="image_positions='cells'"):
        AttentionConfig(image_region="salient", image_positions="channels").validate()


def test_image_branch_builds_the_mask_the_config_names(tmp_path):
    from adah.config import ModelConfig
    from adah.models.adah import ImageBranch

    cfg = ModelConfig(attention="image", image_backbone="small_cnn", image_size=32)
    cells = ImageBranch(cfg, AttentionConfig(image_positions="cells"))
    channels = ImageBranch(cfg, AttentionConfig(image_positions="channels"))
    assert isinstance(cells.attention, SpatialAttention) and cells.spatial_mask
    assert isinstance(channels.attention, ChannelAttention) and not channels.spatial_mask
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = channels(images)
    assert out.codes.shape == (2, 32) and out.mask.shape[1:] == (cells.backbone.out_channels, 1, 1)
    assert not torch.allclose(out.codes, out.codes_hat)  # the erased view differs
    salient = ImageBranch(cfg, AttentionConfig(image_region="salient"))
    assert isinstance(salient.attention, SpatialAttention) and salient.attention.region == "salient"
    with pytest.raises(AdahError, match="image_region='salient'.*gives vectors"):
        ImageBranch(ModelConfig(attention="image", image_backbone="mlp", image_dim=16),
                    AttentionConfig(image_region="salient"))


def test_keep_fraction_fixes_the_mask_density_per_item():
    att = _spatial(keep_fraction=0.3)
    out = att(torch.randn(5, 6, 4, 5))
    per_item = out.mask.flatten(1).sum(1)
    assert per_item.tolist() == [math.ceil(0.3 * 20)] * 5
    scores = att.score(torch.randn(1, 6, 4, 5))  # the kept cells are the highest scores
    mask = att(torch.randn(1, 6, 4, 5)).mask
    assert mask.shape == (1, 1, 4, 5) and scores.shape == (1, 1, 4, 5)


def test_noise_draws_a_fresh_mask_each_training_step_and_none_at_test_time():
    maps = torch.randn(4, 6, 4, 4)
    att = _spatial(init="zero", keep_fraction=0.5, noise=1.0)
    torch.manual_seed(1)
    a, b = att(maps).mask, att(maps).mask
    assert a.flatten(1).sum(1).tolist() == [8.0] * 4  # still exactly half of each item's positions
    assert not torch.equal(a, b)  # a new draw per step
    draws = torch.stack([att(maps).mask.detach() for _ in range(200)])
    assert abs(float(draws.mean(0).min()) - 0.5) < 0.15 and abs(float(draws.mean(0).max()) - 0.5) < 0.15  # uniform
    att.eval()
    assert torch.equal(att(maps).mask, att(maps).mask)
    with pytest.raises(AdahError, match="attention.noise"):
        AttentionConfig(noise=-1.0).validate()


def test_sigmoid_gate_thresholds_each_position_at_one_half_times_c():
    maps = torch.randn(3, 6, 4, 4)
    att = _spatial(gate="sigmoid")
    out = att(maps)
    p = torch.sigmoid(att.score(maps))
    torch.testing.assert_close(out.probs, p)
    assert torch.equal(out.mask, (p >= 0.5).float())
    out = _spatial(gate="sigmoid", threshold=1.6)(maps)
    assert torch.equal(out.mask, (out.probs >= 0.8).float())


def test_threshold_c_and_temperature():
    maps = torch.randn(3, 6, 4, 4)
    att = _spatial(threshold=2.0, temperature=0.5)
    out = att(maps)
    p = torch.softmax(att.score(maps).view(3, 16) / 0.5, dim=1).view(3, 1, 4, 4)
    torch.testing.assert_close(out.probs, p)
    assert torch.equal(out.mask, (p >= 2 / 16).float())


def test_soft_mask_is_clamped_p_times_n_and_passes_gradients():
    maps = torch.randn(2, 6, 3, 3)
    att = _spatial(mask="soft")
    out = att(maps)
    torch.testing.assert_close(out.mask, (out.probs * 9).clamp(0, 1))
    assert 0 < float(out.mask.detach().min()) < 1  # not binary
    out.attended.sum().backward()
    assert att.score.weight.grad.abs().sum() > 0
    hard = _spatial()  # the trainer's soft epochs switch a hard gate
    hard.gate.soft = True
    torch.testing.assert_close(hard(maps).mask, (hard(maps).probs * 9).clamp(0, 1))


def test_weight_mask_is_an_attention_pooling_of_mean_one_that_can_exceed_one():
    maps = torch.randn(2, 6, 3, 3)
    zero = _spatial(mask="weight", init="zero")(maps)  # p uniform: w = 1, exactly none
    torch.testing.assert_close(zero.attended, maps)
    assert bool((zero.unattended == 0).all())
    att = _spatial(mask="weight")
    out = att(maps)
    w = out.probs * 9
    torch.testing.assert_close(out.mask, w)
    torch.testing.assert_close(out.mask.flatten(1).mean(1), torch.ones(2))  # mean 1 per item
    assert float(w.detach().max()) > 1 and float(w.detach().min()) < 1
    torch.testing.assert_close(out.attended, w * maps)
    torch.testing.assert_close(out.unattended, (1 - w.clamp(max=1)) * maps)  # the below-average positions
    out.attended.sum().backward()
    assert att.score.weight.grad.abs().sum() > 0
    sig = _spatial(mask="weight", gate="sigmoid", init="zero")(maps)  # 2p = 1 at p = 1/2
    torch.testing.assert_close(sig.attended, maps)
    with pytest.raises(AdahError, match="attention.mask must be one of"):
        AttentionConfig(mask="wide").validate()


def test_preset_paper_restores_the_papers_g_and_unknown_presets_are_refused():
    cfg = Config.load("scenes_demo", preset="paper")  # scenes_demo ships attention_pool
    assert (cfg.attention.keep_fraction, cfg.attention.residual, cfg.attention.mask, cfg.train.steps_max,
            cfg.train.g_batches, cfg.loss.adversarial_weight) == (0.0, 0.0, "hard", 1, "own", 1.0)
    default = Config()
    assert (default.attention.keep_fraction, default.attention.residual, default.train.steps_max) == (0.5, 1.0, 0)
    with pytest.raises(AdahError, match="unknown preset 'papr'"):
        Config.load("scenes_demo", preset="papr")
    for bad, match in (({"attention.gate": "relu"}, "attention.gate"), ({"attention.keep_fraction": 1.5}, "keep_fraction"),
                       ({"attention.mask": "fuzzy"}, "attention.mask"), ({"attention.objective": "x"}, "objective")):
        with pytest.raises(AdahError, match=match):
            check_parts(Config().override(bad)).validate()  # names: the registries; numbers: the config


def test_bundled_configs_ship_the_study_choice_of_their_data():
    """scenes_demo and wiki (configs of one data set): attention_pool on the text branch, the best validation
    gap of each one's own study; the photo configs a user starts from: erasing inside the object on the image
    branch at 448 px (round 7: the best mean validation gap over five photo sets, ahead of its control), 40
    epochs (round 9)."""
    from adah.experiments.study import variant_config

    for name in ("scenes_demo", "wiki"):
        cfg = Config.load(name)
        assert cfg.to_dict() == cfg.with_preset("attention_pool").to_dict()
        assert cfg.model.attention == "text"
        assert cfg.to_dict() == variant_config(cfg, "attention_pool_text", bits=32, seed=0).override(
            {"train.progress": True}).to_dict()
    for name in ("coco_mini", "fashion_products"):
        cfg = Config.load(name)
        assert cfg.model.attention == "image"
        assert cfg.model.image_size == 448 and cfg.data.options["image_size"] == 448  # 14x14 MobileNetV2 maps
        assert cfg.data.options["features"] == f"runs/features/{name}448"
        # round 9: 40 epochs, the second 20 at a tenth of the rate (the step is reached, once)
        assert (cfg.train.epochs, cfg.train.lr_step_epochs, cfg.train.lr_gamma) == (40, 20, 0.1)
        assert cfg.to_dict() == cfg.with_preset("salient_erase").to_dict()
        assert cfg.to_dict() == variant_config(cfg, "salient_erase_fixed_g_image", bits=32, seed=0).override(
            {"train.progress": True}).to_dict()
        # the preset is adah's erasing G, restricted to the salient cells and rescaled
        assert cfg.with_preset("adah").to_dict() == variant_config(cfg, "erase_fixed_g_image", bits=32, seed=0).override(
            {"train.progress": True}).to_dict()
        # a study variant that names no branch attends on both, whatever the config says
        assert variant_config(cfg, "erase_fixed_g", bits=32, seed=0).model.attention == "both"
    # presets name the same keys, so one after another leaves nothing of the first
    photo = Config.load("coco_mini")
    assert photo.with_preset("attention_pool").with_preset("salient_erase").to_dict() == photo.to_dict()
    wiki = Config.load("wiki")
    assert wiki.with_preset("adah").with_preset("attention_pool").to_dict() == wiki.to_dict()


def test_checkpoint_config_without_attention_section_is_the_papers_g():
    raw = Config().to_dict()
    del raw["attention"]
    del raw["train"]["g_batches"]
    raw["train"]["steps_max"] = 0  # a key the old checkpoint holds is kept
    raw["loss"]["adversarial_weight"] = 0.5
    cfg = config_of({"config": raw})
    assert cfg.attention.residual == 0.0 and cfg.attention.keep_fraction == 0.0 and cfg.train.g_batches == "own"
    assert cfg.train.steps_max == 0 and cfg.loss.adversarial_weight == 0.5


@pytest.mark.slow
def test_warmup_runs_no_g_step_before_its_epoch(scenes_small, tmp_path):
    data, split = scenes_small
    trainer = Trainer(tiny_config(**{"attention.warmup_epochs": 2}), data, split, tmp_path)
    cycle = trainer.config.train.steps_min + trainer.config.train.steps_max
    for epoch, expect in ((0, False), (1, False), (2, True)):
        trainer.epoch = epoch
        assert any(trainer.is_max_step(s) for s in range(cycle)) is expect


@pytest.mark.parametrize("g_batches, min_steps, g_steps", [("own", 4, 2), ("shared", 6, 3)])
def test_g_batches_own_takes_e_d_batches_shared_does_not(scenes_small, tmp_path, g_batches, min_steps, g_steps):
    """6 batches, cycle 2 E,D : 1 G: G's own batches leave E,D 4 of them; shared, E,D see all 6."""
    data, split = scenes_small
    cfg = tiny_config(**{"train.steps_min": 2, "train.steps_max": 1, "train.g_batches": g_batches,
                         "train.max_batches_per_epoch": 6, "train.batch_size": 16})
    trainer = Trainer(cfg, data, split, tmp_path)
    calls = []
    for name in ("min_step", "max_step"):
        real = getattr(trainer, name)
        setattr(trainer, name, lambda *b, _n=name, _r=real: calls.append(_n) or _r(*b))
    trainer.run_epoch()
    assert (calls.count("min_step"), calls.count("max_step")) == (min_steps, g_steps)
    assert trainer.step == min_steps + g_steps
    if g_batches == "shared":
        assert calls[:3] == ["min_step", "min_step", "max_step"]


def test_g_objective_full_and_gradient_clipping(scenes_small, tmp_path, monkeypatch):
    data, split = scenes_small
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, m: calls.append(m) or real(p, m))
    batch = Trainer(tiny_config(), data, split, tmp_path / "a")._batch(split.train[:32])
    grads = {}
    for objective in ("adversarial", "full"):
        t = Trainer(tiny_config(**{"attention.objective": objective, "attention.grad_clip": 0.5}), data, split,
                    tmp_path / objective)
        stats = t.max_step(*batch)
        assert "g_gain" in stats and math.isfinite(stats["g_gain"])
        grads[objective] = torch.cat([p.grad.flatten() for p in t.att_params])
    assert calls == [0.5, 0.5]
    assert not torch.allclose(grads["adversarial"], grads["full"])  # G sees the attended terms too


def test_normalised_entropy_bounds():
    assert normalised_entropy(torch.full((2, 8), 1 / 8), "softmax") == pytest.approx(1.0)
    assert normalised_entropy(torch.tensor([[1.0, 0, 0, 0]]), "softmax") == pytest.approx(0.0, abs=1e-6)
    assert normalised_entropy(torch.full((1, 4), 0.5), "sigmoid") == pytest.approx(1.0)


@pytest.mark.slow
def test_diagnostics_per_epoch_picture_and_adah_plot(scenes_small, tmp_path):
    from adah.training.trainer import train

    data, split = scenes_small
    run = tmp_path / "run"
    train(tiny_config(**{"train.epochs": 2, "train.max_batches_per_epoch": 5}), data, split, run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("diag_density_image", "diag_density_text", "diag_entropy_image", "g_gain", "val_map"):
        assert key in lines[0] and key in lines[1], key
    assert "diag_changed_image" in lines[1] and 0 <= lines[1]["diag_changed_image"] <= 1
    assert 0 < lines[1]["diag_density_image"] < 1
    assert (run / "training.png").read_bytes()[:4] == b"\x89PNG"
    result = CliRunner().invoke(app, ["plot", str(run), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").stat().st_size > 10_000
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and "metrics.jsonl not found" in result.output


@pytest.mark.slow
def test_study_table_selects_on_validation_and_resumes(tmp_path, monkeypatch):
    from adah.experiments import study

    cfg = tiny_config(**{"data.num_items": 240, "data.num_query": 40, "data.num_train": 150,
                         "train.max_batches_per_epoch": 3})
    out = tmp_path / "study"
    result = study.run_study(cfg, out, variants=("paper", "erase_fixed_g"), seeds=2, bits=(16,), progress=False)
    assert {r["variant"] for r in result.runs} == {"none", "paper", "erase_fixed_g"} and len(result.runs) == 6
    val = {v: np.mean([r["val_map"] for r in result.runs if r["variant"] == v]) for v in ("paper", "erase_fixed_g")}
    assert result.recommended == max(val, key=val.get)
    table = result.table_md.read_text()
    assert "| none |" in table and f"**{result.recommended}**" in table
    none_mean = np.mean([r["test_map_mean"] for r in result.runs if r["variant"] == "none"])
    paper_mean = np.mean([r["test_map_mean"] for r in result.runs if r["variant"] == "paper"])
    assert f"{(paper_mean - none_mean) * 100:+.2f}" in table
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    # a second run reads every result.json instead of training again
    import sys

    monkeypatch.setattr(sys.modules["adah.training.trainer"], "train", lambda *a, **k: pytest.fail("retrained a finished run"))
    again = study.run_study(cfg, out, variants=("paper", "erase_fixed_g"), seeds=2, bits=(16,), progress=False)
    assert [r["test_map_mean"] for r in again.runs] == [r["test_map_mean"] for r in result.runs]
    (out / "paper" / "bits16-seed1" / "result.json").unlink()
    partial = study.run_study(cfg, out, variants=("paper", "erase_fixed_g"), seeds=2, bits=(16,), progress=False,
                              finished_only=True)
    assert len(partial.runs) == 5 and re.search(r"\| (\*\*)?paper(\*\*)? \(n=1\) \|", partial.table_md.read_text())
    # continued with a subset of its variants, the study keeps the others' finished runs in its table
    subset = study.run_study(cfg, out, variants=("erase_fixed_g",), seeds=2, bits=(16,), progress=False)
    assert [r["variant"] for r in subset.runs] == ["none", "none", "erase_fixed_g", "erase_fixed_g", "paper"]
    saved = json.loads((out / "study.json").read_text())
    assert [r["variant"] for r in saved["runs"]] == [r["variant"] for r in subset.runs]
    assert "paper" in saved["variants"] and re.search(r"\| (\*\*)?paper(\*\*)? \(n=1\) \|", subset.table_md.read_text())


def test_study_out_that_is_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(app, ["study", "--config", "scenes_demo", "--out", str(blocker), "--num-seeds", "1"])
    assert result.exit_code == 2 and "exists and is a file" in result.output
    assert "Traceback" not in result.output and blocker.read_text() == "not a folder"


def test_study_compare_ranks_variants_by_mean_validation_gap(tmp_path):
    def study(folder, name, rows):
        runs = [{"variant": v, "bits": 32, "seed": s, "val_map": val, "test_map_mean": test}
                for v, seeds in rows.items() for s, (val, test) in enumerate(seeds)]
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "study.json").write_text(json.dumps({"config": {"data": {"name": name}}, "runs": runs}))

    study("a", "scenes", {"none": [(0.50, 0.40), (0.52, 0.42)], "x": [(0.53, 0.40), (0.55, 0.40)],
                          "y": [(0.50, 0.50), (0.50, 0.50)], "z": [(0.9, 0.9)]})  # z: one seed of two
    study("b", "wiki", {"none": [(0.30, 0.30)], "x": [(0.29, 0.31)], "y": [(0.31, 0.20)], "z": [(0.9, 0.9)]})
    result = CliRunner().invoke(app, ["study-compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == ["x", "y"]  # z lacks seeds in one study
    # x: scenes val +3.00, test -1.00; wiki val -1.00, test +1.00; mean val +1.00
    assert "+3.00 / -1.00" in rows[0] and "-1.00 / +1.00" in rows[0] and rows[0].endswith("| +1.00 / +0.00 |")
    assert "best mean validation gap: x" in result.output
    both = CliRunner().invoke(app, ["study-compare", str(tmp_path / "a"), str(tmp_path / "b"), "--absolute"])
    absolute = both.output.split("Validation / test MAP")[1]
    rows = [line for line in absolute.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == ["none", "x", "y"]
    # none: scenes (0.51, 0.41), wiki (0.30, 0.30), mean (0.405, 0.355); x: scenes (0.54, 0.40)
    assert rows[0] == "| none | 0.5100 / 0.4100 | 0.3000 / 0.3000 | 0.4050 / 0.3550 |"
    assert rows[1].startswith("| x | 0.5400 / 0.4000 | 0.2900 / 0.3100 |")
    png = tmp_path / "gaps.png"
    plotted = CliRunner().invoke(app, ["study-compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(png)])
    assert plotted.exit_code == 0 and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    only_z = tmp_path / "c"
    study("c", "coco", {"none": [(0.5, 0.5)]})
    empty = CliRunner().invoke(app, ["study-compare", str(only_z), "--plot", str(tmp_path / "none.png")])
    assert empty.exit_code != 0 and "nothing to plot" in empty.output and not (tmp_path / "none.png").exists()
    missing = CliRunner().invoke(app, ["study-compare", str(tmp_path)])
    assert missing.exit_code != 0 and "study.json" in missing.output and "Traceback" not in missing.output


_POOL_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from adah.experiments.study import exit_with_parent
pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 120)
time.sleep(120)
"""


@pytest.mark.slow
@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_study_workers_exit_when_the_study_is_killed():
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", _POOL_PARENT], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        try:  # a zombie of ours is gone too (the worker's parent was the killed process, not us)
            if open(f"/proc/{worker}/stat").read().split()[2] == "Z":
                break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"worker {worker} outlived its killed parent by 20 s")
