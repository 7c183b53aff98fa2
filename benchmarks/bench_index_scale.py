"""The index at scale: 10,000,000 64-bit codes clustered like a trained model's, searched by faiss
IndexBinaryFlat (exact, the reference), faiss multi-hash, Milvus Lite BIN_FLAT and BIN_IVF_FLAT.

Codes: 2,000 random centres, each code a centre with every bit flipped with probability 0.08
(a trained hash model puts items of one concept within a few bits of each other: not uniform
random codes). 200 queries drawn the same way. Per backend, in a process of its own: build time,
queries per second (batches of 100, top-100), recall@100 against faiss flat (a result counts when
its distance is within the exact 100th: ties make the exact set one choice among equals) and the
peak memory above the process's size after its imports (the benchmark process plus, for Milvus
Lite, its embedded server), printed as
ratios against faiss flat measured in the same run. Milvus Lite supports BIN_FLAT only; the
BIN_IVF_FLAT row says so (it needs a Milvus server). ``--n`` runs a smaller size.

    python benchmarks/bench_index_scale.py [--n 10000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BITS, K, CENTRES, FLIP = 64, 100, 2000, 0.08
BACKENDS = ("faiss", "multihash", "milvus_flat", "milvus_ivf")


def clustered_codes(n: int, seed: int, centres: np.ndarray, chunk: int = 1_000_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, BITS // 8), dtype=np.uint8)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        bits = centres[rng.integers(0, len(centres), m)] ^ (rng.random((m, BITS)) < FLIP)
        out[s : s + m] = np.packbits(bits, axis=1)
    return out


def make_data(folder: Path, n: int, queries: int) -> None:
    rng = np.random.default_rng(0)
    centres = rng.random((CENTRES, BITS)) < 0.5
    np.save(folder / "db.npy", clustered_codes(n, 1, centres))
    np.save(folder / "q.npy", clustered_codes(queries, 2, centres))


def _status_mib(pid: int | str, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _peak_mib(children: list[int]) -> float:
    """Peak resident memory of this process plus its children (the Milvus Lite server). VmHWM,
    not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report its parent's peak."""
    return _status_mib("self", "VmHWM") + sum(_status_mib(p, "VmHWM") for p in children)


def _children() -> list[int]:
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.append(int(stat.parent.name))
    return out


def run_one(backend: str, folder: Path) -> dict:
    from adah.index.backends import make_backend

    if backend not in ("faiss", "multihash"):
        from adah.index import milvus  # noqa: F401 - imported before the baseline, like faiss above
    base = _status_mib("self", "VmRSS")  # after the imports (torch, faiss, pymilvus)
    db = np.load(folder / "db.npy")
    q = np.load(folder / "q.npy")
    t0 = time.perf_counter()
    if backend in ("faiss", "multihash"):
        index = make_backend(db, BITS, backend)
    else:
        from adah.index import milvus

        if not milvus.available():
            return {"backend": backend, "skipped": "pymilvus / milvus-lite not installed (pip install 'adah[milvus]')"}
        try:
            index = milvus.make_milvus_backend(db, BITS, uri=folder / "lite.db", name=f"bench_{backend}",
                                               index_type="BIN_FLAT" if backend == "milvus_flat" else "BIN_IVF_FLAT",
                                               nlist=4096, nprobe=64)
        except milvus.MilvusError as exc:
            return {"backend": backend, "skipped": str(exc)}
    build = time.perf_counter() - t0
    qps, dist, rows = timed_search(index, q)
    np.save(folder / f"{backend}.rows.npy", rows)
    np.save(folder / f"{backend}.dist.npy", dist)
    return {"backend": backend, "build_s": build, "qps": qps, "peak_mib": _peak_mib(_children()) - base}


def timed_search(index, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Queries per second over ``q`` in batches of 100 (top-K, after a warm-up), distances, rows."""
    index.search(q[:10], K)  # warm-up
    dist, rows = [], []
    t0 = time.perf_counter()
    for s in range(0, len(q), 100):
        d, r = index.search(q[s : s + 100], K)
        dist.append(d), rows.append(r)
    return len(q) / (time.perf_counter() - t0), np.concatenate(dist), np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--one", choices=BACKENDS)
    parser.add_argument("--folder")
    args, _ = parser.parse_known_args()
    if args.one:
        print(json.dumps(run_one(args.one, Path(args.folder))))
        return
    from adah.index.backends import recall_at_k

    with tempfile.TemporaryDirectory(prefix="adah-index-scale-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        make_data(folder, args.n, args.queries)
        print(f"index scale: {args.n:,} clustered {BITS}-bit codes ({CENTRES:,} centres, bit flips p={FLIP}), "
              f"{args.queries} queries, top-{K}; data made in {time.perf_counter() - t0:.1f}s")
        results = {}
        for backend in BACKENDS:
            p = subprocess.run([sys.executable, __file__, "--one", backend, "--folder", tmp], capture_output=True,
                               text=True)
            if p.returncode:
                results[backend] = {"backend": backend, "skipped": f"failed: {p.stderr.strip().splitlines()[-1:]}"}
                continue
            results[backend] = json.loads(p.stdout.strip().splitlines()[-1])
        ref = results["faiss"]
        exact_rows, exact_dist = np.load(folder / "faiss.rows.npy"), np.load(folder / "faiss.dist.npy")
        print(f"{'backend':<22} {'build s':>9} {'QPS':>10} {'recall@100':>11} {'+peak MiB':>9}   "
              "ratios to faiss flat (build, QPS, memory)")
        for backend, r in results.items():
            if "skipped" in r:
                print(f"{backend:<22} skipped: {r['skipped']}")
                continue
            rows, dist = np.load(folder / f"{backend}.rows.npy"), np.load(folder / f"{backend}.dist.npy")
            recall = recall_at_k(exact_rows, rows, exact_dist, dist)
            print(f"{backend:<22} {r['build_s']:>9.2f} {r['qps']:>10.1f} {recall:>11.4f} {r['peak_mib']:>9.0f}   "
                  f"{r['build_s'] / max(ref['build_s'], 1e-9):.2f}x, {r['qps'] / ref['qps']:.2f}x, "
                  f"{r['peak_mib'] / ref['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
