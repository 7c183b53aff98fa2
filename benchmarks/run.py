"""Benchmarks run by ``make bench``. Each prints its own timings and the ratio against a
reference measured in the same process; nothing here asserts a time. Each runs in a process
of its own, so peak-memory figures are its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "bench_metrics.py",  # MAP at NUS-WIDE protocol size (2,100 x 193,734, 16-128 bits) vs the DCMH loop
    "bench_scale.py",  # encode + evaluate 195,834 memory-mapped items: peak RSS and items/s
    "bench_search.py",  # exact top-100 over 1,000,000 64-bit codes: adah vs faiss IndexBinaryFlat, multi-hash recall
    "bench_train.py",  # the photo path on cached maps: pairs/s vs today's path and the floor
    "bench_page_faults.py",  # MobileNetV2 at 448 px: page faults and CPU s/photo without and with keep_freed_memory
    "bench_fit_fashion.py",  # adah fit on fashion_products (3,221 photos) end to end vs the 10-minute goal, its stages
    "bench_extract.py",  # features extract at 448 px vs the forward-only floor (1 and 2 threads), cache KB/photo
    "bench_index_scale.py",  # 10,000,000 clustered codes: faiss flat, multi-hash, Milvus Lite BIN_FLAT / BIN_IVF_FLAT
    "bench_serve_memory.py",  # adah serve's peak RSS above idle: 16 concurrent 36-MP uploads, 1,000 thumbnails
    "bench_cli_cold.py",  # adah search --text and adah serve in fresh processes vs a bare `import torch`
]

if __name__ == "__main__":
    failed = [b for b in BENCHMARKS if subprocess.run([sys.executable, str(HERE / b), *sys.argv[1:]]).returncode]
    sys.exit(f"benchmarks failed: {', '.join(failed)}" if failed else 0)
