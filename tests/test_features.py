"""The feature cache (adah.features.image_cache): extraction equals a direct backbone forward, is byte-identical
after an injected stop or a SIGKILL and a rerun, refuses other data / weights, reads rows through
the memmap only (a NUS-WIDE-sized cache is never loaded), and training on it freezes the backbone
so one checkpoint encodes cached maps and raw pixels alike. Small CNN on small scenes: seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adah.cli import app
from adah.config import Config, ModelConfig
from adah.data.base import CrossModalData, validate_arrays
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.errors import AdahError
from adah.features.image_cache import (
    FeatureCache, attach_cache, extract_features, read_header, weights_identity, without_cache,
)
from adah.models import build_model
from adah.models.adah import build_backbone
from helpers import SCENES_N, scenes_config

N = SCENES_N  # scenes


def same_files(a: Path, b: Path) -> bool:
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in ("maps.npy", "header.json"))


def test_cache_equals_a_direct_forward_and_reads_like_an_array(reference, weights):
    cfg = scenes_config(weights)
    header = read_header(reference)
    assert header["shape"] == [N, 64, 4, 4] and header["dtype"] == "float16" and header["done"] == N
    assert header["backbone"] == "small_cnn" and header["image_size"] == 32
    assert header["weights_id"] == weights_identity("small_cnn", str(weights))
    assert header["weights_id"].startswith("small_cnn-test.pth#sha256:")
    data = load_dataset(cfg.data)
    assert header["dataset"] == {"name": data.name, "images_fingerprint": data.image_fingerprint(), "num_items": N,
                                 "image_shape": [3, 32, 32]}
    cache = FeatureCache(reference)
    assert cache.shape == (N, 64, 4, 4) and cache.ndim == 4 and cache.dtype == np.float32 and len(cache) == N
    rows = [5, 0, 5, 159]
    backbone = build_backbone(cfg.model).eval()
    with torch.no_grad():  # extraction runs in channels_last (faster; equal up to float rounding)
        x = backbone.preprocess(torch.from_numpy(data.images[rows]))
        direct = backbone.features.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)).contiguous().numpy()
    got = cache[rows]
    assert got.dtype == np.float32 and got.shape == (4, 64, 4, 4)
    np.testing.assert_allclose(got, direct, rtol=2e-3, atol=2e-3)  # float16 storage
    assert np.array_equal(got, direct.astype(np.float16).astype(np.float32))
    assert np.array_equal(cache[3], cache[[3]][0]) and np.array_equal(cache[10:14], cache[np.arange(10, 14)])
    mask = np.zeros(N, bool)
    mask[[1, 7]] = True
    assert np.array_equal(cache[mask], cache[[1, 7]]) and cache[[]].shape == (0, 64, 4, 4)


def test_injected_stop_then_rerun_is_byte_identical_and_a_finished_cache_is_left_alone(tmp_path, reference, weights):
    cfg = scenes_config(weights)
    out = tmp_path / "c"
    part = extract_features(cfg, out, batch_size=8, progress=False, max_batches=3)
    assert not part.complete and part.header["done"] == 24 and read_header(out)["done"] == 24
    with pytest.raises(AdahError, match="incomplete.*24 of 160"):
        FeatureCache(out)
    rest = extract_features(cfg, out, progress=False)  # batch size comes from the header
    assert rest.complete and rest.new_rows == N - 24
    assert same_files(out, reference)
    mtime = (out / "maps.npy").stat().st_mtime_ns
    again = extract_features(cfg, out, progress=False)
    assert again.already_complete and again.new_rows == 0 and (out / "maps.npy").stat().st_mtime_ns == mtime


def test_pipelined_extraction_writes_the_serial_loops_bytes(reference, weights):
    """Decoding ahead in threads and writing behind in a thread change nothing: the maps are
    byte for byte those of a plain loop (batch by batch: pixels, forward, float16)."""
    cfg = scenes_config(weights)
    data = load_dataset(cfg.data)
    backbone = build_backbone(cfg.model).eval()
    features = backbone.features.to(memory_format=torch.channels_last)
    serial = []
    with torch.inference_mode():
        for s in range(0, N, 8):
            x = backbone.preprocess(torch.from_numpy(np.ascontiguousarray(data.images[s : s + 8])))
            serial.append(features(x.contiguous(memory_format=torch.channels_last)).to(torch.float16).numpy())
    stored = np.load(reference / "maps.npy")
    assert stored.shape == (N, 64, 4, 4) and np.array_equal(stored, np.concatenate(serial))


def test_a_failing_write_stops_the_pipeline_after_the_batches_before_it(tmp_path, reference, weights, monkeypatch):
    """A batch whose maps overflow float16 stops extraction with the batches before it recorded
    (written in order by the writer thread); a rerun finishes the same bytes as the reference."""
    from adah.features import extraction

    real, calls = extraction._stored_features, []

    def overflowing(backbone, compact):
        inner = real(backbone, compact)

        class Blows(torch.nn.Module):
            def forward(self, x):
                calls.append(len(x))
                return inner(x) * (1e9 if len(calls) == 4 else 1.0)  # the header's probe, batches 0, 1, 2

            def to(self, *args, **kwargs):
                inner.to(*args, **kwargs)
                return self
        return Blows()

    cfg, out = scenes_config(weights), tmp_path / "c"
    monkeypatch.setattr(extraction, "_stored_features", overflowing)
    with pytest.raises(AdahError, match="rows 16-23: backbone maps overflow float16"):
        extract_features(cfg, out, batch_size=8, progress=False)
    assert read_header(out)["done"] == 16 and not read_header(out)["complete"]
    monkeypatch.setattr(extraction, "_stored_features", real)
    rest = extract_features(cfg, out, progress=False)
    assert rest.new_rows == N - 16 and set(rest.waits) == {"decode", "write"} and same_files(out, reference)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_is_byte_identical(tmp_path, reference, weights):
    cfg = scenes_config(weights)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "adah", "features", "extract", "--config", str(cfg_file), "--out", str(out),
           "--batch-size", "8", "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    done = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads((out / "header.json").read_text())["done"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                done = 0
            if done >= 8:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and done < 8:
            proc.kill()
        proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"extraction was not killed mid-run (exit {proc.returncode}): {proc.stdout.read().decode()[-2000:]}")
    done = read_header(out)["done"]
    assert 8 <= done < N and done % 8 == 0
    rest = extract_features(cfg, out, progress=False)
    assert rest.complete and rest.new_rows == N - done
    assert same_files(out, reference)


def test_a_cache_depends_on_the_images_not_the_texts(reference, weights):
    import dataclasses

    data = load_dataset(scenes_config(weights).data)
    other_texts = dataclasses.replace(data, texts=data.texts[:, ::-1].copy(), text_vocabulary=None)
    assert other_texts.fingerprint() != data.fingerprint()
    cached = attach_cache(other_texts, reference)  # a new tokenizer or vocabulary keeps the cache
    assert np.array_equal(cached.texts, other_texts.texts) and cached.images.shape == (N, 64, 4, 4)
    other_images = dataclasses.replace(data, images=data.images[::-1].copy())
    with pytest.raises(AdahError, match="made from other images"):
        attach_cache(other_images, reference)


def test_a_cache_of_other_data_or_weights_is_refused_unless_overwritten(tmp_path, reference, weights):
    out = tmp_path / "c"
    extract_features(scenes_config(weights), out, progress=False, max_batches=1)
    other = scenes_config(weights, **{"data.seed": 5})
    with pytest.raises(AdahError, match=r"something else.*fingerprint.*--overwrite"):
        extract_features(other, out, progress=False)
    with pytest.raises(AdahError, match=r"batch_size: 32 -> 8"):
        extract_features(scenes_config(weights), out, batch_size=8, progress=False)
    replaced = extract_features(other, out, progress=False, overwrite=True)
    assert replaced.complete and replaced.header["dataset"]["images_fingerprint"] != read_header(reference)["dataset"]["images_fingerprint"]
    old_version = tmp_path / "v1"
    old_version.mkdir()
    (old_version / "header.json").write_text(json.dumps({**read_header(reference), "version": 1}))
    with pytest.raises(AdahError, match="feature cache version 1, this adah reads 2 and 3; rebuild it"):
        extract_features(scenes_config(weights), old_version, progress=False)
    rebuilt = extract_features(scenes_config(weights), old_version, progress=False, overwrite=True)
    assert rebuilt.complete and rebuilt.header["version"] == 3
    assert (old_version / "maps.npy").read_bytes() == (reference / "maps.npy").read_bytes()
    with pytest.raises(AdahError, match="pretrained backbone weights"):
        extract_features(scenes_config(weights, **{"model.image_weights": None}), tmp_path / "r", progress=False)
    # a cache attached to other data, or to a model of other weights, is refused with a clear message
    with pytest.raises(AdahError, match="made from other images"):
        load_dataset(scenes_config(weights, out, **{"data.seed": 0}).data)
    cache = FeatureCache(reference)
    model = scenes_config(weights).model
    assert cache.fit_model_config(model).image_size == 32
    with pytest.raises(AdahError, match="holds small_cnn maps"):
        cache.fit_model_config(scenes_config(weights, **{"model.image_backbone": "vgg19"}).model)
    other_weights = tmp_path / "other.pth"
    torch.save({k: v + 1 for k, v in torch.load(weights).items()}, other_weights)
    with pytest.raises(AdahError, match="made with weights"):
        cache.fit_model_config(scenes_config(other_weights).model)
    with pytest.raises(AdahError, match="freeze_backbone=true"):
        cache.fit_model_config(scenes_config(weights, **{"model.freeze_backbone": False}).model)


def test_cli_extract_and_its_errors(tmp_path, reference, weights):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(scenes_config(weights, tmp_path / "viaconfig").to_dict()))
    runner = CliRunner()
    res = runner.invoke(app, ["features", "extract", "--config", str(cfg_file), "--quiet", "--batch-size", "8"])
    assert res.exit_code == 0, res.output
    assert "images/s" in res.output and "160 x 64 x 4 x 4 float16" in res.output and "complete" in res.output
    assert same_files(tmp_path / "viaconfig", reference)
    res = runner.invoke(app, ["features", "extract", "--config", str(cfg_file), "--quiet"])
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = runner.invoke(app, ["features", "extract", "--config", "scenes_demo", "--quiet"])
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(app, ["features", "extract", "--config", str(cfg_file), "--out", str(tmp_path / "x"),
                              "--backbone", "mlp", "--quiet"])
    assert res.exit_code == 2 and "error:" in res.output


def test_validate_arrays_accepts_float_maps_only():
    texts, labels = np.ones((4, 3), np.float32), np.eye(4, 2, dtype=np.uint8)
    labels[2:, 0] = 1
    validate_arrays(np.zeros((4, 1280, 7, 7), np.float32), texts, labels)
    with pytest.raises(AdahError, match=r"\(N, C, h, w\) float feature maps.*uint8"):
        validate_arrays(np.zeros((4, 5, 7, 7), np.uint8), texts, labels)


def test_training_on_the_cache_freezes_the_backbone_and_the_checkpoint_encodes_pixels(tmp_path, reference, weights):
    from adah.training.checkpoint import load_model
    from adah.training.trainer import train

    cfg = scenes_config(weights, reference)
    data = load_dataset(cfg.data)
    assert isinstance(data.images, FeatureCache) and data.images.shape == (N, 64, 4, 4)
    split = make_split(cfg.data, len(data))
    result = train(cfg, data, split, tmp_path / "run")
    model, saved, _ = load_model(tmp_path / "run" / "best.pt")
    assert saved.model.freeze_backbone and saved.data.options["features"] == str(reference)
    start = build_backbone(cfg.model).features.state_dict()
    for k, v in model.image.backbone.features.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(v, start[k]), k
    frozen = {id(p) for p in model.image.backbone.features.parameters()}
    assert frozen and not frozen & {id(p) for p in model.hashing_parameters()}
    assert all(not p.requires_grad for p in model.image.backbone.features.parameters())
    model.train()
    assert not model.image.backbone.features.training and model.image.hash.training
    model.eval()
    pixels = load_dataset(without_cache(cfg.data)).images[:16]
    with torch.no_grad():
        from_pixels = model.encode_image(torch.from_numpy(pixels))
        from_cache = model.encode_image(torch.from_numpy(data.images[:16]))
    torch.testing.assert_close(from_pixels, from_cache, atol=5e-3, rtol=0)
    with pytest.raises(AdahError, match=r"\(B, 3, H, W\) pixels or \(B, 64, h, w\) float maps"):
        model.encode_image(torch.zeros(2, 32, 4, 4))
    assert result.best_epoch == 1


def test_end_to_end_model_keeps_training_the_backbone_by_default(weights):
    cfg = scenes_config(weights, **{"model.freeze_backbone": False, "model.text_dim": 10})
    model = build_model(cfg.model)
    assert {id(p) for p in model.image.backbone.features.parameters()} <= {id(p) for p in model.hashing_parameters()}
    model.train()
    assert model.image.backbone.features.training


def test_a_nuswide_sized_cache_is_read_row_by_row(tmp_path):
    """195,834 x 64 x 7 x 7 float16 (1.2 GB, a sparse file): opening, fingerprinting, validating
    and reading batches touch only the rows asked for."""
    n, shape = 195_834, (195_834, 64, 7, 7)
    folder = tmp_path / "nus"
    folder.mkdir()
    maps = np.lib.format.open_memmap(folder / "maps.npy", mode="w+", dtype=np.float16, shape=shape)
    maps[12345] = 1.5
    maps.flush()
    del maps
    header = {
        "format": "adah-feature-cache", "version": 2, "backbone": "small_cnn", "layer": "features",
        "weights": "w.pth", "weights_id": "w.pth#sha256:0", "features_sha256": "0", "image_size": 224,
        "shape": list(shape), "dtype": "float16", "batch_size": 32, "device": "cpu", "torch": torch.__version__,
        "dataset": {"name": "nuswide", "images_fingerprint": "x", "num_items": n, "image_shape": [3, 224, 224]},
        "done": n, "complete": True,
    }
    (folder / "header.json").write_text(json.dumps(header))

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    cache = FeatureCache(folder)
    data = CrossModalData(cache, np.ones((n, 4), np.float32), np.ones((n, 2), np.uint8), name="nuswide")
    data.fingerprint()
    rows = np.random.default_rng(0).choice(n, size=256, replace=False)
    block = data.images[np.append(rows, 12345)]
    assert block.shape == (257, 64, 7, 7) and block.dtype == np.float32 and (block[-1] == 1.5).all()
    grew = rss() - before
    assert grew < 200 << 20, f"RSS grew by {grew / 2**20:.0f} MiB for a 1.2 GB cache"


FAULTS_OF_BIG_BLOCKS = """
import json, resource, torch
from adah.utils.runtime import keep_freed_memory

def faults_of_a_big_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 * 2**20)  # 64 MB, every page written
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = [faults_of_a_big_block() for _ in range(6)]
keep_freed_memory()
keep_freed_memory()  # once per process: a second call changes nothing
kept = [faults_of_a_big_block() for _ in range(12)]
print(json.dumps([default, kept]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_keep_freed_memory_reuses_big_blocks_without_page_faults():
    """By default every 64 MB block is a fresh mmap whose 16,384 pages fault when written; after
    keep_freed_memory freed blocks are reused from the heap: once the heap has grown (a few
    rounds), allocating and touching one again costs no page faults at least every other time.
    Measured in a fresh process, as adah's commands run: in a test worker that has already run
    hundreds of tests, where big blocks come from depends on what the heap went through before."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # make test sets malloc's thresholds
    r = subprocess.run([sys.executable, "-c", FAULTS_OF_BIG_BLOCKS], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    default, kept = json.loads(r.stdout)
    assert all(f >= 16_384 for f in default), default
    assert sum(kept[6:]) <= 3 * 16_384 + 100, kept
