"""Benchmarks run by ``make bench``. Each prints its own timings and the ratio against a
reference measured in the same process; nothing here asserts a time."""

from __future__ import annotations

import time

import numpy as np

from adah.metrics import mean_average_precision


def reference_map(qb: np.ndarray, rb: np.ndarray, ql: np.ndarray, rl: np.ndarray) -> float:
    """DCMH's loop: per query one Hamming row, a stable sort, AP over the relevant items."""
    bits = qb.shape[1]
    total = 0.0
    for i in range(len(qb)):
        gnd = (ql[i] @ rl.T) > 0
        tsum = int(gnd.sum())
        if tsum == 0:
            continue
        hamm = 0.5 * (bits - qb[i].astype(np.float32) @ rb.T.astype(np.float32))
        order = np.argsort(hamm, kind="stable")
        pos = np.flatnonzero(gnd[order]) + 1.0
        total += float(np.mean(np.arange(1, tsum + 1) / pos))
    return total / len(qb)


def bench_map(num_query: int = 2000, num_db: int = 18000, bits: int = 64, num_labels: int = 24) -> None:
    """MIRFlickr-sized MAP: adah.metrics against the per-query reference loop."""
    rng = np.random.default_rng(0)
    draw = lambda n: rng.choice(np.array([-1, 1], np.int8), size=(n, bits))  # noqa: E731
    qb, rb = draw(num_query), draw(num_db)
    ql = (rng.random((num_query, num_labels)) < 0.1).astype(np.float32)
    rl = (rng.random((num_db, num_labels)) < 0.1).astype(np.float32)
    t0 = time.perf_counter()
    ref = reference_map(qb, rb, ql, rl)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = mean_average_precision(qb, rb, ql, rl)
    t_adah = time.perf_counter() - t0
    print(f"MAP {num_query} queries x {num_db} items, {bits} bits: reference loop {t_ref:.2f}s, "
          f"adah {t_adah:.2f}s, speed-up {t_ref / t_adah:.1f}x, equal: {abs(ref - got) < 1e-9} "
          f"({ref:.6f} vs {got:.6f})")


if __name__ == "__main__":
    bench_map()
