"""Sharded extraction and encoding under torchrun: 2 CPU processes (gloo) write the same feature
cache and the same index files, byte for byte, as one process; a sharded extraction stopped part
way is finished by a rerun (here by one process) and is still byte-identical."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adah.features.image_cache import BATCHES_FILE, extract_features, read_header
from adah.index import build_index

from helpers import scenes_config
from helpers import make_checkpoint

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SRC = HERE.parent / "src"
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"


def _torchrun(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    p = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "adah", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def _files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in skip}


@pytest.mark.slow
def test_two_processes_extract_the_same_cache_and_resume(tmp_path, weights):  # noqa: F811
    import torch

    cfg = scenes_config(weights)
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1)
    one = extract_features(cfg, tmp_path / "one", batch_size=8, progress=False)
    assert one.complete and one.new_rows == 160
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(cfg.to_dict()))
    out = _torchrun(["features", "extract", "--config", str(config), "--out", str(tmp_path / "two"),
                     "--batch-size", "8", "--quiet"], tmp_path)
    assert "160 images" in out and "complete" in out and out.count("\n") == 1  # rank 0 reports, once
    assert _files(tmp_path / "two") == _files(tmp_path / "one")  # maps.npy and header.json, byte for byte
    # stopped after 3 batches a process (6 of 20 batches done), then finished by one process
    _torchrun(["features", "extract", "--config", str(config), "--out", str(tmp_path / "part"), "--batch-size", "8",
               "--max-batches", "3", "--quiet"], tmp_path)
    header = read_header(tmp_path / "part")
    flags = (tmp_path / "part" / BATCHES_FILE).read_bytes()
    assert not header["complete"] and list(flags) == [1, 1, 1] + [0] * 7 + [1, 1, 1] + [0] * 7, list(flags)
    assert header["done"] == 24  # the contiguous prefix of rows done
    rest = extract_features(cfg, tmp_path / "part", progress=False)
    assert rest.complete and rest.new_rows == 160 - 48
    assert _files(tmp_path / "part") == _files(tmp_path / "one")  # batches.done removed, the rest identical


@pytest.mark.slow
def test_two_processes_build_the_same_index(tmp_path):
    ckpt = make_checkpoint(tmp_path / "model.pt", num_items=150)
    build_index(ckpt, tmp_path / "one", progress=False, batch_size=16)
    out = _torchrun(["index", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "two"), "--batch-size", "16",
                     "--quiet"], tmp_path)
    assert out.count("indexed 150 items") == 1
    assert _files(tmp_path / "two", skip=("index.json",)) == _files(tmp_path / "one", skip=("index.json",))
    a, b = (json.loads((tmp_path / d / "index.json").read_text()) for d in ("one", "two"))
    for m in (a, b):
        m.pop("created"), m.pop("sha256")
    assert a == b
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # part files removed
