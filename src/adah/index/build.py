"""``adah index build``: encode a collection with a trained model into an index folder.

The collection is the checkpoint's own dataset (default), another dataset by name, or a
folder / list file in the folder format (``coco_mini``), read with the model's text vocabulary
so its bag-of-words columns are the ones the model learned. Items are encoded in batches
(images are read from disk per batch), and codes and metadata are streamed to the index files,
so memory stays bounded by the batch size, not the collection size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from adah.config import Config
from adah.data.base import CrossModalData, Split
from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.index import store
from adah.index.backends import check_packed, code_bytes
from adah.utils.progress import progress_bar
from adah.models import ADAH, binarize

ROW_SETS = ("all", "query", "retrieval", "train", "val")
MODALITIES = ("image", "text")


# --------------------------------------------------------------------------- model identity
def model_fingerprint(model: ADAH) -> str:
    """sha256 (first 32 hex digits) over the model config and every tensor of its state dict
    (names, dtypes, shapes, bytes): two models share it only when they encode identically."""
    h = hashlib.sha256()
    h.update(store.canonical_json(dataclasses.asdict(model.cfg)))
    state = dict(model.state_dict())
    state.update(getattr(model.image, "pending_state", None) or {})  # an image branch not built yet (text queries)
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- collections
@dataclass
class Collection:
    """What gets indexed: ``data`` rows ``rows``, and per row an id, an image path relative to
    ``image_root`` (None for images held in arrays), a text and a short caption."""

    data: CrossModalData
    rows: np.ndarray
    name: str
    source: str
    vocabulary: Vocabulary | None
    image_root: Path | None = None
    record: Callable[[int], dict] | None = None  # dataset row -> {"id", "image", "text", "caption"}
    image_resize: str = "stretch"
    same_as_training: bool = False


def _text_of_bow(data: CrossModalData, row: int) -> str | None:
    words = data.vocabulary
    if not words or len(words) != data.text_dim:
        return None
    cols = np.flatnonzero(np.asarray(data.texts[row]) > 0)
    return " ".join(words[c] for c in cols)


def fresh_id(base: str, taken: set[str] | frozenset[str]) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first not in ``taken`` (generated ids never
    collide with given ones)."""
    rid, n = base, 1
    while rid in taken:
        n += 1
        rid = f"{base}-{n}"
    return rid


def item_ids(rows: list[tuple[int, dict]], id_field: str | None, where: Path,
             taken: frozenset[str] = frozenset()) -> list[str]:
    """One unique id per raw row of a list file: the row's ``id_field`` (a non-empty string or
    an integer; in a CSV an empty cell counts as absent), else its 1-based position, made unique
    against every given id and ``taken`` (the ids of an index being added to). A null, empty,
    non-scalar or repeated given id is refused naming the file and line."""
    csv_file = where.suffix.lower() not in (".jsonl", ".ndjson")
    given: dict[str, int] = {}
    ids: list[str | None] = []
    for line, raw in rows:
        value = raw.get(id_field) if id_field else None
        if not id_field or id_field not in raw or (csv_file and value == ""):
            ids.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise AdahError(f"{where}: line {line}: field '{id_field}' is {json.dumps(value)}; an id must be a "
                            "non-empty string or an integer (or leave the field out to have one made)")
        rid = str(value).strip()
        if rid in given:
            raise AdahError(f"{where}: line {line}: id {rid!r} is also the id of line {given[rid]}; ids must be unique")
        given[rid] = line
        ids.append(rid)
    used = set(given) | set(taken)
    out = []
    for i, rid in enumerate(ids):
        if rid is None:
            rid = fresh_id(str(i + 1), used)
            used.add(rid)
        out.append(rid)
    return out


def _default_record(data: CrossModalData, taken: frozenset[str] = frozenset()) -> Callable[[int], dict]:
    def record(row: int) -> dict:
        text = _text_of_bow(data, row)
        return {"id": fresh_id(str(row), taken), "image": None, "text": text, "caption": text}

    return record


