"""Page faults and CPU seconds a photo of MobileNetV2's forward pass at 448 px (the part a compact
cache stores; random weights, random pixels, batch 16, one thread), without and with
:func:`adah.utils.runtime.keep_freed_memory`, each in a fresh process (the setting is
process-wide). User and system time come from ``resource.getrusage``: the figures other jobs on
a shared machine disturb least."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

BATCH, SIZE, REPS = 16, 448, 2


def one(keep: bool) -> dict:
    import torch
    from torchvision.models import mobilenet_v2

    if keep:
        from adah.utils.runtime import keep_freed_memory

        keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    stored = mobilenet_v2(weights=None).features[:-1].eval().to(memory_format=torch.channels_last)
    x = torch.rand(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        stored(x)  # warm-up
        a = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(REPS):
            stored(x)
        b = resource.getrusage(resource.RUSAGE_SELF)
    n = REPS * BATCH
    return {"faults": (b.ru_minflt - a.ru_minflt) / n, "user": (b.ru_utime - a.ru_utime) / n,
            "system": (b.ru_stime - a.ru_stime) / n}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--one=0", "--one=1"):
        print(json.dumps(one(sys.argv[1].endswith("1"))))
        return
    rows = {}
    for keep in (0, 1):
        done = subprocess.run([sys.executable, __file__, f"--one={keep}"], capture_output=True, text=True, check=True)
        rows[keep] = json.loads(done.stdout.strip().splitlines()[-1])
    for keep, r in rows.items():
        print(f"page faults [{'with' if keep else 'without'} keep_freed_memory, 1 thread, batch {BATCH}, {SIZE} px]: "
              f"{r['faults']:,.0f} faults, {r['user']:.3f} s user + {r['system']:.3f} s system a photo")
    before, after = (rows[k]["user"] + rows[k]["system"] for k in (0, 1))
    print(f"page faults: CPU seconds a photo {before:.3f} -> {after:.3f} ({before / after:.1f}x less)")


if __name__ == "__main__":
    main()
