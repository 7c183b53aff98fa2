"""Bad inputs and faults that used to leak through the CLI and the readers (issue 13): each is
now one line on stderr with exit status 2 (or a clear AdahError from the library), nothing
half-written. Small generated inputs; the wiki cases skip when the real files are absent."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adah.cli import app
from adah.errors import AdahError
from helpers import make_checkpoint, make_folder, one_line_error

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = (ROOT / ".." / "shared" / "data").resolve()
WIKI = DATA_ROOT / "wiki"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (grey, 1 bit) with no real pixel data:
    enough for PIL to read the size, no memory spent making it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))
    return path


# --------------------------------------------------------------------------- truncated .mat files
@pytest.mark.skipif(not (WIKI / "wiki_data.mat").is_file(), reason=f"wiki not found at {WIKI}")
@pytest.mark.parametrize("variant,name", [("data", "wiki_data.mat"), ("roph", "wiki_roph.mat")])
def test_truncated_wiki_files_are_one_line_errors(tmp_path, variant, name):
    (tmp_path / "wiki").mkdir()
    whole = (WIKI / name).read_bytes()
    (tmp_path / "wiki" / name).write_bytes(whole[: len(whole) // 2])
    r = invoke("train", "--config", "wiki", "--set", f"data.options.variant={variant}", "--data-root", tmp_path,
               "--out", tmp_path / "run", "--quiet")
    line = one_line_error(r)
    assert f"{name}: cannot read this MATLAB" in line and "truncated or damaged" in line
    assert not (tmp_path / "run").exists()


def test_truncated_hdf5_image_file_is_refused_naming_it(tmp_path):
    import h5py

    from adah.data.dcmh import read_images

    whole = tmp_path / "whole.mat"
    with h5py.File(whole, "w") as f:
        f["IAll"] = np.zeros((20, 3, 8, 8), dtype=np.uint8)
    cut = tmp_path / "mirflickr25k-iall.mat"
    cut.write_bytes(whole.read_bytes()[:3000])
    with pytest.raises(AdahError, match="mirflickr25k-iall.mat: cannot read this MATLAB v7.3 / HDF5 file"):
        read_images(cut, "IAll", n=20)


# --------------------------------------------------------------------------- --out paths
@pytest.fixture()
def a_file(tmp_path) -> Path:
    (tmp_path / "taken").write_text("not a folder\n")
    return tmp_path / "taken"


def test_train_out_naming_a_file_or_a_path_under_one(a_file):
    for out, needle in ((a_file, "exists and is a file"), (a_file / "run", f"{a_file} is a file")):
        line = one_line_error(invoke("train", "--out", out, "--epochs", "1", "--quiet"))
        assert f"--out {out}" in line and needle in line
    assert a_file.read_text() == "not a folder\n"


def test_features_extract_out_under_a_file(a_file):
    line = one_line_error(invoke("features", "extract", "--config", "scenes_demo", "--out", a_file / "cache"))
    assert f"{a_file} is a file" in line


def test_eval_out_and_attention_png_under_a_file(ckpt, a_file):
    line = one_line_error(invoke("eval", "--checkpoint", ckpt, "--out", a_file / "eval.json"))
    assert f"--out {a_file / 'eval.json'}" in line and "is a file, not a folder" in line
    line = one_line_error(invoke("eval", "--checkpoint", ckpt, "--attention-png", a_file / "att.png"))
    assert "--attention-png" in line and f"{a_file} is a file" in line


def test_any_oserror_is_one_line_naming_the_path(monkeypatch, tmp_path):
    """The top-level guard: an OSError nobody foresaw (here: the disk is full while loading the
    config) prints ``path: reason``."""
    import errno
    import os

    from adah.config import Config

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "config.json"))

    monkeypatch.setattr(Config, "load", full)
    line = one_line_error(invoke("train", "--out", tmp_path / "run"))
    assert line == f"error: {tmp_path / 'run' / 'config.json'}: No space left on device"


# --------------------------------------------------------------------------- huge images
def test_image_over_the_decompression_bomb_limit_names_file_and_line(ckpt, tmp_path):
    folder = make_folder(tmp_path / "mine", n=4)
    png_header_only(folder / "photos" / "p2.png", 20_000, 20_000)  # 400 MP: PIL's DecompressionBombError
    line = one_line_error(invoke("index", "build", "--checkpoint", ckpt, "--out", tmp_path / "idx", "--data", folder,
                                 "--quiet"))
    assert f"{folder / 'items.jsonl'}: line 3: image {folder / 'photos' / 'p2.png'}" in line
    assert "pixels" in line
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx.building-*"))


def test_configurable_pixel_limit_and_no_warning_below_it(tmp_path):
    from adah.data.folder import read_folder
    from adah.utils.images import open_image

    folder = make_folder(tmp_path / "mine", n=4)  # photos of 48..51 x 40 pixels
    data = read_folder(folder, max_image_pixels=2000).data
    data.images[0]  # 48 x 40 = 1920 pixels: fine
    with pytest.raises(AdahError, match=r"items.jsonl: line 2: image .*p1.png: 49x40 = 1,960 pixels, over the limit"):
        read_folder(folder, max_image_pixels=1950).data.images[1]
    big = png_header_only(tmp_path / "big.png", 10_000, 10_000)  # 100 MP: over PIL's warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_image(big, max_pixels=150_000_000) as im:
            assert im.size == (10_000, 10_000)
    with pytest.raises(AdahError, match="max_image_pixels must be an integer"):
        read_folder(folder, max_image_pixels=0)


# --------------------------------------------------------------------------- encodings (item 6)
def write_folder(root: Path, rows: list[dict], *, csv: bool = False, encoding: str = "utf-8", bom: bool = False):
    """A folder of tiny PNGs and a list file of ``rows`` (fields image, text, labels, id)."""
    from PIL import Image

    root.mkdir(parents=True)
    for r in rows:
        Image.new("RGB", (32, 24), (90, 20, 200)).save(root / r["image"])
    if csv:
        text = "image,text,labels,id\n" + "".join(f"{r['image']},{r['text']},{r['labels']},{r['id']}\n" for r in rows)
        name = "items.csv"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        name = "items.jsonl"
    (root / name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return root / name


ROWS = [{"id": f"i{k}", "image": f"{k}.png", "text": t, "labels": lab}
        for k, (t, lab) in enumerate([("a red cafe", "x"), ("un café rouge", "y"), ("blue sky", "x"),
                                      ("green field", "y")])]


def test_a_utf8_csv_with_a_byte_order_mark_is_read(tmp_path):
    from adah.data.folder import read_folder

    ds = read_folder(write_folder(tmp_path / "d", ROWS, csv=True, bom=True))
    assert len(ds.data) == 4 and ds.data.label_names == ["x", "y"]
    assert "café" in ds.vocabulary.tokens


def test_latin1_list_file_names_file_and_line_and_the_encoding_option(tmp_path):
    from adah.data.folder import read_folder

    path = write_folder(tmp_path / "d", ROWS, encoding="latin-1")
    with pytest.raises(AdahError) as exc:
        read_folder(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: line 2, column ") and "byte 0xe9 is not valid utf-8" in message
    assert "encoding" in message
    ds = read_folder(path, encoding="latin-1")
    assert "café" in ds.vocabulary.tokens


def test_latin1_through_the_cli_and_the_encoding_option(ckpt, tmp_path):
    path = write_folder(tmp_path / "d", ROWS, encoding="latin-1")
    line = one_line_error(invoke("index", "build", "--checkpoint", ckpt, "--out", tmp_path / "idx", "--data", path.parent,
                                 "--quiet"))
    assert f"{path}: line 2, column" in line


# --------------------------------------------------------------------------- duplicate ids (item 7)
def test_duplicate_ids_are_refused_naming_the_lines(tmp_path):
    from adah.data.folder import read_folder

    rows = [dict(r) for r in ROWS]
    rows[2]["id"] = rows[0]["id"]
    path = write_folder(tmp_path / "d", rows)
    with pytest.raises(AdahError, match=r"field 'id': 1 id\(s\) used on several rows: 'i0' on lines 1, 3"):
        read_folder(path)
    with pytest.warns(UserWarning, match="'i0' on lines 1, 3"):
        assert len(read_folder(path, on_duplicate_id="warn").data) == 4


def test_index_build_refuses_duplicate_ids(ckpt, tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[3]["id"] = rows[1]["id"]
    path = write_folder(tmp_path / "d", rows)
    line = one_line_error(invoke("index", "build", "--checkpoint", ckpt, "--out", tmp_path / "idx", "--data", path.parent,
                                 "--quiet"))
    assert "'i1' on lines 2, 4" in line and not (tmp_path / "idx").exists()


# --------------------------------------------------------------------------- search --json (item 8)
@pytest.mark.slow
def test_search_json_is_valid_json_with_non_utf8_bytes_in_the_text(ckpt, tmp_path):
    import os
    import subprocess
    import sys

    from adah.index import build_index

    build_index(ckpt, tmp_path / "idx", progress=False)
    import adah

    env = {**os.environ, "PYTHONPATH": str(Path(adah.__file__).parents[1]), "LC_ALL": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "adah", "search", "--index", str(tmp_path / "idx"), "--text",
                           b"red circle caf\xe9 \xff", "--json", "-k", "3"], capture_output=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    body = json.loads(proc.stdout.decode("utf-8"))  # strict: invalid UTF-8 would raise here
    assert body["query"]["text"] == "red circle caf\ufffd \ufffd" and len(body["hits"]) == 3
