"""Build a dataset and its protocol split from a DataConfig: the one place that maps names to
readers. ``scenes`` is generated; real datasets are read from a data root."""

from __future__ import annotations

from adah.config import DataConfig
from adah.data.base import CrossModalData, Split, random_split
from adah.errors import AdahError

DATASETS = ("scenes",)


def load_dataset(cfg: DataConfig) -> CrossModalData:
    if cfg.name == "scenes":
        from adah.data.scenes import ScenesConfig, make_scenes

        try:
            scenes_cfg = ScenesConfig(num_items=cfg.num_items, seed=cfg.seed, **cfg.options)
        except TypeError as exc:
            raise AdahError(f"data.options: {exc}") from None
        return make_scenes(scenes_cfg)
    raise AdahError(f"unknown dataset {cfg.name!r}; available: {', '.join(DATASETS)}")


def make_split(cfg: DataConfig, num_items: int) -> Split:
    """The protocol split drawn from ``cfg.seed``: queries, retrieval set, training and validation."""
    return random_split(num_items, cfg.num_query, cfg.num_train, cfg.val_fraction, seed=cfg.seed)
