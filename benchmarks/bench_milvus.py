"""The milvus backend on a Milvus server at scale (issue 32): clustered 64-bit codes bulk-inserted
into a standalone Milvus 2.3.5 server, BIN_IVF_FLAT built, then queries/s and recall@100 at a few
``nprobe`` values, next to faiss IndexBinaryFlat (exact, the reference) and faiss multi-hash
measured in the same run on the same codes (``make bench-milvus``).

The codes and queries are those of benchmarks/bench_index_scale.py (2,000 random centres, every
bit flipped with probability 0.08); faiss flat and multi-hash run there, each in a process of its
own (``--one``). The server is the ``milvus`` package's (tests/milvus_server.py: a free port on
127.0.0.1, a temporary folder, stopped at the end), or the one at ``--uri``. Build time is adah's
whole path (``make_milvus_backend``: insert in bulk, flush, index, load); the server's peak memory
is its process' VmHWM. Queries go in batches of 100, top-100; recall@100 counts a result found
when its distance is within the exact 100th (ties make the exact set one choice among equals).
On a shared machine the load moves during a run: each server ``nprobe`` is timed twice and faiss
flat once before and once after the server's searches, and the better rate of each is reported
(the ratios to faiss flat are against its better rate).

    python benchmarks/bench_milvus.py [--n 1000000] [--queries 200] [--nlist 1024] [--nprobe 16,64,256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_index_scale import (  # noqa: E402
    BITS,
    CENTRES,
    FLIP,
    K,
    _status_mib,
    make_data,
    timed_search,
)


def reference(backend: str, folder: Path) -> dict:
    """faiss flat or multi-hash, as bench_index_scale.py runs it (a process of its own)."""
    p = subprocess.run([sys.executable, str(HERE / "bench_index_scale.py"), "--one", backend, "--folder", str(folder)],
                       capture_output=True, text=True)
    if p.returncode:
        return {"backend": backend, "skipped": f"failed: {p.stderr.strip().splitlines()[-1:]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def on_server(uri: str, folder: Path, nlist: int, nprobes: list[int]) -> list[dict]:
    from adah.index import milvus

    db, q = np.load(folder / "db.npy"), np.load(folder / "q.npy")
    t0 = time.perf_counter()
    built = milvus.make_milvus_backend(db, BITS, uri=uri, name="bench_milvus_ivf", index_type="BIN_IVF_FLAT",
                                       nlist=nlist)
    build = time.perf_counter() - t0
    print(f"  BIN_IVF_FLAT nlist={nlist}: {len(db):,} codes inserted, flushed, indexed, loaded in {build:.1f}s "
          f"({len(db) / build:,.0f} codes/s)", flush=True)
    out = []
    for nprobe in nprobes:
        backend = milvus.MilvusBackend(built.client, built.collection, BITS, len(db), exact=False, nprobe=nprobe,
                                       nlist=nlist)
        qps, dist, rows = timed_search(backend, q)
        qps = max(qps, timed_search(backend, q)[0])  # the better of two rounds: the machine's load moves
        np.save(folder / f"ivf{nprobe}.rows.npy", rows), np.save(folder / f"ivf{nprobe}.dist.npy", dist)
        out.append({"backend": f"milvus BIN_IVF_FLAT nprobe={nprobe}", "build_s": build, "qps": qps,
                    "file": f"ivf{nprobe}"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="codes in the collection (the issue's size: 10000000)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", default="16,64,256", help="comma-separated nprobe values")
    parser.add_argument("--uri", help="a running Milvus server (default: start the milvus package's, here)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    nprobes = [int(v) for v in args.nprobe.split(",")]
    from adah.index.backends import recall_at_k

    with tempfile.TemporaryDirectory(prefix="adah-bench-milvus-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        make_data(folder, args.n, args.queries)
        print(f"bench-milvus: {args.n:,} clustered {BITS}-bit codes ({CENTRES:,} centres, bit flips p={FLIP}), "
              f"{args.queries} queries, top-{K}; data made in {time.perf_counter() - t0:.1f}s", flush=True)
        results = [reference("faiss", folder), reference("multihash", folder)]
        for r in results:
            r["file"] = r["backend"]
        server, peak = None, None
        try:
            if args.uri:
                uri = args.uri
            else:
                from milvus_server import StandaloneMilvus, skip_reason

                if skip_reason():
                    sys.exit(f"bench-milvus: {skip_reason()}")
                server = StandaloneMilvus(folder / "server")
                uri = server.uri
                print(f"  Milvus {uri} (standalone server, PID {server.server_pid})", flush=True)
            results += on_server(uri, folder, args.nlist, nprobes)
            if server is not None:
                peak = _status_mib(server.server_pid, "VmHWM")
            again = reference("faiss", folder)  # faiss flat once more, next to the server's searches
            results[0]["qps"] = max(results[0]["qps"], again.get("qps", 0.0))
        finally:
            if server is not None:
                server.stop()
        report(results, folder, recall_at_k, peak, args.json)


def report(results: list[dict], folder: Path, recall_at_k, server_peak: float | None, json_out: str | None) -> None:
    ref = results[0]
    exact_rows, exact_dist = np.load(folder / "faiss.rows.npy"), np.load(folder / "faiss.dist.npy")
    print(f"{'backend':<32} {'build s':>9} {'QPS':>10} {'recall@100':>11}   QPS / faiss flat's")
    for r in results:
        if "skipped" in r:
            print(f"{r['backend']:<32} skipped: {r['skipped']}")
            continue
        rows, dist = np.load(folder / f"{r['file']}.rows.npy"), np.load(folder / f"{r['file']}.dist.npy")
        r["recall_at_100"] = recall_at_k(exact_rows, rows, exact_dist, dist)
        print(f"{r['backend']:<32} {r['build_s']:>9.2f} {r['qps']:>10.1f} {r['recall_at_100']:>11.4f}   "
              f"{r['qps'] / ref['qps']:.2f}x")
    if server_peak is not None:
        print(f"Milvus server peak resident memory: {server_peak:,.0f} MiB")
    if json_out:
        Path(json_out).write_text(json.dumps({"results": results, "server_peak_mib": server_peak}, indent=1))


if __name__ == "__main__":
    main()
