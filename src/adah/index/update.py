"""An index that grows: ``adah index add`` and ``adah index remove``.

:func:`add_items` encodes new items with the index's own model (its fingerprint is checked, as
:meth:`Index.load` does) and :func:`remove_items` drops items by id. Each writes a whole new
version of the index folder, checksummed like a build, through the same staging folder and
atomic swap (:class:`adah.index.store.StagingFolder`): a process killed at any moment, even by
SIGKILL, leaves the previous version complete and loadable. The manifest's ``generation`` counts
the versions and ``updates`` records what each did; a running ``adah serve`` notices the new
version on its next request (:mod:`adah.serve.app`). Ids must be unique for ``remove`` to mean
one item: ``add`` refuses an id already in the index.

The old codes and metadata are streamed into the new version (a copy: O(collection) per call,
a few seconds per million items); an index on Milvus gets a new collection the same way and the
manifest switches readers to it (:mod:`adah.index.milvus`).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from adah.errors import AdahError
from adah.index import store
from adah.index.build import encode_batches, load_collection, write_index

COPY_CHUNK = 65_536  # rows of the old version copied per batch
MAX_UPDATES_KEPT = 100  # entries of the manifest's ``updates`` history


@dataclass
class UpdateResult:
    """What an add or remove did: the folder, items added / removed, the new count and
    generation, and seconds taken."""

    path: Path
    added: int
    removed: int
    count: int
    generation: int
    seconds: float
    manifest: dict


def _open_current(folder: Path):
    """The current version, verified (codes in memory, metadata memory-mapped), without a model."""
    from adah.index.core import Index

    return Index.load(folder, model=None, backend="numpy", verify=True)


def _old_rows(index, keep: np.ndarray | None = None) -> Iterable[tuple[dict[str, np.ndarray], list[dict]]]:
    """The current version's codes and metadata in chunks (only rows ``keep`` when given)."""
    rows = np.arange(len(index)) if keep is None else keep
    for start in range(0, len(rows), COPY_CHUNK):
        part = rows[start : start + COPY_CHUNK]
        codes = {m: index.backends[m].codes[part] for m in index.modalities}
        meta = index.storage.meta
        yield codes, [dict(meta[int(r)]) if meta is not None else {"id": str(r)} for r in part]


def _history(manifest: dict, entry: dict) -> list[dict]:
    """The manifest's ``updates`` plus ``entry``, which names the version it was made from
    (``parent``: that version's manifest sha256)."""
    return (list(manifest.get("updates") or []) + [{**entry, "parent": manifest.get("sha256")}])[-MAX_UPDATES_KEPT:]


def _paths_for(manifest: dict, src: Path, out: Path) -> tuple[dict, dict]:
    """The manifest's ``model`` and ``collection`` sections with their paths (checkpoint, image
    root), as found from the index folder ``src``, recorded for the folder ``out`` (relative to
    it and absolute: :func:`adah.index.store.record_path`; an index written before relative
    paths gains them)."""
    sections = []
    for name, key in (("model", "checkpoint"), ("collection", "image_root")):
        section = dict(manifest[name])
        found = store.recorded_path(section, key, src)
        sections.append(store.record_path(section, key, found, out) if found is not None else section)
    return sections[0], sections[1]


def _publisher(manifest: dict):
    """The Milvus publish hook when this index lives on Milvus, else None."""
    if not manifest.get("milvus"):
        return None, None
    from adah.index import milvus

    target = milvus.MilvusTarget.from_manifest(manifest["milvus"])
    return target.publish, target


