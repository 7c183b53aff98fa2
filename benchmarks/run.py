"""Benchmarks run by ``make bench``. Each prints its own timings and the ratio against a
reference measured in the same process; nothing here asserts a time."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_metrics  # noqa: E402

if __name__ == "__main__":
    # MAP at NUS-WIDE protocol size (2,100 x 193,734, 16/32/64/128 bits) against the DCMH loop
    bench_metrics.main(sys.argv[1:])
