"""The fast path's one-off pass over a real feature cache in batches of 256 items against 32
(``precomputed.BATCH``): CPU seconds of each (alternated, twice) and the largest difference of the
pooled tables. Not in ``make bench`` (it needs a 448-px cache of fashion_products):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_pass_batch.py [--cache=runs/features/fashion_products448] \\
        [--data-root=../shared/data] [--rows=256]
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np


def main() -> None:
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    from adah.config import Config
    from adah.data.registry import make_split
    from adah.features.dataset import load_dataset
    from adah.training import precomputed as pc
    from adah.training.trainer import Trainer

    cfg = Config.load("fashion_products")
    cfg.data.options["features"] = args.get("cache", "runs/features/fashion_products448")
    cfg.data.root = args.get("data-root", "")
    cfg.train.progress = False
    data = load_dataset(cfg.data, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, data, make_split(cfg.data, len(data)), tmp)
        fast = pc.plan(trainer)
        if fast is None:
            sys.exit(f"the fast path does not apply: {trainer.training_path['reason']}")
        fast.rows = fast.rows[: int(args.get("rows", 256))]
        fast._compute()  # warm: chunk checks, page cache
        cpu, tables = {}, {}
        for batch in (256, 32, 256, 32):
            pc.BATCH = batch
            t0 = time.process_time()
            tables[batch] = fast._compute()
            cpu.setdefault(batch, []).append(time.process_time() - t0)
    print(f"one-off pass over {len(fast.rows)} rows: " + "; ".join(
        f"batches of {b}: {', '.join(f'{s:.2f}' for s in v)} CPU s" for b, v in cpu.items())
        + f"; largest difference of the tables {np.abs(tables[256] - tables[32]).max():.3g}")


if __name__ == "__main__":
    main()
