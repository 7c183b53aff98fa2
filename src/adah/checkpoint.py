"""Checkpoints: model + config + epoch, and whatever trainer state is passed (optimizers,
counters, RNG states), written atomically."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from adah.config import Config
from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.fileio import atomic_torch_save
from adah.models import ADAH, build_model

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, *, model: ADAH, config: Config, epoch: int, **state: Any) -> None:
    """Write ``{"format", "config", "epoch", "model", **state}`` (optimizer state dicts,
    step counters, history, metrics) to ``path`` through a temporary file + fsync + rename."""
    payload = {"format": FORMAT_VERSION, "config": config.to_dict(), "epoch": epoch, "model": model.state_dict()}
    payload.update(state)
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read and check a checkpoint file; raises AdahError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise AdahError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files
        raise AdahError(f"{path}: not a readable adah checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise AdahError(f"{path}: not an adah checkpoint (missing 'model' or 'config')")
    if payload.get("format") != FORMAT_VERSION:
        raise AdahError(f"{path}: checkpoint format {payload.get('format')!r}, this adah reads {FORMAT_VERSION}")
    return payload


def text_vocabulary_of(payload: dict, source: str = "checkpoint") -> Vocabulary | None:
    """The Vocabulary a checkpoint's model reads text with (saved by the trainer from the training
    data), or None when the training data carried no words (DCMH .mat, Wiki)."""
    raw = payload.get("text_vocabulary")
    return None if raw is None else Vocabulary.from_dict(raw, source=f"{source} (text_vocabulary)")


def config_of(payload: dict, source: str = "checkpoint") -> Config:
    """The run config saved in a checkpoint. Checkpoints written before G's choices became the
    ``attention`` section trained the paper's literal G, so they get the ``paper`` preset."""
    raw = payload["config"]
    config = Config.from_dict(raw, source=f"{source} (config)")
    return config if "attention" in raw else config.with_preset("paper")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ADAH, Config, dict]:
    """Rebuild the model a checkpoint describes, load its weights; returns (model in eval mode,
    config, raw payload)."""
    payload = load_checkpoint(path)
    config = config_of(payload, str(path))
    # the weights come from the checkpoint: never fetch pretrained backbone weights again
    model = build_model(dataclasses.replace(config.model, image_weights=None), config.attention)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise AdahError(f"{path}: weights do not fit the model its config describes: {exc}") from None
    return model.to(device).eval(), config, payload
