"""The plain folder format (adah.data.folder) and bag-of-words vocabularies (adah.data.vocab):
Chinese captions with a character n-gram vocabulary, CSV / TSV / JSONL list files, lazy and
eager images, split columns, malformed inputs, and ../shared/data/coco_mini when present."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adah.config import DataConfig
from adah.data.folder import FileImages, read_folder, split_from_column
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.data.vocab import Vocabulary, tokenize
from adah.errors import AdahError

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 200, 10), (20, 30, 40), (200, 100, 50)]
CHINESE = [
    ("一只小猫在沙发上睡觉。", ["猫", "沙发"], "train"),
    ("小狗在草地上奔跑", ["狗"], "train"),
    ("猫和狗在草地上玩", ["猫", "狗"], "test"),
    ("红色的沙发", ["沙发"], "train"),
    ("小猫看着窗外", ["猫"], "train"),
    ("狗睡在沙发上", ["狗", "沙发"], "test"),
]


def write_images(folder: Path, n: int) -> list[str]:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img/{i}.png"
        Image.new("RGB", (10 + i, 7), COLORS[i % len(COLORS)]).save(folder / name)  # sizes differ: resized
        names.append(name)
    return names


@pytest.fixture
def chinese(tmp_path) -> Path:
    folder = tmp_path / "zh"
    names = write_images(folder, len(CHINESE))
    with open(folder / "items.jsonl", "w", encoding="utf-8") as f:
        for name, (caption, tags, split) in zip(names, CHINESE):
            f.write(json.dumps({"file": name, "caption": caption, "tags": tags, "split": split}, ensure_ascii=False))
            f.write("\n")
    return folder


ZH_OPTIONS = dict(image_field="file", text_field="caption", labels_field="tags", tokenizer="chars", image_size=16)


# --------------------------------------------------------------------------- tokenizers / vocabulary
def test_tokenizers_are_unicode_aware():
    assert tokenize("Café au LAIT, déjà-vu!") == ["café", "au", "lait", "déjà", "vu"]
    assert tokenize("red sofa cat", "words", (1, 2)) == ["red", "sofa", "cat", "red sofa", "sofa cat"]
    # character n-grams never span punctuation or spaces
    assert tokenize("小猫。沙发", "chars") == ["小", "猫", "小猫", "沙", "发", "沙发"]
    assert tokenize("猫狗", "chars", (2, 2)) == ["猫狗"]
    with pytest.raises(AdahError, match="tokenizer"):
        tokenize("x", "bpe")
    with pytest.raises(AdahError, match="ngram"):
        tokenize("x", "chars", (2, 1))


def test_vocabulary_build_order_limits_and_json(tmp_path):
    texts = ["the cat", "the dog", "the cat sat", "a bird"]
    v = Vocabulary.build(texts)
    assert v.tokens[:2] == ["the", "cat"]  # by document frequency, then alphabetically
    assert v.tokens[2:] == sorted(v.tokens[2:])
    assert Vocabulary.build(texts, min_count=2).tokens == ["the", "cat"]
    assert Vocabulary.build(texts, max_size=3).tokens == ["the", "cat", "a"]
    assert np.array_equal(v.encode(["the the cat", "unknown"]).sum(axis=1), [2, 0])  # binary presence
    counts = Vocabulary.build(texts, binary=False).encode(["the the cat"])
    assert counts.max() == 2
    zh = Vocabulary.build([c for c, _, _ in CHINESE], tokenizer="chars", min_count=2)
    zh.save(tmp_path / "vocab.json")
    assert "猫" in (tmp_path / "vocab.json").read_text(encoding="utf-8")  # readable, not \\u escapes
    back = Vocabulary.load(tmp_path / "vocab.json")
    assert back == zh and back.tokenizer == "chars" and back.ngram == (1, 2)
    assert np.array_equal(back.encode(["小猫"]), zh.encode(["小猫"]))
    (tmp_path / "bad.json").write_text('{"tokens": ["a"]}')
    with pytest.raises(AdahError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(AdahError, match="empty vocabulary"):
        Vocabulary.build(["a", "b"], min_count=2)


# --------------------------------------------------------------------------- Chinese folder
def test_chinese_captions_char_ngrams(chinese):
    ds = read_folder(chinese / "items.jsonl", **ZH_OPTIONS)
    data, vocab = ds.data, ds.vocabulary
    assert len(data) == 6 and data.texts.dtype == np.float32 and data.labels.dtype == np.uint8
    for gram in ("猫", "小猫", "沙发", "草地", "睡觉"):
        assert gram in vocab, gram
    assert "。" not in vocab and "觉。" not in vocab
    # row 0: exactly the 1- and 2-grams of 一只小猫在沙发上睡觉
    row0 = set(np.array(data.vocabulary)[data.texts[0] == 1])
    s = "一只小猫在沙发上睡觉"
    assert row0 == set(s) | {s[i:i + 2] for i in range(len(s) - 1)}
    assert data.texts[1, vocab.index("草地")] == 1 and data.texts[0, vocab.index("草地")] == 0
    assert data.label_names == sorted({t for _, tags, _ in CHINESE for t in tags})
    cat = data.label_names.index("猫")
    assert data.labels[:, cat].tolist() == [1, 0, 1, 0, 1, 0]
    assert ds.splits == ["train", "train", "test", "train", "train", "test"]
    # images: lazy rows in the order asked for, equal to the eager load, resized, RGB
    assert isinstance(data.images, FileImages) and data.images.shape == (6, 3, 16, 16)
    got = data.images[[5, 1, 3]]
    eager = read_folder(chinese, load_images="eager", **ZH_OPTIONS).data.images
    assert isinstance(eager, np.ndarray) and eager.shape == (6, 3, 16, 16) and eager.dtype == np.uint8
    assert np.array_equal(got, eager[[5, 1, 3]])
    assert got[0, :, 8, 8].tolist() == list(COLORS[5]) and got[1, :, 0, 0].tolist() == list(COLORS[1])
    # a saved vocabulary is reused as it is
    vocab.save(chinese / "vocab.json")
    again = read_folder(chinese, vocabulary="vocab.json", modalities="text", **ZH_OPTIONS)
    assert again.data.images is None and np.array_equal(again.data.texts, data.texts)


def test_folder_through_registry_with_split_column(chinese):
    cfg = DataConfig(name="folder", root=str(chinese.parent), val_fraction=0.25, seed=1,
                     options={"path": "zh", **ZH_OPTIONS})
    data = load_dataset(cfg)
    assert len(data) == 6 and data.name == "folder"
    split = make_split(cfg, len(data))
    assert split.query.tolist() == [2, 5]
    assert split.retrieval.tolist() == [0, 1, 3, 4]
    assert len(split.val) == 1 and len(split.train) == 3
    assert np.array_equal(np.sort(np.concatenate([split.train, split.val])), [0, 1, 3, 4])
    # ignoring the column: sizes from the config
    cfg2 = DataConfig(name="folder", root=str(chinese.parent), num_query=1, num_train=4,
                      options={"path": "zh", "use_split_column": False, **ZH_OPTIONS})
    split2 = make_split(cfg2, 6)
    assert len(split2.query) == 1 and len(split2.train) + len(split2.val) == 4


def test_split_from_column_roles():
    s = split_from_column(["train", "val", "test", "train", "db", "train"], seed=0)
    assert s.query.tolist() == [2] and s.val.tolist() == [1] and s.train.tolist() == [0, 3, 5]
    assert s.retrieval.tolist() == [0, 1, 3, 4, 5]
    s = split_from_column(["a", "b", "b", "b"], split_map={"a": "query", "b": "train"}, val_fraction=0)
    assert s.query.tolist() == [0] and s.train.tolist() == [1, 2, 3]
    with pytest.raises(AdahError, match=r"\['holdout'\].*split_map"):
        split_from_column(["train", "holdout"])
    with pytest.raises(AdahError, match="no query rows"):
        split_from_column(["train", "train", "val"])


# --------------------------------------------------------------------------- CSV / TSV
@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_csv_and_tsv_list_files(tmp_path, suffix, sep):
    names = write_images(tmp_path, 3)
    rows = [["image", "text", "labels"], [names[0], "A red sofa", "sofa;red"],
            [names[1], "a green cat, sleeping", "cat"], [names[2], "Blue cat on a sofa", "cat; sofa"]]
    with open(tmp_path / f"items{suffix}", "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=sep).writerows(rows)  # quotes the comma in "a green cat, sleeping"
    ds = read_folder(tmp_path / f"items{suffix}", image_size=8)
    assert ds.data.label_names == ["cat", "red", "sofa"]
    assert ds.data.labels.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 1]]
    assert ds.splits is None
    assert ds.data.texts[0, ds.vocabulary.index("sofa")] == 1
    assert ds.data.images[[2]].shape == (1, 3, 8, 8)
    # the folder alone finds the list file
    assert len(read_folder(tmp_path, modalities="text").data) == 3


# --------------------------------------------------------------------------- malformed input
def _jsonl(folder: Path, rows: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "items.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_folder_errors_name_file_and_line(tmp_path):
    names = write_images(tmp_path, 2)
    ok = {"image": names[0], "text": "a cat", "labels": ["cat"]}
    # missing image file
    path = _jsonl(tmp_path, [ok, {"image": "img/none.png", "text": "a dog", "labels": ["dog"]}])
    with pytest.raises(AdahError) as exc:
        read_folder(path)
    assert "line 2" in str(exc.value) and str(tmp_path / "img" / "none.png") in str(exc.value)
    # missing field: the fields found are listed
    path = _jsonl(tmp_path, [ok, {"image": names[1], "caption": "a dog", "labels": ["dog"]}])
    with pytest.raises(AdahError, match=r"line 2: missing field\(s\) \['text'\]; fields found: \['caption'"):
        read_folder(path)
    # not JSON
    path = _jsonl(tmp_path, [ok, "{oops"])
    with pytest.raises(AdahError, match="line 2: not valid JSON"):
        read_folder(path)
    # an item with no label
    path = _jsonl(tmp_path, [ok, {"image": names[1], "text": "a dog", "labels": []}])
    with pytest.raises(AdahError, match="no label.*lines \\[2\\]"):
        read_folder(path)
    with pytest.warns(UserWarning, match="no label"):
        assert not read_folder(path, on_empty="warn").data.labels[1].any()
    # a text with no vocabulary token
    path = _jsonl(tmp_path, [ok, {"image": names[1], "text": "a cat", "labels": ["cat"]},
                             {"image": names[1], "text": "zebra", "labels": ["cat"]}])
    with pytest.raises(AdahError, match="no token of the vocabulary.*lines \\[3\\]"):
        read_folder(path, min_count=2)
    # a label outside the given names
    path = _jsonl(tmp_path, [ok])
    with pytest.raises(AdahError, match="line 1: label 'cat'"):
        read_folder(path, label_names=["dog"])
    with pytest.raises(AdahError, match="list file not found"):
        read_folder(tmp_path / "nope.jsonl")


def test_unreadable_image_names_file_and_line(tmp_path):
    names = write_images(tmp_path, 1)
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png at all")
    path = _jsonl(tmp_path, [{"image": names[0], "text": "a cat", "labels": ["cat"]},
                             {"image": "img/broken.png", "text": "a dog", "labels": ["dog"]}])
    data = read_folder(path, image_size=8).data  # lazy: fine until the row is read
    assert data.images[[0]].shape == (1, 3, 8, 8)
    with pytest.raises(AdahError) as exc:
        data.images[[1, 0]]
    assert "line 2" in str(exc.value) and str(tmp_path / "img" / "broken.png") in str(exc.value)
    with pytest.raises(AdahError, match="line 2: cannot read image"):
        read_folder(path, image_size=8, load_images="eager")


# --------------------------------------------------------------------------- real coco_mini
def test_real_coco_mini():
    folder = SHARED / "coco_mini"
    if not (folder / "items.jsonl").is_file():
        pytest.skip(f"coco_mini not found at {folder}")
    cfg = DataConfig(name="folder", root=str(SHARED), seed=0,
                     options={"path": "coco_mini", "image_size": 64, "split_map": {"val": "query"}})
    data = load_dataset(cfg)
    assert len(data) == 159
    assert data.labels.shape == (159, 80) and len(data.label_names) == 80
    assert data.labels.any(axis=1).all() and data.texts.any(axis=1).all()
    assert "person" in data.label_names and "dog" in data.vocabulary
    imgs = data.images[[5, 0, 158]]
    assert imgs.shape == (3, 3, 64, 64) and imgs.dtype == np.uint8 and imgs.std() > 10
    split = make_split(cfg, len(data))
    assert len(split.query) == 79 and len(split.retrieval) == 80 and len(split.train) + len(split.val) == 80
    # without a mapping the train/val column has no queries, and the message says what to set
    with pytest.raises(AdahError, match="split_map"):
        make_split(DataConfig(name="folder", root=str(SHARED), options={"path": "coco_mini"}), len(data))
