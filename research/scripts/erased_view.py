"""How much of the evidence an erasing G's erased view keeps: validation T->I MAP of the erased
image codes H_hat = D((1 - Z) f) against that of the full codes H = D(f), for the finished runs
of an image-erasing variant in ``adah study`` folders.

    python research/scripts/erased_view.py runs/study-fashion_products runs/study-coco_mini \\
        [--variant erase_fixed_g_image]
    python research/scripts/erased_view.py --pooled-cosine runs/features/fashion_products runs/features/coco_mini
    python research/scripts/erased_view.py --pooled-cosine --salient runs/features/fashion_products448

The second form needs no model: for cached conv maps it prints the cosine between an item's
average-pooled maps and the average of a random half of its cells, next to the cosine between
different items' pools (what an erased view changes, against what tells items apart).

Text queries are the validation rows, the database the training rows (as in model selection);
the test queries are not touched. A ratio near 1 says the half of the cells left still shows
what the caption names (one object filling a product photo); a low one says erasing removed it
(several small objects in a scene), and the adversarial terms then ask E,D to rank a view
without the evidence next to its caption. (README, "Round 4".)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from adah.training.checkpoint import load_model
from adah.data.base import Split
from adah.features.dataset import load_dataset
from adah.errors import AdahError
from adah.evaluation.metrics import mean_average_precision
from adah.models.hashing import binarize
from adah.utils.runtime import batch_tensors


@torch.no_grad()
def _image_codes(model, data, rows: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    full, erased = [], []
    for start in range(0, len(rows), batch_size):
        images, _, _ = batch_tensors(data, rows[start : start + batch_size])
        out = model.image(images)
        full.append(binarize(out.codes).numpy())
        erased.append(binarize(out.codes_hat).numpy())
    return np.concatenate(full), np.concatenate(erased)


@torch.no_grad()
def _text_codes(model, data, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    parts = []
    for start in range(0, len(rows), batch_size):
        _, texts, _ = batch_tensors(data, rows[start : start + batch_size])
        parts.append(binarize(model.encode_text(texts)).numpy())
    return np.concatenate(parts)


def erased_view_map(run_dir: Path) -> tuple[float, float]:
    """(T->I MAP with the full image codes, with the erased ones) of ``run_dir``'s best.pt."""
    model, config, _ = load_model(run_dir / "best.pt")
    if model.image is None or not config.model.image_attention:
        raise AdahError(f"{run_dir}: not a model with image attention")
    data = load_dataset(config.data)
    split = Split.load(run_dir / "split.json", num_items=len(data))
    queries = _text_codes(model, data, split.val)
    full, erased = _image_codes(model, data, split.train)
    ql, dl = np.asarray(data.labels[split.val]), np.asarray(data.labels[split.train])
    return (float(mean_average_precision(queries, full, ql, dl)),
            float(mean_average_precision(queries, erased, ql, dl)))


def pooled_cosine(maps: np.ndarray, *, items: int = 300, keep: float = 0.5, seed: int = 0,
                  salient: bool = False) -> dict[str, float]:
    """``maps`` (N, C, h, w): mean and min over ``items`` random items of cos(average pool of all
    cells, average of a random ``keep`` share of them), and the mean and 90th percentile of the
    cosine between different items' average pools. ``salient``: an item's cells are only its
    salient ones (mean activation over the channels at least its mean over the map, SCDA's rule:
    what ``attention.image_region = "salient"`` splits), for the pools and the random share."""
    if maps.ndim != 4 or maps.shape[2] * maps.shape[3] < 2:
        raise AdahError(f"pooled_cosine needs (N, C, h, w) maps with at least 2 cells, got {maps.shape}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(maps), size=min(items, len(maps)), replace=False))
    x = np.asarray(maps[rows], dtype=np.float64).reshape(len(rows), maps.shape[1], -1)
    full, part = [], []
    for item in x:
        if salient:
            act = item.mean(axis=0)
            item = item[:, act >= act.mean()]
        cells = item.shape[1]
        full.append(item.mean(axis=1))
        part.append(item[:, rng.choice(cells, max(1, int(keep * cells)), replace=False)].mean(axis=1))
    full, part = np.stack(full), np.stack(part)
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    same = np.sum(unit(full) * unit(part), axis=1)
    between = (unit(full) @ unit(full).T)[~np.eye(len(rows), dtype=bool)]
    return {"same_mean": float(same.mean()), "same_min": float(same.min()),
            "between_mean": float(between.mean()), "between_p90": float(np.quantile(between, 0.9))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="adah study folders, or with --pooled-cosine feature caches")
    ap.add_argument("--variant", default="erase_fixed_g_image")
    ap.add_argument("--pooled-cosine", action="store_true", help="the folders are feature caches (maps.npy)")
    ap.add_argument("--salient", action="store_true", help="with --pooled-cosine: pool each item's salient cells only")
    args = ap.parse_args()
    if args.pooled_cosine:
        print("| feature cache | cos(pool of all cells, pool of a random half): mean / min "
              "| cos between items' pools: mean / 90th percentile |\n|---|---|---|")
        for folder in args.studies:
            if not (folder / "maps.npy").is_file():
                sys.exit(f"{folder / 'maps.npy'}: not found (run `adah features extract` first)")
            c = pooled_cosine(np.load(folder / "maps.npy", mmap_mode="r"), salient=args.salient)
            print(f"| {folder.name}{' (salient cells)' if args.salient else ''} | {c['same_mean']:.3f} / {c['same_min']:.3f} "
                  f"| {c['between_mean']:.3f} / {c['between_p90']:.3f} |")
        return
    print(f"| study | runs | T->I MAP, full view | T->I MAP, erased view | erased / full |\n|---|---|---|---|---|")
    for study in args.studies:
        runs = sorted(p.parent for p in (study / args.variant).glob("bits*-seed*/best.pt"))
        if not runs:
            sys.exit(f"{study / args.variant}: no finished runs (best.pt) of {args.variant}")
        pairs = [erased_view_map(r) for r in runs]
        full, erased = [p[0] for p in pairs], [p[1] for p in pairs]
        ratio = statistics.mean(e / f for f, e in pairs)
        print(f"| {study.name} | {len(runs)} | {statistics.mean(full):.4f} | {statistics.mean(erased):.4f} "
              f"| {ratio:.2f} |")


if __name__ == "__main__":
    main()
