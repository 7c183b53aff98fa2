"""Per-epoch diagnostics of training: G's state on fixed probe rows (mask density, the normalised
entropy of its soft attention, the share of mask positions that changed since the last epoch end)
and the one-line summary of an epoch that the trainer prints. The trainer calls them
(:meth:`adah.training.trainer.Trainer.probe_diagnostics`); they write nothing."""

from __future__ import annotations

import numpy as np
import torch

from adah.config import Config
from adah.data.base import CrossModalData, Split
from adah.models import ADAH
from adah.models.gates import GATES
from adah.training.losses import ADV_TERMS
from adah.utils.runtime import batch_tensors

PROBE_ROWS = 512
PROBE_BATCH = 32


def probe_rows(split: Split) -> np.ndarray:
    """Rows whose masks the diagnostics follow: the validation rows, else the first training rows."""
    rows = split.val if len(split.val) else split.train
    return np.asarray(rows[:PROBE_ROWS])


def normalised_entropy(probs: torch.Tensor, gate: str) -> float:
    """Mean over items of the entropy of G's soft attention, divided by its maximum (the gate's
    own measure, :data:`adah.models.gates.GATES`): for the softmax, H(p) / log N; for
    per-position sigmoid gates, the mean binary entropy / log 2."""
    return GATES.get(gate).entropy(probs)


@torch.no_grad()
def probe_attention(model: ADAH, config: Config, data: CrossModalData, rows: np.ndarray,
                    device: torch.device) -> dict[str, tuple[np.ndarray, torch.Tensor]]:
    """G's hard mask (bool, one row per item) and soft attention p on ``rows`` for each attended
    modality (``image``, ``text``), in batches of :data:`PROBE_BATCH`; the model is put in eval mode."""
    model.eval()
    masks: dict[str, list] = {}
    probs: dict[str, list] = {}
    for start in range(0, len(rows), PROBE_BATCH):
        images, texts, _ = batch_tensors(data, rows[start : start + PROBE_BATCH], device)
        outs = {}
        if config.model.image_attention and images is not None:
            outs["image"] = model.image.attend(images)
        if config.model.text_attention:
            outs["text"] = model.text.attend(texts)
        for name, att in outs.items():
            masks.setdefault(name, []).append(att.mask.flatten(1).float().cpu())
            probs.setdefault(name, []).append(att.probs.flatten(1).float().cpu())
    return {name: (torch.cat(masks[name]).numpy() > 0.5, torch.cat(probs[name])) for name in masks}


def probe_diagnostics(model: ADAH, config: Config, data: CrossModalData, rows: np.ndarray, device: torch.device,
                      previous: dict[str, np.ndarray]) -> dict[str, float]:
    """G's state on the fixed probe ``rows`` with the hard mask: for each attended modality the
    mask density, the normalised entropy of p (1: uniform, 0: one position) and the share of mask
    positions that changed since ``previous`` (the masks at the last epoch end), which is updated
    in place with this epoch's masks. Empty without attention or probe rows."""
    if config.model.attention == "none" or len(rows) == 0:
        return {}
    out = {}
    for name, (mask, p) in probe_attention(model, config, data, rows, device).items():
        out[f"diag_density_{name}"] = float(mask.mean())
        out[f"diag_entropy_{name}"] = normalised_entropy(p, config.attention.gate)
        prev = previous.get(name)
        if prev is not None and prev.shape == mask.shape:
            out[f"diag_changed_{name}"] = float((prev != mask).mean())
        previous[name] = mask
    return out


def format_record(r: dict, metric: str = "MAP", attended: str = "IT") -> str:
    """One epoch's line: ``metric`` names the validation score that selects best.pt; the mask
    density is shown for the ``attended`` branches (I, T) only."""
    parts = [f"epoch {r['epoch']:3d}", f"objective {r.get('objective', float('nan')):.4f}"]
    for k in ADV_TERMS:
        if k in r:
            parts.append(f"{k} {r[k]:.4f}")
    masks = {"I": r.get("mask_image", 1), "T": r.get("mask_text", 1)}
    if attended:
        parts.append(f"mask {'/'.join(attended)} " + "/".join(f"{masks[b]:.2f}" for b in attended))
    if "g_gain" in r:
        parts.append(f"G gain {r['g_gain']:+.4f}")
    if "val_map" in r:
        dirs = [d for d in ("i2t", "t2i", "t2t") if f"val_map_{d}" in r]
        parts.append(f"val {metric} (selects best.pt) " + " ".join(f"{d.replace('2', '->').upper()} {r[f'val_map_{d}']:.4f}" for d in dirs))
    parts.append(f"{r['seconds']:.1f}s")
    return " | ".join(parts)
