"""Feature cache: a frozen backbone's conv maps, computed once per dataset and read back row by row.

The format, its checks and the reader are :mod:`adah.features.cache_format`; writing a cache is
:mod:`adah.features.extraction`; this module gathers both (the names other code imports).

A cache is a folder with two files (three for MobileNetV2):

* ``maps.npy``: (N, C, h, w) float16, a standard ``.npy`` file written through
  ``np.lib.format.open_memmap`` (``np.load(path, mmap_mode="r")`` reads it); for MobileNetV2
  (format version 3) the 320-channel maps before its last 1x1 conv, and ``head.pt`` that block's
  weights (1x1 conv, BatchNorm, ReLU6), applied when the cache is read, so the cache gives the
  1280-channel maps of the whole ``features`` at a quarter of the bytes (122.5 KB a photo at 448
  px); version 2 caches (the 1280-channel maps themselves) are still read;
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

from adah.features.cache_format import (  # noqa: F401 - the cache's format, integrity checks and reader
    BATCHES_FILE, CHUNKS_KEY, COMPACT_HEADS, DEFAULT_BATCH_SIZE, FEATURES_OPTION, FORMAT, HEAD_FILE, HEADER_FILE,
    IDENTITY_KEYS, LAYERS, MAPS_FILE, READ_VERSIONS, STORE_DTYPE, VERSION, CacheDamaged, FeatureCache,
    attach_cache, check_maps_file, chunk_digest, load_head, matching_cache, read_header, state_digest, verify_cache,
    weights_identity, without_cache,
)
from adah.features.extraction import DECODE_THREADS, ExtractResult, deterministic, extract_features  # noqa: F401

__all__ = ["CacheDamaged", "ExtractResult", "FeatureCache", "attach_cache", "extract_features", "read_header",
           "state_digest", "verify_cache", "weights_identity", "without_cache"]