def _folder_records(list_file: Path, options: dict,
                    taken: frozenset[str] = frozenset()) -> tuple[Callable[[int], dict], Path]:
    """Records from the raw rows of a list file: ``id`` (:func:`item_ids`), image path, full
    text and caption (the first of ``captions`` when the row has them)."""
    from adah.data.folder import _csv_rows, _jsonl_rows, find_list_file

    list_file = find_list_file(list_file)
    image_field = options.get("image_field", "image")
    text_field = options.get("text_field", "text")
    suffix = list_file.suffix.lower()
    encoding = options.get("encoding", "utf-8")
    if suffix in (".jsonl", ".ndjson"):
        numbered = _jsonl_rows(list_file, encoding)
    else:
        numbered = _csv_rows(list_file, options.get("delimiter") or ("\t" if suffix == ".tsv" else ","), encoding)
    rows = [row for _, row in numbered]
    ids = item_ids(numbered, options.get("id_field", "id"), list_file, taken)

    def record(i: int) -> dict:
        raw = rows[i]
        text = raw.get(text_field)
        if isinstance(text, list):
            text = " ".join(str(t) for t in text)
        captions = raw.get("captions")
        caption = captions[0] if isinstance(captions, list) and captions and isinstance(captions[0], str) else text
        image = raw.get(image_field) if image_field else None
        return {"id": ids[i], "image": image if isinstance(image, str) else None,
                "text": text if isinstance(text, str) else None, "caption": caption}

    return record, list_file.parent.resolve()


