"""The attention study: variants of G x seeds x code lengths on one saved split.

Every variant trains on the split's training rows and picks its epoch by validation MAP (mean of
I->T and T->I, validation queries against the training rows); the test queries are only scored,
never used to choose anything. The variant adah *recommends* is the one with the best mean
validation MAP, chosen the same way. Writes ``OUT/study.md`` (test MAP mean +- std for I->T,
T->I and their mean, next to ``none``, with the validation MAP that selects), ``study.json``
(every run), ``study.png`` (validation MAP and mask density per epoch of each variant), and each
run's folder with its ``metrics.jsonl`` and ``training.png``.

Runs are independent and resumable: a run whose ``result.json`` exists and records the same full
config and split as this time is read, not retrained, so an interrupted study continues where it
stopped; a run whose config or split changed trains again (each result, and so ``study.json``,
records the config it was trained with); the table and JSON also keep the finished
runs in ``OUT`` of variants not named this time (at the seeds and code lengths asked for), so a
study continued with a subset of its variants does not drop the rest. ``jobs > 1`` trains runs
in parallel processes (for a many-core machine or a GPU).

The variants are data: the built-in ones in ``variants.toml`` next to this module, a user's own in
a file of the same format (``adah study --variants-file``, :func:`load_variants`).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
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

# the built-in variants of G: name -> (config overrides, what it tests), read from a data file
# shipped with the package (variants.toml: its header describes the format)
BUILTIN_VARIANTS_FILE = Path(__file__).with_name("variants.toml")
_ENTRY_KEYS = ("preset", "overrides", "about")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a variant's name is also its runs' folder name


def load_variants(path: str | Path, *, builtin: dict[str, tuple[dict, str]] | None = None
                  ) -> dict[str, tuple[dict, str]]:
    """Variants of G from a TOML file (one table per variant: ``about``, optional ``preset`` and
    ``overrides``; the format of ``variants.toml``) or a JSON file of the same shape (an object
    of name -> entry). Each entry's overrides are checked against the config as ``--set`` is
    (known keys, values of the field's type); a name in ``builtin`` is refused, since a built-in
    name means one G in every study. AdahError naming the file and the entry on a bad one."""
    path = Path(path)
    raw = _read_variants_file(path)
    return {name: _variant_entry(path, name, entry, builtin or {}) for name, entry in raw.items()}


def _read_variants_file(path: Path) -> dict:
    if path.suffix not in (".toml", ".json"):
        raise AdahError(f"{path}: a variants file must be .toml or .json (the format of {BUILTIN_VARIANTS_FILE.name})")
    if not path.is_file():
        raise AdahError(f"variants file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        raw = (json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json" else tomllib.loads(text))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise AdahError(f"{path}: not a readable {path.suffix[1:].upper()} variants file ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise AdahError(f"{path}: no variants; expected one table per variant, e.g. [my_g] with about = \"...\" "
                        "and [my_g.overrides]")
    return raw


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]!r} appears more than once")
    return dict(pairs)


def _variant_entry(path: Path, name: str, entry: object, builtin: dict) -> tuple[dict, str]:
    """One entry of a variants file, checked: its overrides (the preset's settings first, then the
    entry's own) and its about."""
    where = f"{path}: variant {name!r}"
    if not _NAME.fullmatch(name):
        raise AdahError(f"{where}: a name may hold letters, digits, '_', '-' and '.' only (it names the runs' folder)")
    if name in builtin:
        raise AdahError(f"{where}: the name of a built-in variant (adah study --list); built-in variants cannot be "
                        "redefined, give yours another name")
    if not isinstance(entry, dict):
        raise AdahError(f"{where}: expected a table with 'about' and 'overrides' (and optionally 'preset'), "
                        f"got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise AdahError(f"{where}: unknown field(s) {unknown}; expected {', '.join(_ENTRY_KEYS)}")
    about, preset, overrides = entry.get("about"), entry.get("preset"), entry.get("overrides", {})
    if not isinstance(about, str) or not about.strip():
        raise AdahError(f"{where}: 'about' must be a non-empty string saying what the variant tests")
    if preset is not None and preset not in PRESETS:
        raise AdahError(f"{where}: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if not isinstance(overrides, dict):
        raise AdahError(f"{where}: 'overrides' must be a table of config keys (as --set names them, e.g. "
                        f"\"attention.keep_fraction\" = 0.5), got {type(overrides).__name__}")
    merged = {**(PRESETS[preset] if preset else {}), **overrides}
    try:
        Config().override({"model.attention": "both", **merged})  # known keys, values of the field's type
    except AdahError as exc:
        raise AdahError(f"{where}: {exc}") from None
    return merged, about


VARIANTS: dict[str, tuple[dict, str]] = load_variants(BUILTIN_VARIANTS_FILE)
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


def study_variants(variants_file: str | Path | None = None) -> dict[str, tuple[dict, str]]:
    """The variants a study can run: the built-in ones, then those of ``variants_file``
    (:func:`load_variants`; new names only)."""
    if variants_file is None:
        return dict(VARIANTS)
    return {**VARIANTS, **load_variants(variants_file, builtin=VARIANTS)}


def variant_config(config: Config, variant: str, *, bits: int, seed: int,
                   variants: dict[str, tuple[dict, str]] | None = None) -> Config:
    """``config`` with the variant's overrides (``variants``: the catalogue it is looked up in,
    default the built-in :data:`VARIANTS`); a variant that names no ``model.attention``
    attends on both branches, whatever the config says, so a variant means the same on every
    config (the bundled photo configs attend on the image branch alone, scenes_demo and wiki on the text
    branch)."""
    variants = VARIANTS if variants is None else variants
    if variant not in variants:
        raise AdahError(f"unknown study variant {variant!r}; known: {', '.join(variants)}")
    return config.override({"model.attention": "both", **variants[variant][0], "model.bits": bits,
                            "train.seed": seed, "train.progress": False}).validate()


def select_variants(config: Config, variants: tuple[str, ...] | None, bits: tuple[int, ...],
                    variants_file: str | Path | None = None) -> tuple[tuple[str, ...], dict[str, tuple[dict, str]]]:
    """The variants a study runs (``none`` first when not named; without names the file's
    variants, else :data:`DEFAULT_VARIANTS`) and the catalogue they come from, each checked to
    build a valid config from ``config`` at every code length before anything trains."""
    known = study_variants(variants_file)
    source = f" (built-in, and {variants_file})" if variants_file is not None else ""
    if not variants:
        variants = tuple(v for v in known if v not in VARIANTS) if variants_file is not None else DEFAULT_VARIANTS
    for v in variants:
        if v not in known:
            raise AdahError(f"unknown study variant {v!r}; known{source}: {', '.join(known)}")
    if "none" not in variants:
        variants = ("none", *variants)
    for v in variants:
        for b in bits:
            try:
                variant_config(config, v, bits=b, seed=0, variants=known)
            except AdahError as exc:
                raise AdahError(f"study variant {v!r}{source} at {b} bits: {exc}") from None
    return tuple(variants), known


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


def _run_key(cfg: Config, split_sha256: str) -> dict:
    """What a finished run is keyed by: its full config (as JSON) and the split it trained on."""
    return {"config": json.loads(json.dumps(cfg.to_dict())), "split_sha256": split_sha256}


def finished_run(run_dir: str | Path, cfg: Config, split_sha256: str) -> tuple[dict | None, str]:
    """The run's ``result.json`` when it was trained with exactly ``cfg`` on the split
    ``split_sha256``; else None and why not ("" when there is no result)."""
    done = Path(run_dir) / "result.json"
    if not done.is_file():
        return None, ""
    try:
        result = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        return None, f"{done} is unreadable"
    key = _run_key(cfg, split_sha256)
    if not isinstance(result, dict) or "config" not in result:
        return None, f"{done} records no config (written by an older adah)"
    if result.get("split_sha256") != key["split_sha256"]:
        return None, f"{done} was trained on another split"
    if result["config"] != key["config"]:
        old, new = result["config"], key["config"]
        diff = [f"{sec}.{k}: {old.get(sec, {}).get(k)!r} -> {v!r}" for sec in new for k, v in new[sec].items()
                if not isinstance(old.get(sec), dict) or old[sec].get(k) != v]
        return None, f"{done} was trained with another config ({'; '.join(diff[:4]) or 'other keys'})"
    return result, ""


def run_one(config: Config, variant: str, bits: int, seed: int, split_path: str, run_dir: str,
            threads: int = 0, variants: dict[str, tuple[dict, str]] | None = None) -> dict:
    """Train one (variant, bits, seed) and score it; reads result.json instead when it records the
    same full config and split (:func:`finished_run`), else trains again. ``variants``: the
    catalogue ``variant`` is looked up in (default the built-in :data:`VARIANTS`)."""
    import torch

    from adah.evaluation.retrieval import encode, evaluate_codes
    from adah.training.trainer import train

    run_dir = Path(run_dir)
    done = run_dir / "result.json"
    cfg = variant_config(config, variant, bits=bits, seed=seed, variants=variants)
    split_sha256 = Split.load(split_path).digest()
    result, stale = finished_run(run_dir, cfg, split_sha256)
    if result is not None:
        return result
    if stale:
        tqdm.write(f"training {variant} bits {bits} seed {seed} again: {stale}")
    if threads:
        torch.set_num_threads(threads)
    data, masks = _data(config)
    split = Split.load(split_path, num_items=len(data))
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
    out = {"variant": variant, "bits": bits, "seed": seed, **_run_key(cfg, split.digest()),
           "best_epoch": result.best_epoch,
           "val_map": result.best_val_map, "test_map": {d: report.map[d] for d in DIRECTIONS},
           "test_map_mean": float(np.mean([report.map[d] for d in DIRECTIONS])),
           "final": {k: v for k, v in last.items() if k.startswith(("diag_", "mask_", "g_gain"))},
           "history": [{k: r[k] for k in r if k.startswith(("val_map", "diag_density", "mask_", "epoch"))}
                       for r in result.history]}
    atomic_write_text(done, json.dumps(out, indent=1))
    return out


def run_study(config: Config, out_dir: str | Path, *, variants: tuple[str, ...] | None = None,
              seeds: int = 3, bits: tuple[int, ...] = (32,), jobs: int = 1, split_path: str | Path | None = None,
              progress: bool = True, finished_only: bool = False,
              variants_file: str | Path | None = None) -> StudyResult:
    """Train every variant x bits x seed on one split; write the table, JSON and picture.
    ``variants``: names from the built-in catalogue or ``variants_file`` (:func:`select_variants`;
    None: the file's variants, else :data:`DEFAULT_VARIANTS`). ``finished_only``: train nothing,
    report the runs that have finished (a study in progress)."""
    variants, known = select_variants(config, variants, bits, variants_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split, saved = _study_split(config, out, split_path)
    tasks = [(v, b, s) for b in bits for s in range(seeds) for v in variants]
    if finished_only:
        tasks = [(v, b, s) for v, b, s in tasks if finished_run(
            out / v / f"bits{b}-seed{s}", variant_config(config, v, bits=b, seed=s, variants=known), split.digest())[0]]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    args = lambda v, b, s: (config, v, b, s, str(saved), str(out / v / f"bits{b}-seed{s}"), threads,  # noqa: E731
                            {v: known[v]})
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
    kept = _kept_runs(out, config, split.digest(), variants, bits, seeds, known)
    variants = (*variants, *dict.fromkeys(r["variant"] for r in kept))
    runs += kept
    order = {v: i for i, v in enumerate(variants)}
    runs.sort(key=lambda r: (r["bits"], order[r["variant"]], r["seed"]))
    recommended = recommend(runs)
    table = format_study_table(runs, config, split, variants, bits, seeds, recommended, known)
    table_md = out / "study.md"
    atomic_write_text(table_md, table)
    results_json = out / "study.json"
    atomic_write_text(results_json, json.dumps({"config": config.to_dict(), "split_sha256": split.digest(),
                                                "variants": {v: {"overrides": known[v][0], "about": known[v][1]}
                                                             for v in variants},
                                                "recommended": recommended, "runs": runs}, indent=1))
    png = plot_study(runs, out / "study.png", title=f"{config.data.name}: validation MAP and mask density by epoch")
    return StudyResult(runs, table_md, results_json, png, recommended)


def _study_split(config: Config, out: Path, split_path: str | Path | None) -> tuple[Split, Path]:
    """The study's split and where it is saved (``out/split.json``): the one given, else the one a
    study continued in ``out`` started with, else the protocol's."""
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
    return split, saved


def _kept_runs(out: Path, config: Config, split_sha256: str, variants: tuple[str, ...], bits: tuple[int, ...],
               seeds: int, known: dict[str, tuple[dict, str]] | None = None) -> list[dict]:
    """Finished runs in ``out`` of variants not asked for this time, at the code lengths and seeds
    asked for: a study continued with fewer variants keeps the others in its table and JSON
    instead of dropping them; only runs trained with this study's config on its split
    (:func:`finished_run`), the others are left out with a note."""
    known = VARIANTS if known is None else known
    kept = []
    for v in known:  # the catalogue's order, so the table's order does not depend on the file system
        if v in variants:
            continue
        for b in bits:
            for s in range(seeds):
                cfg = variant_config(config, v, bits=b, seed=s, variants=known)
                result, stale = finished_run(out / v / f"bits{b}-seed{s}", cfg, split_sha256)
                if result is not None:
                    kept.append(result)
                elif stale:
                    tqdm.write(f"left out of the table: {stale}")
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


def format_study_table(runs, config, split, variants, bits, seeds, recommended, known=None) -> str:
    """The Markdown of ``study.md``; ``known``: the catalogue whose ``about`` texts end it
    (default the built-in :data:`VARIANTS`)."""
    known = VARIANTS if known is None else known
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
    lines.append("Variants: " + "; ".join(f"`{v}`: {known[v][1]}" for v in variants) + ".")
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
