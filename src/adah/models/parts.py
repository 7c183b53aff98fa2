"""Checks that the parts a config names exist, asking their registries: the image backbone
(``model.image_backbone``), the text encoder (``model.text_encoder``), G's gate
(``attention.gate``) and the dataset (``data.name``). The config itself only checks types and
ranges (it sits below the parts); this runs before any data is read or model built."""

from __future__ import annotations

from adah.config import NO_IMAGE_BACKBONE, Config
from adah.data.registry import DATASETS
from adah.models.backbones import BACKBONES
from adah.models.gates import GATES
from adah.models.text_encoders import TEXT_ENCODERS


def check_parts(config: Config) -> Config:
    """``config`` unchanged; AdahError naming the key and the registered choices for a name no
    registry knows."""
    if config.model.image_backbone != NO_IMAGE_BACKBONE:
        BACKBONES.get(config.model.image_backbone)
    TEXT_ENCODERS.get(config.model.text_encoder)
    if config.model.attention != "none":
        GATES.get(config.attention.gate)
    DATASETS.get(config.data.name)
    return config
