"""Nothing silently wrong (issue 29): non-finite numbers and NaN training, stale study runs,
CSV quoting, size bounds, and the smaller cases. Each test failed on main before its fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config
from helpers import one_line_error
from typer.testing import CliRunner

from adah.cli import app
from adah.config import Config, ModelConfig, TrainConfig
from adah.data.base import random_split
from adah.data.scenes import make_scenes
from adah.errors import AdahError
from adah.training import trainer as trainer_mod
from adah.training.checkpoint import load_checkpoint


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


# -- case 2: study runs keyed by their full config ----------------------------------------------------

def _study_config(**overrides) -> Config:
    return tiny_config(**{"data.num_items": 200, "data.num_query": 20, "data.num_train": 100,
                          "train.max_batches_per_epoch": 1, **overrides})


def _fake_result(study, cfg: Config, out: Path, variant: str, lr_trained: float) -> None:
    """A finished run's result.json as adah writes it, trained at ``lr_trained``."""
    from adah.data.base import Split

    trained = study.variant_config(cfg.override({"train.lr": lr_trained}), variant, bits=16, seed=0)
    run = out / variant / "bits16-seed0"
    run.mkdir(parents=True)
    result = {"variant": variant, "bits": 16, "seed": 0, "config": json.loads(json.dumps(trained.to_dict())),
              "split_sha256": Split.load(out / "split.json").digest(),
              "best_epoch": 1, "val_map": 0.5, "test_map": {"i2t": 0.4, "t2i": 0.6}, "test_map_mean": 0.5,
              "final": {}, "history": [{"epoch": 1, "val_map": 0.5}]}
    (run / "result.json").write_text(json.dumps(result))


def test_study_never_reuses_a_run_trained_with_another_config(tmp_path, monkeypatch):
    import sys

    from adah.experiments import study

    out = tmp_path / "study"
    cfg = _study_config()
    study.run_study(cfg, out, variants=("paper",), seeds=1, bits=(16,), progress=False, finished_only=True)
    for v in ("none", "paper"):
        _fake_result(study, cfg, out, v, lr_trained=1e-3)

    class Retrained(Exception):
        pass

    def refuse(*a, **k):
        raise Retrained

    monkeypatch.setattr(sys.modules["adah.training.trainer"], "train", refuse)
    # the same config: read, not trained; study.json records the config each run was trained with
    same = study.run_study(cfg, out, variants=("paper",), seeds=1, bits=(16,), progress=False)
    assert len(same.runs) == 2 and {r["config"]["train"]["lr"] for r in same.runs} == {1e-3}
    saved = json.loads((out / "study.json").read_text())
    assert [r["config"]["train"]["lr"] for r in saved["runs"]] == [1e-3, 1e-3]
    # another learning rate: the finished runs are stale
    changed = cfg.override({"train.lr": 0.01})
    # a study that trains nothing reports no run of another config, in its table or its JSON
    stale = study.run_study(changed, out, variants=("paper",), seeds=1, bits=(16,), progress=False, finished_only=True)
    assert stale.runs == [] and json.loads((out / "study.json").read_text())["runs"] == []
    result, why = study.finished_run(out / "paper" / "bits16-seed0",
                                     study.variant_config(changed, "paper", bits=16, seed=0), saved["split_sha256"])
    assert result is None and "train.lr: 0.001 -> 0.01" in why  # named with what changed
    # nor keeps another config's runs of the variants not named this time
    assert study._kept_runs(out, changed, saved["split_sha256"], ("none",), (16,), 1) == []
    assert len(study._kept_runs(out, cfg, saved["split_sha256"], ("none",), (16,), 1)) == 1
    # and trains them again
    with pytest.raises(Retrained):
        study.run_one(changed, "paper", 16, 0, str(out / "split.json"), str(out / "paper" / "bits16-seed0"))
    with pytest.raises(Retrained):
        study.run_study(changed, out, variants=("paper",), seeds=1, bits=(16,), progress=False)


