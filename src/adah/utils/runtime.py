"""Device choice, seeding and determinism."""

from __future__ import annotations

import contextlib
import random
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
