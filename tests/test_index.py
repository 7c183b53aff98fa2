"""The index: what `adah index build` writes (codes equal the evaluation encoder's, metadata,
header), and that a corrupted, truncated, old-version or foreign index, another model, and
bad queries each give a clear error instead of results. Uses an untrained tiny model: these
tests are about the format and the API, not retrieval quality (see test_index_cli.py)."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.training.checkpoint import save_checkpoint
from adah.features.dataset import load_dataset
from adah.errors import AdahError
from adah.evaluation.retrieval import encode
from adah.index import (FORMAT_VERSION, ImageQueryError, Index, IndexFormatError, QueryError, UnknownWordsError,
                        build_index, faiss_available, model_fingerprint)
from adah.index import core as index_core
from adah.index import store
from adah.models import build_model
from adah.training.trainer import complete_config

from helpers import make_checkpoint, make_folder, rewrite_manifest, tiny_config  # noqa: F401 - re-exported


@pytest.fixture()
def copy_of(built, tmp_path):
    """A fresh copy of the built index to damage."""
    import shutil

    dst = tmp_path / "idx"
    shutil.copytree(built, dst)
    return dst


# --------------------------------------------------------------------------- what is written
def test_build_writes_codes_equal_to_the_evaluation_encoder(ckpt, built):
    from adah.training.checkpoint import load_model

    manifest = json.loads((built / "index.json").read_text())
    assert manifest["format"] == "adah-index" and manifest["version"] == FORMAT_VERSION
    assert manifest["count"] == 90 and manifest["bits"] == 16 and manifest["modalities"] == ["image", "text"]
    assert sorted(p.name for p in built.iterdir()) == sorted(["index.json", "image.codes", "text.codes",
                                                              "meta.jsonl", "meta.offsets"])
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
    model, cfg, _ = load_model(ckpt)
    data = load_dataset(cfg.data)
    codes = encode(model, data, np.arange(len(data)))
    with Index.load(built) as index:
        for modality in ("image", "text"):
            stored = index.backends[modality].codes
            np.testing.assert_array_equal(stored, np.packbits(codes.of(modality) > 0, axis=1))
        head = store.read_header(built / "image.codes")
        assert head == {**head, "kind": "codes:image", "bits": 16, "count": 90, "row_bytes": 2,
                        "fingerprint": model_fingerprint(model)}
        item = index.item(5)
        assert item["id"] == "5" and item["row"] == 5 and item["image"] is None
        assert item["labels"] == [data.label_names[c] for c in np.flatnonzero(data.labels[5])]
        assert set(item["text"].split()) == {data.vocabulary[c] for c in np.flatnonzero(data.texts[5])}
        info = index.info()
        assert info["count"] == 90 and info["vocabulary_size"] == 293 and info["can_search"] == {"text": True,
                                                                                                 "image": True}
        json.dumps(info)


def test_text_and_image_queries_rank_by_hamming_distance(built):
    with Index.load(built) as index:
        result = index.search_text("red_circle crimson_disc sunset qqq", k=7)
        assert result.query["known_tokens"] == ["red_circle", "crimson_disc", "sunset"]
        assert result.query["unknown_tokens"] == ["qqq"]
        code = index.encode_text("red_circle crimson_disc sunset")
        d, rows = index.search_codes(code, target="image", k=7)
        assert [h.row for h in result.hits] == rows[0].tolist()
        assert [h.distance for h in result.hits] == d[0].tolist() == sorted(d[0].tolist())
        assert [h.rank for h in result.hits] == list(range(1, 8))
        # an indexed image as a query finds itself at distance 0 among the image codes
        data = load_dataset(tiny_config(**{"data.num_items": 90}).data)
        res = index.search_image(data.images[17].transpose(1, 2, 0), target="image", k=90, attention=True)
        zero = [h.row for h in res.hits if h.distance == 0]
        assert 17 in zero
        assert res.attention is not None and res.attention.mask.shape == (8, 8)
        assert set(np.unique(res.attention.mask)) <= {0, 1}
        assert res.attention.probs.sum() == pytest.approx(1.0, abs=1e-4)
        payload = json.loads(json.dumps(res.to_dict()))
        assert payload["target"] == "image" and len(payload["hits"]) == 90 and "attention" in payload


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_numpy_fallback_gives_identical_results(built):
    with Index.load(built, backend="faiss") as a, Index.load(built, backend="numpy") as b:
        assert a.backend_name == "faiss" and b.backend_name == "numpy"
        for text in ("red_circle", "blue box cobalt_block", "sunset beach"):
            ra, rb = a.search_text(text, k=40), b.search_text(text, k=40)
            assert [(h.row, h.distance) for h in ra.hits] == [(h.row, h.distance) for h in rb.hits]


def test_rows_from_the_split_and_text_only_index(ckpt, tmp_path):
    from adah.data.base import random_split

    split = random_split(90, num_query=10, num_train=60, seed=1)
    split.save(tmp_path / "split.json")
    out = tmp_path / "q"
    build_index(ckpt, out, rows="query", split=tmp_path / "split.json", modalities=("text",), progress=False)
    with Index.load(out) as index:
        assert len(index) == 10 and index.modalities == ("text",)
        assert [index.item(i)["row"] for i in range(10)] == split.query.tolist()
        with pytest.raises(QueryError, match="no image codes"):
            index.search_text("red_circle")  # target image by default
        assert len(index.search_text("red_circle", target="text", k=3).hits) == 3
    with pytest.raises(AdahError, match="needs a split file: .*split.json not found"):
        build_index(ckpt, tmp_path / "x", rows="query", progress=False)


def test_index_a_folder_with_the_models_vocabulary(ckpt, tmp_path):
    folder = make_folder(tmp_path / "mine")
    out = tmp_path / "idx"
    build_index(ckpt, out, data=folder, progress=False)
    with Index.load(out) as index:
        assert len(index) == 6 and index.vocabulary is not None and len(index.vocabulary) == 293
        item = index.item(3)
        assert item["id"] == "x3" and item["caption"] == "caption 3" and item["labels"] == ["thing"]
        assert item["image"] == "photos/p3.png" and item["image_path"] == str((folder / "photos/p3.png").resolve())
        result = index.search_text("red_circle", k=6)
        assert result.query["known_tokens"] == ["red_circle"] and len(result.hits) == 6
        # an indexed photo, as a file, finds itself among the image codes
        hit = index.search_image(folder / "photos" / "p2.png", target="image", k=6).hits
        assert "x2" in [h.id for h in hit if h.distance == 0]


def test_a_model_without_vocabulary_indexes_images_only(tmp_path):
    ckpt = make_checkpoint(tmp_path / "novocab.pt", vocabulary=False)
    folder = make_folder(tmp_path / "mine")
    with pytest.raises(AdahError, match="no saved vocabulary to read new texts with.*--modalities image"):
        build_index(ckpt, tmp_path / "a", data=folder, progress=False)
    build_index(ckpt, tmp_path / "b", data=folder, modalities=("image",), progress=False)
    with Index.load(tmp_path / "b") as index:
        assert index.vocabulary is None and index.info()["can_search"] == {"text": False, "image": True}
        with pytest.raises(QueryError, match="no text vocabulary"):
            index.search_text("red_circle")
        assert len(index.search_image(folder / "photos" / "p0.png", target="image", k=2).hits) == 2


def test_a_folder_index_reads_the_photos_maps_from_the_models_feature_cache(tmp_path, weights, monkeypatch):
    """A model trained on cached maps (frozen backbone, data.options.features), indexed over its
    own folder (`adah index build --data FOLDER`): the build reads each photo's maps from that
    cache instead of passing the photo through the backbone, and writes the codes encoding the
    photos gives; a model whose backbone weights differ from the cache's encodes the photos."""
    from adah.features.image_cache import FeatureCache, extract_features
    from helpers import scenes_config

    folder = make_folder(tmp_path / "mine", n=12)
    cfg = scenes_config(weights, **{"data.name": "folder", "data.num_items": 0, "data.num_query": 3,
                                    "data.num_train": 9, "data.options": {
                                        "path": str(folder), "image_size": 32, "features": str(tmp_path / "cache")}})
    assert extract_features(cfg, tmp_path / "cache", progress=False).complete
    data = load_dataset(cfg.data)
    assert isinstance(data.images, FeatureCache)
    cfg = complete_config(cfg, data)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    save_checkpoint(tmp_path / "same.pt", model=model, config=cfg, epoch=0, data_fingerprint=data.fingerprint(),
                    text_vocabulary=data.text_vocabulary.to_dict())
    model.image.backbone.features[1].running_mean.add_(0.5)  # as if trained end to end: not the cache's maps
    save_checkpoint(tmp_path / "tuned.pt", model=model, config=cfg, epoch=0, data_fingerprint=data.fingerprint(),
                    text_vocabulary=data.text_vocabulary.to_dict())
    read = []
    real_read = FeatureCache._read
    monkeypatch.setattr(FeatureCache, "_read", lambda self, rows: read.append(len(rows)) or real_read(self, rows))

    def codes(ckpt: str, **kwargs) -> np.ndarray:
        read.clear()
        out = tmp_path / f"idx-{ckpt}-{len(kwargs)}"
        build_index(tmp_path / f"{ckpt}.pt", out, data=folder, batch_size=5, progress=False, **kwargs)
        with Index.load(out) as index:
            assert [index.item(i)["id"] for i in range(12)] == [f"x{i}" for i in range(12)]
        fingerprint = store.read_manifest(out)["model"]["fingerprint"]
        return store.read_binary(out / store.CODE_FILES["image"], kind="codes:image", bits=16, row_bytes=2, count=12,
                                 fingerprint=fingerprint)

    cached = codes("same")
    assert sum(read) == 12  # every photo's maps came from the cache
    photos = codes("same", overrides={"data.options.features": None})
    assert read == [] and np.array_equal(cached, photos)  # the codes of a trained model: tests/test_coco_mini.py
    tuned = codes("tuned")
    assert read == [] and np.array_equal(tuned, codes("tuned", overrides={"data.options.features": None}))


