"""Tests for adah.config: dict / JSON round trips, bundled configs, overrides, validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from adah.config import (
    BUNDLED_DIR,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    bundled_configs,
)
from adah.errors import AdahError


# --------------------------------------------------------------------------- round trips
def test_default_round_trip_through_dict():
    cfg = Config()
    d = cfg.to_dict()
    assert set(d) == {"model", "loss", "train", "data", "attention"}
    back = Config.from_dict(d)
    assert back == cfg
    assert back is not cfg


def test_round_trip_through_json_turns_lists_back_into_tuples():
    cfg = Config()
    raw = json.loads(json.dumps(cfg.to_dict()))
    assert raw["model"]["text_hidden"] == [8192, 1000]  # JSON has no tuples
    back = Config.from_dict(raw)
    assert back == cfg
    assert isinstance(back.model.text_hidden, tuple) and back.model.text_hidden == (8192, 1000)
    assert isinstance(back.model.image_fc_dims, tuple) and back.model.image_fc_dims == (512, 512)
    assert isinstance(back.train.betas, tuple) and back.train.betas == (0.5, 0.999)


def test_non_default_values_round_trip():
    raw = {
        "model": {"bits": 64, "attention": "image", "text_hidden": [64, 32], "image_weights": "DEFAULT"},
        "loss": {"margin": 0.25, "distance": "squared"},
        "train": {"epochs": 3, "betas": [0.9, 0.99], "amp": True, "lr": 1},
        "data": {"num_items": 500, "options": {"noise_tags": 2.0}},
    }
    cfg = Config.from_dict(raw)
    assert cfg.model.bits == 64 and cfg.model.attention == "image"
    assert cfg.model.text_hidden == (64, 32)
    assert cfg.model.image_weights == "DEFAULT"
    assert cfg.loss.distance == "squared" and cfg.loss.margin == 0.25
    assert cfg.train.betas == (0.9, 0.99) and cfg.train.amp is True
    # an integer for a float field is accepted and stored as float
    assert cfg.train.lr == 1.0 and type(cfg.train.lr) is float
    assert cfg.data.options == {"noise_tags": 2.0}
    # untouched fields keep their defaults
    assert cfg.train.batch_size == TrainConfig().batch_size
    assert cfg.loss.reduction == LossConfig().reduction
    assert Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_empty_dict_gives_defaults():
    assert Config.from_dict({}) == Config()
    assert Config.from_dict({"model": {}}) == Config()


# --------------------------------------------------------------------------- load
def test_load_bundled_config_by_name():
    assert "scenes_demo" in bundled_configs()
    cfg = Config.load("scenes_demo")
    raw = json.loads((BUNDLED_DIR / "scenes_demo.json").read_text())
    assert cfg.model.bits == raw["model"]["bits"] == 32
    assert cfg.model.image_fc_dims == tuple(raw["model"]["image_fc_dims"]) == (256, 256)
    assert cfg.model.text_hidden == tuple(raw["model"]["text_hidden"]) == (1024, 256)
    assert cfg.train.epochs == raw["train"]["epochs"] == 16
    assert cfg.train.lr == 0.001
    assert cfg.data.num_items == 3000 and cfg.data.num_query == 300 and cfg.data.num_train == 2000
    # fields the file leaves out keep their defaults
    assert cfg.train.betas == (0.5, 0.999)
    assert cfg.loss.distance == "euclidean"
    assert cfg.validate() is cfg


def test_every_bundled_config_loads_and_validates():
    names = bundled_configs()
    assert names
    for name in names:
        Config.load(name).validate()


def test_load_json_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"model": {"bits": 16, "attention": "none"}, "train": {"epochs": 2}}))
    cfg = Config.load(path)
    assert cfg.model.bits == 16 and cfg.model.attention == "none" and cfg.train.epochs == 2
    assert cfg.model.text_hidden == ModelConfig().text_hidden
    assert Config.load(str(path)) == cfg


def test_load_missing_file(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(AdahError, match="not found") as exc:
        Config.load(path)
    assert str(path) in str(exc.value)
    assert "scenes_demo" in str(exc.value)  # lists the bundled names
    with pytest.raises(AdahError, match="not found"):
        Config.load("no_such_bundled_config")


def test_load_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"model": {"bits": 16,}}')
    with pytest.raises(AdahError, match="not valid JSON") as exc:
        Config.load(path)
    assert str(path) in str(exc.value)


def test_load_top_level_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(AdahError, match="JSON object") as exc:
        Config.load(path)
    assert str(path) in str(exc.value)


def test_unknown_section(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {}, "optimiser": {"lr": 1}}))
    with pytest.raises(AdahError, match="optimiser") as exc:
        Config.load(path)
    assert str(path) in str(exc.value)
    assert "unknown section" in str(exc.value)


def test_section_not_an_object():
    with pytest.raises(AdahError, match="section 'train' must be a JSON object"):
        Config.from_dict({"train": [1, 2]})


def test_unknown_key_lists_known_keys(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"bitz": 16}}))
    with pytest.raises(AdahError) as exc:
        Config.load(path)
    msg = str(exc.value)
    assert "bitz" in msg and "unknown key" in msg
    assert "section 'model'" in msg
    for known in (f.name for f in dataclasses.fields(ModelConfig)):
        assert known in msg, known
    assert str(path) in msg


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"train": {"epochs": "3"}}, "'epochs' must be an integer"),
        ({"train": {"epochs": 2.5}}, "'epochs' must be an integer"),
        ({"model": {"bits": "32"}}, "'bits' must be an integer"),
        ({"train": {"lr": "0.1"}}, "'lr' must be a number"),
        ({"loss": {"margin": None}}, "'margin' must be a number"),
        ({"train": {"amp": 1}}, "'amp' must be true or false"),
        ({"train": {"progress": "yes"}}, "'progress' must be true or false"),
    ],
)
def test_wrong_types(raw, match):
    with pytest.raises(AdahError, match=match):
        Config.from_dict(raw)


@pytest.mark.parametrize("raw", [{"train": {"epochs": True}}, {"train": {"lr": False}}])
def test_bool_rejected_for_numeric_fields(raw):
    with pytest.raises(AdahError):
        Config.from_dict(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"model": {"text_hidden": 64}},
        {"model": {"text_hidden": "abc"}},
        {"model": {"image_fc_dims": 5}},
        {"train": {"betas": 0.5}},
    ],
)
def test_tuple_fields_reject_scalars(raw):
    with pytest.raises(AdahError):
        Config.from_dict(raw).validate()


# --------------------------------------------------------------------------- override
def test_override_changes_given_keys_and_skips_none():
    base = Config.load("scenes_demo")
    new = base.override({"train.epochs": 3, "model.bits": None})
    assert new.train.epochs == 3
    assert new.model.bits == base.model.bits == 32
    assert base.train.epochs == 16  # the original is not modified
    assert dataclasses.replace(new, train=base.train) == base  # nothing else changed


def test_override_lists_become_tuples_and_types_are_checked():
    new = Config().override({"model.text_hidden": [64, 32], "train.lr": 1, "data.options": {"a": 1}})
    assert new.model.text_hidden == (64, 32)
    assert new.train.lr == 1.0 and type(new.train.lr) is float
    assert new.data.options == {"a": 1}
    with pytest.raises(AdahError, match="'epochs' must be an integer"):
        Config().override({"train.epochs": "many"})


def test_override_sets_one_data_option_keeping_the_others():
    base = Config().override({"data.options": {"path": "zh", "tokenizer": "chars"}})
    new = base.override({"data.options.features": "runs/features/x", "data.options.tokenizer": "words"})
    assert new.data.options == {"path": "zh", "tokenizer": "words", "features": "runs/features/x"}
    assert base.data.options == {"path": "zh", "tokenizer": "chars"}


@pytest.mark.parametrize("key", ["train.epoch", "model.nonsense", "optim.lr", "train", "bits", "data.options.",
                                 "model.options.x"])
def test_override_unknown_key(key):
    with pytest.raises(AdahError, match="unknown config key") as exc:
        Config().override({key: 1})
    assert repr(key) in str(exc.value)


# --------------------------------------------------------------------------- validate
@pytest.mark.parametrize(
    "section, name, value, field",
    [
        ("model", "attention", "foo", "model.attention"),
        ("model", "bits", 0, "model.bits"),
        ("model", "bits", -8, "model.bits"),
        ("model", "mask_position", "middle", "model.mask_position"),
        ("model", "text_hidden", (64, 0), "model.text_hidden"),
        ("model", "text_hidden", (), "model.text_hidden"),
        ("model", "dropout", 1.0, "model.dropout"),
        ("train", "batch_size", 1, "train.batch_size"),
        ("train", "epochs", 0, "train.epochs"),
        ("train", "steps_min", 0, "train.steps_min"),
        ("train", "steps_max", -1, "train.steps_max"),
        ("train", "lr", 0.0, "train.lr"),
        ("train", "betas", (0.5, 1.0), "train.betas"),
        ("loss", "margin", -0.1, "loss.margin"),
        ("loss", "distance", "cosine", "loss.distance"),
        ("loss", "reduction", "max", "loss.reduction"),
        ("loss", "adversarial_weight", -1.0, "loss.adversarial_weight"),
    ],
)
def test_validate_rejects_bad_values(section, name, value, field):
    cfg = Config()
    bad = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
    with pytest.raises(AdahError, match=field.replace(".", r"\.")):
        bad.validate()
    # through override too (the CLI's path)
    if not isinstance(value, tuple):
        with pytest.raises(AdahError, match=field.replace(".", r"\.")):
            cfg.override({f"{section}.{name}": value}).validate()


@pytest.mark.parametrize("attention", ["none", "image", "text", "both"])
def test_validate_accepts_every_attention_variant(attention):
    cfg = Config().override({"model.attention": attention}).validate()
    assert cfg.model.image_attention == (attention in ("image", "both"))
    assert cfg.model.text_attention == (attention in ("text", "both"))


def test_boundary_values_are_valid():
    cfg = Config().override({"train.batch_size": 2, "loss.margin": 0.0, "model.bits": 1, "train.steps_max": 0})
    assert cfg.validate() is cfg
    assert DataConfig().name == "scenes"
