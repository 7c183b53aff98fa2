"""The attention study: variants of G x seeds x code lengths on one saved split.

Every variant trains on the split's training rows and picks its epoch by validation MAP (mean of
I->T and T->I, validation queries against the training rows); the test queries are only scored,
never used to choose anything. The variant adah *recommends* is the one with the best mean
validation MAP, chosen the same way. Writes ``OUT/study.md`` (test MAP mean +- std for I->T,
T->I and their mean, next to ``none``, with the validation MAP that selects), ``study.json``
(every run), ``study.png`` (validation MAP and mask density per epoch of each variant), and each
run's folder with its ``metrics.jsonl`` and ``training.png``.

Runs are independent and resumable: a run whose ``result.json`` exists is read, not retrained,
so an interrupted study continues where it stopped; the table and JSON also keep the finished
runs in ``OUT`` of variants not named this time (at the seeds and code lengths asked for), so a
study continued with a subset of its variants does not drop the rest. ``jobs > 1`` trains runs
in parallel processes (for a many-core machine or a GPU).
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from adah.config import PRESETS, Config
from adah.data.base import Split
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.recipes.demo import object_diagnostics
from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text

_PAPER = PRESETS["paper"]
_ADAH = PRESETS["adah"]
_POOL = PRESETS["attention_pool"]

# name -> (overrides on top of the config, what it tests). Every variant but ``none`` and
# ``adah`` starts from the paper's literal G and changes one or two of its open choices.
VARIANTS: dict[str, tuple[dict, str]] = {
    "none": ({"model.attention": "none"}, "no attention, no adversarial term (the ablation baseline)"),
    "paper": (_PAPER, "the paper's G as written: softmax, alpha = 1/N, hard mask, D hashes Z*f"),
    "paper_fixed_g": ({**_PAPER, "train.steps_max": 0},
                      "paper, G never trained: masks fixed at G's random initialisation (adversarial terms as a "
                      "robustness term)"),
    "zero_warmup": ({**_PAPER, "attention.init": "zero", "attention.warmup_epochs": 2},
                    "paper, zero-initialised G (starts from none) and 2 epochs of E,D before G steps"),
    "sigmoid": ({**_PAPER, "attention.gate": "sigmoid"}, "paper with per-position sigmoid gates, alpha = 1/2"),
    "keep50": ({**_PAPER, "attention.keep_fraction": 0.5},
               "paper with a fixed density: the top half of the positions by score"),
    "soft": ({**_PAPER, "attention.soft_epochs": 5}, "paper with a soft mask clamp(p*N, 0, 1) for 5 epochs"),
    "full_objective": ({**_PAPER, "attention.objective": "full"},
                       "paper, G also minimises the attended ranking terms"),
    "residual50": ({**_PAPER, "attention.residual": 0.5}, "paper with attended = f*(0.5 + 0.5 Z)"),
    "erase": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0},
              "D hashes f; G picks the half of the positions whose removal hurts the adversarial terms most "
              "(adversarial erasing)"),
    "erase_fixed_g": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0, "train.steps_max": 0},
                      "erase with G never trained: a random half erased"),
    "erase25": ({**_PAPER, "attention.keep_fraction": 0.25, "attention.residual": 1.0},
                "erase with G choosing a quarter of the positions"),
    "erase75": ({**_PAPER, "attention.keep_fraction": 0.75, "attention.residual": 1.0},
                "erase with G choosing three quarters of the positions"),
    "soft_mask": ({**_PAPER, "attention.mask": "soft"},
                  "paper with a soft mask clamp(p*N, 0, 1) in training and at test time (no straight-through step)"),
    "soft_mask_full": ({**_PAPER, "attention.mask": "soft", "attention.objective": "full"},
                       "soft mask; G also minimises the attended ranking terms"),
    "soft_mask_full_w0": ({**_PAPER, "attention.mask": "soft", "attention.objective": "full",
                           "loss.adversarial_weight": 0.0},
                          "soft mask; G maximises the unattended terms and minimises the attended ones, E,D do not "
                          "train on unattended codes"),
    "soft_zero_full_w0": ({**_PAPER, "attention.mask": "soft", "attention.init": "zero", "attention.objective": "full",
                           "loss.adversarial_weight": 0.0},
                          "soft_mask_full_w0 starting from none: zero-initialised G, so the first codes are none's"),
    "pool_full": ({**_PAPER, "attention.mask": "weight", "attention.init": "zero", "attention.objective": "full"},
                  "attention pooling: D hashes f weighted by w = p*N (mean 1, zero-initialised: starts as none); "
                  "G minimises the attended terms and maximises the adversarial ones on the positions weighted "
                  "below average, E,D minimise both"),
    "pool_full_w0": ({**_PAPER, "attention.mask": "weight", "attention.init": "zero", "attention.objective": "full",
                      "loss.adversarial_weight": 0.0},
                     "pool_full, E,D not trained on the unattended codes"),
    "erase_fixed_g_a50": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0, "train.steps_max": 0,
                           "loss.adversarial_weight": 0.5},
                          "erase_fixed_g with the adversarial terms at half weight"),
    "erase_fixed_g_a25": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0, "train.steps_max": 0,
                           "loss.adversarial_weight": 0.25},
                          "erase_fixed_g with the adversarial terms at a quarter weight"),
    "erase_random": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0, "train.steps_max": 0,
                      "attention.init": "zero", "attention.noise": 1.0},
                     "erase_fixed_g without G: a uniformly random half erased, drawn afresh at every step "
                     "(random erasing; the control for what G's fixed choice adds)"),
    "erase_random_image": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0, "train.steps_max": 0,
                            "attention.init": "zero", "attention.noise": 1.0, "model.attention": "image"},
                           "erase_random on the image branch only (the control for erase_fixed_g_image)"),
    "erase_fixed_g_image_rescaled": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                                      "train.steps_max": 0, "model.attention": "image", "attention.rescale": True},
                                     "erase_fixed_g_image with the erased view rescaled to f's scale (the pooled "
                                     "mean of the kept cells, as inverted dropout)"),
    "erase_random_image_rescaled": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                                     "train.steps_max": 0, "attention.init": "zero", "attention.noise": 1.0,
                                     "model.attention": "image", "attention.rescale": True},
                                    "erase_random_image with the erased view rescaled (the control for "
                                    "erase_fixed_g_image_rescaled)"),
    "erase_quarter_fixed_g_image": ({**_PAPER, "attention.keep_fraction": 0.25, "attention.residual": 1.0,
                                     "train.steps_max": 0, "model.attention": "image"},
                                    "erase_fixed_g_image erasing a quarter of the cells (the top quarter by G's fixed "
                                    "scores) instead of half: a gentler view, for photos whose evidence is small"),
    "erase_nothing_image": ({**_PAPER, "attention.residual": 1.0, "attention.threshold": 1000.0,
                             "train.steps_max": 0, "model.attention": "image"},
                            "the control for erasing as such: the image branch's 'erased' view keeps every cell "
                            "(alpha = 1000/N lies above any p, so Z = 0 and (1 - Z) f = f): T->I_hat is a second "
                            "T->I term, with the same weight, and nothing is erased"),
    "attention_pool_image": ({**_POOL, "model.attention": "image"},
                             "attention_pool on the image branch alone: G's trained weights over the cells replace "
                             "the average pool"),
    "erase_image_rescaled": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                              "model.attention": "image", "attention.rescale": True},
                             "adversarial erasing on the image branch, rescaled: G trained (the paper's game) picks "
                             "the half of the cells whose removal hurts the erased view's ranking most"),
    "erase_fixed_g_rescaled": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                                "train.steps_max": 0, "attention.rescale": True},
                               "erase_fixed_g_image_rescaled on both branches (on the text features, a dropout "
                               "mask fixed per item, rescaled as inverted dropout)"),
    "erase_random_rescaled": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                               "train.steps_max": 0, "attention.init": "zero", "attention.noise": 1.0,
                               "attention.rescale": True},
                              "erase_random_image_rescaled on both branches (on the text features, dropout with "
                              "p = 0.5 for the adversarial terms)"),
    "erase_fixed_g_text": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                            "train.steps_max": 0, "model.attention": "text"},
                           "erase_fixed_g on the text branch only (I->T_hat; the image codes see every position)"),
    # round 6: words as positions (minilm text): the one place in photo data where positions are separable
    "erase_random_text": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0, "train.steps_max": 0,
                           "attention.init": "zero", "attention.noise": 1.0, "model.attention": "text"},
                          "erase_random on the text branch only (a fresh random half of the words, or units, at "
                          "every step: the control for erase_fixed_g_text)"),
    "paper_text": ({**_PAPER, "model.attention": "text"},
                   "the paper's G on the text branch only (over the words with minilm: what adah fit "
                   "--attention text trains)"),
    "erase_fixed_g_image": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                             "train.steps_max": 0, "model.attention": "image"},
                            "erase_fixed_g on the image branch only (T->I_hat)"),
    # round 5: the image mask over the maps' channels (what) instead of their cells (where)
    "erase_fixed_g_image_channels": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                                      "train.steps_max": 0, "model.attention": "image",
                                      "attention.image_positions": "channels"},
                                     "erase_fixed_g_image over the channels: G's fixed random scores erase half of "
                                     "the image map's channels (at every cell) in the adversarial view"),
    "erase_random_image_channels": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                                     "train.steps_max": 0, "attention.init": "zero", "attention.noise": 1.0,
                                     "model.attention": "image", "attention.image_positions": "channels"},
                                    "a random half of the channels, drawn afresh at every step (channel dropout on "
                                    "the adversarial view; the control for erase_fixed_g_image_channels)"),
    "erase_image_channels": ({**_PAPER, "attention.keep_fraction": 0.5, "attention.residual": 1.0,
                              "model.attention": "image", "attention.image_positions": "channels"},
                             "adversarial erasing over the channels: G (the paper's game) picks the half of the "
                             "channels whose removal hurts the erased view's ranking most"),
    "attention_pool_image_channels": ({**_POOL, "model.attention": "image", "attention.image_positions": "channels"},
                                      "attention_pool over the image channels: G's trained weights (mean 1, "
                                      "starting at 1) rescale each channel of the map, a squeeze-and-excitation "
                                      "block trained by G's objective"),
    # round 5: a G that starts from the backbone's own saliency (SCDA): where, without learning
    "saliency_image": ({**_PAPER, "attention.init": "saliency", "attention.temperature": 100.0,
                        "train.steps_max": 0, "model.attention": "image", "attention.rescale": True},
                       "the paper's G on the image branch with its score fixed at each cell's mean activation "
                       "(SCDA): D hashes the mean of the cells above the mean score (the object), the "
                       "adversarial terms train E,D on the rest"),
    "saliency_image_w0": ({**_PAPER, "attention.init": "saliency", "attention.temperature": 100.0,
                           "train.steps_max": 0, "model.attention": "image", "attention.rescale": True,
                           "loss.adversarial_weight": 0.0},
                          "saliency_image without the adversarial terms: SCDA's selective pooling alone"),
    # round 7: the paper's game inside the object: SCDA's salient cells are what D hashes, and the
    # adversarial view erases part of them (saliency_image's complement is the background)
    "salient_erase_fixed_g_image": ({**_PAPER, "attention.image_region": "salient", "attention.keep_fraction": 0.5,
                                     "attention.residual": 1.0, "attention.rescale": True, "train.steps_max": 0,
                                     "model.attention": "image"},
                                    "D hashes the salient cells (SCDA's selective pooling, as saliency_image_w0); the "
                                    "adversarial terms train E,D on the half of them G's fixed random scores leave "
                                    "out (erase_fixed_g_image inside the object)"),
    "salient_erase_image": ({**_PAPER, "attention.image_region": "salient", "attention.keep_fraction": 0.5,
                             "attention.residual": 1.0, "attention.rescale": True, "model.attention": "image"},
                            "salient_erase_fixed_g_image with G trained (the paper's game inside the object): G "
                            "keeps the half of the salient cells whose removal hurts the erased view's ranking most"),
    "salient_erase_nothing_image": ({**_PAPER, "attention.image_region": "salient", "attention.threshold": 1000.0,
                                     "attention.residual": 1.0, "attention.rescale": True, "train.steps_max": 0,
                                     "model.attention": "image"},
                                    "the control for salient_erase_fixed_g_image: the 'erased' view keeps every salient "
                                    "cell (T->I_hat a second T->I term on the salient pooling; nothing erased)"),
    "paper_shared": ({**_PAPER, "train.g_batches": "shared"},
                     "paper, G's steps on E,D's batch: E,D take as many steps as in none"),
    "soft_zero_full_w0_shared": ({**_PAPER, "attention.mask": "soft", "attention.init": "zero",
                                  "attention.objective": "full", "loss.adversarial_weight": 0.0,
                                  "train.g_batches": "shared"},
                                 "soft_zero_full_w0 with G's steps on E,D's batch"),
    "soft_zero_full_a25_shared": ({**_PAPER, "attention.mask": "soft", "attention.init": "zero",
                                   "attention.objective": "full", "loss.adversarial_weight": 0.25,
                                   "train.g_batches": "shared"},
                                  "soft_zero_full_w0_shared with E,D also minimising the adversarial terms at a "
                                  "quarter weight (the paper's full game, damped)"),
    "pool_full_shared": ({**_PAPER, "attention.mask": "weight", "attention.init": "zero",
                          "attention.objective": "full", "train.g_batches": "shared"},
                         "pool_full with G's steps on E,D's batch"),
    "pool_full_w0_shared": ({**_PAPER, "attention.mask": "weight", "attention.init": "zero",
                             "attention.objective": "full", "loss.adversarial_weight": 0.0,
                             "train.g_batches": "shared"},
                            "pool_full_w0 with G's steps on E,D's batch"),
    "adah": (_ADAH, "the adah preset, adah's erasing G: erase_fixed_g (the bundled photo configs used it on the image "
             "branch until round 7: erase_fixed_g_image; now salient_erase_fixed_g_image)"),
    "attention_pool": (_POOL, "the attention_pool preset (= pool_full_w0_shared)"),
    "attention_pool_text": ({**_POOL, "model.attention": "text"},
                            "attention_pool on the text branch alone (where its weights move most; the bundled "
                            "scenes_demo and wiki configs)"),
}
DEFAULT_VARIANTS = ("none", "paper", "paper_fixed_g", "zero_warmup", "sigmoid", "keep50", "residual50", "erase",
                    "erase_fixed_g")
DIRECTIONS = ("i2t", "t2i")


@dataclass
class StudyResult:
    runs: list[dict]
    table_md: Path
    results_json: Path
    png: Path | None
    recommended: str | None


def variant_config(config: Config, variant: str, *, bits: int, seed: int) -> Config:
    """``config`` with the variant's overrides; a variant that names no ``model.attention``
    attends on both branches, whatever the config says, so a variant means the same on every
    config (the bundled photo configs attend on the image branch alone, scenes_demo and wiki on the text
    branch)."""
    if variant not in VARIANTS:
        raise AdahError(f"unknown study variant {variant!r}; known: {', '.join(VARIANTS)}")
    return config.override({"model.attention": "both", **VARIANTS[variant][0], "model.bits": bits,
                            "train.seed": seed, "train.progress": False}).validate()


def exit_with_parent() -> None:
    """In a worker process: ask Linux to send it SIGTERM when its parent dies, so a study killed
    with SIGKILL (or SIGTERM, which skips the pool's shutdown) leaves no worker training on; a
    no-op elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the worker lives on as before
        return
    if os.getppid() == 1:  # the parent died before the call: go now
        os._exit(1)


_DATA_CACHE: dict = {}


def _data(config: Config):
    """The dataset (and, for scenes, the object masks), once per process."""
    key = json.dumps(config.to_dict()["data"], sort_keys=True)
    if key not in _DATA_CACHE:
        masks = None
        if config.data.name == "scenes":
            from adah.data.scenes import ScenesConfig, make_scenes_with_masks

            data, masks = make_scenes_with_masks(ScenesConfig(num_items=config.data.num_items,
                                                              seed=config.data.seed, **config.data.options))
        else:
            data = load_dataset(config.data)
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = (data, masks)
    return _DATA_CACHE[key]


def run_one(config: Config, variant: str, bits: int, seed: int, split_path: str, run_dir: str,
            threads: int = 0) -> dict:
    """Train one (variant, bits, seed) and score it; reads result.json instead if it exists."""
    import torch

    from adah.evaluation.retrieval import encode, evaluate_codes
    from adah.training.trainer import train

    run_dir = Path(run_dir)
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    if threads:
        torch.set_num_threads(threads)
    data, masks = _data(config)
    split = Split.load(split_path, num_items=len(data))
    cfg = variant_config(config, variant, bits=bits, seed=seed)
    diags = (object_diagnostics(data, masks, split.val if len(split.val) else split.train),) if masks is not None else ()
    if run_dir.exists():  # an interrupted run: start it again
        import shutil

        shutil.rmtree(run_dir)
    result = train(cfg, data, split, run_dir, diagnostics=diags)
    device = next(result.model.parameters()).device
    q = encode(result.model, data, split.query, device=device)
    db = encode(result.model, data, split.retrieval, device=device)
    report = evaluate_codes(q, db, directions=DIRECTIONS)
    last = result.history[-1] if result.history else {}
    out = {"variant": variant, "bits": bits, "seed": seed, "best_epoch": result.best_epoch,
           "val_map": result.best_val_map, "test_map": {d: report.map[d] for d in DIRECTIONS},
           "test_map_mean": float(np.mean([report.map[d] for d in DIRECTIONS])),
           "final": {k: v for k, v in last.items() if k.startswith(("diag_", "mask_", "g_gain"))},
           "history": [{k: r[k] for k in r if k.startswith(("val_map", "diag_density", "mask_", "epoch"))}
                       for r in result.history]}
    atomic_write_text(done, json.dumps(out, indent=1))
    return out


def run_study(config: Config, out_dir: str | Path, *, variants: tuple[str, ...] = DEFAULT_VARIANTS,
              seeds: int = 3, bits: tuple[int, ...] = (32,), jobs: int = 1, split_path: str | Path | None = None,
              progress: bool = True, finished_only: bool = False) -> StudyResult:
    """Train every variant x bits x seed on one split; write the table, JSON and picture.
    ``finished_only``: train nothing, report the runs that have finished (a study in progress)."""
    for v in variants:
        if v not in VARIANTS:
            raise AdahError(f"unknown study variant {v!r}; known: {', '.join(VARIANTS)}")
    if "none" not in variants:
        variants = ("none", *variants)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data, _ = _data(config)
    saved = out / "split.json"
    if split_path is not None:
        split = Split.load(split_path, num_items=len(data))
        split.save(saved)
    elif saved.is_file():  # a study continued: the split it started with
        split = Split.load(saved, num_items=len(data))
    else:
        split = make_split(config.data, len(data))
        split.save(saved)
    tasks = [(v, b, s) for b in bits for s in range(seeds) for v in variants]
    if finished_only:
        tasks = [t for t in tasks if (out / t[0] / f"bits{t[1]}-seed{t[2]}" / "result.json").is_file()]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    args = lambda v, b, s: (config, v, b, s, str(saved), str(out / v / f"bits{b}-seed{s}"), threads)  # noqa: E731
    runs = []
    bar = tqdm(total=len(tasks), desc="study runs", disable=not progress)
    if jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent) as pool:
            futures = [pool.submit(run_one, *args(*t)) for t in tasks]
            for fut in as_completed(futures):
                runs.append(fut.result())
                bar.update(1)
    else:
        for t in tasks:
            runs.append(run_one(*args(*t)))
            bar.update(1)
            bar.set_postfix(last=f"{t[0]} {runs[-1]['test_map_mean']:.4f}")
    bar.close()
    kept = _kept_runs(out, variants, bits, seeds)
    variants = (*variants, *dict.fromkeys(r["variant"] for r in kept))
    runs += kept
    order = {v: i for i, v in enumerate(variants)}
    runs.sort(key=lambda r: (r["bits"], order[r["variant"]], r["seed"]))
    recommended = recommend(runs)
    table = format_study_table(runs, config, split, variants, bits, seeds, recommended)
    table_md = out / "study.md"
    atomic_write_text(table_md, table)
    results_json = out / "study.json"
    atomic_write_text(results_json, json.dumps({"config": config.to_dict(), "split_sha256": split.digest(),
                                                "variants": {v: {"overrides": VARIANTS[v][0], "about": VARIANTS[v][1]}
                                                             for v in variants},
                                                "recommended": recommended, "runs": runs}, indent=1))
    png = plot_study(runs, out / "study.png", title=f"{config.data.name}: validation MAP and mask density by epoch")
    return StudyResult(runs, table_md, results_json, png, recommended)


