"""Storage: what an index holds and where it came from, apart from its model's queries.

:class:`IndexStorage` is one version of an index: a search backend per modality over its codes,
per-row metadata, the manifest and, when opened from a folder (:meth:`IndexStorage.open`), the
folder and the version read, so a server can tell when ``adah index add/remove`` or a rebuild
swapped in another (:meth:`IndexStorage.changed_on_disk`, hot reload). Opening checks every file
of the format (:mod:`adah.index.store`: sizes, sha256, headers) and, for an index built on
Milvus, the collections there (:mod:`adah.index.milvus`) instead of reading its codes.
:func:`load_model_for` loads the model an index was built with, refusing another one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.index import store
from adah.index.backends import HammingBackend, make_backend

MODALITIES = ("image", "text")
MILVUS_OPTIONS = frozenset({"uri", "nprobe"})


class IndexStorage:
    """Codes behind a search backend per modality (``backends``), their metadata (``meta``: a
    :class:`~adah.index.store.MetaReader`, a list of dicts, or None), the ``manifest`` and the
    saved ``vocabulary``. ``path``/``stamp``: the folder and version it was opened from (None
    for an in-memory index). Give ``codes`` (packed, per modality: backends are made with
    ``backend`` and its options) or ready ``backends``."""

    def __init__(self, *, bits: int, codes: dict[str, np.ndarray] | None = None, backends: dict | None = None,
                 meta=None, manifest: dict | None = None, path: Path | None = None,
                 vocabulary: Vocabulary | None = None, stamp: tuple | None = None, backend: str = "auto",
                 **backend_options) -> None:
        sets = backends if backends is not None else (codes or {})
        bad = [m for m in sets if m not in MODALITIES]
        if bad or not sets:
            raise AdahError(f"codes must be given for 'image' and/or 'text', got {sorted(sets)}")
        counts = {m: len(c) for m, c in sets.items()}
        if len(set(counts.values())) != 1:
            raise AdahError(f"every modality needs one code per item, got {counts}")
        self.count: int = next(iter(counts.values()))
        if meta is not None and len(meta) != self.count:
            raise AdahError(f"{len(meta)} metadata rows for {self.count} codes")
        self.bits = bits
        self.meta = meta
        self.manifest = manifest or {}
        self.path = path
        self.vocabulary = vocabulary
        self.stamp = stamp
        self.backends: dict[str, HammingBackend] = dict(backends) if backends is not None else {
            m: make_backend(c, bits, backend, **backend_options) for m, c in sets.items()}
        coll = self.manifest.get("collection", {})
        self.label_names: list[str] = list(coll.get("label_names", []))
        root = coll.get("image_root")
        self.image_root = store.recorded_path(coll, "image_root", path) if path is not None else (
            Path(root) if root else None)
        self.image_resize: str = coll.get("image_resize", "stretch")

    # ----------------------------------------------------------------------- opening a folder
    @classmethod
    def open(cls, path: str | os.PathLike, *, backend: str = "auto", verify: bool = True,
             **backend_options) -> "IndexStorage":
        """The index folder ``path``, checked: manifest, every file's size and (``verify``)
        sha256, binary headers; codes read into ``backend`` (or, on Milvus, its collections
        checked). IndexFormatError / AdahError naming the file on any damage."""
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
        _check_files(folder, manifest, verify=verify, codes=not on_milvus)
        codes, backends = None, None
        if on_milvus:
            backends = _milvus_backends(folder, manifest, backend_options)
        else:
            codes = {m: store.read_binary(folder / store.CODE_FILES[m], kind=f"codes:{m}", bits=bits,
                                          row_bytes=-(-bits // 8), count=count, fingerprint=fingerprint, verify=verify)
                     for m in modalities}
        meta_entry = manifest["files"][store.META]
        meta = store.MetaReader(folder, count, fingerprint, sha256=meta_entry["sha256"], size=meta_entry["bytes"],
                                verify=False)  # its sha256 was checked above
        try:
            vocab = None
            if manifest.get("vocabulary") is not None:
                vocab = Vocabulary.from_dict(manifest["vocabulary"], source=f"{folder / store.MANIFEST} (vocabulary)")
            options = {} if on_milvus else backend_options
            return cls(bits=bits, codes=codes, backends=backends, meta=meta, manifest=manifest, path=folder,
                       vocabulary=vocab, stamp=stamp, backend=backend, **options)
        except BaseException:
            meta.close()
            raise

    @property
    def fingerprint(self) -> str | None:
        """The fingerprint of the model whose codes these are (None for an in-memory index)."""
        return (self.manifest.get("model") or {}).get("fingerprint")

    def load_model(self, model, device: torch.device):
        """The model that encodes queries for this index: ``"auto"`` (the checkpoint the
        manifest names), a checkpoint path, a loaded module (kept, e.g. on reload) or None (no
        model). AdahError when its fingerprint differs from the index's."""
        if model is None:
            return None
        if isinstance(model, torch.nn.Module):  # a loaded model (Index.reload): same fingerprint
            from adah.index.build import model_fingerprint

            if model_fingerprint(model) != self.fingerprint:
                raise AdahError(f"{self.path}: the index was rebuilt with another model; load it again with its model")
            return model
        if self.path is None:
            raise AdahError("this index was made in memory (from_codes); it names no model to load")
        return load_model_for(self.path, self.manifest, model, device, self.vocabulary)[0]

    # ----------------------------------------------------------------------- versions (hot reload)
    def changed_on_disk(self) -> bool:
        """True when the folder now holds another version than the one opened (``adah index
        add/remove`` or a rebuild swapped a new one in); a cheap ``stat`` of its manifest."""
        if self.path is None or self.stamp is None:
            return False
        return store.version_stamp(self.path) != self.stamp

    def model_for_reload(self, model):
        """What to load the folder's current version with: ``model`` itself (already in memory)
        when the current version has the same model fingerprint (add/remove keep it), else
        ``"auto"`` (its own checkpoint), or None when no model was loaded."""
        if model is None:
            return None
        if self.path is None:
            raise AdahError("this index was made in memory (from_codes); there is nothing to reload")
        same = store.read_manifest(self.path)["model"].get("fingerprint") == self.fingerprint
        return model if same else "auto"

    # ----------------------------------------------------------------------- items
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.backends)

    def item(self, row: int) -> dict:
        """Metadata of index row ``row``: id, labels, caption, text, image (as stored),
        image_path (absolute, when the image is a file), source_row."""
        if isinstance(row, (bool, np.bool_)) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.count:
            raise AdahError(f"row must be an integer in [0, {self.count}), got {row!r}")
        rec = dict(self.meta[int(row)]) if self.meta is not None else {"id": str(row)}
        rec.setdefault("id", str(row))
        rec.setdefault("labels", [])
        rec["image_path"] = str(self.image_path(int(row), rec)) if self.image_root and rec.get("image") else None
        return rec

    def image_path(self, row: int, record: dict | None = None) -> Path | None:
        """Absolute path of row ``row``'s image file (None when images are not files)."""
        rec = record if record is not None else (self.meta[int(row)] if self.meta is not None else {})
        image = rec.get("image")
        if not image or self.image_root is None:
            return None
        p = Path(image)
        return p if p.is_absolute() else self.image_root / p

    def close(self) -> None:
        if isinstance(self.meta, store.MetaReader):
            self.meta.close()


