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
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adah.data.vocab import Vocabulary, tokenize
from adah.errors import AdahError
from adah.index import store
from adah.index.backends import HammingBackend, check_k, check_packed, make_backend, pack_pm1
from adah.index.query import (MAX_IMAGE_PIXELS, AttentionMap, ImageQueryError, QueryError,  # noqa: F401 - re-exported
                              UnknownWordsError, decode_image)
from adah.index.storage import load_model_for
from adah.models import binarize

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
        self.bits = bits
        self.manifest = manifest or {}
        self.path = path
        self.model = model
        self.vocabulary = vocabulary
        self.device = torch.device(device)
        self._meta = meta
        sets = backends if backends is not None else codes
        bad = [m for m in sets if m not in TARGETS]
        if bad or not sets:
            raise AdahError(f"codes must be given for 'image' and/or 'text', got {sorted(sets)}")
        counts = {m: len(c) for m, c in sets.items()}
        if len(set(counts.values())) != 1:
            raise AdahError(f"every modality needs one code per item, got {counts}")
        self.count = next(iter(counts.values()))
        if meta is not None and len(meta) != self.count:
            raise AdahError(f"{len(meta)} metadata rows for {self.count} codes")
        self.backends: dict[str, HammingBackend] = dict(backends) if backends is not None else {
            m: make_backend(c, bits, backend, **backend_options) for m, c in codes.items()}
        coll = self.manifest.get("collection", {})
        self.label_names: list[str] = list(coll.get("label_names", []))
        root = coll.get("image_root")
        self.image_root = store.recorded_path(coll, "image_root", path) if path is not None else (
            Path(root) if root else None)
        self._image_resize = coll.get("image_resize", "stretch")
        self._stamp: tuple | None = None
        self._load_options: dict = {"backend": backend, "device": str(self.device), **backend_options}

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

        folder = Path(path)
        stamp = store.version_stamp(folder)
        manifest = store.read_manifest(folder)
        bits, count, fingerprint = manifest["bits"], manifest["count"], manifest["model"].get("fingerprint")
        if not isinstance(fingerprint, str) or not isinstance(bits, int) or bits < 1 or count < 0:
            raise store.IndexFormatError(f"{folder / store.MANIFEST}: invalid bits, count or model fingerprint")
        modalities = manifest["modalities"]
        if not modalities or any(m not in store.CODE_FILES for m in modalities):
            raise store.IndexFormatError(f"{folder / store.MANIFEST}: invalid modalities {modalities!r}")
        on_milvus = backend == "milvus" or (backend == "auto" and bool(manifest.get("milvus")))
        # on Milvus the codes are searched there: their files are checked for size, not read
        for name in [store.CODE_FILES[m] for m in modalities] + [store.META, store.OFFSETS]:
            entry = store.check_file_entry(folder, name, manifest)
            if verify and not (on_milvus and name in store.CODE_FILES.values()) and \
                    store.file_sha256(folder / name) != entry["sha256"]:
                raise store.IndexFormatError(f"{folder / name}: checksum mismatch: the file is corrupted; "
                                             "rebuild the index")
        nbytes = -(-bits // 8)
        codes, backends = {}, None
        if on_milvus:
            from adah.index import milvus

            unknown = sorted(set(backend_options) - {"uri", "nprobe"})
            if unknown:
                raise AdahError(f"backend 'milvus' takes the options uri and nprobe, got {unknown}")
            backends = milvus.open_backends(folder, manifest, **backend_options)
        else:
            codes = {m: store.read_binary(folder / store.CODE_FILES[m], kind=f"codes:{m}", bits=bits,
                                          row_bytes=nbytes, count=count, fingerprint=fingerprint, verify=verify)
                     for m in modalities}
        meta_entry = manifest["files"][store.META]
        meta = store.MetaReader(folder, count, fingerprint, sha256=meta_entry["sha256"], size=meta_entry["bytes"],
                                verify=False)  # its sha256 was checked above
        vocab = None
        if manifest.get("vocabulary") is not None:
            vocab = Vocabulary.from_dict(manifest["vocabulary"], source=f"{folder / store.MANIFEST} (vocabulary)")
        dev = resolve_device(device)
        net = None
        if isinstance(model, torch.nn.Module):  # a loaded model (Index.reload): same fingerprint
            from adah.index.build import model_fingerprint

            if model_fingerprint(model) != fingerprint:
                raise AdahError(f"{folder}: the index was rebuilt with another model; load it again with its model")
            net = model
        elif model is not None:
            net = load_model_for(folder, manifest, model, dev, vocab)[0]
        try:
            index = cls(bits=bits, codes=codes, meta=meta, manifest=manifest, path=folder, model=net, vocabulary=vocab,
                        device=dev, backend=backend, backends=backends, **({} if on_milvus else backend_options))
        except BaseException:
            meta.close()
            raise
        index._stamp = stamp
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
        if self.path is None or self._stamp is None:
            return False
        return store.version_stamp(self.path) != self._stamp

    def reload(self) -> "Index":
        """The folder's current version as a new Index, loaded with the same options; the model
        already in memory is reused when the fingerprint is unchanged (add/remove keep it)."""
        if self.path is None:
            raise AdahError("this index was made in memory (from_codes); there is nothing to reload")
        same = (self.model is not None and
                store.read_manifest(self.path)["model"].get("fingerprint") == self.manifest["model"].get("fingerprint"))
        model = self.model if same else ("auto" if self.model is not None else None)
        return type(self).load(self.path, model=model, **self._load_options)

    def close(self) -> None:
        if isinstance(self._meta, store.MetaReader):
            self._meta.close()

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

    # ----------------------------------------------------------------------- properties
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in TARGETS if m in self.backends)

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

    @property
    def query_image_size(self) -> int | None:
        if self.model is None or not self.model.has_image_branch:
            return None
        return int(getattr(self.model.image.backbone, "input_size", 0)) or None

    # ----------------------------------------------------------------------- items
    def item(self, row: int) -> dict:
        """Metadata of index row ``row``: id, labels, caption, text, image (as stored),
        image_path (absolute, when the image is a file), source_row."""
        if isinstance(row, (bool, np.bool_)) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.count:
            raise AdahError(f"row must be an integer in [0, {self.count}), got {row!r}")
        rec = dict(self._meta[int(row)]) if self._meta is not None else {"id": str(row)}
        rec.setdefault("id", str(row))
        rec.setdefault("labels", [])
        rec["image_path"] = str(self.image_path(int(row), rec)) if self.image_root and rec.get("image") else None
        return rec

    def image_path(self, row: int, record: dict | None = None) -> Path | None:
        """Absolute path of row ``row``'s image file (None when images are not files)."""
        rec = record if record is not None else (self._meta[int(row)] if self._meta is not None else {})
        image = rec.get("image")
        if not image or self.image_root is None:
            return None
        p = Path(image)
        return p if p.is_absolute() else self.image_root / p

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

    @property
    def text_reader(self):
        """What turns query text into the model's text input (the model's text encoder part:
        the saved vocabulary for bow_mlp, the offline MiniLM for minilm); None when it has none."""
        if not hasattr(self, "_text_reader"):
            from adah.models.text_encoders import get_text_encoder

            cfg = (self.manifest.get("model") or {}).get("config") or {}
            name = (cfg.get("model") or {}).get("text_encoder", "bow_mlp")
            self._text_reader = get_text_encoder(name).reader(cfg.get("model"), self.vocabulary,
                                                              (cfg.get("data") or {}).get("options"))
        return self._text_reader

    def text_attention(self, text: str) -> list[dict]:
        """The words of ``text`` with the text attention's verdict: ``[{"word", "kept", "weight"}]``
        (weight: the word's share of the soft attention p). QueryError for models whose text
        attention is over MLP units (bow_mlp), which have no words to show."""
        from adah.models.text_encoders import words_of

        self._need_model()
        self.query_tokens(text)
        if not hasattr(self.model.text, "attend") or self.model.cfg.text_encoder == "bow_mlp":
            raise QueryError("this index's model attends over hidden units of a bag-of-words MLP (bow_mlp), not over "
                             "words; train with model.text_encoder='minilm' to see which words it keeps")
        if not self.model.cfg.text_attention:
            raise QueryError(f"this index's model has no text attention (model.attention="
                             f"{self.model.cfg.attention!r}): every word counts; train with --attention text or both "
                             "to see which words G keeps")
        inputs, pieces = self.text_reader.encode([text])
        with torch.no_grad():
            att = self.model.text.attend(inputs.to(self.device))
        n = len(pieces[0])
        return words_of(pieces[0], att.mask[0, :n].cpu().numpy(), att.probs[0, :n].float().cpu().numpy())

    def search_image(self, image, *, k: int = 10, target: str = "text", attention: bool = False,
                     name: str | None = None) -> SearchResult:
        """Items whose ``target`` codes are nearest to the image's code (default: texts, i.e.
        captions). ``image``: a path, encoded bytes, a PIL image, or a uint8 array (H, W, 3) /
        (3, H, W); for a feature-vector model (backbone ``mlp``), a float (D,) vector.
        ``attention``: also return the query's attention mask (spatial backbones)."""
        t0 = time.perf_counter()
        tensor = self._image_tensor(image)
        att = None
        with torch.no_grad():
            codes = binarize(self.model.encode_image(tensor)).cpu().numpy()
            if attention and self.model.image.spatial_mask:
                out = self.model.image.attend(tensor)
                att = AttentionMap(out.mask[0, 0].cpu().numpy().astype(np.uint8),
                                   out.probs[0, 0].float().cpu().numpy(), int(self.query_image_size or 0))
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
        tensor = self._image_tensor(image)
        if not self.model.image.spatial_mask:
            return None
        with torch.no_grad():
            out = self.model.image.attend(tensor)
        return AttentionMap(out.mask[0, 0].cpu().numpy().astype(np.uint8), out.probs[0, 0].float().cpu().numpy(),
                            int(self.query_image_size or 0))

    # ----------------------------------------------------------------------- query encoding
    def query_tokens(self, text: str) -> tuple[list[str], list[str]]:
        """(known, unknown) tokens of ``text`` under the model's vocabulary, each once, in order."""
        if not isinstance(text, str):
            raise QueryError(f"a text query must be a string, got {type(text).__name__}")
        if not text.strip():
            raise QueryError("empty text query")
        if self.vocabulary is None and self.text_reader is not None:  # a sentence encoder (minilm)
            known, unknown = self.text_reader.tokens(text)
            return list(dict.fromkeys(known)), list(dict.fromkeys(unknown))
        if self.vocabulary is None:
            raise QueryError("this index's model has no text vocabulary (its training data had no words, e.g. Wiki's "
                             "LDA topics or DCMH tag vectors), so it cannot read text queries")
        tokens = list(dict.fromkeys(tokenize(text, self.vocabulary.tokenizer, self.vocabulary.ngram)))
        known = [t for t in tokens if t in self.vocabulary]
        unknown = [t for t in tokens if t not in self.vocabulary]
        return known, unknown

    def encode_text(self, text: str) -> np.ndarray:
        """(1, bits) int8 +-1 code of a text query; UnknownWordsError when no token is known."""
        known, unknown = self.query_tokens(text)
        if not known:
            shown = ", ".join(repr(t) for t in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            size = f" of {len(self.vocabulary):,} tokens" if self.vocabulary is not None else ""
            raise UnknownWordsError(f"no word of the query is in the model's vocabulary{size} "
                                    f"(unknown: {shown or 'none'}); try other words", words=unknown)
        self._need_model()
        inputs, _ = self.text_reader.encode([text])
        with torch.no_grad():
            return binarize(self.model.encode_text(inputs.to(self.device))).cpu().numpy()

    def encode_image(self, image) -> np.ndarray:
        """(1, bits) int8 +-1 code of a query image (see :meth:`search_image` for inputs)."""
        tensor = self._image_tensor(image)
        with torch.no_grad():
            return binarize(self.model.encode_image(tensor)).cpu().numpy()

    def _image_tensor(self, image) -> torch.Tensor:
        self._need_model()
        if not self.model.has_image_branch:
            raise QueryError("this index's model was trained on text only; it cannot encode a query image")
        backbone = self.model.image.backbone
        if not backbone.spatial:  # feature vectors (mlp): the caller brings the features
            arr = np.asarray(image) if isinstance(image, (np.ndarray, list, tuple)) else None
            if arr is None or arr.dtype.kind not in "fiu" or arr.size != backbone.in_dim:
                raise QueryError(f"this model reads {backbone.in_dim}-d image feature vectors, not image files; pass "
                                 "the query image's features as a float vector")
            return torch.from_numpy(arr.astype(np.float32).reshape(1, -1)).to(self.device)
        pixels = decode_image(image, int(backbone.input_size), resize=self._image_resize, max_pixels=MAX_IMAGE_PIXELS)
        return torch.from_numpy(pixels[None]).to(self.device)

    # ----------------------------------------------------------------------- helpers
    def _need_model(self) -> None:
        if self.model is None:
            raise QueryError("this index was opened without its model (model=None); only search_codes works")

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


