"""The fast path of training on cached maps: what D sees, computed once per item.

With cached backbone maps (``data.options.features``) the backbone is frozen; when G takes no
step either (``train.steps_max = 0``, adah's shipped photo G, or ``none``), everything before D is
a fixed function of the item: the pooled attended part (for the salient-erasing G the rescaled mean
of the salient cells) and the pooled unattended part (the rescaled mean of the salient cells G's
fixed scores leave out). :class:`Precomputed` computes both once per training and validation item
(one pass over the cache, in batches, in eval mode) and training steps then run D (fc6, fc7, the
hash layer) on those vectors, the text branch as before. Same model, same parameters, same
optimiser steps, same random draws (dropout in D is applied to the same tensors in the same
order), so the codes equal those of the path over the maps up to float rounding
(``tests/test_photo_speed.py`` compares them).

The deep baselines (``train.method``: :mod:`adah.methods`) take the same path: they train without
attention, so the pooled attended part is the pooled map, and they run the branches through
:attr:`adah.training.trainer.Trainer.branches`, which is :class:`PooledModel` here (its hash layer
is the model's, so their layer taps see the same values). A method that reads the images' own
features (DJSRH: the maps averaged over their cells, :meth:`adah.models.adah.ADAH.image_features`)
gets them from an extra block of the table (``tests/test_methods_fast_path.py`` compares both paths).

:func:`fast_path_reason` says why the fast path does not apply (None when it does); the trainer
then tries :mod:`adah.training.held_maps` (G, pooling and D over the maps held in memory: what
G steps need) before its path over the maps. It is off when anything before D can change from step to step
or epoch to epoch: a trainable backbone or G, G steps, Gumbel noise or soft-mask epochs on the
image mask, the data not being cached maps, a data-parallel run, bf16 autocast, or pooled vectors
that would not fit in :data:`MEMORY_BUDGET`. ``ADAH_FAST_PATH=0`` in the environment switches it off.
The path taken is printed (with ``train.progress``) and written to ``training_path.json`` in the
run folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import nn

from adah.errors import AdahError
from adah.models.adah import BranchOutput
from adah.utils.progress import progress_bar
from adah.utils.runtime import amp_policy, batch_tensors

if TYPE_CHECKING:  # pragma: no cover
    from adah.training.trainer import Trainer

ENV_SWITCH = "ADAH_FAST_PATH"  # "0", "off" or "false": always train over the maps
MEMORY_BUDGET = 8 << 30  # bytes of pooled vectors (float32) the fast path may hold in memory
BATCH = 32  # items per batch of the one pass over the cache


def fixed_maps_reason(trainer: Trainer) -> str | None:
    """Why the backbone's maps of an item are not a fixed array the trainer may hold (None: they
    are): what both fast paths need, this one and :mod:`adah.training.held_maps`."""
    cfg, model, data = trainer.config, trainer.model, trainer.data
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return f"switched off by {ENV_SWITCH}={os.environ[ENV_SWITCH]}"
    if model.image is None or data.images is None:
        return "no image branch"
    if getattr(data.images, "fit_model_config", None) is None:
        return "the images are not cached backbone maps (data.options.features)"
    if not cfg.model.freeze_backbone:
        return "the backbone is trained (model.freeze_backbone=false)"
    if (cfg.data.options or {}).get("augment"):
        return "the images are augmented (data.options.augment)"
    if trainer.dist.enabled:
        return "a data-parallel run (torchrun)"
    return None


def fast_path_reason(trainer: Trainer) -> str | None:
    """Why training cannot run D on precomputed pooled vectors (None: it can)."""
    cfg, model = trainer.config, trainer.model
    reason = fixed_maps_reason(trainer)
    if reason is not None:
        return reason
    if trainer.use_max_steps:
        return "G takes steps (train.steps_max > 0): its mask changes during training"
    if cfg.model.image_attention and cfg.attention.noise > 0:
        return "G's image mask is drawn afresh each step (attention.noise > 0)"
    if cfg.model.image_attention and cfg.attention.soft_epochs > 0:
        return "G's image mask is soft in the first epochs (attention.soft_epochs > 0)"
    if amp_policy(trainer.device, cfg.train.amp).autocast:
        return "bf16 autocast (train.amp on a GPU)"
    trained = {id(p) for p in trainer.min_params}
    img = model.image
    fixed = [*img.backbone.features.parameters(), *img.attention.parameters(), *img.backbone.pool.parameters()]
    if any(id(p) in trained or p.requires_grad and trainer.opt_max is not None for p in fixed):
        return "a part before D is trained"
    n = len(np.union1d(trainer.split.train, trainer.split.val))
    need = n * (2 * math.prod(pooled_shape(trainer)) + 1 + feature_columns(trainer)) * 4
    if need > MEMORY_BUDGET:
        return f"the pooled vectors would take {need / 2**30:.1f} GiB (more than {MEMORY_BUDGET / 2**30:.0f} GiB)"
    return None


def pooled_shape(trainer: Trainer) -> tuple[int, ...]:
    """The shape of one pooled part of one item: what ``backbone.pool`` gives for one map (G's
    parts are pooled maps with ``model.mask_position='after_pool'``, and pooled after G otherwise)."""
    _, c, h, w = trainer.data.images.shape
    with torch.no_grad():
        return tuple(trainer.model.image.backbone.pool(torch.zeros(1, c, h, w)).shape[1:])


def feature_columns(trainer: Trainer) -> int:
    """Columns of the images' own features the table keeps (the maps' channels) when the
    trainer's method reads them (``Method.uses_image_features``); 0 otherwise."""
    return int(trainer.data.images.shape[1]) if getattr(trainer.method, "uses_image_features", False) else 0


