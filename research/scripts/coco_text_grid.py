"""coco_mini, the practitioner's grid: text encoder (bow_mlp | minilm) x similarity (labels | pairs |
both) x attention (ADAH 'both' | 'none') x seeds, with the settings ``adah fit`` uses (frozen
MobileNetV2 maps, 32 bits, 30 epochs, batch 32, lr 5e-4), on coco_mini's split (its 79 'val' photos
are the queries, the 80 'train' photos the training and retrieval set, 20% of them validation).

Scores: recall@1/5/10 of each query's own pair among the 79 query items (tie-aware), and MAP of the
queries against the retrieval set (label overlap), for T->I and I->T. Also runs the example queries
of the search page against an index of all 159 items for each text encoder (seed 0, similarity
'both' and 'pairs', ADAH) and records the labels of the top 5.

    PYTHONPATH=src python research/scripts/coco_text_grid.py --out runs/coco-grid [--seeds 3]

Writes OUT/results.jsonl (one line a run, appended as runs finish: a rerun skips finished runs)
and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from adah.config import Config  # noqa: E402
from adah.data.registry import make_split  # noqa: E402
from adah.features.dataset import load_dataset
from adah.evaluation.retrieval import encode, evaluate_codes, random_recall  # noqa: E402
from adah.features.image_cache import extract_features  # noqa: E402
from adah.recipes.fit import fit_config  # noqa: E402
from adah.training.trainer import train  # noqa: E402

QUERIES = ("a dog on a bed", "a dog in the snow", "a plate of food", "a man riding a horse", "a cat", "people on a street")


def config(out: Path, encoder: str, similarity: str, attention: str, seed: int, data_root: Path) -> Config:
    cfg, _ = fit_config(data_root / "coco_mini" / "items.jsonl", out / "cache", similarity=similarity,
                        ignore_labels=False, text_encoder=encoder, bits=32, epochs=30, seed=seed, attention=attention,
                        device="cpu")
    cfg.train.progress = False
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/coco-grid"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data-root", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--encoders", nargs="+", default=["minilm", "bow_mlp"])
    ap.add_argument("--similarities", nargs="+", default=["pairs", "both", "labels"])
    ap.add_argument("--attention", nargs="+", default=["both", "none"])
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.jsonl"
    done = {}
    if results_file.is_file():
        for line in results_file.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    datasets = {}
    for encoder in args.encoders:
        for similarity in args.similarities:
            for attention in args.attention:
                for seed in range(args.seeds):
                    key = f"{encoder}-{similarity}-{attention}-seed{seed}"
                    if key in done:
                        continue
                    cfg = config(out, encoder, similarity, attention, seed, args.data_root.resolve())
                    extract_features(cfg, cfg.data.options["features"], progress=False)
                    dkey = (encoder, cfg.data.options.get("labels_mode"))
                    if dkey not in datasets:
                        datasets[dkey] = load_dataset(cfg.data)
                    data = datasets[dkey]
                    split = make_split(cfg.data, len(data))
                    t0 = time.perf_counter()
                    shutil.rmtree(out / "runs" / key, ignore_errors=True)  # an interrupted run starts again
                    res = train(cfg, data, split, out / "runs" / key)
                    q, db = encode(res.model, data, split.query), encode(res.model, data, split.retrieval)
                    rep = evaluate_codes(q, db, directions=("i2t", "t2i"))
                    row = {"key": key, "encoder": encoder, "similarity": similarity, "attention": attention,
                           "seed": seed, "recall": {d: {str(k): v for k, v in r.items()} for d, r in rep.recall.items()},
                           "map": rep.map, "num_query": len(split.query), "num_db": len(split.retrieval),
                           "seconds": round(time.perf_counter() - t0, 1)}
                    with results_file.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    done[key] = row
                    print(key, row["recall"], {k: round(v, 4) for k, v in rep.map.items()}, row["seconds"], flush=True)
    (out / "table.md").write_text(table(list(done.values())))
    print((out / "table.md").read_text())


def _cell(vals):
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["similarity"] == "both":  # equal to 'labels' when every item has labels (coco_mini): not repeated
            continue
        groups.setdefault((r["encoder"], r["similarity"], r["attention"]), []).append(r)
    n_q = rows[0]["num_query"] if rows else 0
    rnd = random_recall(n_q)
    lines = ["| text E | S | G | seeds | T->I R@1 | T->I R@5 | T->I R@10 | I->T R@1 | I->T R@5 | I->T R@10 | T->I MAP | I->T MAP |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (enc, sim, att), rs in sorted(groups.items()):
        cells = [_cell([r["recall"][d][k] for r in rs]) for d in ("t2i", "i2t") for k in ("1", "5", "10")]
        cells += [_cell([r["map"][d] for r in rs]) for d in ("t2i", "i2t")]
        lines.append(f"| {enc} | {sim} | {'ADAH' if att == 'both' else 'none'} | {len(rs)} | " + " | ".join(cells) + " |")
    lines.append(f"| random | | | | {rnd[1]:.3f} | {rnd[5]:.3f} | {rnd[10]:.3f} | {rnd[1]:.3f} | {rnd[5]:.3f} | "
                 f"{rnd[10]:.3f} | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