def add_items(index: str | os.PathLike, data: str | os.PathLike, *, rows: str | np.ndarray = "all",
              split: str | os.PathLike | None = None, model: str | os.PathLike = "auto", batch_size: int = 256,
              device: str = "cpu", progress: bool = True) -> UpdateResult:
    """Encode the items of ``data`` (a folder or list file in the folder format, or a dataset
    name; ``rows``/``split`` as for :func:`build_index`) with the index's model and append them
    to the index folder ``index`` as a new version. ``model``: ``"auto"`` (the checkpoint the
    index names) or a checkpoint path with the same fingerprint."""
    from adah.index.storage import load_model_for
    from adah.utils.runtime import resolve_device

    t0 = time.perf_counter()
    folder = Path(index)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise AdahError(f"batch_size must be a positive integer, got {batch_size!r}")
    if data is None or not str(data).strip():
        raise AdahError("--data: give the new items (a folder or list file in the folder format, or a dataset name)")
    store.read_manifest(folder)  # a clear error before taking the lock beside a folder that is not there
    with store.writer_lock(folder), _open_current(folder) as current:
        manifest = current.manifest
        dev = resolve_device(device)
        net, config, payload, ckpt = load_model_for(folder, manifest, model, dev, current.vocabulary)
        seen = {str(rec.get("id")) for rec in (current.storage.meta if current.storage.meta is not None else [])}
        coll = load_collection(ckpt, config, payload, data=data, rows=rows, split=split, taken_ids=frozenset(seen),
                               progress=progress)
        modalities = current.modalities
        if "image" in modalities and not coll.data.has_images:
            raise AdahError(f"{data}: the new items have no images but the index holds image codes")
        if "text" in modalities and coll.data.text_dim != config.model.text_dim:
            raise AdahError(f"{data}: the new items' texts have {coll.data.text_dim} bag-of-words columns but the "
                            f"model reads {config.model.text_dim}")
        if len(coll.rows) == 0:
            raise AdahError(f"{data}: no items to add")
        label_names = list(manifest["collection"].get("label_names") or [])
        new_labels = list(coll.data.label_names) or [str(i) for i in range(coll.data.num_labels)]
        label_names += [name for name in new_labels if name not in label_names]
        model_section, old_coll = _paths_for(manifest, folder, folder)
        old_coll["label_names"] = label_names
        old_root, new_root = current.image_root, coll.image_root
        if old_root is None and new_root is not None:
            old_coll, old_root = store.record_path(old_coll, "image_root", new_root, folder), new_root

        def new_rows():
            for codes, records in encode_batches(net, coll, modalities, new_labels, dev, batch_size=batch_size,
                                                 progress=progress):
                for rec in records:
                    rid = str(rec.get("id"))
                    if rid in seen:
                        raise AdahError(f"id {rid!r} is already in the index {folder}: ids must stay unique (remove "
                                        "it first with `adah index remove`, or give the new item another id)")
                    seen.add(rid)
                    if rec.get("image") and new_root and new_root != old_root and not Path(rec["image"]).is_absolute():
                        # relative to the index's image root, so the index stays portable
                        rec["image"] = Path(os.path.relpath(Path(new_root) / rec["image"], old_root)).as_posix()
                yield codes, records

        def batches():
            yield from _old_rows(current)
            yield from new_rows()

        generation = int(manifest.get("generation") or 0) + 1
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        publish, target = _publisher(manifest)
        written = write_index(
            folder, batches(), bits=current.bits, modalities=modalities, model=model_section,
            collection=old_coll, vocabulary=manifest.get("vocabulary"), force=True, publish=publish,
            extra={"generation": generation, "updates": _history(manifest, {
                "op": "add", "count": len(coll.rows), "source": coll.source, "at": when})})
    if target is not None:
        target.drop_replaced(manifest.get("milvus"), written.get("milvus"))
    return UpdateResult(folder, len(coll.rows), 0, written["count"], generation, time.perf_counter() - t0, written)


