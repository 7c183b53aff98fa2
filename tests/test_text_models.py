"""Text with the model: the vocabulary saved in checkpoints (scenes, a Chinese folder dataset
trained end to end from the CLI), and text-only models (data without images, T->T)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from adah.training.checkpoint import load_checkpoint, load_model, text_vocabulary_of
from adah.cli import app
from adah.data.base import CrossModalData
from adah.data.scenes import VOCABULARY
from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.evaluation.retrieval import encode, evaluate_codes
from adah.evaluation.metrics import mean_average_precision
from adah.training.trainer import train
from helpers import tiny_config


# --------------------------------------------------------------------------- vocabulary in checkpoints
def test_scenes_vocabulary_encodes_its_own_tags(scenes_small):
    data, _ = scenes_small
    vocab = data.text_vocabulary
    assert vocab.tokens == VOCABULARY and vocab.tokenizer == "words"
    # a row's tags written as text give that row back
    for row in (0, 7, 123):
        tags = " ".join(np.array(VOCABULARY)[data.texts[row] == 1])
        assert np.array_equal(vocab.encode([tags])[0], data.texts[row])


@pytest.mark.slow
def test_checkpoint_carries_the_text_vocabulary(scenes_small, tmp_path):
    data, split = scenes_small
    train(tiny_config(**{"train.max_batches_per_epoch": 2}), data, split, tmp_path / "run")
    for name in ("best.pt", "last.pt"):
        payload = load_checkpoint(tmp_path / "run" / name)
        assert text_vocabulary_of(payload) == data.text_vocabulary
    assert Vocabulary.load(tmp_path / "run" / "vocabulary.json") == data.text_vocabulary
    # no words behind the columns: nothing saved, None read back
    bare = dataclasses.replace(data, text_vocabulary=None)
    train(tiny_config(**{"train.max_batches_per_epoch": 2}), bare, split, tmp_path / "bare")
    assert text_vocabulary_of(load_checkpoint(tmp_path / "bare" / "best.pt")) is None
    assert not (tmp_path / "bare" / "vocabulary.json").exists()


def test_vocabulary_must_fit_the_texts(scenes_small):
    data, _ = scenes_small
    with pytest.raises(AdahError, match="vocabulary has 3 tokens but 'texts' has 293 columns"):
        dataclasses.replace(data, text_vocabulary=Vocabulary(["a", "b", "c"]))


# --------------------------------------------------------------------------- Chinese folder, end to end
ANIMALS = {"猫": (220, 40, 40), "狗": (40, 200, 40), "鸟": (40, 40, 220)}
PLACES = ["沙发上", "草地上", "窗台上", "院子里"]
ACTS = ["睡觉", "玩耍", "坐着"]


def write_chinese_dataset(folder: Path, n: int = 72) -> None:
    """n items: a photo whose colour says the animal, a Chinese caption naming it, its label."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    names = list(ANIMALS)
    with open(folder / "items.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            animal = names[i % 3]
            noise = rng.integers(-30, 30, size=(24, 24, 3))
            pixels = np.clip(np.array(ANIMALS[animal]) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "img" / f"{i}.png")
            caption = f"一只{animal}在{PLACES[rng.integers(4)]}{ACTS[rng.integers(3)]}。"
            split = "test" if i % 6 == 0 else "train"
            f.write(json.dumps({"image": f"img/{i}.png", "text": caption, "labels": [animal], "split": split},
                               ensure_ascii=False) + "\n")


@pytest.mark.slow
def test_chinese_folder_dataset_trains_and_evaluates_from_the_cli(tmp_path):
    write_chinese_dataset(tmp_path / "zh")
    config = tiny_config(**{
        "data.name": "folder", "data.root": str(tmp_path), "data.val_fraction": 0.2,
        "data.options": {"path": "zh", "tokenizer": "chars", "image_size": 32},
        "model.image_size": 32, "train.epochs": 25, "train.batch_size": 16, "model.bits": 16,
        "model.attention": "none",  # the point is the words and the CLI, not G (G steps cost as much again)
    })
    cfg_file = tmp_path / "zh.json"
    cfg_file.write_text(json.dumps(config.to_dict()))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--config", str(cfg_file), "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    model, _, payload = load_model(tmp_path / "run" / "best.pt")
    vocab = text_vocabulary_of(payload)
    assert vocab.tokenizer == "chars" and {"猫", "狗", "鸟", "沙发", "草地"} <= set(vocab.tokens)
    res = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--top-k", "10"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["num_query"] == 12 and report["num_db"] == 60
    # the animal is in both the colour and the caption: every direction far above chance (1/3)
    for d in ("i2t", "t2i", "i2i", "t2t"):
        assert report["map"][d] > 0.6, (d, report["map"])
    # a new query in Chinese goes through the saved vocabulary to the model
    import torch

    bow = torch.from_numpy(vocab.encode(["院子里有一只猫"]))
    code = np.sign(model.encode_text(bow).detach().numpy())
    cat_rows = [json.loads(line)["labels"] == ["猫"] for line in (tmp_path / "zh" / "items.jsonl").open()]
    # its nearest training captions are about cats
    db = np.sign(model.encode_text(torch.from_numpy(vocab.encode(
        [json.loads(line)["text"] for line in (tmp_path / "zh" / "items.jsonl").open()]))).detach().numpy())
    nearest = np.argsort((code != db).sum(1), kind="stable")[:10]
    assert np.mean(np.array(cat_rows)[nearest]) >= 0.8


# --------------------------------------------------------------------------- text only
def text_only(data: CrossModalData) -> CrossModalData:
    return dataclasses.replace(data, images=None)


def test_text_only_model_trains_t2t_and_evaluates(scenes_small, tmp_path):
    data, split = scenes_small
    data = text_only(data)
    cfg = tiny_config(**{"model.image_backbone": "none", "model.attention": "none", "train.epochs": 10})
    result = train(cfg, data, split, tmp_path / "run")
    model = result.model
    assert not model.has_image_branch and model.attention_parameters() == []
    history = result.history
    assert set(k for k in history[-1] if k.startswith("val_map_")) == {"val_map_t2t"}
    assert "t2i" not in history[-1] and "t2t" in history[-1]
    q = encode(model, data, split.query)
    db = encode(model, data, split.retrieval)
    assert q.image is None and q.text.shape == (len(split.query), 16)
    report = evaluate_codes(q, db, directions=("t2t",))
    assert report.map["t2t"] == pytest.approx(mean_average_precision(q.text, db.text, q.labels, db.labels))
    chance = mean_average_precision(np.ones_like(q.text), np.ones_like(db.text), q.labels, db.labels)
    assert report.map["t2t"] > chance + 0.15
    with pytest.raises(AdahError, match="text only"):
        evaluate_codes(q, db, directions=("i2t",))
    with pytest.raises(AdahError, match="cannot encode images"):
        model.encode_image(None)


def test_text_only_configuration_errors(scenes_small, tmp_path):
    data, split = scenes_small
    with pytest.raises(AdahError, match="has no images.*model.image_backbone=none"):
        train(tiny_config(), text_only(data), split, tmp_path / "a")
    with pytest.raises(AdahError, match="needs an image branch"):
        tiny_config(**{"model.image_backbone": "none", "model.attention": "both"}).validate()
    with pytest.raises(AdahError, match="but the data has images"):
        train(tiny_config(**{"model.image_backbone": "none", "model.attention": "text"}), data, split, tmp_path / "b")