def _check_files(folder: Path, manifest: dict, *, verify: bool, codes: bool = True) -> None:
    """Every file's size against the manifest and, with ``verify``, its sha256 (the code files'
    only when ``codes``: on Milvus the codes are searched there, their files are not read)."""
    code_files = [store.CODE_FILES[m] for m in manifest["modalities"]]
    for name in code_files + [store.META, store.OFFSETS]:
        entry = store.check_file_entry(folder, name, manifest)
        if verify and (codes or name not in code_files) and store.file_sha256(folder / name) != entry["sha256"]:
            raise store.IndexFormatError(f"{folder / name}: checksum mismatch: the file is corrupted; "
                                         "rebuild the index")


def _milvus_backends(folder: Path, manifest: dict, backend_options: dict) -> dict[str, HammingBackend]:
    from adah.index import milvus

    unknown = sorted(set(backend_options) - MILVUS_OPTIONS)
    if unknown:
        raise AdahError(f"backend 'milvus' takes the options uri and nprobe, got {unknown}")
    return milvus.open_backends(folder, manifest, **backend_options)


def load_model_for(folder: Path, manifest: dict, model, device: torch.device, vocab: Vocabulary | None):
    """(model, config, checkpoint payload, checkpoint path) of the index's model, after checking
    its fingerprint and vocabulary against the manifest."""
    from adah.training.checkpoint import load_model, text_vocabulary_of
    from adah.index.build import model_fingerprint

    recorded = store.recorded_path(manifest["model"], "checkpoint", folder)
    path = recorded if model == "auto" else Path(model)
    if model == "auto" and (recorded is None or not path.is_file()):
        raise AdahError(f"{folder}: the model it was built with ({recorded}) is not there; pass the checkpoint "
                        "explicitly (--checkpoint / Index.load(..., model=PATH))")
    net, cfg, payload = load_model(path, device, lazy_image=True)  # a text query never builds the image backbone
    got, want = model_fingerprint(net), manifest["model"]["fingerprint"]
    if got != want:
        raise AdahError(f"{path}: model fingerprint {got} differs from the index's {want}: the index was built with "
                        "another model (or other weights); rebuild it from this checkpoint (adah index build --checkpoint)")
    saved = text_vocabulary_of(payload, str(path))
    if saved is not None and vocab is not None and saved.tokens != vocab.tokens:
        raise AdahError(f"{path}: its text vocabulary differs from the one stored in the index {folder}")
    return net, cfg, payload, path
