"""Helpers for the service tests (test_serve, test_browser, test_load): a real index of
coco_mini built from a small model trained in a few seconds (once per test session), and
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
DATA_ROOT = (ROOT / ".." / "shared" / "data").resolve()
COCO = DATA_ROOT / "coco_mini"
ARTIFACTS = Path(os.environ.get("ADAH_TEST_ARTIFACTS", ROOT / "test-artifacts"))
#: coco_mini words the tests query with (all in its vocabulary)
COCO_WORDS = ("dog", "cat", "man", "woman", "table", "pizza", "snow", "sheep", "horse", "grass", "street", "bed")

needs_coco = pytest.mark.skipif(not (COCO / "items.jsonl").is_file(), reason=f"coco_mini not found at {COCO}")


@functools.cache
def coco_index(base: Path) -> Path:
    """Train ADAH (small_cnn on 64-pixel photos, 6 short epochs, ~15 s on 2 cores) on coco_mini's
    training photos and index all 159 photos and captions; built once per test session. With 64
    training photos and a CNN from scratch the codes are a stand-in: the tests check the plumbing
    (pages, answers, limits), not retrieval quality."""
    from adah.data.registry import load_dataset, make_split
    from adah.index import build_index
    from adah.train import train

    from conftest import tiny_config

    cfg = tiny_config(**{
        "data.name": "folder", "data.root": str(DATA_ROOT), "data.val_fraction": 0.2,
        "data.options": {"path": "coco_mini", "split_map": {"val": "query"}, "image_size": 64,
                         "load_images": "eager"},
        "model.image_size": 64, "model.bits": 32, "model.text_hidden": [256, 128], "model.image_fc_dims": [128, 128],
        "train.epochs": 6, "train.batch_size": 8, "train.lr": 2e-3, "train.attention_lr": 2e-3,
        "train.eval_every": 0,
    })
    data = load_dataset(cfg.data)
    base.mkdir(parents=True, exist_ok=True)
    run = base / "coco_run"
    train(cfg, data, make_split(cfg.data, len(data)), run)
    out = base / "coco_index"
    build_index(run / "best.pt", out, data=COCO, progress=False)
    return out


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
