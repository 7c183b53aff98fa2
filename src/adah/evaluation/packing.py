"""Bit-packed binary codes, the one implementation every part of adah uses (numpy only, cheap
to import): ±1 (or 0/1, bool) codes -> ``np.packbits(codes > 0, axis=1)`` bytes (+1 -> bit 1,
big bit order), bytes -> uint64 words, and Hamming distances as ``popcount(q ^ d)`` over words.
:mod:`adah.evaluation.metrics` packs with it before its numba kernels; :mod:`adah.index`
stores and searches these bytes (:mod:`adah.index.backends`)."""

from __future__ import annotations

import numpy as np


def pack_bits(codes: np.ndarray) -> np.ndarray:
    """(n, bits) codes whose positive entries are 1-bits -> (n, ceil(bits / 8)) uint8."""
    return np.packbits(np.asarray(codes) > 0, axis=1)


def unpack_pm1(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_bits` for ±1 codes: (n, ceil(bits / 8)) uint8 -> (n, bits) int8."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=bits).astype(np.int8) * 2 - 1


def to_words(packed: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n, ceil(nbytes / 8)) uint64, zero padded (a view, no copy, when
    the rows are whole words already)."""
    packed = np.asarray(packed)
    n, nbytes = packed.shape
    width = -(-nbytes // 8) * 8
    if width == nbytes:
        return np.ascontiguousarray(packed).view(np.uint64)
    out = np.zeros((n, width), dtype=np.uint8)
    out[:, :nbytes] = packed
    return out.view(np.uint64)


def word_distances(query_words: np.ndarray, db_words: np.ndarray) -> np.ndarray:
    """(m, n) int64 Hamming distances between uint64-word codes (:func:`to_words`)."""
    out = np.zeros((query_words.shape[0], db_words.shape[0]), dtype=np.int64)
    for w in range(query_words.shape[1]):
        out += np.bitwise_count(query_words[:, w, None] ^ db_words[None, :, w])
    return out