def _kept_runs(out: Path, variants: tuple[str, ...], bits: tuple[int, ...], seeds: int) -> list[dict]:
    """Finished runs in ``out`` of variants not asked for this time, at the code lengths and seeds
    asked for: a study continued with fewer variants keeps the others in its table and JSON
    instead of dropping them (they trained on the same saved split)."""
    kept = []
    for v in VARIANTS:  # the registry's order, so the table's order does not depend on the file system
        if v in variants:
            continue
        for b in bits:
            for s in range(seeds):
                path = out / v / f"bits{b}-seed{s}" / "result.json"
                if path.is_file():
                    kept.append(json.loads(path.read_text()))
    return kept


def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def recommend(runs: list[dict]) -> str | None:
    """The attention variant (not ``none``) with the best mean validation MAP, by the first code
    length studied: chosen on validation rows only."""
    if not runs:
        return None
    bits = runs[0]["bits"]
    by: dict[str, list[float]] = {}
    for r in runs:
        if r["bits"] == bits and r["variant"] != "none" and math.isfinite(r["val_map"]):
            by.setdefault(r["variant"], []).append(r["val_map"])
    return max(by, key=lambda v: np.mean(by[v])) if by else None


def format_study_table(runs, config, split, variants, bits, seeds, recommended) -> str:
    lines = [f"Dataset `{config.data.name}`, split `{split.digest()[:16]}` ({len(split.query)} queries, "
             f"{len(split.retrieval)} retrieval items, {len(split.train)} training and {len(split.val)} validation "
             f"pairs), {seeds} seed(s). Test MAP mean ± std over seeds; each run's epoch chosen by validation MAP; "
             "Δ = mean of I->T and T->I minus `none`'s. `val` = the validation MAP that chooses "
             f"(recommended by it: **{recommended}**).", ""]
    for b in bits:
        lines += [f"**{b} bits**", "", "| variant | I->T | T->I | mean | Δ vs none | val MAP |", "|---|---|---|---|---|---|"]
        per = {v: [r for r in runs if r["variant"] == v and r["bits"] == b] for v in variants}
        base = _stats([r["test_map_mean"] for r in per.get("none", [])])[0] if per.get("none") else float("nan")
        for v in variants:
            rs = per[v]
            if not rs:
                continue
            cells = []
            for key in ("i2t", "t2i"):
                m, s = _stats([r["test_map"][key] for r in rs])
                cells.append(f"{m:.4f} ± {s:.4f}")
            m, s = _stats([r["test_map_mean"] for r in rs])
            vm, vs = _stats([r["val_map"] for r in rs])
            delta = "" if v == "none" else f"{(m - base) * 100:+.2f}"
            name = f"**{v}**" if v == recommended else v
            if len(rs) != seeds:
                name += f" (n={len(rs)})"
            lines.append(f"| {name} | {cells[0]} | {cells[1]} | {m:.4f} ± {s:.4f} | {delta} | {vm:.4f} ± {vs:.4f} |")
        lines.append("")
    lines.append("Variants: " + "; ".join(f"`{v}`: {VARIANTS[v][1]}" for v in variants) + ".")
    return "\n".join(lines) + "\n"


