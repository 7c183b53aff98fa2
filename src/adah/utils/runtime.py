"""Device choice, seeding and determinism, and how the process keeps freed memory."""

from __future__ import annotations

import contextlib
import ctypes
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from adah.errors import AdahError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA GPU if there is one, else the CPU. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AdahError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AdahError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; make CPU kernels deterministic. Returns a torch generator
    for data order, so the sampler's stream is independent of model initialisation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator()
    gen.manual_seed(seed + 1)
    return gen


@dataclass(frozen=True)
class AmpPolicy:
    """What ``train.amp`` switches on for a device: bf16 autocast and channels_last memory
    layout for CNNs, on CUDA only (on the CPU both stay off and training is exact fp32)."""

    autocast: bool
    dtype: torch.dtype
    channels_last: bool


def amp_policy(device: torch.device, amp: bool) -> AmpPolicy:
    on_gpu = amp and device.type == "cuda"
    return AmpPolicy(autocast=on_gpu, dtype=torch.bfloat16, channels_last=on_gpu)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op context on the CPU."""
    policy = amp_policy(device, enabled)
    if not policy.autocast:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=policy.dtype)


def batch_tensors(data, rows, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``rows`` of a CrossModalData as tensors on ``device``: images as stored (uint8 pixels or
    float features; None for text-only data), texts and labels as float32."""
    images = None if data.images is None else torch.from_numpy(np.ascontiguousarray(data.images[rows])).to(device)
    texts = torch.from_numpy(np.asarray(data.texts[rows], dtype=np.float32)).to(device)
    labels = torch.from_numpy(np.asarray(data.labels[rows], dtype=np.float32)).to(device)
    return images, texts, labels


_FREED_MEMORY_KEPT = False


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel
    (``mallopt``: blocks up to 1 GiB from the heap, not ``mmap``; no trimming below 1 GiB).

    A CNN's forward pass on the CPU allocates and frees activations of tens to hundreds of MB per
    layer (MobileNetV2 at 448 px, batch 32: up to 616 MB); by default each one is a fresh
    ``mmap`` whose pages the kernel zeroes on first touch. Measured here (one thread, batch 16,
    448 px): 46,634 page faults and 0.114 s of system time a photo against 0.073 s of user time;
    with this, 1,666 faults and 0.004 s (the forward's values are the same: only where the memory
    comes from changes). The process keeps up to 1 GiB of freed memory. Once per process;
    glibc (Linux) only, a no-op elsewhere."""
    global _FREED_MEMORY_KEPT
    if _FREED_MEMORY_KEPT or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...)
        return
    m_trim_threshold, m_mmap_threshold, limit = -1, -3, 1 << 30
    libc.mallopt(m_mmap_threshold, limit)
    libc.mallopt(m_trim_threshold, limit)
    _FREED_MEMORY_KEPT = True
