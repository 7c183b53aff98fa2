"""Progress output in a log file or pipe (issue 13): no ``\\r`` redraws, one line per epoch."""

from __future__ import annotations

import io

import pytest

from adah.data.registry import make_split

from adah.features.dataset import load_dataset
from adah.utils.progress import SummaryLine, progress_bar
from adah.training.trainer import train
from helpers import tiny_config


@pytest.mark.slow
def test_training_into_a_pipe_prints_one_line_per_epoch(tmp_path, capsys):
    cfg = tiny_config(**{"train.epochs": 2, "train.progress": True, "data.num_items": 100, "data.num_query": 20,
                         "data.num_train": 60, "train.batch_size": 16})
    data = load_dataset(cfg.data)
    train(cfg, data, make_split(cfg.data, len(data)), tmp_path / "run")
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].startswith("training path: maps"), lines  # said once, before the epochs
    lines = lines[1:]
    assert len(lines) == 2, lines
    assert [line.split()[:2] for line in lines] == [["epoch", "1"], ["epoch", "2"]]


def test_a_bar_that_is_kept_prints_one_summary_line():
    log = io.StringIO()
    bar = progress_bar(total=40, desc="features small_cnn", unit="img", file=log)
    assert isinstance(bar, SummaryLine)
    for _ in range(5):
        bar.update(8)
    bar.set_postfix(objective="0.5")
    bar.close()
    bar.close()
    assert log.getvalue() == log.getvalue().splitlines()[0] + "\n"
    assert log.getvalue().startswith("features small_cnn: 40/40 img in ") and "(objective=0.5)" in log.getvalue()
    quiet = io.StringIO()
    assert list(progress_bar(range(3), desc="encode", leave=False, file=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ""
