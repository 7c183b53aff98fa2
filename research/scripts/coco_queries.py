"""The search page's example queries on coco_mini: for the seed-0 ADAH and 'none' models of
research/scripts/coco_text_grid.py, an index of all 159 photos, each query's top 5 photos, and how many
of them have the query's key word in one of their 5 captions (a word-level proxy for "shares the
query's meaning"; coco_mini has 10 photos whose captions say dog, 12 cat, 6 pizza, ...).

    PYTHONPATH=src python research/scripts/coco_queries.py --grid runs/coco-grid
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from adah.index import Index, build_index  # noqa: E402

QUERIES = {"a dog on a bed": "dog", "a dog in the snow": "dog", "a dog": "dog", "a cat": "cat", "a pizza": "pizza",
           "a man riding a horse": "horse", "a bus on the street": "bus"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=Path, default=Path("runs/coco-grid"))
    ap.add_argument("--runs", nargs="+", default=["minilm-pairs-both-seed0", "minilm-pairs-none-seed0",
                                                   "minilm-labels-both-seed0", "bow_mlp-pairs-both-seed0",
                                                   "bow_mlp-labels-both-seed0"])
    ap.add_argument("-k", type=int, default=5)
    args = ap.parse_args()
    items = [json.loads(line) for line in (ROOT / ".." / "shared" / "data" / "coco_mini" / "items.jsonl").open()]
    texts = {it["id"]: it["text"].lower() for it in items}
    base = {w: sum(bool(re.search(rf"\b{w}", t)) for t in texts.values()) for w in set(QUERIES.values())}
    rows = []
    for run in args.runs:
        ckpt = args.grid / "runs" / run / "best.pt"
        index_dir = args.grid / "indexes" / run
        if not index_dir.exists():
            build_index(ckpt, index_dir, progress=False)
        with Index.load(index_dir) as index:
            for query, word in QUERIES.items():
                try:
                    hits = index.search_text(query, k=args.k).hits
                except ValueError as exc:  # e.g. no word of the query in a BoW vocabulary
                    rows.append({"run": run, "query": query, "error": str(exc)})
                    continue
                found = sum(bool(re.search(rf"\b{word}", texts[h.id])) for h in hits)
                rows.append({"run": run, "query": query, "word": word, "found": found,
                             "top": [(h.id, h.caption) for h in hits]})
                print(f"{run:28s} {query!r:24s} {found}/{args.k} with '{word}' "
                      f"(chance {args.k * base[word] / len(texts):.2f}); top-1: {hits[0].caption}", flush=True)
    (args.grid / "queries.json").write_text(json.dumps({"base": base, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
