"""The parts behind the Index facade, tested directly: the query encoder (index/query.py) gives
the facade's codes and leaves the image backbone unbuilt for text; storage (index/storage.py)
refuses a tampered file, another model, and tells a new version on disk from the one opened."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adah.errors import AdahError
from adah.index import Index, IndexFormatError, QueryError, remove_items
from adah.index.query import ImageQueryError, QueryEncoder, decode_image
from adah.index.storage import IndexStorage
from adah.training.checkpoint import LazyImageBranch, load_model

from helpers import make_checkpoint

TEXT = "red_circle crimson_disc sunset"


@pytest.fixture(scope="module")
def storage(built):
    opened = IndexStorage.open(built, backend="numpy")
    yield opened
    opened.close()


def encoder_for(ckpt: Path, storage: IndexStorage) -> QueryEncoder:
    model = load_model(ckpt, lazy_image=True)[0]
    return QueryEncoder(model, vocabulary=storage.vocabulary, config=storage.manifest["model"]["config"],
                        image_resize=storage.image_resize)


def test_the_query_encoder_gives_the_facades_codes_and_text_leaves_the_backbone_unbuilt(ckpt, built, storage):
    encoder = encoder_for(ckpt, storage)
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    with Index.load(built) as index:
        facade_text, facade_image = index.encode_text(TEXT), index.encode_image(image)
        assert encoder.tokens(TEXT) == index.query_tokens(TEXT)
    code = encoder.encode_text(TEXT)
    assert code.shape == (1, 16) and set(np.unique(code)) <= {-1, 1}
    np.testing.assert_array_equal(code, facade_text)
    assert isinstance(encoder.model.image, LazyImageBranch)  # a text query built no image backbone
    codes, att = encoder.encode_image(image, attention=True)
    np.testing.assert_array_equal(codes, facade_image)
    assert att is not None and att.mask.shape == att.probs.shape and abs(float(att.probs.sum()) - 1) < 1e-4


def test_the_query_encoder_refuses_what_it_cannot_encode(ckpt, storage):
    encoder = encoder_for(ckpt, storage)
    with pytest.raises(QueryError, match="empty text query"):
        encoder.encode_text("   ")
    with pytest.raises(QueryError, match="no word of the query"):
        encoder.encode_text("zzz qqq")
    with pytest.raises(QueryError, match="bag-of-words MLP"):
        encoder.text_attention(TEXT)  # the tiny model reads bow_mlp: no words to show
    with pytest.raises(QueryError, match="model=None"):
        QueryEncoder(None, vocabulary=storage.vocabulary).encode_text(TEXT)
    png = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(png, format="PNG")
    with pytest.raises(ImageQueryError, match="over the limit of 100 "):
        encoder.encode_image(png.getvalue(), max_pixels=100)
    assert encoder.encode_image(png.getvalue(), max_pixels=400)[0].shape == (1, 16)
    assert decode_image(np.zeros((20, 10, 3), np.uint8), 8, max_pixels=200).shape == (3, 8, 8)


def test_storage_reads_the_folder_and_its_items(built, storage):
    assert storage.count == 90 and storage.bits == 16 and storage.modalities == ("image", "text")
    assert storage.backends["text"].codes.shape == (90, 2) and storage.path == built
    assert storage.item(3)["id"] == "3" and storage.item(3)["row"] == 3
    with pytest.raises(AdahError, match=r"row must be an integer in \[0, 90\)"):
        storage.item(90)
    assert storage.load_model(None, "cpu") is None and not storage.changed_on_disk()


@pytest.mark.parametrize("name", ["meta.jsonl", "text.codes"])
def test_storage_refuses_a_tampered_file(built, tmp_path, name):
    folder = tmp_path / "idx"
    shutil.copytree(built, folder)
    data = bytearray((folder / name).read_bytes())
    data[-2] ^= 0x01  # same size: only the checksum tells
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"{name}: checksum mismatch"):
        IndexStorage.open(folder)


def test_storage_refuses_another_model(built, storage, tmp_path):
    other = make_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(AdahError, match="fingerprint .* differs from the index's"):
        storage.load_model(other, "cpu")
    with pytest.raises(AdahError, match="rebuilt with another model"):
        storage.load_model(load_model(other)[0], "cpu")


def test_storage_sees_a_new_version_and_keeps_the_model_for_it(built, ckpt, tmp_path):
    folder = tmp_path / "idx"
    shutil.copytree(built, folder)
    opened = IndexStorage.open(folder)
    model = opened.load_model(ckpt, "cpu")
    try:
        assert not opened.changed_on_disk()
        remove_items(folder, ["0"])
        assert opened.changed_on_disk() and opened.count == 90
        assert opened.model_for_reload(model) is model  # same fingerprint: reused
        assert opened.model_for_reload(None) is None
    finally:
        opened.close()
    memory = IndexStorage(bits=16, codes={"text": np.zeros((4, 2), np.uint8)}, backend="numpy")
    assert not memory.changed_on_disk() and memory.item(2) == {"id": "2", "labels": [], "image_path": None}
    with pytest.raises(AdahError, match="one code per item"):
        IndexStorage(bits=16, codes={"text": np.zeros((4, 2), np.uint8), "image": np.zeros((3, 2), np.uint8)})
