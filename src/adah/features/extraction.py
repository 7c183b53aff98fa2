"""Extraction: the frozen backbone's conv maps of every item of a dataset, written into a cache
(the format is :mod:`adah.features.cache_format`'s).

:func:`extract_features` runs the backbone in eval mode, without gradients and with
deterministic algorithms, over fixed batches starting at row 0. After each batch (a chunk) it
flushes the memmap and then rewrites the header atomically with the new ``done``: after an
interruption, even SIGKILL, a rerun continues at ``done`` and the file ends up byte-identical to
an uninterrupted run; a finished cache is left alone; a cache of another dataset, backbone,
weights or batch size is refused (or replaced with ``overwrite=True``). Under ``torchrun`` the
batches are shared out over the processes (:func:`_extract_sharded`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adah.config import Config, DataConfig
from adah.data.base import CrossModalData
from adah.errors import AdahError
from adah.features.cache_format import (
    BATCHES_FILE, CHUNKS_KEY, COMPACT_HEADS, DEFAULT_BATCH_SIZE, FORMAT, HEADER_FILE, IDENTITY_KEYS, LAYERS, MAPS_FILE, STORE_DTYPE,
    VERSION, _identity_diff, _write_header, check_maps_file, chunk_digest, head_info, read_header, save_head,
    state_digest, verify_cache, weights_identity, without_cache,
)
from adah.utils.locks import exclusive, lock_file_in
from adah.utils.progress import progress_bar
from adah.utils.runtime import keep_freed_memory  # noqa: F401 - also imported from here


@dataclass
class ExtractResult:
    """What :func:`extract_features` did: the cache folder, its header, rows computed by this
    call and the seconds they took (``already_complete``: nothing to do)."""

    path: Path
    header: dict
    new_rows: int
    seconds: float
    already_complete: bool = False
    #: seconds the forward pass waited: ``decode`` for decoded pixels, ``write`` for the previous
    #: batch's write (both near 0: extraction runs at the forward pass's own rate)
    waits: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.header["complete"])

    @property
    def images_per_second(self) -> float:
        return self.new_rows / self.seconds if self.seconds > 0 else float("nan")


@contextlib.contextmanager
def deterministic(device_type: str = "cuda"):
    """Deterministic kernels (and cuDNN without autotuning) inside; previous settings after.

    On the CPU only cuDNN's flags are set (no effect there): PyTorch's deterministic mode slows
    MobileNetV2's CPU forward pass by about a quarter (13.2 against 9.8-10.9 img/s, measured back to
    back here), and the CPU kernels give the same bytes from run to run and across processes for the
    same batches and thread count without it (``tests/test_features.py`` and
    ``tests/test_sharded.py`` compare the files byte for byte)."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if device_type != "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


def _pixel_data(cfg: DataConfig) -> CrossModalData:
    from adah.data.registry import TEXT_FEATURE_OPTIONS, load_dataset

    pixels = without_cache(cfg)  # the texts are not read here: no MiniLM cache either
    data = load_dataset(dataclasses.replace(pixels, options={k: v for k, v in pixels.options.items()
                                                             if k not in TEXT_FEATURE_OPTIONS}))
    if data.images is None or data.images.ndim != 4 or data.images.shape[1] != 3 or data.images.dtype != np.uint8:
        found = "no images" if data.images is None else f"{data.images.dtype} {tuple(data.images.shape)}"
        raise AdahError(f"dataset {cfg.name!r}: a feature cache needs (N, 3, H, W) uint8 images, found {found}")
    return data


