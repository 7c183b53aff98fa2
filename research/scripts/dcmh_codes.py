"""Issue 31, DCMH on fashion_products: does a checkpoint fit its training items better than the held-out
ones (underfitting or overfitting), and how balanced and how distinct are its codes?

Prints one JSON line: MAP of the training items against themselves (``train_map``) and of the queries
against the retrieval items (``test_map``), per direction; for each modality's codes of the retrieval
items, the bits whose mean over the items is beyond +-0.8 (nearly constant bits), the median |mean|
of a bit, the number of distinct codes, and the number of distinct class codes (the sign of each
class's mean code) among the classes present.

    PYTHONPATH=src python research/scripts/dcmh_codes.py runs/fash-dcmh-long200/runs/dcmh-32bits-seed0/best.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from adah.data.base import Split  # noqa: E402
from adah.evaluation.retrieval import encode, evaluate_codes  # noqa: E402
from adah.features.dataset import load_dataset  # noqa: E402
from adah.training.checkpoint import load_model  # noqa: E402


def code_stats(codes: np.ndarray, labels: np.ndarray) -> dict:
    c = np.asarray(codes, np.float64)
    mean = np.abs(c.mean(0))
    cls = np.asarray(labels).argmax(1)
    centroids = np.stack([np.where(c[cls == k].mean(0) >= 0, 1.0, -1.0) for k in np.unique(cls)])
    return {"nearly_constant_bits": int((mean > 0.8).sum()), "median_abs_bit_mean": round(float(np.median(mean)), 3),
            "distinct_codes": int(len(np.unique(c, axis=0))), "classes": len(centroids),
            "distinct_class_codes": int(len(np.unique(centroids, axis=0)))}


def main(checkpoint: str) -> None:
    torch.set_num_threads(1)
    model, config, payload = load_model(checkpoint, "cpu")
    data = load_dataset(config.data)
    split = Split.load(Path(checkpoint).parent / "split.json", num_items=len(data))
    train, query, db = (encode(model, data, rows) for rows in (split.train, split.query, split.retrieval))
    maps = {name: {d: round(v, 4) for d, v in evaluate_codes(q, r, directions=("i2t", "t2i")).to_dict()["map"].items()}
            for name, (q, r) in {"train_map": (train, train), "test_map": (query, db)}.items()}
    print(json.dumps({"epoch": payload.get("epoch"), **maps, "image": code_stats(db.image, db.labels),
                      "text": code_stats(db.text, db.labels)}))


if __name__ == "__main__":
    main(sys.argv[1])
