"""Files on disk under faults (issue 13): exclusive locks on run folders, feature caches and
indexes being built; stale build folders of a killed build; damaged checkpoints and feature
caches refused by name; turning a config's feature cache off from the command line. Small CNN
on small scenes, an untrained tiny model: seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from adah.cli import app
from adah.errors import AdahError
from adah.features.image_cache import extract_features
from adah.index import Index, build_index
from adah.utils.locks import LockBusy, exclusive, lock_file_beside, lock_file_in
from helpers import scenes_config
from helpers import make_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


class Holder:
    """Another process holding the lock file ``path`` until stopped."""

    def __init__(self, path: Path) -> None:
        code = ("import sys, time; from adah.utils.locks import exclusive\n"
                "with exclusive(sys.argv[1], 'test'):\n    print('locked', flush=True); time.sleep(120)\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                                     env=env)
        assert self.proc.stdout.readline().strip() == "locked"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --------------------------------------------------------------------------- locks (item 5)
def test_a_second_training_into_one_run_folder_is_refused_naming_the_pid(tmp_path):
    out = tmp_path / "run"
    holder = Holder(lock_file_in(out))
    try:
        r = invoke("train", "--out", out, "--epochs", "1", "--quiet", "--set", "data.num_items=120",
                   "--set", "data.num_query=20", "--set", "data.num_train=80")
    finally:
        holder.stop()
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"run folder {out} is in use by another adah process (PID {holder.proc.pid}" in r.stderr
    assert [p.name for p in out.iterdir() if p.name != ".adah.lock"] == []  # nothing of the refused run


def test_lock_is_released_when_the_holder_dies(tmp_path):
    path = tmp_path / "x.lock"
    holder = Holder(path)
    with pytest.raises(LockBusy, match=f"PID {holder.proc.pid}"):
        with exclusive(path, "thing"):
            pass
    holder.stop()  # SIGKILL: the kernel drops the lock
    with exclusive(path, "thing"):
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()  # removed on release


def test_feature_cache_being_built_is_locked(weights, tmp_path):  # noqa: F811
    out = tmp_path / "cache"
    with exclusive(lock_file_in(out), "test"):
        with pytest.raises(LockBusy, match=f"feature cache {out} is in use .*PID {os.getpid()}"):
            extract_features(scenes_config(weights), out, batch_size=8, progress=False)
    assert not (out / "maps.npy").exists()


def test_index_being_built_is_locked(ckpt, tmp_path):
    out = tmp_path / "idx"
    with exclusive(lock_file_beside(out), "test"):
        with pytest.raises(LockBusy, match=f"index {out} is in use .*PID {os.getpid()}"):
            build_index(ckpt, out, progress=False)
    assert not out.exists()


# --------------------------------------------------------------------------- stale builds (item 11)
def test_a_killed_builds_folder_is_removed_by_the_next_build(ckpt, tmp_path):
    out = tmp_path / "idx"
    stale = tmp_path / ".idx.building-abc123"  # what a SIGKILLed build leaves
    stale.mkdir()
    (stale / "codes_image.bin").write_bytes(b"\0" * 100)
    other = tmp_path / ".other.building-xyz"  # another destination's: not ours to remove
    other.mkdir()
    build_index(ckpt, out, progress=False)
    assert not stale.exists() and other.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.building-xyz", "idx"]
    with Index.load(out, model=None) as ix:
        assert len(ix) == 90


def test_a_live_builds_folder_is_kept(ckpt, tmp_path):
    out = tmp_path / "idx"
    live = tmp_path / ".idx.building-live"
    live.mkdir()
    holder = Holder(lock_file_beside(out))
    try:
        with pytest.raises(LockBusy):
            build_index(ckpt, out, progress=False)
    finally:
        holder.stop()
    assert live.is_dir()


# --------------------------------------------------------------------------- checkpoints (item 10)
def flip_a_tensor_byte(path: Path, tensor) -> None:
    """Flip one byte inside ``tensor``'s data in the file (where torch.load does not notice)."""
    raw = bytearray(path.read_bytes())
    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = raw.find(data[:64])
    assert at > 0, "tensor bytes not found in the file"
    raw[at + 17] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_a_checkpoint_is_refused_by_name(tmp_path):
    from adah.training.checkpoint import CheckpointDamaged, load_checkpoint, load_model

    path = make_checkpoint(tmp_path / "model.pt")
    weights = load_checkpoint(path)["model"]
    name = max(weights, key=lambda k: weights[k].numel())
    flip_a_tensor_byte(path, weights[name])
    with pytest.raises(CheckpointDamaged, match=f"{path}: damaged checkpoint, its payload does not match the sha256"):
        load_model(path)
    r = invoke("eval", "--checkpoint", path)
    assert r.exit_code == 2 and f"{path}: damaged checkpoint" in r.stderr and "Traceback" not in r.output