def extract_features(
    config: Config,
    out: str | os.PathLike,
    *,
    batch_size: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    max_batches: int | None = None,
    verify: bool = False,
) -> ExtractResult:
    """Run the frozen ``config.model`` backbone (``image_backbone``, ``image_weights``,
    ``image_size``) over every item of the ``config.data`` dataset; store (N, C, h, w) float16
    maps in ``out`` (see the module docstring). Resumes a partial cache, leaves a complete one
    alone. ``verify``: first check every chunk already in ``out`` against its checksum
    (:func:`verify_cache`). ``batch_size``: None continues with the cache's (default 32 for a new one);
    ``max_batches`` stops after that many batches (a partial cache, finished by a later call)."""
    from adah.models.adah import build_backbone
    from adah.utils.distributed import DistContext
    from adah.utils.runtime import resolve_device

    out = Path(out)
    model_cfg = config.model
    if model_cfg.image_weights is None:
        raise AdahError("a feature cache needs pretrained backbone weights (model.image_weights / --weights: "
                        "'DEFAULT' or a file); a model could not rebuild random conv layers to encode photos later")
    if batch_size is not None and batch_size < 1:
        raise AdahError(f"batch size must be a positive integer, got {batch_size}")
    data = _pixel_data(config.data)
    dev = resolve_device(device)
    keep_freed_memory()  # the forward pass's big activations: no page faults per batch
    ctx = DistContext.from_env(use_cuda=dev.type == "cuda")  # torchrun: share the batches out
    if ctx.enabled and dev.type == "cuda":
        dev = torch.device("cuda", ctx.local_rank)
    lock = exclusive(lock_file_in(out), f"feature cache {out}") if ctx.is_main else contextlib.nullcontext()
    with lock, deterministic(dev.type):
        backbone = build_backbone(model_cfg)
        if not backbone.spatial:
            raise AdahError(f"backbone {model_cfg.image_backbone!r} gives feature vectors, not conv maps; a feature "
                            "cache is for pixel backbones (vgg19, mobilenet_v2, small_cnn, ...)")
        backbone = backbone.to(dev).eval().requires_grad_(False)
        n = len(data)
        old = None
        if (out / HEADER_FILE).is_file():
            try:
                old = read_header(out)
            except AdahError:  # another version or a damaged header: replaced with --overwrite
                if not overwrite:
                    raise
            if verify and old is not None and not overwrite:
                verify_cache(out)
        header = _new_header(model_cfg, backbone, data, dev,
                             int(batch_size or (old or {}).get("batch_size") or DEFAULT_BATCH_SIZE))
        if ctx.enabled or (out / BATCHES_FILE).is_file():
            return _extract_sharded(ctx, out, header, old, overwrite, data, backbone, dev, progress, max_batches)
        opened = _open_for_writing(out, header, old, overwrite)
        if opened is None:
            return ExtractResult(out, old, 0, 0.0, already_complete=True)
        _save_head_of(out, header, backbone)
        mm, header["done"] = opened
        header["complete"] = header["done"] == n
        header[CHUNKS_KEY] = _written_chunks(mm, header, old)
        new_rows, seconds, waits = _fill(mm, header, out, data, backbone, dev, progress, max_batches)
        del mm
    return ExtractResult(out, header, new_rows, seconds, waits=waits)


def _new_header(model_cfg, backbone, data: CrossModalData, dev: torch.device, batch_size: int) -> dict:
    """The header of a new cache of ``data`` by ``backbone`` (``done`` 0). A backbone of
    :data:`COMPACT_HEADS` stores the maps before its last block (``head``, applied when read)."""
    name, n = model_cfg.image_backbone, len(data)
    compact = name in COMPACT_HEADS
    with torch.no_grad():
        x = backbone.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8, device=dev))
        probe = _stored_features(backbone, compact)(x)
        channels = int(backbone.features[-1](probe).shape[1]) if compact else 0
    return {
        "format": FORMAT, "version": VERSION, "backbone": name, "layer": LAYERS.get(name, "features"),
        "weights": model_cfg.image_weights, "weights_id": weights_identity(name, model_cfg.image_weights),
        "features_sha256": state_digest(backbone.features), "image_size": int(backbone.input_size),
        "shape": [n, *map(int, probe.shape[1:])], "dtype": STORE_DTYPE.name,
        "dataset": {"name": data.name, "images_fingerprint": data.image_fingerprint(), "num_items": n,
                    "image_shape": [int(s) for s in data.images.shape[1:]]},
        "batch_size": batch_size, "device": dev.type, "torch": torch.__version__, "done": 0, "complete": n == 0,
        "head": head_info(name, backbone.features[-1], channels) if compact else None,
    }


def _stored_features(backbone, compact: bool) -> torch.nn.Module:
    """What the cache stores: ``backbone.features``, or all of it but its last block (``compact``)."""
    return backbone.features[:-1] if compact else backbone.features


def _save_head_of(out: Path, header: dict, backbone) -> None:
    """Write the weights of the block kept out of the stored maps, when the header names one."""
    if header.get("head") is not None:
        save_head(out, backbone.features[-1])


