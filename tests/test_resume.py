"""Exact resume: a run killed with SIGKILL mid-epoch and resumed ends with the same codes as an
uninterrupted run; checkpoints are complete files, rotated, and refuse a different config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adah.training.checkpoint import load_checkpoint, load_model
from adah.errors import AdahError
from adah.training.trainer import Trainer, list_checkpoints

from helpers import tiny_config

TRAIN_ARGS = [
    "train", "--config", "scenes_demo", "--quiet", "--epochs", "2",
    "--set", "data.num_items=400", "--set", "data.num_query=60", "--set", "data.num_train=320",
    "--set", "model.text_hidden=[64,32]", "--set", "model.image_fc_dims=[64,64]", "--set", "model.bits=16",
    "--set", "train.batch_size=32", "--set", "train.checkpoint_every=2", "--set", "model.dropout=0.2",
]


def _adah(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "adah", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _resume_from(checkpoint: Path, whole: Path, part: Path, cfg, data, split) -> tuple[Trainer, list[dict]]:
    """A run folder holding only ``checkpoint`` (and the run's config, split and metrics), resumed to the end."""
    import shutil

    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, part / "checkpoints" / checkpoint.name)
    for name in ("config.json", "split.json", "metrics.jsonl"):
        shutil.copy(whole / name, part / name)
    resumed = Trainer(cfg, data, split, part)
    return resumed, resumed.fit(resume=True).history


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), k


def _final_state(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["model"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    whole = tmp_path / "whole"
    uninterrupted = _adah(*TRAIN_ARGS, "--out", str(whole))  # alongside the run to be killed (one thread each)

    broken = tmp_path / "broken"
    p = _adah(*TRAIN_ARGS, "--out", str(broken))
    deadline = time.time() + 240
    # kill once a mid-epoch checkpoint of the second (last) epoch exists (9 steps an epoch, one every 2)
    while time.time() < deadline and not any(int(c.stem[5:]) >= 12 for c in list_checkpoints(broken)):
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    newest = load_checkpoint(list_checkpoints(broken)[-1])
    assert newest["epoch_state"] is not None or newest["epoch"] < 2  # it really stopped part-way

    out, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err
    p = _adah(*TRAIN_ARGS, "--out", str(broken), "--resume")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err

    a, b = _final_state(whole), _final_state(broken)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, _, _ = load_model(whole / "best.pt")
    mb, _, _ = load_model(broken / "best.pt")
    from adah.features.dataset import load_dataset

    cfg = load_model(whole / "best.pt")[1]
    data = load_dataset(cfg.data)
    from adah.evaluation.retrieval import encode

    rows = np.arange(len(data))
    ca, cb = encode(ma, data, rows), encode(mb, data, rows)
    assert np.array_equal(ca.image, cb.image) and np.array_equal(ca.text, cb.text)
    log_a = (whole / "metrics.jsonl").read_text().splitlines()
    log_b = (broken / "metrics.jsonl").read_text().splitlines()
    assert len(log_a) == len(log_b) == 2
    strip = lambda line: {k: v for k, v in __import__("json").loads(line).items() if k != "seconds"}  # noqa: E731
    assert [strip(x) for x in log_a] == [strip(x) for x in log_b]


@pytest.mark.slow
def test_checkpoints_rotate_and_refuse_other_configs(scenes_small, tmp_path):
    data, split = scenes_small
    cfg = tiny_config(**{"train.epochs": 2, "train.max_batches_per_epoch": 4, "train.checkpoint_every": 1,
                         "train.keep_checkpoints": 2})
    Trainer(cfg, data, split, tmp_path).fit()
    kept = list_checkpoints(tmp_path)
    assert [c.name for c in kept] == ["step-000000007.pt", "step-000000008.pt"]
    assert os.path.samefile(kept[-1], tmp_path / "last.pt")
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(AdahError, match="--resume"):
        Trainer(cfg, data, split, tmp_path).fit()  # never silently overwrite a run
    other = tiny_config(**{"train.epochs": 3, "train.max_batches_per_epoch": 4, "model.bits": 32})
    with pytest.raises(AdahError, match=r"model\.bits: 16 -> 32"):
        Trainer(other, data, split, tmp_path).fit(resume=True)
    longer = tiny_config(**{"train.epochs": 3, "train.max_batches_per_epoch": 4, "train.checkpoint_every": 1,
                            "train.keep_checkpoints": 2})
    result = Trainer(longer, data, split, tmp_path).fit(resume=True)  # more epochs is allowed
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result.history[-1]["step"] == 12


@pytest.mark.slow
def test_in_process_resume_from_every_checkpoint_matches(scenes_small, tmp_path):
    """Resuming from a mid-epoch checkpoint (kept by keep_checkpoints) reproduces the final weights."""
    data, split = scenes_small
    cfg = tiny_config(**{"train.epochs": 2, "train.max_batches_per_epoch": 5, "train.checkpoint_every": 3,
                         "train.keep_checkpoints": 10})
    whole = Trainer(cfg, data, split, tmp_path / "whole")
    whole.fit()
    mid = list_checkpoints(tmp_path / "whole")[0]  # step 3, inside epoch 1
    assert load_checkpoint(mid)["epoch_state"]["pos"] == 3
    resumed, _ = _resume_from(mid, tmp_path / "whole", tmp_path / "part", cfg, data, split)
    _assert_same_weights(whole.model, resumed.model)


@pytest.mark.slow
def test_resume_inside_the_second_pass_of_a_min_steps_epoch_matches(scenes_small, tmp_path):
    """With train.min_steps an epoch is several passes; a checkpoint inside the second pass
    carries the whole epoch's order, so resuming from it gives the uninterrupted weights."""
    data, split = scenes_small
    cfg = tiny_config(**{"train.epochs": 1, "train.batch_size": 64, "train.min_steps": 10,
                         "train.checkpoint_every": 7, "train.keep_checkpoints": 10})
    whole = Trainer(cfg, data, split, tmp_path / "whole")
    assert whole.passes_per_epoch() == 2  # 5 batches a pass, 1 epoch x 2 passes x 5 >= 10
    whole.fit()
    mid = list_checkpoints(tmp_path / "whole")[0]  # step 7: batch 3 of the epoch's second pass
    state = load_checkpoint(mid)["epoch_state"]
    assert state["pos"] == 7 and len(state["order"]) == 2 * len(split.train)
    resumed, history = _resume_from(mid, tmp_path / "whole", tmp_path / "part", cfg, data, split)
    assert [h["step"] for h in history] == [10]
    _assert_same_weights(whole.model, resumed.model)
