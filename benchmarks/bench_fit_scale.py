"""``adah fit``'s stages on N synthetic photos, the slope per photo, the extrapolation to
100,000, and the memory peak (issue 30, Deliver 4). ``make bench-scale``; alone:

    PYTHONPATH=src .venv/bin/python benchmarks/bench_fit_scale.py [--sizes=1000,2000] [--epochs=2]

For each size N (one process each, so each peak is its own): N photos generated here (tiny
8 x 8 JPEG colour fields: extraction's cost does not depend on the photo, see below), with
captions of 3-8 words from a 200-word vocabulary that names one of 20 labels, every tenth row in
the test split, in a folder data set; then :func:`adah.recipes.fit.fit_folder` runs for real with
fit's default recipe (448 px, salient erasing on the image branch, MiniLM text features, 32 bits)
for ``--epochs`` epochs, except that the MobileNetV2 maps are synthetic: the fit's image cache is
written beforehand with the header extraction would write (float16 320 x 14 x 14 drawn from a
normal), so fit finds it complete. Extraction is timed on its own instead, on ``EXTRACT_PHOTOS``
real-sized synthetic photos (640 x 480 JPEGs) at 448 px, and its seconds per photo, times N,
stand for the image-feature stage (extraction costs the same per photo at any N: a fixed-size
forward pass per photo). Training is stated for 40 epochs from the measured ones (at least 2): the
stage's seconds plus the epochs not run times the mean of the measured epochs after the first
(whose seconds hold the one-off pass over the maps).

Printed: each stage's seconds at each N, their slope per 1,000 photos between the two largest
sizes, the 100,000-photo extrapolation (slope x 100,000 + intercept), and the peak RSS
(``resource.getrusage``'s ``ru_maxrss``) of each N's process, with its slope.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EXTRACT_PHOTOS, EXTRACT_BATCH, TARGET, FULL_EPOCHS = 32, 16, 100_000, 40
LABELS, VOCAB = 20, 200
STAGES = ("image_features", "text_features", "train", "evaluate", "index")


def synthetic_folder(folder: Path, n: int, rng: np.random.Generator, size: tuple[int, int] = (8, 6)) -> None:
    """``n`` JPEGs of ``size`` (smooth random colour fields) with captions, labels and a split."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    words = [f"w{i}" for i in range(VOCAB)]
    lines = []
    for i in range(n):
        label = int(rng.integers(LABELS))
        image = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8))
        (image if size == (8, 6) else image.resize(size, Image.BICUBIC)).save(folder / "images" / f"{i}.jpg", quality=90)
        text = " ".join([f"label{label}", *rng.choice(words, size=int(rng.integers(2, 8)))])
        lines.append(json.dumps({"id": str(i), "image": f"images/{i}.jpg", "text": text, "labels": [f"l{label}"],
                                 "split": "test" if i % 10 == 0 else "train"}))
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")


def synthetic_image_cache(cfg, rng: np.random.Generator) -> None:
    """Write the fit's image cache as extraction would, with synthetic maps (complete)."""
    import torch

    from adah.features import cache_format as cf
    from adah.features.extraction import _new_header, _pixel_data
    from adah.models.adah import build_backbone

    out = Path(cfg.data.options["features"])
    backbone = build_backbone(cfg.model).eval()
    data = _pixel_data(cfg.data)
    header = _new_header(cfg.model, backbone, data, torch.device("cpu"), cf.DEFAULT_BATCH_SIZE)
    out.mkdir(parents=True)
    cf.save_head(out, backbone.features[-1])
    shape, bs = tuple(header["shape"]), header["batch_size"]
    maps = np.lib.format.open_memmap(out / cf.MAPS_FILE, mode="w+", dtype=cf.STORE_DTYPE, shape=shape)
    for s in range(0, shape[0], bs):
        maps[s : s + bs] = rng.normal(0.0, 1.0, size=(min(bs, shape[0] - s), *shape[1:])).astype(cf.STORE_DTYPE)
    maps.flush()
    header.update(done=shape[0], complete=True)
    header[cf.CHUNKS_KEY] = [cf.chunk_digest(maps[s : s + bs]) for s in range(0, shape[0], bs)]
    del maps
    cf._write_header(out, header)


