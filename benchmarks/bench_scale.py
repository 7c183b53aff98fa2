"""Encode and evaluate a NUS-WIDE-sized collection with memory-mapped features: peak RSS and
items/s. 195,834 items: 2,100 queries against 193,734 retrieval items, 21 labels, 64 bits;
512-d image features and 1,000-d bag-of-words, both float32 memory maps on disk (1.2 GB)."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adah.config import ModelConfig
from adah.data.base import CrossModalData
from adah.evaluation.retrieval import encode, evaluate_codes
from adah.models import build_model

N, N_QUERY, IMAGE_DIM, TEXT_DIM, LABELS, BITS = 195_834, 2_100, 512, 1_000, 21, 64
RSS_GOAL_GIB = 4.0


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def make_memmaps(folder: Path, chunk: int = 16_384) -> CrossModalData:
    """Write features in chunks (never the whole array in memory) and map them read-only."""
    rng = np.random.default_rng(0)
    labels = (rng.random((N, LABELS)) < 0.12).astype(np.uint8)
    labels[labels.sum(1) == 0, rng.integers(0, LABELS)] = 1
    proj_i = rng.normal(size=(LABELS, IMAGE_DIM)).astype(np.float32)
    proj_t = rng.random((LABELS, TEXT_DIM)).astype(np.float32)
    img = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(N, IMAGE_DIM))
    txt = np.lib.format.open_memmap(folder / "texts.npy", mode="w+", dtype=np.float32, shape=(N, TEXT_DIM))
    for s in range(0, N, chunk):
        lab = labels[s : s + chunk].astype(np.float32)
        img[s : s + chunk] = lab @ proj_i + rng.normal(size=(len(lab), IMAGE_DIM)).astype(np.float32)
        txt[s : s + chunk] = (lab @ proj_t + rng.random((len(lab), TEXT_DIM)).astype(np.float32) > 1.0)
    img.flush(), txt.flush()
    del img, txt
    return CrossModalData(np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "texts.npy", mmap_mode="r"),
                          labels, name="nuswide-sized")


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="adah-scale-") as tmp:
        t0 = time.perf_counter()
        data = make_memmaps(Path(tmp))
        print(f"scale: wrote {N:,} x ({IMAGE_DIM} + {TEXT_DIM}) float32 memory maps in "
              f"{time.perf_counter() - t0:.1f}s; peak RSS so far {peak_rss_gib():.2f} GiB")
        cfg = ModelConfig(bits=BITS, image_backbone="mlp", image_dim=IMAGE_DIM, image_fc_dims=(1024, 512),
                          text_dim=TEXT_DIM, text_hidden=(2048, 512))
        model = build_model(cfg).eval()
        rows = np.arange(N)
        t0 = time.perf_counter()
        codes = encode(model, data, rows, batch_size=2048, progress=True, desc="encode")
        t_enc = time.perf_counter() - t0
        print(f"scale: encode {N:,} items (both modalities) in {t_enc:.1f}s = {N / t_enc:,.0f} items/s; "
              f"peak RSS {peak_rss_gib():.2f} GiB")
        q = type(codes)(codes.image[:N_QUERY], codes.text[:N_QUERY], codes.labels[:N_QUERY])
        db = type(codes)(codes.image[N_QUERY:], codes.text[N_QUERY:], codes.labels[N_QUERY:])
        t0 = time.perf_counter()
        report = evaluate_codes(q, db, directions=("i2t", "t2i"))
        t_eval = time.perf_counter() - t0
        pairs = 2 * N_QUERY * (N - N_QUERY)
        print(f"scale: MAP I->T and T->I, {N_QUERY:,} x {N - N_QUERY:,} in {t_eval:.1f}s = "
              f"{pairs / t_eval / 1e6:,.0f} M query-item pairs/s; peak RSS {peak_rss_gib():.2f} GiB")
        peak = peak_rss_gib()
        print(f"scale: peak RSS {peak:.2f} GiB (goal < {RSS_GOAL_GIB} GiB): {'met' if peak < RSS_GOAL_GIB else 'NOT met'}"
              f"  [untrained model: MAP {report.map['i2t']:.3f} / {report.map['t2i']:.3f}, not meaningful]")


if __name__ == "__main__":
    main()
