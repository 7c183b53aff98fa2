"""What users wrote against earlier versions keeps working: a checkpoint saved by main before the
package moves (commit b02dfe0) loads and encodes, and ``adah.metrics`` still imports."""

from pathlib import Path

import numpy as np
import torch

import adah
from adah import load_model

OLD = Path(__file__).parent / "data" / "checkpoint_main_b02dfe0.pt"


def test_checkpoint_saved_before_the_moves_loads_and_encodes():
    model, config, payload = load_model(OLD)
    assert payload["epoch"] == 0 and config.model.bits > 0
    torch.manual_seed(0)
    n_words = model.text.in_features if hasattr(model.text, "in_features") else None
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert n_words is None or n_words > 0


def test_adah_metrics_is_still_importable():
    from adah.metrics import mean_average_precision  # noqa: F401 - the documented module path
    import adah.metrics as m

    assert m is adah.evaluation.metrics
    codes = np.sign(np.random.default_rng(0).standard_normal((5, 16))).astype(np.float32)
    labels = np.eye(5, dtype=np.float32)
    assert m.mean_average_precision(codes, codes, labels, labels) == 1.0
