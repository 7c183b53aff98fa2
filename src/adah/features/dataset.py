"""Loading a dataset with its feature caches: the reader of :mod:`adah.data.registry`, then the
image-map cache (``data.options.features``, :mod:`adah.features.image_cache`) or the MiniLM token
cache (``data.options.text_features``, :mod:`adah.features.text_cache`) in place of the raw
images / bag-of-words. This is ``adah.load_dataset``; training, evaluation, the index and the
experiments read data through it."""

from __future__ import annotations

from dataclasses import replace

from adah.config import DataConfig
from adah.data.base import CrossModalData
from adah.data.registry import TEXT_FEATURE_OPTIONS
from adah.data.registry import load_dataset as read_dataset
from adah.features.image_cache import attach_cache, without_cache
from adah.features.text_cache import DEFAULT_MAX_TOKENS, attach_text_cache


def load_dataset(cfg: DataConfig) -> CrossModalData:
    """The dataset ``cfg.name`` (one of :data:`DATASETS`) with reader options ``cfg.options``.

    ``options.features``: a cache folder written by ``adah features extract``; its (N, C, h, w)
    maps replace the images, after checking it was made from this dataset; null or "" means no
    cache (the images are decoded), e.g. ``--set data.options.features=null`` on a bundled config.
    ``options.text_features``: a folder for the MiniLM token embeddings of the texts
    (:mod:`adah.features.text_cache`; made on first use, reused after), at most
    ``options.text_max_tokens`` word pieces per text (default 64); they replace the bag-of-words."""
    if isinstance(cfg.options, dict) and cfg.options.get("text_features"):
        rest = {k: v for k, v in cfg.options.items() if k not in TEXT_FEATURE_OPTIONS}
        return attach_text_cache(load_dataset(replace(cfg, options=rest)), cfg.options["text_features"],
                                 max_tokens=cfg.options.get("text_max_tokens", DEFAULT_MAX_TOKENS))
    if isinstance(cfg.options, dict) and "features" in cfg.options:
        if not cfg.options["features"]:
            return load_dataset(without_cache(cfg))
        return attach_cache(load_dataset(without_cache(cfg)), cfg.options["features"])
    return read_dataset(cfg)
