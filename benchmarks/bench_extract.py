"""Feature extraction against the forward-pass floor, and the cache's bytes per photo, in one
process (issue 30, Deliver 2 and 3).

``N_PHOTOS`` synthetic JPEG photos (smooth random colour fields, 640 x 480, quality 90, generated
here: nothing is read from ../shared) in a folder data set, extracted at 448 px by ``adah
features extract``'s function (:func:`adah.features.extraction.extract_features`: decoding and
resizing in threads ahead of the forward pass, writing in a thread behind it) with MobileNetV2
(random weights saved to a file: the speed does not depend on the values) into the compact cache,
against the floor: the ``channels_last`` forward pass of what that cache stores (all of
``features`` but its last block), over the same number of batches of the same size, pixels
already in memory. Rounds alternate floor, extraction, floor (other jobs' load hits both alike);
the ratio of a round is the extraction's rate over the mean of the two floors around it, and the
median is printed beside the goal, with the share of the extraction the forward pass spent
waiting for decoded pixels and for the previous batch's write (the pipeline's own loss), and
the CPU seconds a photo of each (user + system time of the process: the figure other jobs on a
shared machine disturb least).

``--threads=1,2``: the torch thread counts to measure (default: 1 and 2; on 2 cores the decoder
threads share the cores with a 2-thread forward pass). On a GPU too when there is one.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

N_PHOTOS, BATCH, SIZE, ROUNDS = 48, 16, 448, 2
GOAL, CACHE_GOAL_KB = 0.95, 128


def synthetic_photos(folder: Path, n: int, rng: np.random.Generator) -> None:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(n):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)  # a smooth colour field, upsampled
        Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(folder / "images" / f"{i}.jpg", quality=90)
        lines.append(json.dumps({"image": f"images/{i}.jpg", "text": f"word{i % 7} word{i % 5}",
                                 "labels": [f"l{i % 4}"]}))
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def floor_rate(backbone, device: torch.device, batches: int) -> float:
    """Photos/s of the channels_last forward pass of what the compact cache stores, on
    ``batches`` batches of pixels already in memory (after one warm-up batch)."""
    x = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), dtype=torch.uint8, device=device)
    stored = backbone.features[:-1].to(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            out = stored(backbone.preprocess(x).contiguous(memory_format=torch.channels_last)).to(torch.float16).cpu()
        return out

    step()
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * BATCH / (time.perf_counter() - t0)


def bench(cfg, tmp: Path, device: str) -> tuple[float, dict]:
    """Print the extraction line of one device and thread count; (cache bytes per photo, its header)."""
    from adah.features.extraction import extract_features
    from adah.models.adah import build_backbone

    dev = torch.device(device)
    backbone = build_backbone(cfg.model).to(dev).eval()
    batches = -(-N_PHOTOS // BATCH)
    extract_features(cfg, tmp / "cache", batch_size=BATCH, device=device, overwrite=True, progress=False,
                     max_batches=1)  # warm-up: the files in the page cache, the weights loaded once
    rounds, cpu = [], {"floor": 0.0, "extract": 0.0}
    for _ in range(ROUNDS):
        c0 = cpu_seconds()
        before = floor_rate(backbone, dev, batches)
        c1 = cpu_seconds()
        result = extract_features(cfg, tmp / "cache", batch_size=BATCH, device=device, overwrite=True, progress=False)
        c2 = cpu_seconds()
        after = floor_rate(backbone, dev, batches)
        cpu["floor"] += c1 - c0 + cpu_seconds() - c2
        cpu["extract"] += c2 - c1
        rounds.append((result.images_per_second, (before + after) / 2, result.waits, result.seconds))
    ratios = [rate / floor for rate, floor, _, _ in rounds]
    ratio = float(np.median(ratios))
    rate, floor = (float(np.median([r[i] for r in rounds])) for i in range(2))
    waited = {k: float(np.median([r[2][k] / r[3] for r in rounds])) for k in ("decode", "write")}
    print(f"extract [{device}, {torch.get_num_threads()} threads, batch {BATCH}]: {rate:.2f} photos/s end to end over "
          f"{N_PHOTOS} synthetic 640x480 JPEGs at {SIZE} px (decode, resize, forward, write) against the floor "
          f"{floor:.2f} photos/s (channels_last forward of the stored part, pixels in memory): median ratio {ratio:.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; goal >= {GOAL}x: {'met' if ratio >= GOAL else 'NOT met'}); "
          f"the forward pass waited {100 * waited['decode']:.1f}% of the time for decoding, "
          f"{100 * waited['write']:.1f}% for writing; CPU seconds a photo (user + system, all threads): extraction "
          f"{cpu['extract'] / (ROUNDS * N_PHOTOS):.3f}, floor {cpu['floor'] / (2 * ROUNDS * (N_PHOTOS + BATCH)):.3f}")
    sys.stdout.flush()
    header = result.header
    per_photo = (tmp / "cache" / "maps.npy").stat().st_size / header["shape"][0]
    return per_photo, header


def main() -> None:
    from torchvision.models import mobilenet_v2

    from adah.config import Config

    arg = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), "1,2")
    with tempfile.TemporaryDirectory(prefix="adah-bench-extract-") as tmp:
        tmp = Path(tmp)
        weights = tmp / "mobilenet_v2-random.pth"
        torch.manual_seed(0)
        torch.save(mobilenet_v2(weights=None).state_dict(), weights)
        synthetic_photos(tmp / "photos", N_PHOTOS, np.random.default_rng(1))
        cfg = Config.load("fashion_products").override({
            "model.image_weights": str(weights), "data.options.path": str(tmp / "photos"),
            "data.options.features": None, "data.options.min_count": 1})
        for threads in (int(t) for t in arg.split(",")):
            torch.set_num_threads(threads)
            per_photo, header = bench(cfg, tmp, "cpu")
        if torch.cuda.is_available():
            bench(cfg, tmp, "cuda")
        else:
            print("extract [cuda]: not measured (no GPU here)")
    print(f"cache: {per_photo / 1024:.1f} KB per photo at {SIZE} px ({header['shape'][1:]} {header['dtype']}; "
          f"goal <= {CACHE_GOAL_KB} KB: {'met' if per_photo <= CACHE_GOAL_KB * 1024 else 'NOT met'})")


if __name__ == "__main__":
    main()