def read_ids_file(path: str | os.PathLike) -> list[str]:
    """The item ids in a text file, one per line (surrounding blanks dropped, blank lines
    skipped): removal by ids that contain a comma. AdahError naming the file when it cannot be
    read or holds no id."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdahError(f"--ids-file {path}: cannot read it as UTF-8 text ({getattr(exc, 'strerror', None) or exc})") \
            from None
    ids = [line.strip() for line in text.split("\n") if line.strip()]
    if not ids:
        raise AdahError(f"--ids-file {path}: no ids in it (expected one item id per line)")
    return ids


def remove_items(index: str | os.PathLike, ids: Iterable[str]) -> UpdateResult:
    """Drop the items whose ``id`` is in ``ids`` from the index folder ``index`` (a new
    version). Every id must be in the index; removing every item is refused (delete the
    folder instead)."""
    t0 = time.perf_counter()
    folder = Path(index)
    if isinstance(ids, (str, bytes)):
        raise AdahError("ids must be a list of item ids, not one string (split a comma-separated list first)")
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str) or not i.strip()]
    if not ids or bad:
        raise AdahError(f"ids must be a non-empty list of non-empty strings, got {ids[:5]!r}")
    wanted = set(ids)
    store.read_manifest(folder)
    with store.writer_lock(folder), _open_current(folder) as current:
        manifest = current.manifest
        if current.storage.meta is None:
            raise AdahError(f"{folder}: the index has no metadata, so no ids to remove by")
        found = np.array([str(rec.get("id")) in wanted for rec in current.storage.meta], dtype=bool)
        present = {str(current.storage.meta[int(r)].get("id")) for r in np.flatnonzero(found)}
        missing = [i for i in dict.fromkeys(ids) if i not in present]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise AdahError(f"{len(missing)} id(s) not in the index {folder}: {shown}; nothing was removed")
        keep = np.flatnonzero(~found)
        if len(keep) == 0:
            raise AdahError(f"removing these ids would leave the index {folder} empty; delete the folder instead")
        generation = int(manifest.get("generation") or 0) + 1
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        publish, target = _publisher(manifest)
        model_section, collection = _paths_for(manifest, folder, folder)
        written = write_index(
            folder, _old_rows(current, keep), bits=current.bits, modalities=current.modalities,
            model=model_section, collection=collection, vocabulary=manifest.get("vocabulary"),
            force=True, publish=publish,
            extra={"generation": generation, "updates": _history(manifest, {
                "op": "remove", "count": int(found.sum()), "at": when})})
        removed = int(found.sum())
    if target is not None:
        target.drop_replaced(manifest.get("milvus"), written.get("milvus"))
    return UpdateResult(folder, 0, removed, written["count"], generation, time.perf_counter() - t0, written)


def copy_index(index: str | os.PathLike, out: str | os.PathLike, *, backend: str = "local", uri: str | None = None,
               name: str | None = None, index_type: str = "BIN_FLAT", nlist: int = 1024,
               force: bool = False) -> UpdateResult:
    """Copy the index folder ``index`` to ``out`` with its codes on ``backend`` (``local``, or
    ``milvus``: new collections at ``uri``, base name ``name``), without re-encoding anything:
    the codes and metadata are read (checksums verified) and written as a new index, checksummed
    and swapped into place like a build. Moves an index built on one machine onto a Milvus server,
    or back. The copy keeps the source's generation and history, plus a ``copy`` entry."""
    t0 = time.perf_counter()
    src, out = Path(index), Path(out)
    if backend not in ("local", "milvus"):
        raise AdahError(f"backend must be local or milvus, got {backend!r}")
    if backend == "local" and (uri is not None or name is not None):
        raise AdahError("uri and collection name are for the milvus backend")
    store.read_manifest(src)
    a, b = src.resolve(), out.resolve()
    if a == b:
        raise AdahError(f"{out}: the copy must go to another folder than its source")
    if a in b.parents or b in a.parents:
        raise AdahError(f"{out}: the copy must go to a folder outside its source {src} (and not around it)")
    with contextlib.ExitStack() as stack:
        stack.enter_context(store.writer_lock(out))  # both locks before anything is read
        stack.enter_context(store.writer_lock(src))
        store.check_destination(out, overwrite=force)
        written, target, old, generation = _copy_locked(src, out, backend, uri, name, index_type, nlist, force)
    if target is not None:
        target.drop_replaced(old, written.get("milvus"))
    return UpdateResult(out, 0, 0, written["count"], generation, time.perf_counter() - t0, written)


def _copy_locked(src: Path, out: Path, backend: str, uri, name, index_type: str, nlist: int, force: bool):
    target, old = None, None
    if backend == "milvus":
        from adah.index import milvus

        target = milvus.MilvusTarget(uri, name or milvus.default_name(out), index_type=index_type, nlist=nlist)
        old = milvus.recorded_section(out)
    with _open_current(src) as current:
        manifest = current.manifest
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        generation = int(manifest.get("generation") or 0)
        model_section, collection = _paths_for(manifest, src, out)
        written = write_index(
            out, _old_rows(current), bits=current.bits, modalities=current.modalities, model=model_section,
            collection=collection, vocabulary=manifest.get("vocabulary"), force=force,
            publish=target.publish if target is not None else None,
            extra={"generation": generation, "updates": _history(manifest, {
                "op": "copy", "from": str(src.resolve()), "backend": backend, "at": when})})
    return written, target, old, generation


__all__ = ["UpdateResult", "add_items", "copy_index", "remove_items"]
