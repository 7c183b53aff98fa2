"""Peak memory of ``adah serve`` under hostile image load (issue 29, case 6): the server
process's peak RSS while it answers 16 concurrent uploads of a 36-megapixel image (a 6000 x 6000
1-bit PNG, about 15 KB on the wire) and then 1,000 thumbnail requests of distinct (row, size)
pairs (30 noise photos of 1600 x 1200, sizes 479..512: the largest PNGs), against its idle RSS
after a warm-up. Goal: at most 1.5 GiB above idle (the bounds are ``adah serve``'s
``--max-decodes``, ``--decode-side``, ``--thumbnail-cache-mb`` and ``--max-image-pixels``).

    python benchmarks/bench_serve_memory.py [--uploads 16] [--thumbnails 1000] [-- serve options]

The model is untrained (memory does not depend on its weights); the server runs in a process of
its own, so the figures are its own. Nothing is timed against a goal.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

GOAL_MIB = 1.5 * 1024
PHOTOS, PHOTO_SIZE, UPLOAD_SIDE = 30, (1600, 1200), 6000


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: clear_refs 5); False when refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_index(base: Path) -> Path:
    """An index of ``PHOTOS`` noise JPEGs, encoded by an untrained scenes-sized model."""
    import torch
    from PIL import Image

    from adah.config import Config
    from adah.data.registry import load_dataset
    from adah.index import build_index
    from adah.models import build_model
    from adah.training.checkpoint import save_checkpoint
    from adah.training.trainer import complete_config

    cfg = Config.load("scenes_demo").override({"data.num_items": 90, "data.num_query": 10, "data.num_train": 60})
    data = load_dataset(cfg.data)
    cfg = complete_config(cfg, data)
    torch.manual_seed(0)
    save_checkpoint(base / "model.pt", model=build_model(cfg.model), config=cfg, epoch=0,
                    data_fingerprint=data.fingerprint(), text_vocabulary=data.text_vocabulary.to_dict())
    rng = np.random.default_rng(0)
    (base / "data" / "photos").mkdir(parents=True)
    rows = []
    for i in range(PHOTOS):
        pixels = rng.integers(0, 256, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "data" / "photos" / f"p{i}.jpg", quality=90)
        rows.append({"id": f"p{i}", "image": f"photos/p{i}.jpg", "text": f"red_circle photo {i}", "labels": ["x"]})
    (base / "data" / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_index(base / "model.pt", base / "idx", data=base / "data", progress=False)
    return base / "idx"


def bilevel_png(side: int) -> bytes:
    from PIL import Image

    image = Image.new("1", (side, side), 0)
    image.paste(1, (0, 0, side // 2, side))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def start_server(index: Path, options: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "adah", "serve", "--index", str(index), "--port", "0", "--log-level", "warning",
           *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        found = re.search(r"serving (http://\S+?)/ ", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, found.group(1)
    raise RuntimeError(f"adah serve exited ({proc.wait()}) before serving")


def run(url: str, pid: int, uploads: int, thumbnails: int) -> dict:
    import httpx2

    with httpx2.Client(base_url=url, timeout=600.0) as http:
        while True:
            try:
                http.get("/api/health")
                break
            except httpx2.TransportError:
                time.sleep(0.2)
        small = bilevel_png(64)
        warm = [http.post("/api/search/image", content=small, headers={"Content-Type": "image/png"}),
                http.get("/api/thumbnail/0?size=64"), http.post("/api/search/text", json={"text": "red_circle"})]
        assert all(r.status_code == 200 for r in warm), [r.text for r in warm]
        time.sleep(1.0)
        out = {"idle": status_kib(pid, "VmRSS") / 1024, "peak_reset": reset_peak(pid)}
        big = bilevel_png(UPLOAD_SIDE)
        with ThreadPoolExecutor(uploads) as pool:
            answers = list(pool.map(lambda _: http.post("/api/search/image", content=big,
                                                        headers={"Content-Type": "image/png"}), range(uploads)))
        out["upload_status"] = sorted({r.status_code for r in answers})
        out["after_uploads"] = status_kib(pid, "VmHWM") / 1024
        pairs = [(i % PHOTOS, 512 - i // PHOTOS) for i in range(thumbnails)]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda p: http.get(f"/api/thumbnail/{p[0]}?size={p[1]}"), pairs))
        out["thumbnail_status"] = sorted({r.status_code for r in answers})
        out["peak"] = status_kib(pid, "VmHWM") / 1024
        out["end"] = status_kib(pid, "VmRSS") / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=16, help="concurrent 36-megapixel uploads")
    parser.add_argument("--thumbnails", type=int, default=1000, help="thumbnail requests of distinct (row, size)")
    args, serve_options = parser.parse_known_args(argv)
    serve_options = [o for o in serve_options if o != "--"]
    with tempfile.TemporaryDirectory(prefix="adah-serve-memory-") as tmp:
        index = make_index(Path(tmp))
        proc, url = start_server(index, serve_options)
        try:
            m = run(url, proc.pid, args.uploads, args.thumbnails)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    above = m["peak"] - m["idle"]
    print(f"serve memory: idle RSS {m['idle']:.0f} MiB; peak {m['after_uploads']:.0f} MiB after {args.uploads} "
          f"concurrent {UPLOAD_SIDE}x{UPLOAD_SIDE} uploads (status {m['upload_status']}), {m['peak']:.0f} MiB after "
          f"{args.thumbnails} thumbnails of distinct sizes (status {m['thumbnail_status']}); RSS at the end "
          f"{m['end']:.0f} MiB")
    note = "" if m["peak_reset"] else " (peak not reset after warm-up: includes start-up)"
    print(f"serve memory: peak {above:.0f} MiB above idle{note} (goal <= {GOAL_MIB:.0f} MiB): "
          f"{'met' if above <= GOAL_MIB else 'NOT met'}")
    return 0 if m["upload_status"] == [200] and m["thumbnail_status"] == [200] else 1


if __name__ == "__main__":
    sys.exit(main())