class HeldRows:
    """Rows of a table held in memory, by dataset row: ``rows[idx]`` -> (k, *table.shape[1:]).
    Here the pooled table, (k, 2 * D + 1 + F) float32: [pooled attended | pooled unattended | mask
    density | own features (F columns, maybe none)]; :mod:`adah.training.held_maps` holds the maps
    themselves. AdahError for a row not held."""

    def __init__(self, table: np.ndarray, rows: np.ndarray, num_items: int) -> None:
        self.table = table
        self.where = np.full(num_items, -1, dtype=np.int64)
        self.where[rows] = np.arange(len(rows))
        self.shape = (num_items, *table.shape[1:])
        self.ndim, self.dtype = table.ndim, table.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        pos = self.where[np.asarray(idx)]
        if (pos < 0).any():
            raise AdahError("the fast path was asked for rows it did not precompute (only training and validation "
                            f"rows are): {np.asarray(idx)[pos < 0][:5].tolist()}")
        return self.table[pos]


class HeldData(NamedTuple):
    """What batching and encoding read of a dataset (``images``, ``texts``, ``labels``), with the
    rows held in memory as its images."""

    images: HeldRows
    texts: np.ndarray
    labels: np.ndarray


class PooledModel(nn.Module):
    """The model's trainable parts over precomputed rows: ``forward(rows, texts)`` gives the same
    (image, text) BranchOutputs as ``model(maps, texts)`` (the image mask as each item's mask
    density), ``image(rows)`` the same as ``model.image(maps)``, ``image_features(rows)`` the same
    as ``model.image_features(maps)`` (when the table keeps them); ``encode_image`` / ``encode_text``
    as the model's, for :func:`adah.evaluation.retrieval.encode`."""

    def __init__(self, model: nn.Module, pooled_shape: tuple[int, ...], feature_columns: int = 0) -> None:
        super().__init__()
        self.model, self.pooled_shape = model, tuple(pooled_shape)
        self.feature_columns = feature_columns
        self.cfg = model.cfg
        self.has_image_branch = True

    def image(self, rows: torch.Tensor) -> BranchOutput:
        d, b = math.prod(self.pooled_shape), rows.shape[0]
        hash_ = self.model.image.hash
        codes = hash_(rows[:, :d].reshape(b, *self.pooled_shape))
        codes_hat = hash_(rows[:, d : 2 * d].reshape(b, *self.pooled_shape))
        density = rows[:, 2 * d : 2 * d + 1]
        return BranchOutput(codes, codes_hat, density, density)

    def image_features(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.feature_columns:
            raise AdahError("the fast path's table holds no image features: the training method does not declare "
                            "uses_image_features")
        return rows[:, 2 * math.prod(self.pooled_shape) + 1 :]

    def forward(self, rows: torch.Tensor, texts: torch.Tensor) -> tuple[BranchOutput, BranchOutput]:
        return self.image(rows), self.model.text(texts)  # image first: dropout draws in the same order

    def encode_image(self, rows: torch.Tensor) -> torch.Tensor:
        return self.image(rows).codes

    def encode_text(self, texts: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(texts)


class HeldTable:
    """A table of one trainer's training and validation rows held in memory, made on first use by
    the subclass's ``_compute()`` (one pass over the cache), and the dataset view over it
    (:attr:`data`): the base of both fast paths (this module's and :mod:`adah.training.held_maps`)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.rows = np.union1d(trainer.split.train, trainer.split.val).astype(np.int64)
        self._data: HeldData | None = None

    @property
    def data(self) -> HeldData:
        """The dataset's texts and labels with the held rows as images (computed on first use)."""
        if self._data is None:
            t = self.trainer
            self._data = HeldData(HeldRows(self._compute(), self.rows, len(t.data)), t.data.texts, t.data.labels)
        return self._data

    def _compute(self) -> np.ndarray:  # pragma: no cover - every subclass has its own
        raise NotImplementedError


class Precomputed(HeldTable):
    """The fast path of one trainer: the pooled parts of its training and validation rows
    (computed on first use), the dataset view over them (:attr:`data`) and the model over them
    (:attr:`net`)."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer)
        self.pooled_shape = pooled_shape(trainer)
        self.feature_columns = feature_columns(trainer)
        self.net = PooledModel(trainer.model, self.pooled_shape, self.feature_columns)
        self._probes: dict | None = None

    @torch.no_grad()
    def _compute(self) -> np.ndarray:
        """One pass over the cache: [pooled attended | pooled unattended | mask density | own features] per row."""
        from adah.utils.runtime import keep_freed_memory

        keep_freed_memory()  # a compact cache's last block runs on every read: no page faults per batch
        t = self.trainer
        img = t.model.image
        was_training = img.training
        img.eval()  # G's gate without noise, BatchNorm of the frozen backbone as always
        d = math.prod(self.pooled_shape)
        table = np.empty((len(self.rows), 2 * d + 1 + self.feature_columns), dtype=np.float32)
        bar = progress_bar(total=len(self.rows), unit="item", desc="pooled parts (once)",
                           disable=not t.config.train.progress or not t.dist.is_main, leave=False)
        try:
            for lo in range(0, len(self.rows), BATCH):
                maps, _, _ = batch_tensors(t.data, self.rows[lo : lo + BATCH], t.device)
                att = img.attend(maps)
                parts = (att.attended, att.unattended)
                if not img.mask_after_pool:
                    parts = tuple(img.backbone.pool(p) for p in parts)
                b = maps.shape[0]
                density = att.mask.detach().float().reshape(b, -1).mean(1, keepdim=True)
                own = [t.model.image_features(maps)] if self.feature_columns else []
                block = torch.cat([parts[0].reshape(b, -1), parts[1].reshape(b, -1), density, *own], 1).float()
                if not torch.isfinite(block).all():
                    raise AdahError(f"rows {self.rows[lo]}..: the pooled parts of the cached maps are not finite")
                table[lo : lo + b] = block.cpu().numpy()
                bar.update(b)
        finally:
            bar.close()
            img.train(was_training)
        return table

    def probe_diagnostics(self, compute: Callable[[], dict]) -> dict:
        """G's probe numbers: with the image mask fixed and no text mask they are the same every
        epoch (the share changed 0 after the first), so ``compute`` (over the maps) runs once."""
        if self.trainer.config.model.text_attention:
            return compute()
        if self._probes is None:
            self._probes = compute()
            return dict(self._probes)
        again = dict(self._probes)
        again.update({f"diag_changed_{name}": 0.0 for name in self.trainer.probe_masks})
        return again


def plan(trainer: Trainer) -> Precomputed | None:
    """The trainer's fast path, or None (with the reason) when it does not apply; says which path
    is taken (printed with ``train.progress``, and ``training_path.json`` in the run folder)."""
    reason = fast_path_reason(trainer)
    trainer.training_path = ({"path": "precomputed", "reason": "frozen backbone and fixed G over cached maps: "
                              "D trains on pooled parts computed once per item"} if reason is None
                             else {"path": "maps", "reason": reason})
    return Precomputed(trainer) if reason is None else None