def plot_study(runs: list[dict], path: Path, title: str = "") -> Path | None:
    """Seed 0 of the first code length: validation MAP and image / text mask density per epoch."""
    from adah.evaluation.plots import _figure, finish_figure

    if not runs:
        return None
    bits = runs[0]["bits"]
    chosen = [r for r in runs if r["bits"] == bits and r["seed"] == 0]
    plt = _figure()
    panels = (("val_map", "validation MAP"), ("diag_density_image", "image mask density"),
              ("diag_density_text", "text mask density"))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), squeeze=False)
    colours = plt.get_cmap("tab20")
    for ax, (key, name) in zip(axes[0], panels):
        for i, r in enumerate(chosen):
            xs = [h["epoch"] for h in r["history"] if key in h]
            if xs:
                style = "-" if r["variant"] in ("none", "adah") or i % 2 == 0 else "--"
                ax.plot(xs, [h[key] for h in r["history"] if key in h], style, marker=".", ms=3,
                        color="black" if r["variant"] == "none" else colours(i % 20), label=r["variant"])
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.subplots_adjust(right=0.86)
    return finish_figure(fig, path, title, tight=False)


def compare_studies(study_dirs: list[str | Path], bits: int = 32, plot: str | Path | None = None,
                    absolute: bool = False) -> tuple[str, str | None]:
    """Several studies (one per data set) side by side: for every variant that every study ran
    with all its seeds, the gap to ``none`` in validation MAP (the quantity that chooses) and in
    test MAP (only reported), in MAP points, per data set and averaged. Returns the Markdown table
    and the variant with the best mean validation gap over all the studies given (adah's rule: a
    config of one data set takes its own study's choice, the photo configs a user starts from the
    mean over Wiki and fashion_products: README, "Outcome"). ``plot``: also a PNG of the same gaps,
    one group of bars per data set (test gap as bars, validation gap as dots). ``absolute``: also
    a table of the MAPs themselves (validation / test, mean over seeds; ``none`` first), to set
    studies of different encoders or settings on one split beside each other."""
    studies = []
    for d in study_dirs:
        path = Path(d) / "study.json"
        if not path.is_file():
            raise AdahError(f"{path} not found: each folder must hold a finished `adah study` (study.json)")
        try:
            raw = json.loads(path.read_text())
            name = raw["config"]["data"]["name"]
            if name == "folder":
                name = Path(str(raw["config"]["data"].get("options", {}).get("path", "folder"))).name
            runs = [r for r in raw["runs"] if r["bits"] == bits]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AdahError(f"{path}: not a study.json written by adah study ({exc})") from None
        studies.append((name, runs))
    gaps: dict[str, dict[str, tuple[float, float]]] = {}
    maps: dict[str, dict[str, tuple[float, float]]] = {}
    for name, runs in studies:
        by: dict[str, list[dict]] = {}
        for r in runs:
            by.setdefault(r["variant"], []).append(r)
        if "none" not in by:
            raise AdahError(f"the {name} study has no `none` runs at {bits} bits")
        seeds = len(by["none"])
        base_val = float(np.mean([r["val_map"] for r in by["none"]]))
        base_test = float(np.mean([r["test_map_mean"] for r in by["none"]]))
        maps.setdefault("none", {})[name] = (base_val, base_test)
        for v, rs in by.items():
            if v != "none" and len(rs) >= seeds:
                val, test = float(np.mean([r["val_map"] for r in rs])), float(np.mean([r["test_map_mean"] for r in rs]))
                maps.setdefault(v, {})[name] = (val, test)
                gaps.setdefault(v, {})[name] = (100 * (val - base_val), 100 * (test - base_test))
    names = [n for n, _ in studies]
    complete = {v: g for v, g in gaps.items() if set(g) == set(names)}
    ranked = sorted(complete, key=lambda v: -np.mean([complete[v][n][0] for n in names]))
    lines = [f"Gap to `none` in MAP points at {bits} bits, mean over each study's seeds: validation "
             "(chooses) / test (reported only); variants that every study ran with all seeds, best mean "
             "validation gap first.", "",
             "| variant | " + " | ".join(f"{n} val / test" for n in names) + " | mean val / test |",
             "|---|" + "---|" * (len(names) + 1)]
    for v in ranked:
        cells = [f"{complete[v][n][0]:+.2f} / {complete[v][n][1]:+.2f}" for n in names]
        mv = np.mean([complete[v][n][0] for n in names])
        mt = np.mean([complete[v][n][1] for n in names])
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {mv:+.2f} / {mt:+.2f} |")
    if absolute:
        lines += ["", f"Validation / test MAP at {bits} bits (mean of I->T and T->I), mean over each study's seeds; "
                  "the same variants, `none` first.", "",
                  "| variant | " + " | ".join(f"{n} val / test" for n in names) + " | mean val / test |",
                  "|---|" + "---|" * (len(names) + 1)]
        for v in ["none", *ranked]:
            cells = [f"{maps[v][n][0]:.4f} / {maps[v][n][1]:.4f}" for n in names]
            mv, mt = np.mean([maps[v][n][0] for n in names]), np.mean([maps[v][n][1] for n in names])
            lines.append(f"| {v} | " + " | ".join(cells) + f" | {mv:.4f} / {mt:.4f} |")
    if plot is not None:
        plot_comparison({v: complete[v] for v in ranked}, names, Path(plot), bits)
    return "\n".join(lines) + "\n", (ranked[0] if ranked else None)


