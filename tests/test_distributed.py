"""Data-parallel training: 2 CPU processes with gloo give the loss trajectory and weights of a
single-process run with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adah.training.checkpoint import load_checkpoint

HERE = Path(__file__).parent
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-3000:]


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    from ddp_worker import train_tiny_features

    train_tiny_features(tmp_path / "one")  # the one-process run, here (the worker runs one thread too)
    _run([TORCHRUN, "--standalone", "--nproc_per_node", "2", str(HERE / "ddp_worker.py"), str(tmp_path / "two")],
         tmp_path)
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert len(one) == len(two) == 3
    keys = ["objective", "t2i", "i2t", "i2i", "t2t", "t2i_hat", "i2t_hat", "adversarial_max", "mask_image",
            "mask_text"]
    for a, b in zip(one, two):
        assert a["step"] == b["step"]
        for k in keys:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (a["epoch"], k)
        assert b["val_map_i2t"] == pytest.approx(a["val_map_i2t"], abs=1e-9)  # same codes, gathered
    wa = load_checkpoint(tmp_path / "one" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    # only rank 0 wrote files: one set of checkpoints, a log without duplicated lines
    assert len(list((tmp_path / "two" / "checkpoints").glob("*.pt"))) == 3


@pytest.mark.slow
def test_torchrun_module_entry_point(tmp_path):
    _run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "adah", "train", "--config", "scenes_demo",
          "--quiet", "--out", str(tmp_path / "run"), "--epochs", "1", "--set", "data.num_items=200",
          "--set", "data.num_query=40", "--set", "data.num_train=140", "--set", "model.text_hidden=[32]",
          "--set", "model.image_fc_dims=[32]", "--set", "train.batch_size=32"], tmp_path)
    assert len(_history(tmp_path / "run")) == 1
    assert (tmp_path / "run" / "best.pt").is_file()
