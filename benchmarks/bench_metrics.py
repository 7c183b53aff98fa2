"""MAP at NUS-WIDE protocol size: adah.evaluation.metrics against the DCMH per-query loop.

Synthetic data of the NUS-WIDE protocol's shape: 2,100 queries x 193,734 database items,
21 multi-hot labels (~2-3 per item, skewed frequencies), ±1 codes correlated with the
labels (so the ranking has structure and many ties), for 16/32/64/128 bits.

For each bit length it prints the reference loop's time (measured on ``--ref-queries``
queries and extrapolated linearly to all queries: its cost is the same for every query),
adah's time on all queries, the ratio, whether adah's MAP on the reference's queries
equals the reference's (within 1e-12), and memory. Goal: at 64 bits, >= 25x faster than
the loop, equal values, peak memory under 2 GiB. Nothing here asserts a time.

    python benchmarks/bench_metrics.py [--queries 2100] [--db 193734] [--ref-queries 200]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from adah.evaluation.metrics import mean_average_precision

GOAL_RATIO, GOAL_BITS, GOAL_MEMORY_GIB = 25.0, 64, 2.0


def reference_map(qb: np.ndarray, rb: np.ndarray, ql: np.ndarray, rl: np.ndarray) -> float:
    """DCMH's loop: per query one Hamming row, a stable sort, AP over the relevant items."""
    bits = qb.shape[1]
    q32, r32, ql32, rl32 = (a.astype(np.float32) for a in (qb, rb, ql, rl))
    total = 0.0
    for i in range(len(qb)):
        gnd = (rl32 @ ql32[i]) > 0
        tsum = int(gnd.sum())
        if tsum == 0:
            continue
        hamm = 0.5 * (bits - r32 @ q32[i])
        order = np.argsort(hamm, kind="stable")
        pos = np.flatnonzero(gnd[order]) + 1.0
        total += float(np.mean(np.arange(1, tsum + 1) / pos))
    return total / len(qb)


def make_data(
    num_query: int, num_db: int, num_labels: int, max_bits: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Codes ``(n, max_bits)`` int8 ±1 and labels ``(n, num_labels)`` uint8 multi-hot."""
    rng = np.random.default_rng(seed)
    n = num_query + num_db
    freq = 1.0 / np.arange(1, num_labels + 1) ** 0.8
    freq *= 2.4 / freq.sum()  # ~2.4 labels per item on average
    labels = (rng.random((n, num_labels)) < np.minimum(freq, 0.95)).astype(np.uint8)
    empty = labels.sum(axis=1) == 0
    labels[empty, rng.choice(num_labels, size=int(empty.sum()), p=freq / freq.sum())] = 1
    proj = rng.standard_normal((num_labels, max_bits)).astype(np.float32)
    codes = np.empty((n, max_bits), dtype=np.int8)
    for s in range(0, n, 65536):  # sign(labels @ P + noise), in slices to bound memory
        z = labels[s : s + 65536].astype(np.float32) @ proj
        z += 1.5 * rng.standard_normal(z.shape, dtype=np.float32)
        codes[s : s + 65536] = np.where(z >= 0, 1, -1)
    return codes[:num_query], codes[num_query:], labels[:num_query], labels[num_query:]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2100)
    parser.add_argument("--db", type=int, default=193_734)
    parser.add_argument("--labels", type=int, default=21)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--ref-queries", type=int, default=200, help="queries the reference loop is timed on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_ref = min(args.ref_queries, args.queries)

    qb_all, rb_all, ql, rl = make_data(args.queries, args.db, args.labels, max(args.bits), args.seed)
    t0 = time.perf_counter()
    for ties in ("stable", "expected"):  # load (or compile) the numba kernels, serial and parallel
        mean_average_precision(qb_all[:2, :8], rb_all[:50, :8], ql[:2], rl[:50], ties=ties)
        mean_average_precision(qb_all[:64, :8], rb_all[:, :8], ql[:64], rl, ties=ties)
    print(f"MAP, {args.queries} queries x {args.db} items, {args.labels} labels "
          f"(first call, numba kernels loaded/compiled: {time.perf_counter() - t0:.1f}s)")
    print(f"reference = DCMH per-query loop (Hamming row, stable argsort, AP), timed on {n_ref} "
          f"queries and extrapolated x{args.queries / n_ref:.1f}; equality checked on those {n_ref}")
    print(f"{'bits':>5} {'reference':>10} {'adah':>8} {'ratio':>7} {'equal':>6} {'|diff|':>8} "
          f"{'MAP':>8} {'adah ties=expected':>19} {'adah numpy peak':>16}")
    ratios = {}
    for bits in args.bits:
        qb, rb = np.ascontiguousarray(qb_all[:, :bits]), np.ascontiguousarray(rb_all[:, :bits])
        t0 = time.perf_counter()
        ref = reference_map(qb[:n_ref], rb, ql[:n_ref], rl)
        t_ref = (time.perf_counter() - t0) * args.queries / n_ref
        sub = mean_average_precision(qb[:n_ref], rb, ql[:n_ref], rl)
        tracemalloc.start()
        t0 = time.perf_counter()
        full = mean_average_precision(qb, rb, ql, rl)
        t_adah = time.perf_counter() - t0
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        t0 = time.perf_counter()
        mean_average_precision(qb, rb, ql, rl, ties="expected")
        t_exp = time.perf_counter() - t0
        diff = abs(ref - sub)
        ratios[bits] = (t_ref / t_adah, diff <= 1e-12)
        print(f"{bits:>5} {t_ref:>9.2f}s {t_adah:>7.2f}s {t_ref / t_adah:>6.1f}x {str(diff <= 1e-12):>6} "
              f"{diff:>8.1e} {full:>8.5f} {t_exp:>18.2f}s {traced_peak:>12.1f} MiB")
    print("adah numpy peak: numpy allocations traced (tracemalloc) during the stable-MAP call; the "
          "kernel's own buffers (~10 B per db item per running thread) come on top")
    rss = peak_rss_mib()
    print(f"peak RSS of this whole process (data, reference and adah, torch imported): {rss:.0f} MiB")
    if GOAL_BITS in ratios:
        ratio, equal = ratios[GOAL_BITS]
        ok = ratio >= GOAL_RATIO and equal and rss < GOAL_MEMORY_GIB * 1024
        print(f"GOAL {GOAL_BITS} bits, {args.queries} x {args.db}: {ratio:.1f}x faster than the reference "
              f"loop (goal >= {GOAL_RATIO:.0f}x), equal values: {equal}, peak RSS {rss:.0f} MiB (goal < {GOAL_MEMORY_GIB:.0f} GiB) -> "
              f"{'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
