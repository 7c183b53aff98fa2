"""The :class:`Index`: load an index folder with its model, and answer text and image queries.

    from adah.index import Index

    with Index.load("runs/index") as index:
        result = index.search_text("red_circle", k=10)      # text -> images
        for hit in result.hits:
            print(hit.rank, hit.distance, hit.id, hit.labels, hit.image_path)
        result = index.search_image("photo.jpg", k=5)       # image -> texts (captions)
        print(result.to_dict())                             # JSON-ready

A text query is encoded with the vocabulary saved with the model; a query none of whose words
is in it raises :class:`UnknownWordsError` instead of returning noise. Query problems (empty
text, an unreadable image, a target the index lacks) raise :class:`QueryError`; index problems
(corrupted, truncated, another format version, another model) raise
:class:`~adah.index.store.IndexFormatError` or :class:`~adah.errors.AdahError`. All are
``ValueError`` subclasses with one-line messages.

An Index is safe to query from several threads at once (the service does): the model runs
under ``torch.no_grad`` in eval mode and the search backends only read.

The Index is a facade over two parts: ``index.storage`` (:class:`~adah.index.storage.IndexStorage`:
the codes behind their search backends, metadata, manifest, the folder's version) and
``index.encoder`` (:class:`~adah.index.query.QueryEncoder`: text and images into codes). Search
and the assembly of results are its own. ``MAX_IMAGE_PIXELS`` here is the decoded size limit it
passes for query images.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.index.backends import HammingBackend, check_k, check_packed, pack_pm1
from adah.index.query import (MAX_IMAGE_PIXELS, AttentionMap, ImageQueryError, QueryEncoder,  # noqa: F401 - re-exported
                              QueryError, UnknownWordsError, check_word_attention, decode_image)
from adah.index.storage import IndexStorage

TARGETS = ("image", "text")


@dataclass
class Hit:
    """One result: ``row`` is the item's position in the index (0..count-1), ``source_row``
    its row in the dataset it came from, ``image_path`` an absolute path when the item's image
    is a file."""

    rank: int
    row: int
    distance: int
    id: str
    labels: list[str]
    caption: str | None = None
    text: str | None = None
    image: str | None = None
    image_path: str | None = None
    source_row: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """Hits best first (Hamming distance, then index row). ``query`` says what was asked:
    modality, the text or image name, and for text the known and unknown tokens."""

    hits: list[Hit]
    query: dict[str, Any]
    target: str
    k: int
    bits: int
    exact: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    attention: AttentionMap | None = None
    text_attention: list[dict] | None = None  # words of a text query: {"word", "kept", "weight"}

    def to_dict(self) -> dict:
        out = {"query": self.query, "target": self.target, "k": self.k, "bits": self.bits, "exact": self.exact,
               "hits": [h.to_dict() for h in self.hits], "timings_ms": self.timings_ms}
        if self.attention is not None:
            out["attention"] = self.attention.to_dict()
        if self.text_attention is not None:
            out["text_attention"] = self.text_attention
        return out

    def format_words(self) -> str:
        """The query's words with those text attention keeps in [brackets] (``--explain``)."""
        if not self.text_attention:
            return ""
        return " ".join(f"[{w['word']}]" if w["kept"] else w["word"] for w in self.text_attention)

    def format_table(self, width: int = 100) -> str:
        """A fixed-width table for the terminal."""
        head = f"{'rank':>4} {'dist':>4}  {'id':<12} {'labels':<28} {'caption' if self.target == 'text' else 'path / caption'}"
        lines = [head, "-" * min(width, max(len(head), 60))]
        for h in self.hits:
            labels = ", ".join(h.labels)
            labels = labels if len(labels) <= 28 else labels[:25] + "..."
            what = h.caption if self.target == "text" else (h.image or h.caption)
            what = (what or "").replace("\n", " ")
            room = max(10, width - 53)
            what = what if len(what) <= room else what[: room - 3] + "..."
            lines.append(f"{h.rank:>4} {h.distance:>4}  {h.id[:12]:<12} {labels:<28} {what}")
        return "\n".join(lines)


