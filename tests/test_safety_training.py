"""Nothing silently wrong (issue 29): non-finite numbers and NaN training, stale study runs,
CSV quoting, size bounds, and the smaller cases. Each test failed on main before its fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adah.cli import app
from adah.config import Config, ModelConfig, TrainConfig
from adah.data.base import random_split
from adah.data.scenes import make_scenes
from adah.errors import AdahError
from adah.training import trainer as trainer_mod
from adah.training.checkpoint import load_checkpoint
from conftest import tiny_config


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_data():
    data = make_scenes(num_items=200, seed=3)
    split = random_split(len(data), num_query=40, num_train=120, val_fraction=0.1, seed=3)
    return data, split


# -- case 1: numbers checked after parsing; training stops on NaN ---------------------------------

@pytest.mark.parametrize("raw", ["1e400", "-1e400", "NaN", "Infinity", "1e39"])
def test_set_of_a_non_finite_number_is_refused(raw):
    # json.loads("1e400") is inf: it passed `lr > 0` and trained an all-NaN model
    with pytest.raises(AdahError, match="'lr' must be a finite number"):
        Config().override({"train.lr": json.loads(raw)})


def test_non_finite_numbers_refused_in_config_files_options_and_python(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"loss": {"margin": 1e400}}')
    with pytest.raises(AdahError, match=r"c.json: section 'loss': key 'margin' must be a finite number"):
        Config.load(path)
    path.write_text('{"data": {"options": {"noise": {"level": NaN}}}}')
    with pytest.raises(AdahError, match=r"key 'options'.noise.level must be a finite number"):
        Config.load(path)
    with pytest.raises(AdahError, match="betas"):
        Config().override({"train.betas": [0.5, float("inf")]})
    with pytest.raises(AdahError, match="train.lr must be a finite number"):
        Config(train=TrainConfig(lr=float("inf"))).validate()
    with pytest.raises(AdahError, match=r"train.lr and train.attention_lr must be in \(0, 10"):
        Config().override({"train.lr": 1e30}).validate()


def test_cli_float_option_1e400_is_one_line_error(tmp_path):
    small = [f"--set={kv}" for kv in ("data.num_items=200", "data.num_query=20", "data.num_train=100",
                                      "train.epochs=1", "train.max_batches_per_epoch=1")]
    result = CliRunner().invoke(app, ["train", "--config", "scenes_demo", *small, "--lr", "1e400", "--out",
                                      str(tmp_path / "run")])
    assert "must be a finite number" in one_line_error(result)
    assert not (tmp_path / "run").exists()


def _poison_at(monkeypatch, step: int) -> None:
    """Make the weights NaN right after optimisation step ``step`` (a diverging run)."""
    real = trainer_mod.Trainer.min_step

    def min_step(self, *batch):
        out = real(self, *batch)
        if self.step + 1 == step:  # self.step counts the step after this call returns
            with torch.no_grad():
                next(self.model.hashing_parameters().__iter__()).fill_(float("nan"))
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "min_step", min_step)


def _all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in load_checkpoint(path)["model"].values()
               if torch.is_floating_point(v))


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    data, split = tiny_data
    cfg = tiny_config(**{"train.epochs": 3, "train.max_batches_per_epoch": 2, "train.steps_max": 0,
                         "train.batch_size": 16})
    _poison_at(monkeypatch, 3)  # epoch 2's first step; its second step's loss is NaN
    with pytest.raises(AdahError, match=r"training stopped at epoch 2, step 4: loss term\(s\) objective=nan") as err:
        trainer_mod.train(cfg, data, split, tmp_path / "run")
    assert "step-000000002.pt, is kept" in str(err.value) and "\n" not in str(err.value)
    kept = trainer_mod.list_checkpoints(tmp_path / "run")
    assert [p.name for p in kept] == ["step-000000002.pt"]  # epoch 1's; nothing written after
    assert _all_finite(kept[0]) and _all_finite(tmp_path / "run" / "best.pt")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1 and math.isfinite(json.loads(metrics[0])["val_map"])


def test_nan_weights_at_an_epoch_end_are_never_evaluated_or_saved(tiny_data, tmp_path, monkeypatch):
    data, split = tiny_data
    cfg = tiny_config(**{"train.max_batches_per_epoch": 2, "train.steps_max": 0,
                         "train.batch_size": 16})
    _poison_at(monkeypatch, 2)  # the epoch's last step: no loss is computed from the NaN weights
    with pytest.raises(AdahError, match=r"epoch 1, step 2: 1 weight tensor\(s\) .* not finite.*no checkpoint was"):
        trainer_mod.train(cfg, data, split, tmp_path / "run")
    run = tmp_path / "run"
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists()
    assert trainer_mod.list_checkpoints(run) == [] and (run / "metrics.jsonl").read_text() == ""


# -- case 7: bounded sizes ---------------------------------------------------------------------------

MAX_BITS = 4096  # adah.config.MAX_BITS, the documented bound

@pytest.mark.parametrize(("key", "value", "match"), [
    ("model.bits", 1_000_000, rf"model.bits must be an integer in \[1, {MAX_BITS}\]"),
    ("model.bits", MAX_BITS + 1, "model.bits"),
    ("model.text_hidden", [1_000_000], r"model.text_hidden must be a non-empty list of layer sizes in \[1, 65536\]"),
    ("model.image_size", 100_000, r"model.image_size must be in \[0, 4096\]"),
])
def test_sizes_that_blow_memory_are_refused(key, value, match):
    with pytest.raises(AdahError, match=match):
        Config().override({key: value}).validate()


def test_bits_at_the_bound_is_accepted():
    ModelConfig(bits=MAX_BITS).validate()
