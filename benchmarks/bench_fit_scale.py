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
sizes, the 100,000-photo extrapolation (slope x 100,000 + intercept), and the memory of each N's
process, with its slope: the peak RSS (``resource.getrusage``'s ``ru_maxrss``) and, sampled from
``/proc/self/status`` every 20 ms (:class:`MemoryPeaks`), the peak of its anonymous memory
(``RssAnon``: heap, arrays, tensors) and of its file-backed pages (``RssFile``: the libraries and
the memory-mapped feature caches). The anonymous peak is the figure that must fit in the
machine's memory: file-backed pages of a read-only mapping are clean page cache that the kernel
drops and reads again under memory pressure, so they count in the RSS without needing memory of
their own. Each fit stage's own peaks are printed too (stages nest: the one-off pass of the
fast path is inside training).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

EXTRACT_PHOTOS, EXTRACT_BATCH, TARGET, FULL_EPOCHS = 32, 16, 100_000, 40
LABELS, VOCAB = 20, 200
STAGES = ("image_features", "text_features", "train", "evaluate", "index")
# the functions fit_folder calls, by stage (MemoryPeaks.stage wraps them): module, attribute path, name
TRACED = (("adah.features.image_cache", "extract_features", "image_features"),
          ("adah.features.text_cache", "attach_text_cache", "text_features"),
          ("adah.training.trainer", "train", "train"),
          ("adah.training.precomputed", "Precomputed._compute", "train: one-off pass"),
          ("adah.training.trainer", "Trainer.probe_diagnostics", "train: probe"),
          ("adah.index", "build_index", "index"))


def rss_kib() -> dict[str, int]:
    """``RssAnon`` and ``RssFile`` of this process (KiB), from /proc/self/status (Linux)."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                found[key] = int(value.split()[0])
    return found


class MemoryPeaks:
    """Peaks of ``RssAnon`` and ``RssFile`` (MiB) sampled every ``interval`` seconds by a thread,
    overall and per stage (the innermost stage running when sampled; ``other`` outside any)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.stack, self.peaks = interval, ["other"], {}
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        now = {k: v / 1024 for k, v in rss_kib().items()}
        with self._lock:  # the sampling thread and the wrapped stages both sample
            for name in ("all", self.stack[-1]):
                peak = self.peaks.setdefault(name, {"anon": 0.0, "file": 0.0})
                peak["anon"] = max(peak["anon"], now["RssAnon"])
                peak["file"] = max(peak["file"], now["RssFile"])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def stage(self, owner, attr: str, name: str) -> None:
        """Wrap ``owner.attr`` so that what it runs is sampled as stage ``name``."""
        inner = getattr(owner, attr)

        def traced(*args, **kwargs):
            self.sample()
            self.stack.append(name)
            try:
                return inner(*args, **kwargs)
            finally:
                self.sample()
                self.stack.pop()

        setattr(owner, attr, traced)

    def trace_fit(self, stack: contextlib.ExitStack) -> None:
        """Wrap fit's stages (:data:`TRACED`) until ``stack`` closes."""
        for module, path, name in TRACED:
            owner = importlib.import_module(module)
            *outer, attr = path.split(".")
            for part in outer:
                owner = getattr(owner, part)
            stack.callback(setattr, owner, attr, getattr(owner, attr))
            self.stage(owner, attr, name)


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
        with MemoryPeaks() as memory, contextlib.ExitStack() as traced:
            memory.trace_fit(traced)
            fit = fit_folder(tmp / "photos", tmp / "fit", epochs=epochs, device="cpu", progress=False)
        total = time.perf_counter() - t0
        epoch_seconds = [json.loads(line)["seconds"] for line in (tmp / "fit" / "metrics.jsonl").read_text().splitlines()]
    peaks = {k: {m: round(v, 1) for m, v in p.items()} for k, p in memory.peaks.items()}
    return {"n": n, "seconds": fit.seconds, "epochs": epoch_seconds, "total": total,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_anon_mib": peaks["all"]["anon"], "peak_file_mib": peaks["all"]["file"], "stage_peaks_mib": peaks}


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
              f"{', '.join(f'{s:.1f}' for s in r['epochs'])} s); peak RSS {r['peak_rss_mib']:.0f} MiB, peak anonymous "
              f"{r['peak_anon_mib']:.0f} MiB, peak file-backed {r['peak_file_mib']:.0f} MiB")
        print(f"fit-scale N={r['n']:,} peaks by stage (anonymous / file-backed MiB): " + "; ".join(
            f"{k} {p['anon']:.0f} / {p['file']:.0f}" for k, p in r["stage_peaks_mib"].items() if k != "all"))
    if len(rows) < 2:
        return
    a, b = rows[-2], rows[-1]
    dn = b["n"] - a["n"]
    parts = []
    total = 0.0
    for k in (*STAGES, "peak_rss_mib", "peak_anon_mib", "peak_file_mib"):
        va, vb = (r["stages"][k] if k in STAGES else r[k] for r in (a, b))
        slope = (vb - va) / dn
        at = vb + slope * (TARGET - b["n"])
        total += at if k in STAGES else 0.0
        parts.append(f"{k} {1000 * slope:.2f}/1,000 photos -> {at:,.0f}" + (" s" if k in STAGES else " MiB"))
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
