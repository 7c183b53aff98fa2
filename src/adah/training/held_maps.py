"""The second fast path of training on cached maps: the backbone's maps held in memory.

When G takes steps (``train.steps_max > 0``: the paper's G, ``--preset paper``), or its image mask
changes otherwise (Gumbel noise, soft-mask epochs), the pooled fast path
(:mod:`adah.training.precomputed`) does not apply: what D sees changes from step to step. The
part before G still does not: with cached backbone maps (``data.options.features``) an item's maps
are a fixed array, but over the cache every batch reads them again, converts them from float16 and,
for a compact cache (MobileNetV2), runs the backbone's last 1x1 conv on them
(:class:`adah.features.cache_format.FeatureCache`); every validation reads those of all the training
and validation rows again.

:class:`HeldMaps` reads the maps of the training and validation rows once (one pass over the cache,
in batches, as the cache gives them: float32, after the cache's head) and holds them in memory;
training steps, validation and G's probe numbers then read them from there, and each step runs only
G, pooling, D and the text branch. The model, its parameters, the optimiser steps and the random
draws are the same as over the cache, and so are the maps (the same cache reads, in other batches),
so the codes equal those of the path over the maps up to float rounding
(``tests/test_paper_g_speed.py`` compares them).

It applies whenever the pooled fast path does not but the maps are fixed
(:func:`adah.training.precomputed.fixed_maps_reason`: cached maps, frozen backbone, no augmentation,
not a data-parallel run, not switched off by ``ADAH_FAST_PATH=0``), and the maps of the training and
validation rows fit in :data:`adah.training.precomputed.MEMORY_BUDGET` as float32 (float16 would
round the maps the slow path sees in float32). Which path a run took, and why, is printed and
written to ``training_path.json`` (``"held_maps"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from adah.errors import AdahError
from adah.training.diagnostics import probe_diagnostics
from adah.training.precomputed import BATCH, MEMORY_BUDGET, HeldTable, fixed_maps_reason
from adah.utils.progress import progress_bar
from adah.utils.runtime import keep_freed_memory

if TYPE_CHECKING:  # pragma: no cover
    from adah.training.trainer import Trainer

PATH = "held_maps"  # the path's name in training_path.json


def held_maps_reason(trainer: Trainer) -> str | None:
    """Why the trainer cannot hold the maps of its training and validation rows (None: it can)."""
    reason = fixed_maps_reason(trainer)
    if reason is not None:
        return reason
    n = len(np.union1d(trainer.split.train, trainer.split.val))
    need = n * math.prod(trainer.data.images.shape[1:]) * 4
    if need > MEMORY_BUDGET:
        return (f"the maps of the {n} training and validation rows would take {need / 2**30:.1f} GiB as float32 "
                f"(more than {MEMORY_BUDGET / 2**30:.0f} GiB)")
    return None


class HeldMaps(HeldTable):
    """The held-maps path of one trainer: the maps of its training and validation rows (read on
    first use), the dataset view over them (:attr:`data`) and the model that runs on them
    (:attr:`net`: the trainer's model itself)."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        self.net = trainer.model

    def _compute(self) -> np.ndarray:
        """One pass over the cache: the maps of every held row, float32 as the cache gives them, in
        batches of :data:`BATCH` rows (the last one filled up with rows before it). A compact cache
        runs its 1x1 conv on each read; on the CPU that gives the same bits for a row in any batch of
        16 rows or more but not in smaller ones (measured on fashion_products448: up to 1e-5 apart), so
        the held maps are exactly what training batches of 16 rows or more read over the cache."""
        keep_freed_memory()  # G's steps allocate and free maps-sized tensors: no page faults per batch
        t = self.trainer
        images = t.data.images
        table = np.empty((len(self.rows), *images.shape[1:]), dtype=np.float32)
        bar = progress_bar(total=len(self.rows), unit="item", desc="backbone maps (once)",
                           disable=not t.config.train.progress or not t.dist.is_main, leave=False)
        n = len(self.rows)
        try:
            for lo in range(0, n, BATCH):
                start = max(0, min(lo, n - BATCH))  # the last batch too is a full one: see this docstring
                block = np.asarray(images[self.rows[start : lo + BATCH]], dtype=np.float32)[lo - start :]
                if not np.isfinite(block).all():
                    raise AdahError(f"rows {self.rows[lo]}..: the cached maps are not finite")
                table[lo : lo + len(block)] = block
                bar.update(len(block))
        finally:
            bar.close()
        return table

    def probe_diagnostics(self, compute: Callable[[], dict]) -> dict:
        """G's probe numbers, as ``compute`` gives them over the cache, from the held maps (the
        probe rows are validation or training rows)."""
        t = self.trainer
        return probe_diagnostics(t.model, t.config, self.data, t.probe_rows, t.device, t.probe_masks)


def plan(trainer: Trainer) -> HeldMaps | None:
    """Called when the pooled fast path does not apply (``trainer.training_path`` says why): the
    held-maps path, or None with the reason it does not apply either; updates
    ``trainer.training_path`` (printed with ``train.progress``, written to ``training_path.json``)."""
    pooled_off = trainer.training_path["reason"]
    reason = held_maps_reason(trainer)
    if reason is None:
        trainer.training_path = {"path": PATH, "reason": f"{pooled_off}; G, pooling and D run each step on the "
                                 "backbone's maps of the training and validation rows, held in memory (read once)"}
        return HeldMaps(trainer)
    if reason != pooled_off:
        trainer.training_path = {"path": "maps", "reason": f"{pooled_off}; maps not held: {reason}"}
    return None