def _select_rows(rows: str | np.ndarray, n: int, split_path: Path | None) -> tuple[np.ndarray, str]:
    if not isinstance(rows, str):
        arr = np.asarray(rows, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise AdahError(f"rows: indices must lie in [0, {n})")
        return arr, "given rows"
    if rows not in ROW_SETS:
        raise AdahError(f"rows must be one of {', '.join(ROW_SETS)}, got {rows!r}")
    if rows == "all":
        return np.arange(n, dtype=np.int64), "all"
    if split_path is None:
        raise AdahError(f"rows={rows!r} needs a split file: pass --split FILE (the split.json beside the checkpoint "
                        "is used by default only when the items are the model's own training data)")
    if not Path(split_path).is_file():
        raise AdahError(f"rows={rows!r} needs a split file: {split_path} not found (pass --split)")
    split = Split.load(split_path, num_items=n)
    return np.asarray(getattr(split, rows), dtype=np.int64), f"{rows} rows of {split_path}"


def load_collection(checkpoint: Path, config: Config, payload: dict, *, data: str | Path | None = None,
                    rows: str | np.ndarray = "all", split: str | Path | None = None,
                    overrides: dict[str, Any] | None = None, taken_ids: frozenset[str] = frozenset(),
                    progress: bool = True) -> Collection:
    """The collection to index (see the module docstring for the three kinds of ``data``);
    ``taken_ids``: ids the generated ones must avoid (those of the index being added to)."""
    from adah.training.checkpoint import text_vocabulary_of
    from adah.data.registry import DATASETS
    from adah.features.dataset import load_dataset

    vocab = text_vocabulary_of(payload, str(checkpoint))
    image_size = int(config.model.image_size or 224)
    cfg_data = config.data
    if overrides:
        cfg_data = config.override(overrides).data
    is_path = data is not None and str(data) not in DATASETS  # a folder named like a dataset: ./scenes
    if is_path:
        from adah.data.folder import read_folder

        path = Path(str(data)).expanduser()
        if not path.exists():
            raise AdahError(f"--data {data}: neither a dataset name ({', '.join(DATASETS)}) nor an existing "
                            "folder or list file")
        import inspect

        # the field names, image size and resize mode of the model's own folder data carry over;
        # vocabulary, split and cache options do not (the texts are read with the model's vocabulary)
        readable = {k for k, prm in inspect.signature(read_folder).parameters.items() if prm.kind == prm.KEYWORD_ONLY}
        options = {k: v for k, v in (cfg_data.options if cfg_data.name == "folder" else {}).items() if k in readable}
        for key in ("vocabulary", "on_empty", "name", "load_images", "min_count", "max_size", "tokenizer", "ngram",
                    "binary"):
            options.pop(key, None)
        if not config.model.has_image_branch:
            options["modalities"] = "text"
        options.setdefault("image_size", image_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # items with no known word keep an all-zero row
            ds = read_folder(path, vocabulary=vocab, on_empty="warn", name=path.stem if path.is_file() else path.name,
                             **options)
        record, root = _folder_records(ds.list_file, options, taken_ids)
        from adah.models.text_encoders import get_text_encoder

        if get_text_encoder(config.model.text_encoder).token_level:
            from adah.models.minilm import DEFAULT_MAX_TOKENS, SentenceTokens

            # a sentence encoder (minilm) reads the raw captions: token embeddings computed here, not cached
            max_tokens = int((cfg_data.options or {}).get("text_max_tokens", DEFAULT_MAX_TOKENS))
            tokens, _ = SentenceTokens(max_tokens).embed(list(ds.data.raw_texts), progress=progress)
            ds.data = dataclasses.replace(ds.data, texts=tokens, text_vocabulary=None, vocabulary=[])
        own = _own_split(checkpoint, config.data, ds.list_file) if config.data.name == "folder" else None
        picked, how = _select_rows(rows, len(ds.data), Path(split) if split else own)
        # only the model's own vocabulary can encode query text for it (None: text queries refused)
        return Collection(ds.data, picked, ds.data.name, f"{ds.list_file.resolve()} ({how})", vocab,
                          image_root=root, record=record, image_resize=options.get("resize", "stretch"))
    if data is not None:
        cfg_data = dataclasses.replace(cfg_data, name=str(data))
    dataset = load_dataset(cfg_data)
    same = cfg_data == config.data
    if vocab is not None and dataset.text_vocabulary is not None and vocab.tokens != dataset.text_vocabulary.tokens:
        raise AdahError(f"dataset {cfg_data.name!r} encodes its texts with another vocabulary than the model in "
                        f"{checkpoint}; index it as a folder (--data PATH) so its texts are read with the model's")
    if same and payload.get("data_fingerprint") not in (None, dataset.fingerprint()):
        raise AdahError(f"{checkpoint}: the dataset rebuilt from its config differs from the one it was trained on")
    split_path = Path(split) if split else (checkpoint.parent / "split.json" if same else None)
    picked, how = _select_rows(rows, len(dataset), split_path)
    record, root, resize = _default_record(dataset, taken_ids), None, "stretch"
    if cfg_data.name == "folder":  # ids, image paths and captions from the list file
        from adah.data.registry import _folder_list_file

        record, root = _folder_records(_folder_list_file(cfg_data), cfg_data.options or {}, taken_ids)
        resize = (cfg_data.options or {}).get("resize", "stretch")
    return Collection(dataset, picked, dataset.name, f"dataset {cfg_data.name!r} ({how})",
                      vocab or dataset.text_vocabulary, image_root=root, record=record, image_resize=resize,
                      same_as_training=same)


def with_feature_cache(coll: Collection, cfg_data, model: ADAH) -> Collection:
    """``coll`` with its photos' maps read from the model's own feature cache
    (``data.options.features`` of its config: ``adah train`` on cached maps) when that cache was
    made from these very photos by this model's backbone (:func:`adah.features.image_cache.matching_cache`):
    ``adah index build --data`` the training folder then reads each photo's maps instead of
    passing it through the backbone again. Otherwise ``coll`` as it is (its photos are encoded)."""
    from adah.features.image_cache import matching_cache

    path = (cfg_data.options or {}).get("features")
    features = getattr(getattr(model.image, "backbone", None), "features", None)
    images = coll.data.images
    if not path or features is None or images is None or hasattr(images, "fit_model_config"):  # none, or cached already
        return coll
    data = matching_cache(coll.data, path, features)
    return coll if data is None else dataclasses.replace(coll, data=data)


def _own_split(checkpoint: Path, cfg_data, list_file: Path) -> Path | None:
    """split.json beside the checkpoint when ``list_file`` is the model's own training folder
    (its split describes those rows), else None."""
    from adah.data.registry import _folder_list_file

    try:
        own = _folder_list_file(cfg_data).resolve()
    except (AdahError, OSError):
        return None
    return checkpoint.parent / "split.json" if own == Path(list_file).resolve() else None


# --------------------------------------------------------------------------- build
@dataclass
class BuildResult:
    path: Path
    count: int
    bits: int
    modalities: tuple[str, ...]
    fingerprint: str
    seconds: float
    manifest: dict


@torch.no_grad()
def build_index(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    rows: str | np.ndarray = "all",
    split: str | Path | None = None,
    modalities: tuple[str, ...] | None = None,
    overrides: dict[str, Any] | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    publish: Callable[[Path, dict], dict] | None = None,
) -> BuildResult:
    """Encode a collection with the model in ``checkpoint`` and write an index folder ``out``.

    data: None (the checkpoint's dataset), a dataset name, or a folder / list file;
    rows: ``all`` or a split part (``query``, ``retrieval``, ``train``, ``val``; the split is
    ``split`` or split.json beside the checkpoint); modalities: the code sets to write
    (default: every one the model and the data have); force: replace an existing index;
    publish: see :func:`write_index` (the Milvus backend, :mod:`adah.index.milvus`)."""
    from adah.utils.distributed import DistContext
    from adah.utils.runtime import resolve_device

    t0 = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AdahError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = resolve_device(device)
    ctx = DistContext.from_env(use_cuda=dev.type == "cuda")  # torchrun --nproc_per_node N: sharded
    if ctx.enabled and dev.type == "cuda":
        dev = torch.device("cuda", ctx.local_rank)
    # the writer lock before anything is read (rank 0 writes; the other ranks only encode)
    with store.writer_lock(out) if ctx.is_main else contextlib.nullcontext():
        store.check_destination(out, overwrite=force)
        return _build(checkpoint, out, ctx, dev, t0, data=data, rows=rows, split=split, modalities=modalities,
                      overrides=overrides, batch_size=batch_size, force=force, progress=progress, publish=publish)


def _build(checkpoint: Path, out: Path, ctx, dev: torch.device, t0: float, *, data, rows, split, modalities,
           overrides, batch_size: int, force: bool, progress: bool, publish) -> BuildResult:
    from adah.training.checkpoint import load_model

    model, config, payload = load_model(checkpoint, dev)
    coll = load_collection(checkpoint, config, payload, data=data, rows=rows, split=split, overrides=overrides,
                           progress=progress)
    data_ = coll.data
    available = tuple(m for m in MODALITIES if m == "text" or (data_.has_images and model.has_image_branch))
    modalities = tuple(modalities) if modalities else available
    if "image" in modalities:
        coll = with_feature_cache(coll, (config.override(overrides) if overrides else config).data, model)
        data_ = coll.data
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        raise AdahError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
    missing = [m for m in modalities if m not in available]
    if missing:
        why = "the model has no image branch" if not model.has_image_branch else "the collection has no images"
        raise AdahError(f"cannot index {missing[0]} codes: {why}")
    if "text" in modalities and data_.text_dim != config.model.text_dim:
        raise AdahError(f"the collection's texts have {data_.text_dim} bag-of-words columns but the model reads "
                        f"{config.model.text_dim} (it has no saved vocabulary to read new texts with); index the "
                        "images alone with --modalities image")
    if len(coll.rows) == 0:
        raise AdahError("the collection selected has no rows to index")

    bits = config.model.bits
    fingerprint = model_fingerprint(model)
    label_names = list(data_.label_names) or [str(i) for i in range(data_.num_labels)]
    model.eval()

    def encode(collection: Collection):
        return encode_batches(model, collection, modalities, label_names, dev, batch_size=batch_size,
                              progress=progress)

    batches = encode(coll)
    if ctx.enabled:  # torchrun: each process encodes a share (adah.index.sharded); rank 0 writes
        from adah.index import sharded

        batches = sharded.sharded_batches(ctx, out, fingerprint, coll, modalities, encode, batch_size)
        if batches is None:
            ctx.barrier()  # rank 0 writes the index
            manifest = store.read_manifest(out)
            return BuildResult(out, int(len(coll.rows)), bits, modalities, fingerprint, time.perf_counter() - t0,
                               manifest)
    manifest = write_index(
        out, batches,
        bits=bits, modalities=modalities, force=force, publish=publish,
        model=store.record_path({"fingerprint": fingerprint, "epoch": payload.get("epoch"), "config": config.to_dict()},
                                "checkpoint", checkpoint, out),
        vocabulary=coll.vocabulary.to_dict() if coll.vocabulary is not None else None,
        collection=store.record_path({"name": coll.name, "source": coll.source, "label_names": label_names,
                                      "image_resize": coll.image_resize,
                                      "data_fingerprint": data_.fingerprint() if coll.same_as_training else None},
                                     "image_root", coll.image_root, out))
    if ctx.enabled:
        sharded.remove_shards(out, fingerprint, coll, modalities, batch_size)
        ctx.barrier()
    return BuildResult(out, int(len(coll.rows)), bits, modalities, fingerprint, time.perf_counter() - t0, manifest)


def encode_batches(model: ADAH, coll: Collection, modalities: tuple[str, ...], label_names: list[str],
                   dev: torch.device, *, batch_size: int = 256, progress: bool = True):
    """``({modality: packed codes}, [metadata dicts])`` per batch of ``coll``'s rows, encoded by
    ``model`` (in eval mode, without gradients): what :func:`write_index` takes."""
    data_ = coll.data
    model.eval()
    bar = progress_bar(total=len(coll.rows), desc=f"index {coll.name}", unit="item", disable=not progress)
    for start in range(0, len(coll.rows), batch_size):
        batch = coll.rows[start : start + batch_size]
        codes = {}
        with torch.no_grad():
            if "image" in modalities:
                images = torch.from_numpy(np.ascontiguousarray(data_.images[batch])).to(dev)
                codes["image"] = np.packbits(binarize(model.encode_image(images)).cpu().numpy() > 0, axis=1)
            if "text" in modalities:
                texts = torch.from_numpy(np.asarray(data_.texts[batch], dtype=np.float32)).to(dev)
                codes["text"] = np.packbits(binarize(model.encode_text(texts)).cpu().numpy() > 0, axis=1)
        records = []
        for row, lab in zip(batch, np.asarray(data_.labels[batch])):
            rec = coll.record(int(row)) if coll.record else {"id": str(row), "image": None, "text": None,
                                                             "caption": None}
            rec["row"] = int(row)
            rec["labels"] = [label_names[c] for c in np.flatnonzero(lab)]
            records.append(rec)
        yield codes, records
        bar.update(len(batch))
    bar.close()


def write_index(out: str | Path, batches: Iterable[tuple[dict[str, np.ndarray], list[dict]]], *, bits: int,
                modalities: tuple[str, ...], model: dict, collection: dict, vocabulary: dict | None = None,
                force: bool = False, extra: dict | None = None,
                publish: Callable[[Path, dict], dict] | None = None) -> dict:
    """Write an index folder from ``batches`` of ``({modality: packed codes (b, ceil(bits/8))
    uint8}, [b metadata dicts])``, streamed to disk, then moved into place atomically.
    ``model`` must hold the model's ``fingerprint``; returns the manifest. Used by
    :func:`build_index`; also writes indexes of codes made elsewhere (benchmarks, tests).

    extra: more manifest fields (``generation``); publish: called with the staging folder and
    the manifest so far once every file is written, before the folder is swapped into place;
    returns manifest fields to add (the Milvus backend copies the codes to a new collection
    there, so the manifest is the pointer that switches readers to it)."""
    out = Path(out)
    fingerprint = model.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise AdahError("write_index: model['fingerprint'] must be a non-empty string")
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        raise AdahError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
    nbytes = code_bytes(bits)
    with store.writer_lock(out):  # one writer of a destination at a time (held already by build/add/remove/copy)
        store.check_destination(out, overwrite=force)
        store.remove_stale_builds(out)  # left by a build that was killed: its owner is gone (we hold the lock)
        return _write_locked(out, batches, bits=bits, nbytes=nbytes, modalities=modalities, model=model,
                             collection=collection, vocabulary=vocabulary, fingerprint=fingerprint, extra=extra,
                             publish=publish)


def _write_locked(out: Path, batches, *, bits: int, nbytes: int, modalities: tuple[str, ...], model: dict,
                  collection: dict, vocabulary: dict | None, fingerprint: str, extra: dict | None,
                  publish: Callable[[Path, dict], dict] | None) -> dict:
    staging = store.StagingFolder(out)
    try:
        writers = {m: store.BinaryWriter(staging.path / store.CODE_FILES[m], kind=f"codes:{m}", bits=bits,
                                         row_bytes=nbytes, fingerprint=fingerprint) for m in modalities}
        meta = store.MetaWriter(staging.path, fingerprint)
        seen: dict[str, int] = {}
        for codes, records in batches:
            if sorted(codes) != sorted(modalities):
                raise AdahError(f"write_index: a batch holds codes for {sorted(codes)}, expected {sorted(modalities)}")
            for m, c in codes.items():
                c = check_packed(c, bits, f"{m} codes")
                if len(c) != len(records):
                    raise AdahError(f"write_index: {len(c)} {m} codes but {len(records)} metadata rows in a batch")
                writers[m].append(c)
            for rec in records:
                _check_id(rec, meta.count, seen)
                meta.append(rec)
        for w in writers.values():
            w.close()
        meta.close()
        if meta.count == 0:
            raise AdahError("write_index: no rows to index")
        files = {name: store.file_entry(staging.path / name)
                 for name in [store.CODE_FILES[m] for m in modalities] + [store.META, store.OFFSETS]}
        from adah.utils.version import VERSION as __version__

        fields = {
            "format": store.FORMAT, "version": store.FORMAT_VERSION, "bits": bits, "count": meta.count,
            "modalities": list(modalities), "model": model, "vocabulary": vocabulary, "collection": collection,
            "files": files, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "adah_version": __version__, "replaces": store.current_digest(out), **(extra or {}),
        }
        if publish is not None:
            fields.update(publish(staging.path, fields))
        manifest = store.write_manifest(staging.path, fields)
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    return manifest


def _check_id(record: dict, row: int, seen: dict[str, int]) -> None:
    """Every row written has an id, a non-empty string that no other row of the index has."""
    rid = record.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise AdahError(f"write_index: row {row}: 'id' must be a non-empty string, got {rid!r}")
    if rid in seen:
        raise AdahError(f"write_index: rows {seen[rid]} and {row} both have id {rid!r}: ids must be unique (an "
                        "index written by an older adah may hold such rows: rebuild it with `adah index build`)")
    seen[rid] = row


def describe(manifest: dict) -> str:
    """A few lines about an index for the CLI."""
    model = manifest["model"]
    cfg = model.get("config", {}).get("model", {})
    vocab = manifest.get("vocabulary")
    coll = manifest["collection"]
    return "\n".join([
        f"index format {manifest['format']} v{manifest['version']}: {manifest['count']:,} items, {manifest['bits']} bits, "
        f"codes: {', '.join(manifest['modalities'])}",
        f"model: {model.get('checkpoint')} (epoch {model.get('epoch')}, fingerprint {model['fingerprint']}, "
        f"backbone {cfg.get('image_backbone')}, attention {cfg.get('attention')})",
        f"vocabulary: {len(vocab['tokens']):,} tokens ({vocab['tokenizer']})" if vocab else "vocabulary: none (text "
        "queries are not possible)",
        f"collection: {coll.get('name')} from {coll.get('source')}; {len(coll.get('label_names', []))} labels",
        f"created {manifest.get('created')} by adah {manifest.get('adah_version')}; generation "
        f"{manifest.get('generation') or 0} ({len(manifest.get('updates') or [])} add/remove recorded)",
        *([f"codes served by Milvus: {manifest['milvus'].get('uri')} collections "
           f"{', '.join(manifest['milvus'].get('collections', {}).values())} ({manifest['milvus'].get('index_type')})"]
          if manifest.get("milvus") else []),
    ])


def manifest_json(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, ensure_ascii=False)