class Index:
    """Binary codes of a collection (per modality), their metadata, and the model and
    vocabulary that encode queries. Build one with :func:`adah.index.build_index`; open it with
    :meth:`load`; or make an in-memory one from codes with :meth:`from_codes`."""

    def __init__(self, *, bits: int, codes: dict[str, np.ndarray], meta=None, manifest: dict | None = None,
                 path: Path | None = None, model=None, vocabulary: Vocabulary | None = None,
                 device: str | torch.device = "cpu", backend: str = "auto", backends: dict | None = None,
                 **backend_options) -> None:
        storage = IndexStorage(bits=bits, codes=codes, backends=backends, meta=meta, manifest=manifest, path=path,
                               vocabulary=vocabulary, backend=backend, **backend_options)
        self._assemble(storage, model, torch.device(device))
        self._load_options = {"backend": backend, "device": str(self.device), **backend_options}

    def _assemble(self, storage: IndexStorage, model, device: torch.device) -> None:
        self.storage = storage
        self.encoder = QueryEncoder(model, vocabulary=storage.vocabulary, device=device,
                                    config=(storage.manifest.get("model") or {}).get("config") or {},
                                    image_resize=storage.image_resize)

    # ----------------------------------------------------------------------- construction
    @classmethod
    def load(cls, path: str | os.PathLike, *, model: str | os.PathLike | None = "auto", device: str = "cpu",
             backend: str = "auto", verify: bool = True, **backend_options) -> "Index":
        """Open an index folder. ``model``: ``"auto"`` loads the checkpoint the index was built
        with (its path is in the manifest), a path loads that checkpoint instead, None loads no
        model (only :meth:`search_codes` works then). The model's fingerprint must equal the
        index's: codes from another model would rank nonsense. ``verify``: check every file's
        sha256 (a few ms per million codes)."""
        from adah.utils.runtime import resolve_device

        storage = IndexStorage.open(path, backend=backend, verify=verify, **backend_options)
        try:
            dev = resolve_device(device)
            index = cls.__new__(cls)
            index._assemble(storage, storage.load_model(model, dev), dev)
        except BaseException:
            storage.close()
            raise
        index._load_options = {"device": device, "backend": backend, "verify": verify, **backend_options}
        return index

    @classmethod
    def from_codes(cls, *, bits: int, image=None, text=None, packed: bool = True, meta: list[dict] | None = None,
                   backend: str = "auto", **backend_options) -> "Index":
        """An in-memory index of given codes (packed uint8, or +-1 with ``packed=False``), no
        model: :meth:`search_codes` only. ``meta``: optional per-row dicts (id, labels, ...)."""
        codes = {}
        for name, c in (("image", image), ("text", text)):
            if c is not None:
                codes[name] = check_packed(c, bits, f"{name} codes") if packed else pack_pm1(c, bits, f"{name} codes")
        return cls(bits=bits, codes=codes, meta=meta, backend=backend, **backend_options)

    def changed_on_disk(self) -> bool:
        """True when the folder now holds another version than the one loaded (``adah index
        add/remove`` or a rebuild swapped a new one in); a cheap ``stat`` of its manifest."""
        return self.storage.changed_on_disk()

    def reload(self) -> "Index":
        """The folder's current version as a new Index, loaded with the same options; the model
        already in memory is reused when the fingerprint is unchanged (add/remove keep it)."""
        if self.path is None:
            raise AdahError("this index was made in memory (from_codes); there is nothing to reload")
        return type(self).load(self.path, model=self.storage.model_for_reload(self.model), **self._load_options)

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        where = f"{str(self.path)!r}, " if self.path else ""
        return (f"Index({where}{self.count} items, {self.bits} bits, codes {sorted(self.backends)}, "
                f"backend {self.backend_name})")

    # ----------------------------------------------------------------------- the parts' attributes
    bits = property(lambda self: self.storage.bits)
    count = property(lambda self: self.storage.count)
    manifest = property(lambda self: self.storage.manifest)
    path = property(lambda self: self.storage.path)
    vocabulary = property(lambda self: self.storage.vocabulary)
    backends = property(lambda self: self.storage.backends)
    label_names = property(lambda self: self.storage.label_names)
    image_root = property(lambda self: self.storage.image_root)
    modalities = property(lambda self: self.storage.modalities)
    _meta = property(lambda self: self.storage.meta)  # benchmarks/bench_search.py reads it
    model = property(lambda self: self.encoder.model)
    device = property(lambda self: self.encoder.device)
    text_reader = property(lambda self: self.encoder.text_reader, doc=QueryEncoder.text_reader.__doc__)
    query_image_size = property(lambda self: self.encoder.image_size)

    @property
    def backend_name(self) -> str:
        return next(iter(self.backends.values())).name

    @property
    def exact(self) -> bool:
        return all(b.exact for b in self.backends.values())

    def info(self) -> dict:
        """What the service's index-info endpoint shows: JSON-ready."""
        model = self.manifest.get("model", {})
        cfg = model.get("config", {}).get("model", {})
        coll = self.manifest.get("collection", {})
        return {
            "path": str(self.path) if self.path else None,
            "format": self.manifest.get("format"), "version": self.manifest.get("version"),
            "bits": self.bits, "count": self.count, "modalities": list(self.modalities),
            "backend": self.backend_name, "exact": self.exact,
            "model": {"fingerprint": model.get("fingerprint"), "checkpoint": model.get("checkpoint"),
                      "epoch": model.get("epoch"), "loaded": self.model is not None,
                      "image_backbone": cfg.get("image_backbone"), "attention": cfg.get("attention"),
                      "image_size": self.query_image_size},
            "vocabulary_size": len(self.vocabulary) if self.vocabulary is not None else 0,
            "collection": {"name": coll.get("name"), "source": coll.get("source"),
                           "label_names": list(self.label_names), "has_image_files": self.image_root is not None},
            "created": self.manifest.get("created"), "adah_version": self.manifest.get("adah_version"),
            "text_encoder": cfg.get("text_encoder", "bow_mlp"),
            "generation": int(self.manifest.get("generation") or 0),
            "can_search": {"text": self.model is not None and self.text_reader is not None,
                           "image": self.model is not None and self.model.has_image_branch},
        }

    # ----------------------------------------------------------------------- items
    def item(self, row: int) -> dict:
        """Metadata of index row ``row``: id, labels, caption, text, image (as stored),
        image_path (absolute, when the image is a file), source_row."""
        return self.storage.item(row)

    def image_path(self, row: int, record: dict | None = None) -> Path | None:
        """Absolute path of row ``row``'s image file (None when images are not files)."""
        return self.storage.image_path(row, record)

    # ----------------------------------------------------------------------- search
    def search_codes(self, codes, *, target: str = "image", k: int = 10,
                     packed: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact (or, with the multihash backend, approximate) Hamming top-``k`` of query
        codes against the ``target`` codes. ``codes``: (m, bits) +-1 values, or packed uint8
        (m, ceil(bits/8)) (``packed=None`` tells them apart by dtype and width). Returns
        ``(distances, rows)``, (m, min(k, count)) int32 / int64, best first; row -1 marks a
        missing result of an approximate backend."""
        backend = self._backend(target)
        k = check_k(k)
        arr = codes.detach().cpu().numpy() if hasattr(codes, "detach") else np.asarray(codes)
        if packed is None:
            packed = arr.dtype == np.uint8 and arr.shape[-1] == -(-self.bits // 8) and self.bits != arr.shape[-1]
        q = check_packed(arr, self.bits, "query codes") if packed else pack_pm1(arr, self.bits, "query codes")
        return backend.search(q, k)

    def search_text(self, text: str, *, k: int = 10, target: str = "image", explain: bool = False) -> SearchResult:
        """Items whose ``target`` codes are nearest to the text's code (default: images).
        ``explain``: also return which words of the query the text attention G keeps
        (``text_attention``; a word-level text encoder such as ``minilm`` only)."""
        t0 = time.perf_counter()
        known, unknown = self.query_tokens(text)
        codes = self.encode_text(text)
        t1 = time.perf_counter()
        dist, rows = self.search_codes(codes, target=target, k=k, packed=False)
        t2 = time.perf_counter()
        query = {"modality": "text", "text": text, "known_tokens": known, "unknown_tokens": unknown}
        result = self._result(dist[0], rows[0], query, target, k, {"encode": (t1 - t0) * 1e3,
                                                                   "search": (t2 - t1) * 1e3})
        if explain:
            result.text_attention = self.text_attention(text)
        return result

    def text_attention(self, text: str) -> list[dict]:
        """The words of ``text`` with the text attention's verdict: ``[{"word", "kept", "weight"}]``
        (weight: the word's share of the soft attention p). QueryError for models whose text
        attention is over MLP units (bow_mlp), which have no words to show."""
        self._need_model()
        self.query_tokens(text)
        check_word_attention(self.model)
        return self.encoder.text_attention(text)

    def search_image(self, image, *, k: int = 10, target: str = "text", attention: bool = False,
                     name: str | None = None) -> SearchResult:
        """Items whose ``target`` codes are nearest to the image's code (default: texts, i.e.
        captions). ``image``: a path, encoded bytes, a PIL image, or a uint8 array (H, W, 3) /
        (3, H, W); for a feature-vector model (backbone ``mlp``), a float (D,) vector.
        ``attention``: also return the query's attention mask (spatial backbones)."""
        t0 = time.perf_counter()
        codes, att = self.encoder.encode_image(image, attention=attention, max_pixels=MAX_IMAGE_PIXELS)
        t1 = time.perf_counter()
        dist, rows = self.search_codes(codes, target=target, k=k, packed=False)
        t2 = time.perf_counter()
        if name is None:
            name = str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__
        query = {"modality": "image", "image": name}
        result = self._result(dist[0], rows[0], query, target, k, {"encode": (t1 - t0) * 1e3,
                                                                    "search": (t2 - t1) * 1e3})
        result.attention = att
        return result

    def attention(self, image) -> AttentionMap | None:
        """The attention mask G puts on ``image`` (None for feature-vector backbones and for a
        mask over channels, which has no place on the photo)."""
        return self.encoder.image_attention(image, max_pixels=MAX_IMAGE_PIXELS)

    # ----------------------------------------------------------------------- query encoding
    def query_tokens(self, text: str) -> tuple[list[str], list[str]]:
        """(known, unknown) tokens of ``text`` under the model's vocabulary, each once, in order."""
        return self.encoder.tokens(text)

    def encode_text(self, text: str) -> np.ndarray:
        """(1, bits) int8 +-1 code of a text query; UnknownWordsError when no token is known."""
        return self.encoder.encode_text(text)

    def encode_image(self, image) -> np.ndarray:
        """(1, bits) int8 +-1 code of a query image (see :meth:`search_image` for inputs)."""
        return self.encoder.encode_image(image, max_pixels=MAX_IMAGE_PIXELS)[0]

    # ----------------------------------------------------------------------- helpers
    def _need_model(self) -> None:
        self.encoder.need_model()

    def _backend(self, target: str) -> HammingBackend:
        if target not in TARGETS:
            raise QueryError(f"target must be 'image' or 'text', got {target!r}")
        if target not in self.backends:
            raise QueryError(f"this index holds no {target} codes (it has: {', '.join(self.modalities)})")
        return self.backends[target]

    def _result(self, dist: np.ndarray, rows: np.ndarray, query: dict, target: str, k: int,
                timings: dict[str, float]) -> SearchResult:
        hits = []
        for d, r in zip(dist.tolist(), rows.tolist()):
            if r < 0:  # approximate backends: fewer than k found
                continue
            rec = self.item(r)
            hits.append(Hit(rank=len(hits) + 1, row=r, distance=int(d), id=str(rec.get("id")),
                            labels=list(rec.get("labels", [])), caption=rec.get("caption"), text=rec.get("text"),
                            image=rec.get("image"), image_path=rec.get("image_path"), source_row=rec.get("row")))
        timings = {key: round(v, 3) for key, v in timings.items()}
        return SearchResult(hits, query, target, k, self.bits, self.exact, timings)