def _written_chunks(mm, header: dict, old: dict | None) -> list[str]:
    """The checksums of the chunks already written: the old header's, or (a partial cache made
    before checksums were kept) computed from the rows on disk."""
    bs, done = header["batch_size"], header["done"]
    kept = (old or {}).get(CHUNKS_KEY)
    if done == 0:
        return []
    if isinstance(kept, list) and len(kept) == -(-done // bs):
        return list(kept)
    return [chunk_digest(mm[s : min(s + bs, done)]) for s in range(0, done, bs)]


# --------------------------------------------------------------------------- sharded extraction
def _extract_sharded(ctx, out: Path, header: dict, old: dict | None, overwrite: bool, data: CrossModalData,
                     backbone, dev: torch.device, progress: bool, max_batches: int | None) -> ExtractResult:
    """``torchrun --nproc_per_node N -m adah features extract``: the batches (the same fixed
    batches as one process) are shared out over the processes, each writing its rows into the
    one ``maps.npy``; ``batches.done`` (one byte per batch, written after the rows are flushed)
    records progress, so a rerun, with any number of processes, computes only the batches not
    done. Rank 0 creates the cache and, once every batch is done, marks the header complete and
    removes ``batches.done``. Each batch is computed exactly as one process would compute it, so
    the file is byte-identical to a single-process run."""
    n, bs = header["shape"][0], header["batch_size"]
    num_batches = -(-n // bs)
    flags = out / BATCHES_FILE
    status = torch.zeros(1, dtype=torch.int64)  # 0 go on, 1 complete already, 2 error on rank 0
    error = None
    if ctx.is_main:
        try:
            had_flags = flags.is_file() and not overwrite
            opened = _open_for_writing(out, header, old, overwrite)
            if opened is None:
                status[0] = 1
            else:
                _save_head_of(out, header, backbone)
                mm, done = opened
                del mm
                if not had_flags or flags.stat().st_size != num_batches:
                    # a new cache, or one continued from a single-process run: its first ``done`` rows
                    marks = bytearray(num_batches)
                    for i in range(min(done // bs, num_batches) if done < n else num_batches):
                        marks[i] = 1
                    _write_flags(flags, bytes(marks))
        except AdahError as exc:
            status[0], error = 2, exc
    if ctx.enabled:
        torch.distributed.broadcast(status, src=0)
    if status[0] == 1:
        return ExtractResult(out, old, 0, 0.0, already_complete=True)
    if status[0] == 2:
        if error is not None:
            raise error
        raise AdahError(f"{out}: the cache could not be opened (see the error of rank 0)")
    mm = np.lib.format.open_memmap(out / MAPS_FILE, mode="r+")
    todo = np.flatnonzero(np.frombuffer(flags.read_bytes(), dtype=np.uint8) == 0)
    mine = np.array_split(todo, ctx.world_size)[ctx.rank]
    ctx.barrier()  # every process has read the flags before any writes one
    if max_batches is not None:
        mine = mine[:max_batches]
    fd = os.open(flags, os.O_WRONLY)
    try:
        def record(start: int, rows: int) -> None:
            mm.flush()  # the rows are on disk before the flag says so
            os.pwrite(fd, b"\x01", start // bs)
            os.fsync(fd)

        new_rows, seconds, waits = _compute(mm, [int(i) * bs for i in mine], n, bs, header, data, backbone, dev,
                                     progress and ctx.is_main, record)
    finally:
        os.close(fd)
    del mm
    ctx.barrier()
    if ctx.is_main:
        marks = np.frombuffer(flags.read_bytes(), dtype=np.uint8)
        header["done"] = n if marks.all() else int(np.argmin(marks)) * bs  # the contiguous prefix done
        header["complete"] = bool(marks.all())
        written = np.lib.format.open_memmap(out / MAPS_FILE, mode="r")
        header[CHUNKS_KEY] = _written_chunks(written, header, None)  # per chunk, in row order
        del written
        _write_header(out, header)
        if header["complete"]:
            flags.unlink()
    ctx.barrier()
    header = read_header(out)
    rows = torch.tensor([new_rows], dtype=torch.int64)
    if ctx.enabled:
        torch.distributed.all_reduce(rows)
    return ExtractResult(out, header, int(rows[0]), seconds, waits=waits)


def _write_flags(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _open_for_writing(out: Path, header: dict, old: dict | None, overwrite: bool) -> tuple[np.memmap, int] | None:
    """The memmap to fill and the row to start at: (r+, old done) when continuing ``old``, (w+, 0)
    for a new cache or with ``overwrite``; None when ``old`` is this cache, complete. Refuses a
    different cache unless ``overwrite``."""
    maps = out / MAPS_FILE
    if old is not None and not overwrite and old["complete"] and _older_format_of(old, header):
        check_maps_file(out, old)  # a complete cache of an older format is still read: left alone
        return None
    if old is not None and not overwrite:
        diff = _identity_diff(old, header)
        if diff:
            raise AdahError(f"{out} holds a feature cache of something else ({'; '.join(diff)}); pass --overwrite to "
                            "replace it, or choose another --out")
        if old["complete"]:
            check_maps_file(out, old)  # a truncated file is not reported complete
            return None
        try:
            mm = np.lib.format.open_memmap(maps, mode="r+")
        except (OSError, ValueError) as exc:
            mm, problem = None, str(exc)
        else:
            problem = f"found {mm.dtype} {mm.shape}, the header says {STORE_DTYPE} {tuple(header['shape'])}"
            if mm.shape == tuple(header["shape"]) and mm.dtype == STORE_DTYPE:
                return mm, int(old["done"])
            del mm
        if old["done"]:
            raise AdahError(f"{maps}: cannot continue the cache ({problem}); pass --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    (out / HEADER_FILE).unlink(missing_ok=True)  # no header: a crash from here on claims no progress
    maps.unlink(missing_ok=True)
    mm = np.lib.format.open_memmap(maps, mode="w+", dtype=STORE_DTYPE, shape=tuple(header["shape"]))
    _write_header(out, header)
    return mm, 0


#: header fields in which a cache of an older format version differs from the same cache now
FORMAT_KEYS = ("version", "head", "shape")


def _older_format_of(old: dict, header: dict) -> bool:
    """True when ``old`` is the cache ``header`` describes in an older format version."""
    return old["version"] < header["version"] and all(
        old.get(k) == header.get(k) for k in IDENTITY_KEYS if k not in FORMAT_KEYS)


def _fill(mm, header: dict, out: Path, data: CrossModalData, backbone, dev: torch.device, progress: bool,
          max_batches: int | None) -> tuple[int, float, dict]:
    """Compute rows ``header['done']`` onwards in fixed batches; flush and record after each."""
    n, bs, done = header["shape"][0], header["batch_size"], header["done"]
    if done % bs and done != n:
        raise AdahError(f"{out / HEADER_FILE}: done={done} is not a multiple of batch_size={bs}; pass --overwrite")
    starts = list(range(done, n, bs))[: max_batches if max_batches is not None else None]

    def record(start: int, rows: int) -> None:
        mm.flush()  # the rows are on disk before the header says so
        header[CHUNKS_KEY].append(chunk_digest(np.asarray(mm[start : start + rows])))
        header["done"] = start + rows
        header["complete"] = header["done"] == n
        _write_header(out, header)

    return _compute(mm, starts, n, bs, header, data, backbone, dev, progress, record, initial=done)


DECODE_THREADS = 2  # batches decoded ahead, each in a thread (PIL releases the GIL while decoding and resizing)


def _compute(mm, starts: list[int], n: int, bs: int, header: dict, data: CrossModalData, backbone,
             dev: torch.device, progress: bool, record, initial: int = 0) -> tuple[int, float, dict]:
    """Run the backbone over the batches starting at ``starts`` into ``mm``; ``record(start,
    rows)`` after each. Returns the rows written, the seconds and the seconds the forward pass
    waited (``decode``: for decoded pixels; ``write``: for the previous batch's write).

    A pipeline around the forward pass: the next :data:`DECODE_THREADS` batches are decoded and
    resized in threads while one batch runs, and each batch's maps are written (float16, checked,
    flushed, ``record``-ed) in a writer thread while the next one runs, in row order. The
    backbone runs in ``channels_last`` memory format (faster convolutions on CPUs and GPUs; same
    values up to float rounding, identical from run to run). Each batch is computed as the serial
    loop computes it, so the file is byte-identical to it (``tests/test_features.py``)."""
    read = lambda s: np.ascontiguousarray(data.images[s : min(s + bs, n)])
    bar = progress_bar(total=n, initial=initial, unit="img", desc=f"features {header['backbone']}", disable=not progress)
    features = _stored_features(backbone, header.get("head") is not None).to(memory_format=torch.channels_last)

    def write(s: int, maps: torch.Tensor) -> int:
        block = maps.to(torch.float16).cpu().numpy()
        if not np.isfinite(block).all():
            raise AdahError(f"rows {s}-{s + len(block) - 1}: backbone maps overflow float16 (|x| > 65504)")
        mm[s : s + len(block)] = block
        record(s, len(block))
        bar.update(len(block))
        return len(block)

    t0, new_rows, waits = time.perf_counter(), 0, {"decode": 0.0, "write": 0.0}
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool, ThreadPoolExecutor(max_workers=1) as writer:
        pending = deque(pool.submit(read, s) for s in starts[:DECODE_THREADS])
        written = None
        for i, s in enumerate(starts):
            t = time.perf_counter()
            pixels = pending.popleft().result()
            waits["decode"] += time.perf_counter() - t
            if i + DECODE_THREADS < len(starts):
                pending.append(pool.submit(read, starts[i + DECODE_THREADS]))
            with torch.inference_mode():
                x = backbone.preprocess(torch.from_numpy(pixels).to(dev)).contiguous(memory_format=torch.channels_last)
                maps = features(x)
            t = time.perf_counter()
            new_rows += written.result() if written is not None else 0  # in order: one write at a time
            waits["write"] += time.perf_counter() - t
            written = writer.submit(write, s, maps)
        new_rows += written.result() if written is not None else 0
    bar.close()
    return new_rows, time.perf_counter() - t0, {k: round(v, 3) for k, v in waits.items()}
