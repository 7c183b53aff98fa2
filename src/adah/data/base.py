"""Containers for a paired image-text dataset and its protocol split.

A :class:`CrossModalData` holds N aligned items: ``images`` (N, 3, H, W) uint8 pixels or
(N, D) float32 feature vectors, ``texts`` (N, V) float32 bag-of-words, ``labels`` (N, C)
uint8 multi-hot. ``images`` may also be a :class:`~adah.data.lazy.LazyImages` (pixels read from
disk when indexed) or ``None`` for a text-and-labels-only load (``has_images`` is then False).
A :class:`Split` names which rows are queries, the retrieval set, the training set and the
validation set (carved from training) so every method is compared on the same indices.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adah.data.lazy import LazyImages
from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.utils.fileio import atomic_write_text


@dataclass
class CrossModalData:
    """N aligned image-text pairs with multi-hot labels.

    images: (N, 3, H, W) uint8 or (N, D) float32, a LazyImages, or None (text and labels only);
    texts: (N, V) float32 bag-of-words, or (N, L, D) float token embeddings of a sentence encoder
    (all-zero rows past each text's last token; :mod:`adah.features.text_cache`); labels: (N, C) uint8 in {0, 1}; vocabulary: V tag
    strings; label_names: C strings. text_vocabulary: the :class:`Vocabulary` (tokens +
    tokenizer) that turns raw text into these BoW rows, saved with trained models so query text
    can be encoded later; None where the words behind the columns are unknown (DCMH .mat, Wiki).
    """

    images: np.ndarray | LazyImages | None
    texts: np.ndarray
    labels: np.ndarray
    vocabulary: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    name: str = "data"
    text_vocabulary: Vocabulary | None = None
    raw_texts: list[str] | None = field(default=None, repr=False, compare=False)  # the texts as written (folder)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_arrays(self.images, self.texts, self.labels, source=self.name)
        if self.raw_texts is not None and len(self.raw_texts) != self.labels.shape[0]:
            raise AdahError(f"{self.name}: field 'raw_texts' has {len(self.raw_texts)} texts for {self.labels.shape[0]} "
                            "items; they must be aligned")
        if self.text_vocabulary is not None:
            if len(self.text_vocabulary) != self.texts.shape[1]:
                raise AdahError(f"{self.name}: the text vocabulary has {len(self.text_vocabulary)} tokens but "
                                f"'texts' has {self.texts.shape[1]} columns")
            if not self.vocabulary:
                self.vocabulary = list(self.text_vocabulary.tokens)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def has_images(self) -> bool:
        return self.images is not None

    @property
    def text_dim(self) -> int:
        """Bag-of-words columns V, or the token embedding size D of (N, L, D) token texts."""
        return int(self.texts.shape[-1])

    @property
    def num_labels(self) -> int:
        return int(self.labels.shape[1])

    def fingerprint(self) -> str:
        """sha256 over shapes and contents (first 16 hex digits); identifies the data in runs.

        Computed once per instance (the arrays are treated as read-only) and in row chunks, so a
        memory-mapped dataset is never copied whole."""
        if self._fingerprint is None:
            self._fingerprint = _digest((self.images, self.texts, self.labels))
        return self._fingerprint

    def image_fingerprint(self) -> str:
        """Like :meth:`fingerprint`, over the images alone: what a feature cache depends on, so
        changing text options (tokenizer, vocabulary) keeps a cache valid."""
        return _digest((self.images,))


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for arr in arrays:
        if arr is None:
            h.update(b"no images")
            continue
        h.update(str((arr.shape, arr.dtype.str)).encode())
        if isinstance(arr, LazyImages):  # a sample of rows, not gigabytes of pixels
            h.update(arr.content_digest().encode())
        else:
            step = max(1, (64 << 20) // max(1, arr[:1].nbytes))  # about 64 MiB a chunk
            for start in range(0, arr.shape[0], step):
                h.update(np.ascontiguousarray(arr[start : start + step]).tobytes())
    return h.hexdigest()[:16]


def validate_arrays(images, texts, labels, source: str = "data") -> None:
    """Raise AdahError naming the field, expected and found shape when arrays don't fit.

    ``images`` may be None (text and labels only) or a LazyImages (checked by shape only)."""
    if not isinstance(images, (np.ndarray, LazyImages)) and images is not None:
        raise AdahError(f"{source}: field 'images' must be a numpy array, got {type(images).__name__}")
    for field_name, arr in (("texts", texts), ("labels", labels)):
        if not isinstance(arr, np.ndarray):
            raise AdahError(f"{source}: field '{field_name}' must be a numpy array, got {type(arr).__name__}")
    maps = images is not None and images.ndim == 4 and np.dtype(images.dtype).kind == "f"  # cached backbone maps
    if images is not None and (images.ndim not in (2, 4) or (images.ndim == 4 and images.shape[1] != 3 and not maps)):
        raise AdahError(
            f"{source}: field 'images' must be (N, 3, H, W) pixels, (N, C, h, w) float feature maps or (N, D) "
            f"features, found {images.dtype} with shape {images.shape}"
        )
    if texts.ndim != 2 and not (texts.ndim == 3 and texts.dtype.kind == "f"):
        raise AdahError(f"{source}: field 'texts' must be (N, V) bag-of-words or (N, L, D) float token embeddings, "
                        f"found {texts.dtype} with shape {texts.shape}")
    if labels.ndim != 2:
        raise AdahError(f"{source}: field 'labels' must be (N, C) multi-hot, found shape {labels.shape}")
    n = labels.shape[0]
    for field_name, arr in (("images", images), ("texts", texts)):
        if arr is not None and arr.shape[0] != n:
            raise AdahError(
                f"{source}: field '{field_name}' has {arr.shape[0]} rows but 'labels' has {n}; they must be aligned"
            )
    if not np.isin(labels, (0, 1)).all():
        raise AdahError(f"{source}: field 'labels' must hold only 0 and 1")
    for field_name, arr in (("images", images), ("texts", texts)):
        if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise AdahError(f"{source}: field '{field_name}' contains NaN or infinite values")


@dataclass
class Split:
    """Row indices (int64, sorted within each set as drawn) into a CrossModalData.

    query: the test queries; retrieval: the database searched at test time; train: rows the
    model learns from; val: rows held out of ``train`` for model selection (queries against
    ``train`` at validation time). ``query`` and ``retrieval`` are disjoint.
    """

    query: np.ndarray
    retrieval: np.ndarray
    train: np.ndarray
    val: np.ndarray
    seed: int = 0

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "sha256": self.digest(),
            **{k: getattr(self, k).tolist() for k in ("query", "retrieval", "train", "val")},
        }

    def digest(self) -> str:
        h = hashlib.sha256()
        for k in ("query", "retrieval", "train", "val"):
            h.update(k.encode())
            h.update(np.asarray(getattr(self, k), dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | os.PathLike, num_items: int | None = None) -> "Split":
        path = Path(path)
        if not path.is_file():
            raise AdahError(f"split file not found: {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AdahError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(raw, dict):
            raise AdahError(f"{path}: expected a JSON object with query/retrieval/train/val index lists")
        parts = {}
        for k in ("query", "retrieval", "train", "val"):
            if k not in raw:
                raise AdahError(f"{path}: missing field '{k}'")
            try:
                arr = np.asarray(raw[k], dtype=np.int64)
            except (TypeError, ValueError):
                raise AdahError(f"{path}: field '{k}' must be a list of integer row indices") from None
            if arr.ndim != 1:
                raise AdahError(f"{path}: field '{k}' must be a flat list of row indices")
            if num_items is not None and arr.size and (arr.min() < 0 or arr.max() >= num_items):
                raise AdahError(f"{path}: field '{k}' has indices outside [0, {num_items})")
            parts[k] = arr
        split = cls(seed=int(raw.get("seed", 0)), **parts)
        if "sha256" in raw and raw["sha256"] != split.digest():
            raise AdahError(f"{path}: checksum mismatch, the split file was edited or corrupted")
        return split


def random_split(
    num_items: int, num_query: int, num_train: int, val_fraction: float = 0.1, seed: int = 0
) -> Split:
    """DCMH-style protocol: ``num_query`` random queries, the rest is the retrieval set, and
    ``num_train`` training rows drawn from the retrieval set, of which ``val_fraction`` is held
    out as validation rows."""
    if num_items < 3:
        raise AdahError(f"split: the data has {num_items} item(s); a split needs at least 3 (1 query and 2 "
                        "training rows)")
    if num_query <= 0 or num_query >= num_items:
        raise AdahError(f"split: num_query must be in [1, {num_items - 1}], got {num_query}")
    if num_train <= 1 or num_train > num_items - num_query:
        raise AdahError(f"split: num_train must be in [2, {num_items - num_query}], got {num_train}")
    if not 0.0 <= val_fraction < 1.0:
        raise AdahError(f"split: val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_items)
    query, retrieval = np.sort(perm[:num_query]), np.sort(perm[num_query:])
    train_all = rng.choice(retrieval, size=num_train, replace=False)
    num_val = int(round(num_train * val_fraction))
    if num_train - num_val < 2:
        raise AdahError(
            f"split: num_train={num_train} with val_fraction={val_fraction} leaves {num_train - num_val} "
            "training rows; at least 2 are needed"
        )
    return Split(
        query=query,
        retrieval=retrieval,
        train=np.sort(train_all[num_val:]),
        val=np.sort(train_all[:num_val]),
        seed=seed,
    )
