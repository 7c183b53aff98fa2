"""The attention ablation (the paper's Table 4): the same config, data and split trained with
``model.attention`` = none, image, text and both; test MAP of each on the query/retrieval split."""

from __future__ import annotations

import json
from pathlib import Path

from adah.config import ATTENTION_VARIANTS, Config
from adah.data.registry import make_split
from adah.features.dataset import load_dataset
from adah.evaluation.retrieval import RetrievalReport, encode, evaluate_codes
from adah.utils.fileio import atomic_write_text
from adah.training.trainer import train


def run_ablation(config: Config, out_dir: str | Path, *, variants: tuple[str, ...] = ATTENTION_VARIANTS,
                 directions: tuple[str, ...] = ("i2t", "t2i")) -> dict[str, RetrievalReport]:
    """Train each variant into ``out_dir/<variant>`` and score it; writes ``out_dir/ablation.json``."""
    out = Path(out_dir)
    data = load_dataset(config.data)
    split = make_split(config.data, len(data))
    reports: dict[str, RetrievalReport] = {}
    for variant in variants:
        result = train(config.override({"model.attention": variant}), data, split, out / variant)
        q = encode(result.model, data, split.query)
        db = encode(result.model, data, split.retrieval)
        reports[variant] = evaluate_codes(q, db, directions=directions)
    atomic_write_text(out / "ablation.json", json.dumps({
        "config": config.to_dict(), "split_sha256": split.digest(),
        "results": {k: r.to_dict() for k, r in reports.items()},
    }, indent=2))
    return reports