def test_study_result_without_a_config_is_not_reused(tmp_path, monkeypatch):
    import sys

    from adah.experiments import study

    out = tmp_path / "study"
    cfg = _study_config()
    study.run_study(cfg, out, variants=("paper",), seeds=1, bits=(16,), progress=False, finished_only=True)
    _fake_result(study, cfg, out, "paper", lr_trained=1e-3)
    path = out / "paper" / "bits16-seed0" / "result.json"
    legacy = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("config", "split_sha256")}
    path.write_text(json.dumps(legacy))  # written before runs were keyed by their config: unknown config
    monkeypatch.setattr(sys.modules["adah.training.trainer"], "train", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        study.run_one(cfg, "paper", 16, 0, str(out / "split.json"), str(path.parent))


# -- case 5: CSV read with strict quoting --------------------------------------------------------------

def _csv(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "items.csv"
    path.write_text("\n".join(["image,text,labels", *lines]) + "\n")
    return path


ROWS = [f"img{i}.jpg,caption number {i},lab{i % 3}" for i in range(1, 11)]  # file lines 2 to 11


def test_csv_stray_quotes_swallowing_rows_name_the_line(tmp_path):
    from adah.data.folder import read_list_file

    rows = list(ROWS)
    rows[2] = rows[2].replace(",caption", ',"caption')  # line 4: a quote before the text
    rows[5] += '"'  # line 7: one at its end; together they made one field of lines 4 to 7
    with pytest.raises(AdahError, match=r"items.csv: line 4: a quoted field runs on to line 7 \(a stray quote"):
        read_list_file(_csv(tmp_path, rows), labels_required=False)  # as adah fit reads: 7 items before


@pytest.mark.parametrize(("change", "match"), [
    (lambda rows: rows.__setitem__(4, 'img5.jpg,"a "big" dog",lab1'), r"line 6: bad quoting"),  # quote not doubled
    (lambda rows: rows.__setitem__(8, 'img9.jpg,"never closed,lab1'), r"lines 10-11: bad quoting"),  # open at EOF
    (lambda rows: rows.__setitem__(3, 'img4.jpg,"caption, four'), r"lines 5-11: bad quoting"),  # swallows the rest
    (lambda rows: rows.__setitem__(1, "img2.jpg,no labels column"), r"line 3: 2 values, fewer than the 3 header"),
])
def test_csv_bad_quoting_is_an_error_naming_the_line(tmp_path, change, match):
    from adah.data.folder import read_list_file

    rows = list(ROWS)
    change(rows)
    with pytest.raises(AdahError, match=match):
        read_list_file(_csv(tmp_path, rows))


def test_csv_good_quoting_still_reads(tmp_path):
    from adah.data.folder import read_list_file

    rows = list(ROWS)
    rows[0] = 'img1.jpg,"a dog, a ""big"" one",lab1'
    rows[1] = 'img2.jpg,a 5" screen,lab2'  # a quote inside an unquoted field is a character
    items = read_list_file(_csv(tmp_path, rows))
    assert len(items) == 10 and [it.line for it in items] == list(range(2, 12))
    assert items[0].text == 'a dog, a "big" one' and items[1].text == 'a 5" screen'


def test_image_name_too_long_names_the_line(tmp_path):
    from adah.data.folder import read_folder

    rows = list(ROWS)
    rows[0] = f"{'x' * 300}.jpg,caption,lab1"
    with pytest.raises(AdahError, match=r"items.csv: line 2: image path '.*': File name too long"):
        read_folder(_csv(tmp_path, rows))


# -- case 14: eval --split, one photo, add --data scenes, --quiet ----------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data):
    data, split = tiny_data
    run = tmp_path_factory.mktemp("run")
    cfg = tiny_config(**{"data.num_items": 200, "data.seed": 3, "train.max_batches_per_epoch": 1})
    trainer_mod.train(cfg, data, split, run)
    return run, split


def test_eval_split_whose_queries_the_model_trained_on_is_refused(tiny_run, tmp_path):
    from adah.data.base import Split
    from adah.evaluation.checkpoint_eval import evaluate_checkpoint

    run, split = tiny_run
    other = random_split(200, num_query=40, num_train=120, val_fraction=0.1, seed=11)  # another run's split
    leaked = np.intersect1d(other.query, np.concatenate([split.train, split.val])).size
    assert leaked > 0
    other.save(tmp_path / "other.json")
    with pytest.raises(AdahError, match=rf"other.json: {leaked} of its 40 query rows .* are training or validation"):
        evaluate_checkpoint(run / "best.pt", split_path=tmp_path / "other.json", out=tmp_path / "e.json")
    assert not (tmp_path / "e.json").exists()
    # a split that queries only unseen rows (here: the held-out queries, against the training rows) is scored
    unseen = Split(query=split.query, retrieval=split.train, train=split.train, val=split.val)
    unseen.save(tmp_path / "unseen.json")
    report, _ = evaluate_checkpoint(run / "best.pt", split_path=tmp_path / "unseen.json", out=tmp_path / "u.json")
    assert report.num_query == 40 and report.num_db == len(split.train)


def test_a_split_of_one_item_says_how_many_are_needed():
    with pytest.raises(AdahError, match=r"split: the data has 1 item\(s\); a split needs at least 3"):
        random_split(1, num_query=1, num_train=0)


def test_scenes_with_another_datasets_options_names_them():
    from adah.config import DataConfig
    from adah.data.registry import load_dataset

    # what `adah index add --data scenes` asks of a model trained on a folder
    cfg = DataConfig(name="scenes", num_items=50, options={"path": "/x/items.jsonl", "image_size": 32, "resize": "stretch"})
    with pytest.raises(AdahError, match=r"data.options: unknown option\(s\) \['path', 'resize'\] for dataset 'scenes'; "
                                        r"known: \[.*'noise_tags'"):
        load_dataset(cfg)


def test_quiet_draws_no_minilm_bar(tmp_path, monkeypatch):
    from adah.config import DataConfig
    from adah.features.dataset import load_dataset
    from adah.models import minilm

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "items.jsonl").write_text("".join(json.dumps({"image": f"{i}.png", "text": f"a dog number {i}",
                                                            "labels": ["dog"]}) + "\n" for i in range(6)))
    asked = []

    class Stop(Exception):
        pass

    def embed(self, texts, *, batch_size=64, progress=False, out=None):
        asked.append(progress)
        raise Stop

    monkeypatch.setattr(minilm.SentenceTokens, "embed", embed)
    options = {"path": str(folder), "modalities": "text", "text_features": str(tmp_path / "tokens")}
    with pytest.raises(Stop):
        load_dataset(DataConfig(name="folder", options=options), progress=False)
    cfg = tiny_config(**{"data.name": "folder", "data.options": options})
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.json"), "--quiet", "--out",
                                      str(tmp_path / "run")])
    assert isinstance(result.exception, Stop) and asked == [False, False]
