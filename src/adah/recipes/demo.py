"""The built-in demo: generate scenes, train ADAH and the ``none`` variant briefly, evaluate both
on the query/retrieval split, and draw PR curves and attention masks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from adah.config import Config
from adah.data.registry import make_split
from adah.data.scenes import ScenesConfig, make_scenes_with_masks
from adah.evaluation.retrieval import Codes, RetrievalReport, encode, evaluate_codes, format_map_table
from adah.utils.fileio import atomic_write_text
from adah.evaluation.plots import plot_attention_grid, plot_pr_curves
from adah.training.trainer import train

# table row -> (model.attention, preset): adah's default G (None: the branches scenes_demo names),
# the ablation baseline, the paper's G
VARIANTS = {"ADAH (adah default)": (None, None), "none (no attention)": ("none", None),
            "ADAH (paper preset)": ("both", "paper")}
FOLDERS = {"ADAH (adah default)": "adah", "none (no attention)": "none", "ADAH (paper preset)": "both-paper"}
DIRECTIONS = ("i2t", "t2i", "i2i", "t2t")


@dataclass
class DemoResult:
    reports: dict[str, RetrievalReport]
    table: str
    pr_curve_png: Path
    attention_png: Path | None  # None when adah's default G has no image attention (nothing to draw)
    results_json: Path
    attention_on_objects: dict[str, dict[str, float]]  # per ADAH row


def random_codes_report(query_labels: np.ndarray, db_labels: np.ndarray, bits: int, seed: int) -> RetrievalReport:
    """MAP of random +-1 codes on the same split: the chance level the trained models must beat."""
    rng = np.random.default_rng(seed)
    draw = lambda n: rng.choice(np.array([-1, 1], np.int8), size=(n, bits))  # noqa: E731
    q = Codes(draw(len(query_labels)), draw(len(query_labels)), query_labels)
    db = Codes(draw(len(db_labels)), draw(len(db_labels)), db_labels)
    return evaluate_codes(q, db, directions=DIRECTIONS)


def attention_on_objects(masks: np.ndarray, object_masks: np.ndarray) -> dict[str, float]:
    """How much of the attended area lies on category objects, against the whole image's share.

    masks (n, 1, h, w): binary Z, or soft masks and weights (a cell counts as attended above 0.5);
    object_masks (n, H, W) bool. Returns ``attended_object_fraction`` (object pixels / attended
    pixels), ``weight_on_objects`` (the share of the mask's total weight that lies on object
    pixels: equal to the former for a binary Z, the telling number for ``attention.mask='weight'``),
    ``image_object_fraction`` and ``object_recall`` (share of object pixels inside attended cells)."""
    n, h, w = len(masks), masks.shape[-2], masks.shape[-1]
    H, W = object_masks.shape[-2:]
    weights = np.kron(masks.reshape(n, h, w), np.ones((1, H // h, W // w)))[:, :H, :W]
    up = weights > 0.5
    obj = object_masks.astype(bool)
    return {
        "attended_object_fraction": float((up & obj).sum() / max(up.sum(), 1)),
        "weight_on_objects": float((weights * obj).sum() / max(weights.sum(), 1e-12)),
        "image_object_fraction": float(obj.mean()),
        "object_recall": float((up & obj).sum() / max(obj.sum(), 1)),
        "attended_area": float(up.mean()),
    }


def object_diagnostics(data, object_masks: np.ndarray, rows: np.ndarray):
    """A per-epoch diagnostic for scenes: share of object pixels inside attended cells, and share
    of the attended area on objects, on ``rows``."""
    rows = np.asarray(rows[:256])

    def diag(model) -> dict:
        if model.image is None or not model.cfg.image_attention or not model.image.spatial_mask:
            return {}
        model.eval()
        with torch.no_grad():
            param = next(model.parameters())
            att = model.image.attend(torch.from_numpy(data.images[rows]).to(param.device))
        f = attention_on_objects(att.mask.float().cpu().numpy(), object_masks[rows])
        return {"diag_object_recall": f["object_recall"], "diag_attended_on_objects": f["attended_object_fraction"],
                "diag_weight_on_objects": f["weight_on_objects"]}

    return diag


def run_demo(out_dir: str | Path = "runs/demo", *, epochs: int | None = None, seed: int = 0,
             num_items: int | None = None, progress: bool = True) -> DemoResult:
    out = Path(out_dir)
    cfg = Config.load("scenes_demo").override({"train.epochs": epochs, "train.seed": seed, "data.seed": seed,
                                               "data.num_items": num_items, "train.progress": progress})
    if num_items is not None:  # keep the protocol's proportions for a smaller demo
        cfg = cfg.override({"data.num_query": max(num_items // 10, 2), "data.num_train": int(num_items * 2 / 3)})
    t0 = time.perf_counter()
    data, object_masks = make_scenes_with_masks(ScenesConfig(num_items=cfg.data.num_items, seed=cfg.data.seed))
    split = make_split(cfg.data, len(data))
    print(f"scenes: {len(data)} items, {data.text_dim} tags, {data.num_labels} categories "
          f"({time.perf_counter() - t0:.1f}s); split: {len(split.query)} queries, {len(split.retrieval)} "
          f"retrieval, {len(split.train)} train, {len(split.val)} val")
    reports: dict[str, RetrievalReport] = {}
    models = {}
    for name, (variant, preset) in VARIANTS.items():
        print(f"training {name}: {cfg.train.epochs} epochs, {cfg.model.bits} bits")
        run_cfg = (cfg.with_preset(preset) if preset else cfg).override({"model.attention": variant})
        result = train(run_cfg, data, split, out / FOLDERS[name],
                       diagnostics=(object_diagnostics(data, object_masks, split.val),))
        models[name] = result.model
        q = encode(result.model, data, split.query)
        db = encode(result.model, data, split.retrieval)
        reports[name] = evaluate_codes(q, db, directions=DIRECTIONS, topk=500, pr_curves=True)
    reports["random codes"] = random_codes_report(data.labels[split.query], data.labels[split.retrieval],
                                                  cfg.model.bits, seed)
    table = format_map_table(reports, DIRECTIONS)

    pr_png = plot_pr_curves({k: r.pr for k, r in reports.items() if r.pr}, out / "pr_curves.png",
                            title=f"scenes, {cfg.model.bits} bits")
    shown = split.query[:6]
    captions = [", ".join(n for n, on in zip(data.label_names, data.labels[i]) if on) for i in shown]
    focus, pngs = {}, {}
    for name, png in (("ADAH (adah default)", "attention.png"), ("ADAH (paper preset)", "attention_paper.png")):
        adah = models[name]
        if not adah.cfg.image_attention or not adah.image.spatial_mask:  # e.g. G on the text branch alone
            continue
        with torch.no_grad():
            att = adah.image.attend(torch.from_numpy(data.images[shown]))
            all_att = adah.image.attend(torch.from_numpy(data.images[split.query]))
        pngs[name] = plot_attention_grid(data.images[shown], att.mask.numpy(), att.probs.numpy(), out / png,
                                         captions=captions, object_masks=object_masks[shown])
        focus[name] = attention_on_objects(all_att.mask.numpy(), object_masks[split.query])

    results_path = out / "results.json"
    atomic_write_text(results_path, json.dumps({
        "config": cfg.to_dict(), "split_sha256": split.digest(), "data_fingerprint": data.fingerprint(),
        "results": {k: r.to_dict() for k, r in reports.items()}, "attention_on_objects": focus,
    }, indent=2))
    return DemoResult(reports, table, pr_png, pngs.get("ADAH (adah default)"), results_path, focus)
