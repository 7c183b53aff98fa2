"""Result tables: every method on one saved split, several code lengths and seeds.

Deep methods (ADAH as configured with attention on both branches, ADAH with the paper's literal G,
the ``none`` variant, and every other method of :data:`adah.methods.METHODS`: DCMH, DJSRH, ...)
train through the same trainer on the split's training rows with its validation rows for model
selection; the classical baselines fit on training + validation rows (they select nothing). All are scored on
the split's queries against its retrieval set with the same metric functions: MAP (stable ties,
DCMH's definition), the tie-aware expected MAP, optionally top-K MAP, and PR curves by radius.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adah.baselines import BASELINES
from adah.config import PRESETS, Config
from adah.data.base import CrossModalData, Split
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.errors import AdahError
from adah.evaluation.retrieval import Codes, RetrievalReport, encode, evaluate_codes, has_labels
from adah.utils.fileio import atomic_write_text
from adah.utils.progress import progress_bar
from adah.methods import METHODS, method_overrides, train

# benchmark name -> the config values that make it (on top of the benchmark's config)
DEEP_METHODS = {"adah": {"model.attention": "both"}, "adah_paper": {**PRESETS["paper"], "model.attention": "both"},
                "none": {"model.attention": "none"}}
DEEP_METHODS.update({name: method_overrides(name) for name in METHODS if name != "adah"})
METHOD_NAMES = {"adah": "ADAH", "adah_paper": "ADAH (paper's G)", "none": "none (deep, no attention)",
                **{name: METHODS.get(name).title for name in METHODS if name != "adah"},
                "cca_itq": "CCA-ITQ", "scm_seq": "SCM-seq", "cmfh": "CMFH", "seph": "SePH"}
ALL_METHODS = tuple(METHOD_NAMES)
#: a method whose codes take fewer distinct values than this fraction of the items is flagged
MIN_DISTINCT_FRACTION = 0.01


@dataclass
class BenchmarkResult:
    """``runs[method][bits]`` is a list of RetrievalReports, one per seed."""

    runs: dict[str, dict[int, list[RetrievalReport]]] = field(default_factory=dict)
    table_md: Path | None = None
    results_json: Path | None = None
    pr_png: Path | None = None
    warnings: list[str] = field(default_factory=list)


def degenerate_codes(codes: Codes, fraction: float = MIN_DISTINCT_FRACTION) -> dict[str, int]:
    """``{modality: distinct codes}`` for each modality whose (n, bits) codes take fewer than
    ``fraction`` x n distinct values (at least 2): codes this near to constant rank at chance."""
    out = {}
    for modality in ("image", "text"):
        c = codes.image if modality == "image" else codes.text
        if c is None or len(c) == 0:
            continue
        distinct = len(np.unique(np.asarray(c), axis=0))
        if distinct < max(2.0, fraction * len(c)):
            out[modality] = distinct
    return out


def method_values(method: str, user_keys: frozenset[str] = frozenset()) -> dict:
    """The config values that select a deep ``method``. A registered baseline's published defaults
    (DCMH's batch of 128, ...) come before the user's ``--set``, as ``adah train --method`` applies
    them (``user_keys``: the keys the user set); ``train.method`` and ADAH's and ``none``'s attention
    define the method and always apply."""
    values = DEEP_METHODS[method]
    if method in METHODS and method != "adah":
        values = {k: v for k, v in values.items() if k == "train.method" or k not in user_keys}
    return values


def _deep_codes(config: Config, method: str, bits: int, seed: int, data: CrossModalData, split: Split,
                run_dir: Path, user_keys: frozenset[str]) -> tuple[Codes, Codes]:
    cfg = config.override({**method_values(method, user_keys), "model.bits": bits, "train.seed": seed,
                           "train.progress": False})
    result = train(cfg, data, split, run_dir)
    return encode(result.model, data, split.query), encode(result.model, data, split.retrieval)


def image_vectors(data: CrossModalData, rows: np.ndarray, batch: int = 1024) -> np.ndarray:
    """(k, D) float64 image descriptors for the classical baselines: feature vectors as they are,
    or cached backbone maps (N, C, h, w) averaged over the h x w positions (the backbone's own
    global pooling for MobileNetV2; C-d), read in batches. Pixels are refused."""
    first = np.asarray(data.images[:1]) if data.images is not None else None
    if first is not None and first.ndim == 2:
        return np.asarray(data.images[rows], np.float64)
    if first is not None and first.ndim == 4 and first.dtype.kind == "f":
        return np.concatenate([np.asarray(data.images[rows[i : i + batch]], np.float64).mean(axis=(2, 3))
                               for i in range(0, len(rows), batch)] or [np.zeros((0, first.shape[1]))])
    raise AdahError(f"the classical baselines need image feature vectors or cached backbone maps; dataset "
                    f"'{data.name}' holds pixels. Run `adah features extract` and set data.options.features, "
                    "or run the deep methods only (--methods adah none)")


def _baseline_codes(method: str, bits: int, seed: int, data: CrossModalData, split: Split) -> tuple[Codes, Codes]:
    fit_rows = np.sort(np.concatenate([split.train, split.val]))
    model = BASELINES[method](bits=bits, random_state=seed)
    model.fit(image_vectors(data, fit_rows), np.asarray(data.texts[fit_rows], np.float64),
              np.asarray(data.labels[fit_rows]))

    def codes(rows: np.ndarray) -> Codes:
        return Codes(model.encode(image_vectors(data, rows), "image"),
                     model.encode(np.asarray(data.texts[rows], np.float64), "text"), np.asarray(data.labels[rows]))

    return codes(split.query), codes(split.retrieval)


def run_benchmark(config: Config, out_dir: str | Path, *, bits: tuple[int, ...] = (16, 32, 64), seeds: int = 3,
                  methods: tuple[str, ...] = ALL_METHODS, topk: int | None = None,
                  split_path: str | Path | None = None, progress: bool = True,
                  user_keys: frozenset[str] = frozenset()) -> BenchmarkResult:
    """Run ``methods`` x ``bits`` x ``seeds`` on one split (``split_path`` or the dataset's
    protocol split, saved to ``out_dir/split.json``); write table.md, results.json, pr_curves.png.
    ``user_keys``: the config keys the user set (``--set``), which a baseline's defaults leave alone."""
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise AdahError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    if seeds < 1 or not bits or any(b <= 0 for b in bits):
        raise AdahError("--num-seeds (seeds=) must be >= 1 and --bits positive integers")
    out = Path(out_dir)
    data = load_dataset(config.data)
    directions = ("i2t", "t2i") if data.has_images else ("t2t",)
    if not data.has_images and set(methods) != {"none"}:
        raise AdahError(f"dataset '{data.name}' was loaded without images (text and labels only): only T->T can be "
                        "scored, and only by the deep 'none' method (ADAH's adversarial terms and the baselines need "
                        "both modalities); pass --methods none")
    split = Split.load(split_path, num_items=len(data)) if split_path else make_split(config.data, len(data))
    out.mkdir(parents=True, exist_ok=True)
    split.save(out / "split.json")
    result = BenchmarkResult()
    jobs = [(m, b, s) for b in bits for m in methods for s in range(seeds)]
    bar = progress_bar(jobs, desc="benchmark", disable=not progress)
    timings: dict[str, list[float]] = {}
    for method, b, seed in bar:
        bar.set_postfix(method=method, bits=b, seed=seed)
        t0 = time.perf_counter()
        if method in DEEP_METHODS:
            run_dir = out / "runs" / f"{method}-{b}bits-seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)  # the benchmark owns its run folders: rerun from scratch
            q, db = _deep_codes(config, method, b, seed, data, split, run_dir, user_keys)
        else:
            q, db = _baseline_codes(method, b, seed, data, split)
        timings.setdefault(method, []).append(time.perf_counter() - t0)
        for modality, distinct in degenerate_codes(db).items():
            result.warnings.append(f"{METHOD_NAMES[method]} ({b} bits, seed {seed}): its {modality} codes of the "
                                   f"{len(db.labels):,} retrieval items take only {distinct} distinct values (under "
                                   f"{MIN_DISTINCT_FRACTION:.0%} of the items): near-constant codes rank at chance")
        report = evaluate_codes(q, db, directions=directions, topk=topk, pr_curves=seed == 0 and has_labels(q.labels),
                                tie_aware=True)
        result.runs.setdefault(method, {}).setdefault(b, []).append(report)

    result.table_md = out / "table.md"
    table = format_markdown(result, data.name, split, seeds, topk, directions)
    if result.warnings:
        table += "\n" + "\n".join(f"Warning: {w}" for w in result.warnings) + "\n"
    atomic_write_text(result.table_md, table)
    from adah.utils.version import VERSION as __version__

    result.results_json = out / "results.json"
    atomic_write_text(result.results_json, json.dumps({
        "adah_version": __version__, "dataset": data.name, "data_fingerprint": data.fingerprint(),
        "split_sha256": split.digest(), "config": config.to_dict(), "bits": list(bits), "seeds": seeds,
        "seconds_per_run": {m: float(np.mean(t)) for m, t in timings.items()}, "warnings": result.warnings,
        "results": {m: {str(b): [r.to_dict() for r in reps] for b, reps in per.items()} for m, per in result.runs.items()},
    }, indent=2))
    from adah.evaluation.plots import plot_pr_curves

    mid = bits[len(bits) // 2]
    curves = {METHOD_NAMES[m]: per[mid][0].pr for m, per in result.runs.items() if per[mid][0].pr}
    if curves:  # PR curves need labels
        result.pr_png = plot_pr_curves(curves, out / "pr_curves.png", title=f"{data.name}, {mid} bits, seed 0")
    return result


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


DIRECTION_TITLES = {"i2t": "Image -> Text", "t2i": "Text -> Image", "i2i": "Image -> Image", "t2t": "Text -> Text"}


def format_markdown(result: BenchmarkResult, dataset: str, split: Split, seeds: int, topk: int | None,
                    directions: tuple[str, ...] = ("i2t", "t2i")) -> str:
    """One table per direction: rows are methods, columns code lengths; MAP mean ± std over seeds
    (population std), with the tie-aware expected MAP below it in parentheses."""
    lines = [f"Dataset `{dataset}`, split `{split.digest()}` ({len(split.query)} queries, "
             f"{len(split.retrieval)} retrieval items), {seeds} seed(s): MAP (mean ± std); "
             "in parentheses the tie-aware expected MAP.", ""]
    bits = sorted({b for per in result.runs.values() for b in per})
    reports = [r for per in result.runs.values() for reps in per.values() for r in reps]
    with_map = [d for d in directions if reports and all(d in r.map for r in reports)]
    if len(with_map) < len(directions):
        lines += ["No MAP where the data lacks labels on some items.", ""]
    for direction in with_map:
        title = DIRECTION_TITLES[direction]
        lines += [f"**{title}**", "", "| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
                  "|---|" + "---|" * len(bits)]
        for method, per in result.runs.items():
            cells = []
            for b in bits:
                reps = per.get(b, [])
                if not reps:
                    cells.append("")
                    continue
                cell = f"{_cell([r.map[direction] for r in reps])} ({_cell([r.map_expected[direction] for r in reps])})"
                if topk:
                    cell += f"; top-{topk}: {_cell([r.map_topk[direction] for r in reps])}"
                cells.append(cell)
            lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
        lines.append("")
    with_recall = [d for d in directions if reports and all(d in r.recall for r in reports)]
    for direction in with_recall:
        ks = sorted(reports[0].recall[direction])
        n = reports[0].num_query
        lines += [f"**{DIRECTION_TITLES[direction]}: recall@K of the paired item** among the {n} query items "
                  f"(tie-aware; random: " + ", ".join(f"R@{k} {min(1.0, k / n):.4f}" for k in ks) + ")", "",
                  "| method | " + " | ".join(f"{b} bits R@{k}" for b in bits for k in ks) + " |",
                  "|---|" + "---|" * (len(bits) * len(ks))]
        for method, per in result.runs.items():
            cells = [_cell([r.recall[direction][k] for r in per[b]]) if per.get(b) else "" for b in bits for k in ks]
            lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
