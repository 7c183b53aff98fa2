"""Which epochs a study's runs pick, and what the first N epochs alone would have given (README, round 9).

For each study folder (written by ``adah study``) and variant at one code length: the epoch each
seed's run picked by validation MAP, the mean of those best validation MAPs, the mean of the best
validation MAP within epochs 1..N (``--within``; a longer run with the same schedule up to N
reproduces an N-epoch run there), and the mean training time of a run (the sum of the
``seconds`` column of its ``metrics.jsonl``, where that file is present). Reads ``study.json``.

    python research/scripts/study_epochs.py runs/study9-*448 --within 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def summarise(study: Path, bits: int, within: int) -> list[str]:
    runs = [r for r in json.loads((study / "study.json").read_text())["runs"] if r["bits"] == bits]
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rs = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["seed"])
        early = [max((h["val_map"] for h in r["history"] if h["epoch"] <= within and "val_map" in h), default=float("nan"))
                 for r in rs]
        seconds = []
        for r in rs:
            metrics = study / variant / f"bits{bits}-seed{r['seed']}" / "metrics.jsonl"
            if metrics.is_file():
                seconds.append(sum(json.loads(line).get("seconds", 0.0) for line in metrics.read_text().splitlines() if line))
        secs = f"{statistics.mean(seconds):.0f}" if seconds else "-"
        lines.append(f"| {study.name} | {variant} | {', '.join(str(r['best_epoch']) for r in rs)} | "
                     f"{statistics.mean(r['val_map'] for r in rs):.4f} | {statistics.mean(early):.4f} | {secs} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--within", type=int, default=20, help="Best validation MAP within epochs 1..N.")
    args = parser.parse_args(argv)
    for study in args.studies:
        if not (study / "study.json").is_file():
            raise SystemExit(f"error: {study / 'study.json'} not found: give folders written by adah study")
    print(f"| study | variant | picked epoch per seed | val MAP | val MAP within epochs 1-{args.within} | seconds a run |")
    print("|---|---|---|---|---|---|")
    for study in args.studies:
        print("\n".join(summarise(study, args.bits, args.within)))


if __name__ == "__main__":
    sys.exit(main())