# --------------------------------------------------------------------------- bad queries
def test_bad_text_queries(built):
    with Index.load(built) as index:
        with pytest.raises(UnknownWordsError, match="no word of the query is in the model's vocabulary") as err:
            index.search_text("girl sits on donkey")
        assert err.value.words == ["girl", "sits", "on", "donkey"]
        for empty in ("", "   \n"):
            with pytest.raises(QueryError, match="empty text query"):
                index.search_text(empty)
        with pytest.raises(QueryError, match="must be a string"):
            index.search_text(b"red_circle")
        with pytest.raises(QueryError, match="target must be"):
            index.search_text("red_circle", target="audio")


def test_bad_image_queries(built, tmp_path, monkeypatch):
    from PIL import Image

    with Index.load(built) as index:
        with pytest.raises(ImageQueryError, match="cannot read the uploaded image"):
            index.search_image(b"this is not a png")
        with pytest.raises(ImageQueryError, match="empty image upload"):
            index.search_image(b"")
        with pytest.raises(ImageQueryError, match="image file not found"):
            index.search_image(tmp_path / "nope.jpg")
        broken = tmp_path / "broken.png"
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
        broken.write_bytes(buf.getvalue()[:60])  # truncated PNG
        with pytest.raises(ImageQueryError, match="broken.png"):
            index.search_image(broken)
        with pytest.raises(ImageQueryError, match="uint8"):
            index.search_image(np.zeros((8, 8, 3), np.float32))
        with pytest.raises(ImageQueryError, match="must be a path"):
            index.search_image(12345)
        monkeypatch.setattr(index_core, "MAX_IMAGE_PIXELS", 1000)
        with pytest.raises(ImageQueryError, match="over the limit of 1,000"):
            index.search_image(buf.getvalue())
        monkeypatch.undo()
        ok = index.search_image(buf.getvalue(), k=3)  # a real PNG upload, any size, is resized
        assert len(ok.hits) == 3 and ok.target == "text" and ok.query["image"] == "bytes"
        grey = index.search_image(np.full((20, 30), 128, np.uint8), k=2)  # greyscale arrays are fine
        assert len(grey.hits) == 2