def plot_comparison(gaps: dict[str, dict[str, tuple[float, float]]], names: list[str], path: Path,
                    bits: int = 32) -> Path:
    """Gap to ``none`` per data set: a bar per variant (test MAP, reported only) with a dot at its
    validation gap (the quantity that chooses); variants in the order given."""
    from adah.evaluation.plots import _figure, finish_figure

    if not gaps:
        raise AdahError("no variant ran in every study: nothing to plot")
    plt = _figure()
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(names) + 2), 4.5))
    width = 0.8 / len(gaps)
    colours = plt.get_cmap("tab10")
    xs = np.arange(len(names) + 1)  # the data sets, then their mean
    for i, (v, per) in enumerate(gaps.items()):
        val = [per[n][0] for n in names]
        test = [per[n][1] for n in names]
        val.append(float(np.mean(val)))
        test.append(float(np.mean(test)))
        pos = xs - 0.4 + width * (i + 0.5)
        ax.bar(pos, test, width, color=colours(i % 10), label=f"{v} (bar: test)")
        ax.plot(pos, val, "o", color="black", ms=3.5, label="validation gap" if i == 0 else None)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(xs, [*names, "mean"], rotation=20, ha="right")
    ax.set_ylabel(f"MAP points vs none ({bits} bits)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return finish_figure(fig, path, "gap to none: test (bars), validation (dots)")
