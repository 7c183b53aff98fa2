"""Training: the E/D and G steps move the objective the right way, the alternation schedule,
determinism, checkpoints, and learning well above chance on scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adah.training.checkpoint import load_checkpoint, load_model
from adah.errors import AdahError
from adah.evaluation.retrieval import encode, evaluate_codes
from adah.training.losses import adah_objective, adversarial_objective, total_min_objective
from adah.training.trainer import Trainer, adversarial_terms, train

from helpers import tiny_config


def _objectives(trainer, batch):
    with torch.no_grad():
        img, txt = trainer.model(*batch[:2])
        terms = adah_objective(img, txt, batch[2], trainer.config.loss, adversarial=trainer.adv_terms)
        return float(total_min_objective(terms, trainer.config.loss)), float(adversarial_objective(terms))


def test_min_step_decreases_full_objective_on_a_fixed_batch(scenes_small, tmp_path):
    data, split = scenes_small
    trainer = Trainer(tiny_config(), data, split, tmp_path)
    batch = trainer._batch(split.train[:64])
    before, _ = _objectives(trainer, batch)
    for _ in range(3):
        trainer.min_step(*batch)
    after, _ = _objectives(trainer, batch)
    assert after < before - 1e-3


@pytest.mark.slow
def test_max_step_increases_adversarial_terms_on_a_fixed_batch(scenes_small, tmp_path):
    data, split = scenes_small
    trainer = Trainer(tiny_config(**{"train.attention_lr": 0.01}), data, split, tmp_path)
    batch = trainer._batch(split.train[:64])
    for _ in range(20):  # give the codes some structure first, so unattended codes carry information
        trainer.min_step(*batch)
    _, before = _objectives(trainer, batch)
    g_before = [p.detach().clone() for p in trainer.att_params]
    e_before = [p.detach().clone() for p in trainer.model.hashing_parameters()]
    for _ in range(5):
        trainer.max_step(*batch)
    _, after = _objectives(trainer, batch)
    assert after > before + 1e-3
    assert all(torch.equal(a, b) for a, b in zip(e_before, trainer.model.hashing_parameters()))  # E, D untouched
    assert not all(torch.equal(a, b) for a, b in zip(g_before, trainer.att_params))


def test_alternation_four_min_steps_then_one_max_step(scenes_small, tmp_path):
    data, split = scenes_small
    trainer = Trainer(tiny_config(), data, split, tmp_path)
    assert [trainer.is_max_step(s) for s in range(10)] == [False] * 4 + [True] + [False] * 4 + [True]
    t2 = Trainer(tiny_config(**{"train.steps_min": 2, "train.steps_max": 2}), data, split, tmp_path)
    assert [t2.is_max_step(s) for s in range(6)] == [False, False, True, True, False, False]


@pytest.mark.parametrize(
    "variant, terms", [("none", ()), ("image", ("t2i_hat",)), ("text", ("i2t_hat",)), ("both", ("t2i_hat", "i2t_hat"))]
)
def test_variants_select_their_adversarial_terms(variant, terms, scenes_small, tmp_path):
    data, split = scenes_small
    cfg = tiny_config(**{"model.attention": variant})
    assert adversarial_terms(cfg) == terms
    trainer = Trainer(cfg, data, split, tmp_path)
    assert trainer.use_max_steps == bool(terms)
    assert not any(trainer.is_max_step(s) for s in range(10)) if variant == "none" else True
    out_img, out_txt = trainer.model(*trainer._batch(split.train[:8])[:2])
    assert bool((out_img.mask == 1).all()) == (variant in ("none", "text"))
    assert bool((out_txt.mask == 1).all()) == (variant in ("none", "image"))


def _short_run(data, split, path, seed=0):
    cfg = tiny_config(**{"train.seed": seed, "train.epochs": 2, "train.max_batches_per_epoch": 3})
    result = train(cfg, data, split, path)
    return result, encode(result.model, data, split.query)


@pytest.mark.slow
def test_same_seed_gives_identical_codes_and_checkpoint_reproduces_them(scenes_small, tmp_path):
    data, split = scenes_small
    r1, c1 = _short_run(data, split, tmp_path / "a")
    r2, c2 = _short_run(data, split, tmp_path / "b")
    assert np.array_equal(c1.image, c2.image) and np.array_equal(c1.text, c2.text)
    assert [h["objective"] for h in r1.history] == [h["objective"] for h in r2.history]
    _, c3 = _short_run(data, split, tmp_path / "c", seed=1)
    assert not np.array_equal(c1.image, c3.image)

    model, config, payload = load_model(tmp_path / "a" / "best.pt")
    c_loaded = encode(model, data, split.query)
    assert np.array_equal(c_loaded.image, c1.image) and np.array_equal(c_loaded.text, c1.text)
    assert payload["epoch"] == r1.best_epoch and config.model.text_dim == data.text_dim
    last = load_checkpoint(tmp_path / "a" / "last.pt")
    assert last["epoch"] == 2 and last["step"] == 6 and last["optimizer_min"]["state"]
    assert [p.name for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")] == []


def test_truncated_checkpoint_is_refused(ckpt, tmp_path):
    raw = ckpt.read_bytes()
    (tmp_path / "broken.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AdahError, match="broken.pt"):
        load_model(tmp_path / "broken.pt")


@pytest.mark.slow
def test_training_on_scenes_beats_random_codes_by_a_wide_margin(tmp_path):
    from adah.config import Config
    from adah.data.base import random_split
    from adah.data.scenes import make_scenes
    from adah.recipes.demo import random_codes_report

    data = make_scenes(num_items=1000, seed=5)  # margins 0.14-0.18 (1,500 scenes: 0.14-0.19, 45% more CPU)
    split = random_split(len(data), num_query=200, num_train=700, val_fraction=0.1, seed=5)
    cfg = Config.load("scenes_demo").override({"train.epochs": 6, "train.progress": False, "train.eval_every": 0})
    result = train(cfg, data, split, tmp_path)
    q = encode(result.model, data, split.query)
    db = encode(result.model, data, split.retrieval)
    trained = evaluate_codes(q, db, directions=("i2t", "t2i", "i2i", "t2t")).map
    chance = random_codes_report(q.labels, db.labels, bits=32, seed=0).map
    for d in ("i2t", "t2i", "i2i", "t2t"):
        assert trained[d] > chance[d] + 0.12, (d, trained[d], chance[d])
    assert result.history[-1]["objective"] < result.history[0]["objective"]


def test_amp_flag_switches_bf16_and_channels_last_on_gpus_only(scenes_small, tmp_path):
    from adah.utils.runtime import amp_policy

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert amp_policy(gpu, True) == amp_policy(gpu, True).__class__(True, torch.bfloat16, True)
    assert not amp_policy(gpu, False).autocast and not amp_policy(gpu, False).channels_last
    assert not amp_policy(cpu, True).autocast and not amp_policy(cpu, True).channels_last
    data, split = scenes_small
    # on the CPU the flag changes nothing: identical weights after the same steps
    runs = []
    for amp in (False, True):
        t = Trainer(tiny_config(**{"train.amp": amp}), data, split, tmp_path / str(amp))
        batch = t._batch(split.train[:32])
        t.min_step(*batch)
        t.max_step(*batch)
        runs.append(t.model.state_dict())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k


@pytest.mark.slow
def test_min_steps_makes_each_epoch_pass_over_the_data_several_times(scenes_small, tmp_path):
    """360 training pairs at batch 64 give 5 batches a pass; 2 epochs need 4 passes an epoch for
    at least 36 steps (2 x 4 x 5 = 40), each pass a permutation of its own."""
    data, split = scenes_small
    cfg = tiny_config(**{"train.epochs": 2, "train.batch_size": 64, "train.min_steps": 36})
    trainer = Trainer(cfg, data, split, tmp_path / "t")
    assert trainer.batches_per_pass() == 5 and trainer.passes_per_epoch() == 4
    state = trainer._new_epoch_state()
    order = state["order"]
    assert len(order) == 4 * 360
    for p in range(4):  # each pass visits every training pair once
        assert sorted(order[p * 360:(p + 1) * 360].tolist()) == list(range(360))
    batches = trainer._epoch_batches(order)
    assert len(batches) == 20 and all(len(b) == 64 for b in batches)
    assert set(np.concatenate(batches[:5]).tolist()) <= set(split.train[order[:360]].tolist())
    one_epoch = cfg.override({"train.epochs": 1, "train.min_steps": 18})  # 4 passes of 5: 20 >= 18 steps
    result = train(one_epoch, data, split, tmp_path / "run")
    assert [h["step"] for h in result.history] == [20] and [h["passes"] for h in result.history] == [4]
    # already enough steps: one pass an epoch, the same run as without the option
    assert Trainer(tiny_config(**{"train.min_steps": 5}), data, split, tmp_path / "u").passes_per_epoch() == 1
    plain = train(tiny_config(**{"train.max_batches_per_epoch": 3}), data, split, tmp_path / "a")
    same = train(tiny_config(**{"train.max_batches_per_epoch": 3, "train.min_steps": 3}), data, split, tmp_path / "b")
    assert [h["objective"] for h in plain.history] == [h["objective"] for h in same.history]
    with pytest.raises(AdahError, match="train.min_steps"):
        tiny_config(**{"train.min_steps": -1}).validate()