def test_index_without_model_searches_codes_only(built):
    with Index.load(built, model=None) as index:
        assert index.info()["can_search"] == {"text": False, "image": False}
        with pytest.raises(QueryError, match="without its model"):
            index.search_text("red_circle")
        codes = index.backends["image"].codes[:2]
        d, rows = index.search_codes(codes, target="image", k=1)
        assert (d[:, 0] == 0).all()


# --------------------------------------------------------------------------- damaged indexes
@pytest.mark.parametrize("verify", [True, False])
def test_truncated_files_are_refused(copy_of, verify):
    for name in ("image.codes", "text.codes", "meta.jsonl", "meta.offsets"):
        path = copy_of / name
        original = path.read_bytes()
        path.write_bytes(original[:-3])
        with pytest.raises(IndexFormatError, match=f"{name}.*truncated"):
            Index.load(copy_of, verify=verify)
        path.write_bytes(original)
    Index.load(copy_of).close()  # restored: fine again


def test_truncated_below_the_header(copy_of):
    (copy_of / "image.codes").write_bytes(b"ADAHBIN\0")
    rewrite_manifest(copy_of, files={**json.loads((copy_of / "index.json").read_text())["files"],
                                      "image.codes": store.file_entry(copy_of / "image.codes")})
    with pytest.raises(IndexFormatError, match="shorter than the 128-byte header"):
        Index.load(copy_of)


@pytest.mark.parametrize("name,offset", [("image.codes", 140), ("text.codes", -1), ("meta.jsonl", 5),
                                         ("meta.offsets", 200), ("image.codes", 60)])
def test_flipped_bytes_are_refused(copy_of, name, offset):
    path = copy_of / name
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=f"{name}: checksum mismatch"):
        Index.load(copy_of)


