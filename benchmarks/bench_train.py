"""The photo path on cached maps: training throughput against today's path and the floor, in one
process (cache bytes per photo and extraction: ``bench_extract.py``).

Synthetic data, generated here (nothing read from ../shared):

* training: the shipped photo config (``fashion_products``: MobileNetV2 maps at 448 px, salient
  erasing with a fixed G on the image branch; and the same with ``none``) over a cache of
  ``N_TRAIN + N_VAL`` items written directly in the cache format MobileNetV2's extraction writes
  (320 x 14 x 14 float16 maps drawn from normal(0, 1), its last 1x1 conv applied when read), 10
  labels (1-2 an item), bag-of-words texts of 500 words (words of the item's labels plus
  noise). Today's path (``ADAH_FAST_PATH=0``: every step reads, converts and splits the maps,
  validation encodes every map) against the fast path (:mod:`adah.training.precomputed`), one
  epoch each (training steps, then validation, as ``fit`` runs them); the floor is the
  forward+backward+Adam step of the trainable parts alone (D and the text branch) on one batch
  already in memory, repeated;
* the paper's G (``--preset paper`` on both branches: G takes steps, so the pooled fast path is
  off; ``--paper-g`` runs this line alone) on the compact cache: the path over the cache
  (``ADAH_FAST_PATH=0``: every step reads the maps and runs the cache's 1x1 conv, every validation
  reads all of them) against the held-maps path (:mod:`adah.training.held_maps`), one epoch each,
  and its one-off read.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

N_TRAIN, N_VAL, LABELS, VOCAB, BATCH = 512, 128, 10, 500, 32
SIZE = 448
SPEEDUP_GOAL = 10.0
# torch threads (--threads=N): 1 by default, as the figures; on a shared 2-core machine two threads
# spin against other jobs and a step of the small trainable parts took 1.4 s against 0.08 s on one thread
THREADS = 1


def synthetic_texts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((n, LABELS), np.uint8)
    for i in range(n):
        labels[i, rng.choice(LABELS, size=rng.integers(1, 3), replace=False)] = 1
    words = rng.random((LABELS, VOCAB)) < 0.03
    texts = ((labels.astype(np.float32) @ words > 0) & (rng.random((n, VOCAB)) < 0.5)) | (rng.random((n, VOCAB)) < 0.01)
    return texts.astype(np.float32), labels


def synthetic_cache(folder: Path, n: int, weights: Path, rng: np.random.Generator, compact: bool) -> None:
    """A complete MobileNetV2 cache at 448 px. ``compact``: the format extraction writes now
    (version 3: (n, 320, 14, 14) float16 bottleneck maps drawn from normal(0, 1), the last 1x1
    conv's weights from ``weights`` in ``head.pt``, applied when read); else the format before
    it (version 2: (n, 1280, 14, 14) float16 maps drawn as ReLU6 activations, clip(normal(0, 2),
    0, 6), about half the cells zero)."""
    from adah.features import image_cache as ic
    from adah.features.cache_format import head_info, save_head

    folder.mkdir(parents=True)
    head = ic.COMPACT_HEADS["mobilenet_v2"]()
    state = torch.load(weights, weights_only=True)
    head.load_state_dict({k.removeprefix("features.18."): v for k, v in state.items() if k.startswith("features.18.")})
    if compact:
        save_head(folder, head)
    shape = (n, 320 if compact else 1280, 14, 14)
    maps = np.lib.format.open_memmap(folder / ic.MAPS_FILE, mode="w+", dtype=ic.STORE_DTYPE, shape=shape)
    for s in range(0, n, BATCH):
        block = rng.normal(0.0, 1.0, size=(min(BATCH, n - s), *shape[1:]))
        maps[s : s + len(block)] = (block if compact else np.clip(2 * block, 0, 6)).astype(ic.STORE_DTYPE)
    maps.flush()
    header = {
        "format": ic.FORMAT, "version": ic.VERSION if compact else 2, "backbone": "mobilenet_v2", "layer": ic.LAYERS["mobilenet_v2"],
        "weights": str(weights), "weights_id": ic.weights_identity("mobilenet_v2", str(weights)),
        "features_sha256": "synthetic", "image_size": SIZE, "shape": list(shape), "dtype": "float16",
        "batch_size": BATCH, "device": "cpu", "torch": torch.__version__, "done": n, "complete": True,
        "dataset": {"name": "synthetic", "images_fingerprint": "synthetic", "num_items": n},
        **({"head": head_info("mobilenet_v2", head, 1280)} if compact else {}),
        ic.CHUNKS_KEY: [ic.chunk_digest(maps[s : s + BATCH]) for s in range(0, n, BATCH)],
    }
    del maps
    (folder / ic.HEADER_FILE).write_text(json.dumps(header))


def trainer_for(attention: str, folder: Path, weights: Path, texts, labels, run_dir: Path, fast: bool,
                preset: str | None = None):
    from adah.config import Config
    from adah.data.base import CrossModalData, Split
    from adah.features.image_cache import FeatureCache
    from adah.training.precomputed import ENV_SWITCH
    from adah.training.trainer import Trainer

    os.environ[ENV_SWITCH] = "1" if fast else "0"
    cfg = Config.load("fashion_products", preset=preset).override({
        "model.image_weights": str(weights), "model.attention": attention, "train.progress": False,
        "train.batch_size": BATCH})
    data = CrossModalData(FeatureCache(folder), texts, labels, name="synthetic")
    n = len(texts)
    split = Split(query=np.arange(0), retrieval=np.arange(N_TRAIN), train=np.arange(N_TRAIN),
                  val=np.arange(N_TRAIN, n))
    trainer = Trainer(cfg, data, split, run_dir)
    assert (trainer.fast is not None) == fast, trainer.training_path
    return trainer


def epoch_seconds(trainer, once_only: bool = False) -> tuple[float, float, float]:
    """(seconds of the one-off pass, of the training steps, of the validation) of one epoch."""
    t0 = time.perf_counter()
    if trainer.fast is not None:
        trainer.fast.data  # noqa: B018 - the pooled parts, computed once per run
    t1 = time.perf_counter()
    if once_only:
        return t1 - t0, float("nan"), float("nan")
    trainer.run_epoch()
    t2 = time.perf_counter()
    trainer.validate()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def floor_rate(trainer, reps: int = 30) -> float:
    """Pairs/s of the trainable parts alone: forward, loss, backward and Adam on one batch in memory."""
    batch = trainer._batch(trainer.split.train[:BATCH])
    trainer.model.train()
    trainer.min_step(*batch)  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        trainer.min_step(*batch)
    return reps * BATCH / (time.perf_counter() - t0)


def bench_training(tmp: Path, weights: Path, paper_g_only: bool = False) -> None:
    """Today's path on the cache format before this change (version 2) against the fast path on
    the compact cache (version 3); the fast path's one-off pass is timed on both. Then the paper's
    G (alone with ``paper_g_only``)."""
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_VAL
    texts, labels = synthetic_texts(rng, n)
    for version in ("v2", "v3"):
        synthetic_cache(tmp / version, n, weights, rng, compact=version == "v3")
    for attention in () if paper_g_only else ("image", "none"):
        runs = [("v2", False), ("v2", True), ("v3", True)]
        rows = {}
        for version, fast in runs:
            trainer = trainer_for(attention, tmp / version, weights, texts, labels, tmp / f"run-{attention}-{version}-{fast}",
                                  fast)
            if (version, fast) == ("v2", True):  # its one-off pass only: the epochs are the same as on v3
                rows[version, fast] = epoch_seconds(trainer, once_only=True)
                continue
            once, steps, val = epoch_seconds(trainer)
            rows[version, fast] = (once, steps, val, floor_rate(trainer) if fast else float("nan"))
        (_, s0, v0, _), (once, s1, v1, floor) = rows["v2", False], rows["v3", True]
        once_v2 = rows["v2", True][0]
        old, new = N_TRAIN / (s0 + v0), N_TRAIN / (s1 + v1)
        run40 = 40 * N_TRAIN / (once + 40 * (s1 + v1))
        old40 = 40 * N_TRAIN / (40 * (s0 + v0))
        name = "shipped photo G (salient erasing, fixed)" if attention == "image" else "none"
        print(f"train [{name}, {N_TRAIN} pairs, {N_VAL} validation, batch {BATCH}, {torch.get_num_threads()} threads]: "
              f"today's path (version-2 cache) {old:.0f} pairs/s an epoch ({s0:.1f}s steps + {v0:.1f}s validation); fast path "
              f"{new:.0f} pairs/s ({s1:.2f}s steps + {v1:.2f}s validation, {100 * v1 / (s1 + v1):.0f}% of the epoch; "
              f"goal <= 20%), {new / old:.1f}x today's (goal >= {SPEEDUP_GOAL:.0f}x: "
              f"{'met' if new / old >= SPEEDUP_GOAL else 'NOT met'}); one-off pass {once:.1f}s on the compact cache "
              f"({once_v2:.1f}s on a version-2 cache), so a 40-epoch run "
              f"{run40 / old40:.1f}x today's; floor (D and the text branch alone, one batch in memory) "
              f"{floor:.0f} pairs/s, the fast epoch at {new / floor:.2f}x of it")
        sys.stdout.flush()
    bench_paper_g(tmp, weights, texts, labels)


def bench_paper_g(tmp: Path, weights: Path, texts: np.ndarray, labels: np.ndarray) -> None:
    """The paper's G on the compact cache: the path over the cache against the held maps, one epoch
    each, both keeping freed memory (:func:`adah.utils.runtime.keep_freed_memory`, which the held maps call)."""
    from adah.utils.runtime import keep_freed_memory

    keep_freed_memory()
    rows = {}
    for fast in (False, True):
        trainer = trainer_for("both", tmp / "v3", weights, texts, labels, tmp / f"run-paper-{fast}", fast, preset="paper")
        rows[fast] = epoch_seconds(trainer)
    (_, s0, v0), (once, s1, v1) = rows[False], rows[True]
    old, new = N_TRAIN / (s0 + v0), N_TRAIN / (s1 + v1)
    run40 = (40 * (s0 + v0)) / (once + 40 * (s1 + v1))
    print(f"train [paper's G (G takes steps), {N_TRAIN} pairs, {N_VAL} validation, batch {BATCH}, "
          f"{torch.get_num_threads()} threads]: over the compact cache {old:.0f} pairs/s an epoch ({s0:.1f}s steps + "
          f"{v0:.1f}s validation); held maps {new:.0f} pairs/s ({s1:.1f}s steps + {v1:.1f}s validation), "
          f"{new / old:.1f}x; one-off read {once:.1f}s, so a 40-epoch run {run40:.1f}x")
    sys.stdout.flush()


def main() -> None:
    from torchvision.models import mobilenet_v2

    threads = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--threads=")), THREADS)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="adah-bench-train-") as tmp:
        tmp = Path(tmp)
        weights = tmp / "mobilenet_v2-random.pth"
        torch.manual_seed(0)
        torch.save(mobilenet_v2(weights=None).state_dict(), weights)
        bench_training(tmp, weights, paper_g_only="--paper-g" in sys.argv)


if __name__ == "__main__":
    main()
