"""Data variants of fashion_products, for checking a shipped setting on collections it was not chosen on.

The held-back collections a photo default must also win on are not here; these variants are built
from ``../shared/data/fashion_products`` to look more like them, without copying any photo: each
variant is an ``items.jsonl`` in the folder format whose ``image`` fields are absolute paths into
the shared folder.

- ``fashion10``: the 10 largest article types only (1,997 items; a held-back collection has
  2,193 photos in 10 classes), the shared train/test split kept;
- ``fashion_half``: a fixed half of the items (ids whose crc32 is even), the split kept: a smaller
  collection with about as many classes (62);
- ``fashion_nolabel``: every item, with the words of its article type taken out of its title
  ("Puma Men Black Sports Shoes" -> "Puma Men Black"): shop titles often name the class, which
  captions of a held-back collection need not do;
- ``fashion_tiny``: coco_mini's size from product photos: 8 training and 8 test items of each of
  the 10 largest article types (160 items; those with the smallest crc32 of their id): tells
  whether a setting that loses on coco_mini loses for the size or for the kind of photo.

    python research/scripts/fashion_variants.py [--data-root ../shared/data] [--out runs/data]

then, for each variant V, as a user with their own photos starts (the coco_mini settings):

    adah features extract --config coco_mini --set data.options.path=$PWD/runs/data/V \\
        --set data.options.features=runs/features/V --set data.options.split_map={}
    adah study --config coco_mini --set data.options.path=$PWD/runs/data/V \\
        --set data.options.features=runs/features/V --set data.options.split_map={} \\
        --variants none erase_fixed_g_image attention_pool_text erase_random_image --seeds 3 --bits 32 \
        --out runs/study-V
    adah study-compare runs/study-fashion10 runs/study-fashion_half runs/study-fashion_nolabel runs/study-fashion_tiny

(README, "Round 3: the photo default on collections it was not chosen on", has the table.)
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import zlib
from pathlib import Path

from adah.utils.fileio import atomic_write_text

VARIANTS = ("fashion10", "fashion_half", "fashion_nolabel", "fashion_tiny")
TINY_PER_CLASS = 8  # per class and split: 10 classes x 8 x 2 = 160 items, coco_mini's 159


def _rows(source: Path) -> list[dict]:
    path = source / "items.jsonl"
    if not path.is_file():
        sys.exit(f"{path}: not found (fashion_products lives in ../shared/data; pass --data-root)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def strip_label(title: str, label: str) -> str:
    """``title`` without the words of ``label`` (case-insensitive, with or without a final s or es);
    the title itself where nothing else would be left."""
    drop = set()
    for word in re.findall(r"[a-z0-9]+", label.lower()):
        drop |= {word, word + "s", word + "es", word.rstrip("s"), re.sub(r"es$", "", word)}
    kept = [w for w in title.split() if re.sub(r"[^a-z0-9]", "", w.lower()) not in drop]
    return " ".join(kept) if kept else title


def _crc(row: dict) -> int:
    return zlib.crc32(str(row["id"]).encode())


def select(rows: list[dict], variant: str) -> list[dict]:
    if variant in ("fashion10", "fashion_tiny"):
        counts = collections.Counter(r["labels"][0] for r in rows)
        keep = {name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]}
        largest = [r for r in rows if r["labels"][0] in keep]
        if variant == "fashion10":
            return largest
        groups = collections.defaultdict(list)
        for r in sorted(largest, key=_crc):
            groups[(r["labels"][0], r["split"])].append(r)
        chosen = {id(r) for g in groups.values() for r in g[:TINY_PER_CLASS]}
        return [r for r in largest if id(r) in chosen]
    if variant == "fashion_half":
        return [r for r in rows if _crc(r) % 2 == 0]
    if variant == "fashion_nolabel":
        return [{**r, "text": strip_label(r["text"], r["labels"][0])} for r in rows]
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def write_variant(source: Path, out: Path, variant: str, rows: list[dict] | None = None) -> tuple[Path, list[dict]]:
    """Write ``out/variant/items.jsonl`` (atomically) from ``source``'s rows (read here unless
    given); returns its path and the rows written."""
    kept = [{"id": r["id"], "text": r["text"], "labels": r["labels"], "split": r["split"],
             "image": str((source / r["image"]).resolve())} for r in select(rows or _rows(source), variant)]
    target = out / variant / "items.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, "".join(json.dumps(r) + "\n" for r in kept))
    return target, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", default="runs/data")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = ap.parse_args()
    source = Path(args.data_root) / "fashion_products"
    rows = _rows(source)
    for v in args.variants:
        target, kept = write_variant(source, Path(args.out), v, rows)
        split = collections.Counter(r["split"] for r in kept)
        classes = len({r["labels"][0] for r in kept})
        print(f"{target}: {len(kept)} items, {classes} classes, split {dict(split)}")


if __name__ == "__main__":
    main()