@pytest.mark.slow
def test_resume_falls_back_to_the_previous_checkpoint_and_says_so(scenes_small, tmp_path, capsys):
    import shutil

    from adah.training.checkpoint import load_checkpoint
    from adah.training.trainer import Trainer, list_checkpoints
    from helpers import tiny_config

    data, split = scenes_small
    cfg = tiny_config(**{"train.epochs": 1, "train.max_batches_per_epoch": 4, "train.checkpoint_every": 1,
                         "train.keep_checkpoints": 10})
    whole = Trainer(cfg, data, split, tmp_path / "whole")
    whole.fit()
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    kept = list_checkpoints(tmp_path / "whole")[:3]  # as if killed after step 3 of 4
    for c in kept:
        shutil.copy(c, part / "checkpoints" / c.name)
    for name in ("config.json", "split.json", "metrics.jsonl"):
        shutil.copy(tmp_path / "whole" / name, part / name)
    newest = part / "checkpoints" / kept[-1].name
    flip_a_tensor_byte(newest, max(load_checkpoint(newest)["model"].values(), key=lambda t: t.numel()))
    capsys.readouterr()
    resumed = Trainer(cfg, data, split, part)
    resumed.fit(resume=True)
    err = capsys.readouterr().err
    assert f"{newest}: damaged checkpoint" in err and f"falling back to the previous checkpoint {kept[-2].name}" in \
        err.replace(str(part / "checkpoints") + "/", "")
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


# --------------------------------------------------------------------------- feature cache integrity (item 9)
@pytest.fixture()
def cache_copy(reference, tmp_path):  # noqa: F811
    import shutil

    shutil.copytree(reference, tmp_path / "cache")
    return tmp_path / "cache"


def test_a_truncated_maps_file_is_not_complete(weights, cache_copy):  # noqa: F811
    from adah.features.image_cache import CacheDamaged, FeatureCache

    maps = cache_copy / "maps.npy"
    maps.write_bytes(maps.read_bytes()[:-1000])
    for attempt in (lambda: extract_features(scenes_config(weights), cache_copy, progress=False),
                    lambda: FeatureCache(cache_copy)):
        with pytest.raises(CacheDamaged, match=r"maps.npy: [\d,]+ bytes, [\d,]+ expected .*truncated.*--overwrite"):
            attempt()
    cfg_file = cache_copy.parent / "cfg.json"
    cfg_file.write_text(json.dumps(scenes_config(weights).to_dict()))
    r = invoke("features", "extract", "--config", cfg_file, "--out", cache_copy)
    assert r.exit_code == 2 and "truncated or damaged" in r.stderr and "Traceback" not in r.output


def test_a_flipped_byte_is_found_by_verify_and_on_first_read(weights, cache_copy):  # noqa: F811
    import numpy as np

    from adah.features.image_cache import CacheDamaged, FeatureCache, read_header, verify_cache

    header = read_header(cache_copy)
    assert len(header["chunk_sha256"]) == 160 // header["batch_size"]
    verify_cache(cache_copy)  # intact
    maps = cache_copy / "maps.npy"
    raw = bytearray(maps.read_bytes())
    row_bytes = int(np.prod(header["shape"][1:])) * 2
    offset = len(raw) - 160 * row_bytes
    raw[offset + 50 * row_bytes + 7] ^= 0x10  # row 50: chunk 6 of batches of 8
    maps.write_bytes(bytes(raw))
    with pytest.raises(CacheDamaged, match=r"maps.npy: rows 48-55 do not match their checksum.*--overwrite"):
        extract_features(scenes_config(weights), cache_copy, progress=False, verify=True)
    cache = FeatureCache(cache_copy)  # cheap checks pass: same size
    cache[np.arange(0, 8)]  # another chunk reads fine
    with pytest.raises(CacheDamaged, match="rows 48-55"):
        cache[np.array([3, 50])]


# --------------------------------------------------------------------------- turning a cache off (item 15)
COCO = (ROOT / ".." / "shared" / "data" / "coco_mini").resolve()


@pytest.mark.parametrize("raw", ["null", '""'])
def test_a_bundled_configs_cache_is_turned_off_from_the_command_line(raw, tmp_path):
    from adah.cli.common import _parse_sets
    from adah.config import Config
    from adah.features.dataset import load_dataset

    base = Config.load("scenes_demo").override({"data.num_items": 60, "data.options.features": str(tmp_path / "no")})
    with pytest.raises(AdahError, match=r"no feature cache at .*--set data.options.features=null"):
        load_dataset(base.data)
    cfg = base.override(_parse_sets([f"data.options.features={raw}"]))
    assert not cfg.data.options["features"]
    data = load_dataset(cfg.data)
    assert data.images.shape[1] == 3 and data.images.dtype.name == "uint8"  # pixels, decoded


@pytest.mark.skipif(not (COCO / "items.jsonl").is_file(), reason=f"coco_mini not found at {COCO}")
def test_coco_mini_without_its_bundled_cache(tmp_path):
    from adah.cli.common import _parse_sets
    from adah.config import Config
    from adah.data.folder import FileImages
    from adah.features.dataset import load_dataset

    for raw in ("null", '""'):
        cfg = Config.load("coco_mini").override({"data.root": str(COCO.parent),
                                                 **_parse_sets([f"data.options.features={raw}"])})
        data = load_dataset(cfg.data)
        assert isinstance(data.images, FileImages) and len(data) == 159