def test_header_checks_catch_what_verify_false_skips(copy_of):
    """Without sha256 checks, the header still has to agree with the manifest."""
    path = copy_of / "image.codes"
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 28, 17)  # the header's bits field: 17 instead of 16
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="header field 'bits' is 17 but the manifest says 16"):
        Index.load(copy_of, verify=False)


def test_old_and_new_format_versions_are_refused(copy_of):
    rewrite_manifest(copy_of, version=0)
    with pytest.raises(IndexFormatError, match="index format version 0; this adah reads version 1: rebuild"):
        Index.load(copy_of)
    rewrite_manifest(copy_of, version=FORMAT_VERSION)
    path = copy_of / "text.codes"
    raw = bytearray(path.read_bytes())
    struct.pack_into("<H", raw, 8, 2)  # binary header version 2
    path.write_bytes(bytes(raw))
    rewrite_manifest(copy_of, files={**json.loads((copy_of / "index.json").read_text())["files"],
                                      "text.codes": store.file_entry(path)})
    with pytest.raises(IndexFormatError, match="text.codes: index file format version 2; this adah reads version 1"):
        Index.load(copy_of)


def test_edited_or_broken_manifest_is_refused(copy_of):
    path = copy_of / "index.json"
    manifest = json.loads(path.read_text())
    manifest["count"] = 89  # an edit without a new checksum
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="index.json: checksum mismatch"):
        Index.load(copy_of)
    path.write_text(json.dumps(manifest)[:100])
    with pytest.raises(IndexFormatError, match="index.json: not valid JSON"):
        Index.load(copy_of)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IndexFormatError, match="not an adah index manifest"):
        Index.load(copy_of)
    path.unlink()
    with pytest.raises(IndexFormatError, match="not an adah index \\(no index.json\\)"):
        Index.load(copy_of)


def test_missing_folder_file_or_data_file(copy_of, tmp_path):
    with pytest.raises(IndexFormatError, match="index not found"):
        Index.load(tmp_path / "nowhere")
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(IndexFormatError, match="is a folder"):
        Index.load(tmp_path / "plain.txt")
    (copy_of / "meta.offsets").unlink()
    with pytest.raises(IndexFormatError, match="meta.offsets: file missing"):
        Index.load(copy_of)


def test_another_model_is_refused(built, tmp_path):
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(AdahError, match="fingerprint .* differs from the index's"):
        Index.load(built, model=other)
    manifest = json.loads((built / "index.json").read_text())
    Index.load(built, model=manifest["model"]["checkpoint"]).close()  # the right one, by path


def test_missing_model_says_how_to_fix(copy_of, tmp_path):
    rewrite_manifest(copy_of, model={**json.loads((copy_of / "index.json").read_text())["model"],
                                      "checkpoint": str(tmp_path / "moved.pt"), "checkpoint_relative": None})
    with pytest.raises(AdahError, match="moved.pt\\) is not there; pass the checkpoint explicitly"):
        Index.load(copy_of)


# --------------------------------------------------------------------------- atomic writes
def test_writes_are_atomic_and_never_clobber(ckpt, built, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    build_index(ckpt, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(AdahError, match="an index exists already; pass --overwrite"):
        build_index(ckpt, out, progress=False)
    # a build that fails half way leaves the old index as it was, and no staging folder
    calls = {"n": 0}
    real = store.BinaryWriter.append

    def failing_append(self, rows):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("disk full")
        return real(self, rows)

    monkeypatch.setattr(store.BinaryWriter, "append", failing_append)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(ckpt, out, progress=False, batch_size=16, force=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    Index.load(out).close()
    # --force replaces it
    build_index(ckpt, out, progress=False, force=True, modalities=("text",))
    with Index.load(out) as index:
        assert index.modalities == ("text",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    # a folder that is not an index is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(AdahError, match="not an adah index; refusing to replace it"):
        build_index(ckpt, mine, progress=False, force=True)
    assert (mine / "thesis.tex").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    build_index(ckpt, tmp_path / "empty", progress=False)  # an empty folder is fine
    assert os.path.isfile(tmp_path / "empty" / "index.json")


def test_build_argument_errors(ckpt, tmp_path):
    with pytest.raises(AdahError, match="modalities must be"):
        build_index(ckpt, tmp_path / "a", modalities=("audio",), progress=False)
    with pytest.raises(AdahError, match="rows must be one of"):
        build_index(ckpt, tmp_path / "a", rows="everything", progress=False)
    with pytest.raises(AdahError, match="neither a dataset name"):
        build_index(ckpt, tmp_path / "a", data=tmp_path / "no-such-folder", progress=False)
    with pytest.raises(AdahError, match="checkpoint not found"):
        build_index(tmp_path / "none.pt", tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