def one_size(n: int, epochs: int) -> dict:
    """Fit on ``n`` synthetic photos in this process: the stages' seconds and the peak RSS."""
    from adah.recipes.fit import fit_config, fit_folder

    rng = np.random.default_rng(n)
    with tempfile.TemporaryDirectory(prefix="adah-fit-scale-") as tmp:
        tmp = Path(tmp)
        synthetic_folder(tmp / "photos", n, rng)
        cfg, _ = fit_config(tmp / "photos" / "items.jsonl", tmp / "fit", similarity="auto", ignore_labels=False,
                            text_encoder="minilm", bits=32, epochs=epochs, seed=0, attention=None, device="cpu")
        synthetic_image_cache(cfg, rng)
        t0 = time.perf_counter()
        fit = fit_folder(tmp / "photos", tmp / "fit", epochs=epochs, device="cpu", progress=False)
        total = time.perf_counter() - t0
        epoch_seconds = [json.loads(line)["seconds"] for line in (tmp / "fit" / "metrics.jsonl").read_text().splitlines()]
    return {"n": n, "seconds": fit.seconds, "epochs": epoch_seconds, "total": total,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def extraction_seconds_per_photo() -> float:
    """Seconds a photo of ``adah features extract`` at 448 px (pretrained MobileNetV2, 640 x 480 JPEGs)."""
    from adah.features.extraction import extract_features
    from adah.recipes.fit import fit_config

    with tempfile.TemporaryDirectory(prefix="adah-fit-scale-x-") as tmp:
        tmp = Path(tmp)
        synthetic_folder(tmp / "photos", EXTRACT_PHOTOS, np.random.default_rng(1), size=(640, 480))
        cfg, _ = fit_config(tmp / "photos" / "items.jsonl", tmp / "fit", similarity="auto", ignore_labels=False,
                            text_encoder="minilm", bits=32, epochs=1, seed=0, attention=None, device="cpu")
        extract_features(cfg, tmp / "warm", batch_size=EXTRACT_BATCH, progress=False, max_batches=1)
        result = extract_features(cfg, tmp / "cache", batch_size=EXTRACT_BATCH, progress=False)
    return result.seconds / result.new_rows


def report(rows: list[dict], per_photo: float, epochs: int) -> None:
    for r in rows:
        r["stages"] = {**{k: r["seconds"].get(k, 0.0) for k in STAGES}, "image_features": per_photo * r["n"]}
        per_epoch = float(np.mean(r["epochs"][1:]))  # the first epoch's seconds hold the one-off pass
        r["stages"]["train"] = r["seconds"]["train"] + (FULL_EPOCHS - len(r["epochs"])) * per_epoch
        print(f"fit-scale N={r['n']:,}: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["stages"].items())
              + f" (image_features = {per_photo:.2f} s/photo x N; train for {FULL_EPOCHS} epochs from {epochs} measured: "
              f"{', '.join(f'{s:.1f}' for s in r['epochs'])} s); peak RSS {r['peak_rss_mib']:.0f} MiB")
    if len(rows) < 2:
        return
    a, b = rows[-2], rows[-1]
    dn = b["n"] - a["n"]
    parts = []
    total = 0.0
    for k in (*STAGES, "peak_rss_mib"):
        va, vb = (r["stages"][k] if k in STAGES else r[k] for r in (a, b))
        slope = (vb - va) / dn
        at = vb + slope * (TARGET - b["n"])
        total += at if k in STAGES else 0.0
        parts.append(f"{k} {1000 * slope:.2f}/1,000 photos -> {at:,.0f}" + (" MiB" if k == "peak_rss_mib" else " s"))
    print(f"fit-scale extrapolated to {TARGET:,} photos from N={a['n']:,} and N={b['n']:,} (linear): " + "; ".join(parts)
          + f"; all stages {total / 3600:.1f} h")


def main() -> None:
    sizes = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--sizes=")), "1000,2000")
    epochs = int(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--epochs=")), "2"))
    if epochs < 2:
        sys.exit("--epochs must be at least 2 (the first epoch holds the one-off pass)")
    if len(sys.argv) > 1 and sys.argv[1].startswith("--one="):
        print(json.dumps(one_size(int(sys.argv[1].split("=", 1)[1]), epochs)))
        return
    rows = []
    for n in (int(s) for s in sizes.split(",")):
        done = subprocess.run([sys.executable, __file__, f"--one={n}", f"--epochs={epochs}"], capture_output=True,
                              text=True, check=False)
        if done.returncode:
            sys.exit(f"fit-scale N={n} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"fit-scale N={n:,} measured: {json.dumps(rows[-1])}", flush=True)  # kept if a later size fails
    report(rows, extraction_seconds_per_photo(), epochs)


if __name__ == "__main__":
    main()
