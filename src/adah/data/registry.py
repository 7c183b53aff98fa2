"""Build a dataset and its protocol split from a DataConfig: the one place that maps names to
readers. ``scenes`` is generated; real datasets are read from a data root
(:func:`resolve_data_root`).

=============  =====================================  ===========================================
name           reader                                 protocol split (:data:`PROTOCOLS`)
=============  =====================================  ===========================================
scenes         :func:`adah.data.scenes.make_scenes`   DataConfig.num_query / num_train
mirflickr25k   :func:`adah.data.dcmh.read_dcmh`       2,000 queries, 10,000 training pairs
nuswide        :func:`adah.data.dcmh.read_dcmh`       2,100 queries, 10,500 training pairs
iapr           :func:`adah.data.dcmh.read_dcmh`       2,000 queries, 10,000 training pairs
wiki           :func:`adah.data.wiki.read_wiki`       fixed: 693 test queries; 2,173 train = retrieval
folder         :func:`adah.data.folder.read_folder`   the file's split column, else DataConfig sizes
=============  =====================================  ===========================================

Queries are drawn at random (``DataConfig.seed``) and the rest is the retrieval set; training
pairs are drawn from the retrieval set; validation rows (``val_fraction``) are carved from the
training pairs. ``options.protocol="config"`` uses DataConfig.num_query / num_train instead of
the table. Reader options come from ``DataConfig.options`` (unknown keys are refused).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import numpy as np

from adah.config import DataConfig
from adah.data.base import CrossModalData, Split, random_split
from adah.errors import AdahError
from adah.utils.registry import Registry

ENV_DATA_ROOT = "ADAH_DATA"
DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"


@dataclass(frozen=True)
class Protocol:
    """num_query test queries and num_train training pairs (validation carved from them);
    ``fixed``: the last num_query rows are the queries and the other num_train rows are both
    the retrieval and the training set (Wiki's published split)."""

    num_query: int
    num_train: int
    fixed: bool = False




@dataclass(frozen=True)
class DatasetSpec:
    """A dataset reader: ``read(cfg, options)`` -> CrossModalData, with ``options`` the reader's
    options (a copy of data.options without the split and cache options); ``protocol`` its split."""

    name: str
    read: Callable[[DataConfig, dict], CrossModalData]
    protocol: Protocol | None = None


#: Every dataset reader, by ``data.name``; add one with ``DATASETS.add(name, DatasetSpec(...))``.
DATASETS: Registry[DatasetSpec] = Registry("dataset", key="data.name")

# options naming the MiniLM token cache (adah.features.dataset.load_dataset), not read by the readers
TEXT_FEATURE_OPTIONS = ("text_features", "text_max_tokens")
# options naming a feature cache, read by adah.features.dataset.load_dataset
CACHE_OPTIONS = ("features", "text_features")
# options read by make_split, not by the readers
_SPLIT_OPTIONS = ("protocol", "split_map", "use_split_column")
# options of the folder reader that make_split needs to find and parse the split column
_FOLDER_SPLIT_FIELDS = ("image_field", "text_field", "labels_field", "label_sep", "delimiter", "encoding")


def resolve_data_root(root: str | os.PathLike | None) -> Path:
    """The data root: ``root`` when given (non-empty), else ``$ADAH_DATA``, else
    ``../shared/data`` relative to the current directory. The first of these that is set is
    used; AdahError when that folder does not exist, naming what was tried."""
    if root:
        path, how = Path(root).expanduser(), f"data.root={str(root)!r}"
    elif os.environ.get(ENV_DATA_ROOT):
        path, how = Path(os.environ[ENV_DATA_ROOT]).expanduser(), f"${ENV_DATA_ROOT}={os.environ[ENV_DATA_ROOT]!r}"
    else:
        path = DEFAULT_DATA_ROOT
        how = f"the default {DEFAULT_DATA_ROOT} (data.root is empty and ${ENV_DATA_ROOT} is not set)"
    if not path.is_dir():
        raise AdahError(
            f"data root not found: {path.resolve()} (from {how}); set data.root or ${ENV_DATA_ROOT} to the "
            "folder holding the datasets"
        )
    return path


def _call(fn, args: tuple, options: dict, dataset: str, extra: tuple[str, ...] = ()):
    """``fn(*args, **options)`` after checking every option is a keyword of ``fn``."""
    params = inspect.signature(fn).parameters
    known = [k for k, p in params.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise AdahError(f"data.options: unknown option(s) {unknown} for dataset {dataset!r}; known: "
                        f"{sorted(known + list(extra) + list(_SPLIT_OPTIONS))}")
    return fn(*args, **options)


def _reader_options(cfg: DataConfig) -> dict:
    options = cfg.options or {}
    if not isinstance(options, dict):
        raise AdahError(f"data.options must be a JSON object, got {options!r}")
    return {k: v for k, v in options.items() if k not in _SPLIT_OPTIONS}


def _folder_list_file(cfg: DataConfig) -> Path:
    from adah.data.folder import find_list_file

    where = (cfg.options or {}).get("path")
    if not where:
        raise AdahError("dataset 'folder' needs data.options.path: a list file (.jsonl/.csv/.tsv) or a folder "
                        "holding items.jsonl / items.csv / items.tsv")
    return find_list_file(_under_root(cfg, where))


def _under_root(cfg: DataConfig, where: str | os.PathLike) -> Path:
    """``where`` itself when absolute, else relative to the data root."""
    path = Path(where).expanduser()
    return path if path.is_absolute() else resolve_data_root(cfg.root) / path


def load_dataset(cfg: DataConfig) -> CrossModalData:
    """The dataset ``cfg.name`` (one of :data:`DATASETS`) read by its reader with options
    ``cfg.options``. The cache options (``features``, ``text_features``) are read one layer up, by
    :func:`adah.load_dataset` (:mod:`adah.features.dataset`), which puts the caches in place."""
    cached = sorted(k for k in CACHE_OPTIONS if isinstance(cfg.options, dict) and cfg.options.get(k))
    if cached:
        raise AdahError(f"data.options.{cached[0]} names a feature cache: load this dataset with adah.load_dataset "
                        "(adah.features.dataset.load_dataset), which attaches the cache")
    return DATASETS.get(cfg.name).read(cfg, _reader_options(cfg))


def _read_scenes(cfg: DataConfig, options: dict) -> CrossModalData:
    from adah.data.scenes import ScenesConfig, make_scenes

    try:
        scenes_cfg = ScenesConfig(num_items=cfg.num_items, seed=cfg.seed, **options)
    except TypeError as exc:
        raise AdahError(f"data.options: {exc}") from None
    return make_scenes(scenes_cfg)


def _read_dcmh(cfg: DataConfig, options: dict) -> CrossModalData:
    from adah.data.dcmh import DCMH_SPECS, find_dataset_folder, read_dcmh

    spec = DCMH_SPECS[cfg.name]
    folder = options.pop("folder", None)
    if folder:
        folder = _under_root(cfg, folder)
    else:
        folder = find_dataset_folder(spec, resolve_data_root(cfg.root), options.get("merged_file"))
    return _call(read_dcmh, (spec, folder), options, cfg.name, extra=("folder",))


def _read_wiki(cfg: DataConfig, options: dict) -> CrossModalData:
    from adah.data.wiki import read_wiki

    folder = _under_root(cfg, options.pop("folder", None) or "wiki")
    return _call(read_wiki, (folder,), options, cfg.name, extra=("folder",))


def _read_folder(cfg: DataConfig, options: dict) -> CrossModalData:
    from adah.data.folder import read_folder

    list_file = _folder_list_file(cfg)
    options.pop("path", None)
    options.setdefault("name", "folder")
    return _call(read_folder, (list_file,), options, cfg.name, extra=("path",)).data


# the DCMH protocol per dataset; None: sizes from the DataConfig (or, for ``folder``, the list
# file's split column)
for _spec in (DatasetSpec("scenes", _read_scenes),
              DatasetSpec("mirflickr25k", _read_dcmh, Protocol(num_query=2000, num_train=10000)),
              DatasetSpec("nuswide", _read_dcmh, Protocol(num_query=2100, num_train=10500)),
              DatasetSpec("iapr", _read_dcmh, Protocol(num_query=2000, num_train=10000)),
              DatasetSpec("wiki", _read_wiki, Protocol(num_query=693, num_train=2173, fixed=True)),
              DatasetSpec("folder", _read_folder)):
    DATASETS.add(_spec.name, _spec)

#: The built-in readers' protocols, by name (a view of :data:`DATASETS` as it was at import)
PROTOCOLS: dict[str, Protocol | None] = {name: spec.protocol for name, spec in DATASETS.items()}


def _protocol_option(cfg: DataConfig) -> str:
    value = (cfg.options or {}).get("protocol", "dcmh")
    if value not in ("dcmh", "config"):
        raise AdahError(f"data.options.protocol must be 'dcmh' (the published sizes) or 'config' "
                        f"(data.num_query / data.num_train), got {value!r}")
    return value


def make_split(cfg: DataConfig, num_items: int) -> Split:
    """The protocol split of ``cfg.name`` for a dataset of ``num_items`` rows, drawn from
    ``cfg.seed``: queries, retrieval set, training and validation (see :data:`PROTOCOLS`)."""
    protocol = DATASETS.get(cfg.name).protocol
    if cfg.name == "folder":
        return _folder_split(cfg, num_items)
    if protocol is None or _protocol_option(cfg) == "config":
        return random_split(num_items, cfg.num_query, cfg.num_train, cfg.val_fraction, seed=cfg.seed)
    if protocol.fixed:
        return fixed_split(num_items, protocol.num_query, protocol.num_train, cfg.val_fraction, cfg.seed, cfg.name)
    return random_split(num_items, protocol.num_query, protocol.num_train, cfg.val_fraction, seed=cfg.seed)


def fixed_split(num_items: int, num_query: int, num_train: int, val_fraction: float, seed: int,
                name: str = "data") -> Split:
    """Rows [0, num_train) are the training and retrieval set, the last num_query rows the
    queries; ``val_fraction`` of the training rows (drawn with ``seed``) are validation rows."""
    if num_items != num_query + num_train:
        raise AdahError(f"{name}: the fixed split expects {num_query + num_train} rows ({num_train} train then "
                        f"{num_query} test), found {num_items}; set data.options.protocol='config' for a random split")
    if not 0.0 <= val_fraction < 1.0:
        raise AdahError(f"split: val_fraction must be in [0, 1), got {val_fraction}")
    retrieval = np.arange(num_train, dtype=np.int64)
    num_val = int(round(num_train * val_fraction))
    if num_train - num_val < 2:
        raise AdahError(f"split: val_fraction={val_fraction} leaves {num_train - num_val} training rows")
    val = np.sort(np.random.default_rng(seed).choice(retrieval, size=num_val, replace=False))
    return Split(
        query=np.arange(num_train, num_items, dtype=np.int64),
        retrieval=retrieval,
        train=np.setdiff1d(retrieval, val),
        val=val,
        seed=seed,
    )


def _folder_split(cfg: DataConfig, num_items: int) -> Split:
    from adah.data.folder import read_split_column, split_from_column

    options = cfg.options or {}
    use = options.get("use_split_column", "auto")
    if use not in ("auto", True, False):
        raise AdahError(f"data.options.use_split_column must be 'auto', true or false, got {use!r}")
    split_field = options.get("split_field", "split")
    values = None
    if use is not False and split_field:
        list_file = _folder_list_file(cfg)
        fields = {k: options[k] for k in _FOLDER_SPLIT_FIELDS if k in options and k != "image_field"}
        values = read_split_column(list_file, split_field=split_field, **fields)
        if values is None and use is True:
            raise AdahError(f"{list_file}: no field '{split_field}' on the rows, but data.options.use_split_column "
                            "is true")
        if values is not None and len(values) != num_items:
            raise AdahError(f"{list_file}: {len(values)} rows in the split column but the dataset has {num_items}")
    if values is None:
        return random_split(num_items, cfg.num_query, cfg.num_train, cfg.val_fraction, seed=cfg.seed)
    return split_from_column(values, val_fraction=cfg.val_fraction, seed=cfg.seed,
                             split_map=options.get("split_map"), source=f"{list_file}: field '{split_field}'")
