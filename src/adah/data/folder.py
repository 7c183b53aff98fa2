"""A plain folder format for one's own image-text data.

A list file, one item a row, beside (or above) the images:

* JSONL (``.jsonl``): one JSON object a line, e.g.
  ``{"image": "images/1.jpg", "text": "a dog on a sofa", "labels": ["dog", "sofa"], "split": "train"}``;
  ``labels`` is a list of names (or one name).
* CSV / TSV (``.csv``, ``.tsv``) with a header row: the labels column holds names separated by
  ``label_sep`` (default ``;``). Quoting is strict: every row is one line with as many values as
  the header; a field may be quoted (``"a dog, a ""big"" one"``) but not run over several lines,
  so a stray quote is an error naming its line instead of rows merged into one field.

Image paths are relative to the list file's folder (absolute paths work too). Field names are
options (``image_field``, ``text_field``, ``labels_field``, ``split_field``), so e.g.
``coco_mini/items.jsonl`` reads as it is. Images are decoded with PIL, converted to RGB and
resized to ``image_size`` (stretched, or ``resize="center_crop"``), either per batch
(``load_images="lazy"``, a :class:`FileImages`) or all at once (``"eager"``, small sets); an
image of more than ``max_image_pixels`` (default 100 million) is refused naming its file and line.
Texts become a bag-of-words over a :class:`~adah.data.vocab.Vocabulary` built from all items
(``tokenizer``, ``ngram``, ``min_count``, ``max_size``) or loaded from a JSON file
(``vocabulary``). Labels become multi-hot columns over ``label_names`` (default: the names
seen, sorted).

An optional ``split`` column gives the protocol split (see :func:`split_from_column`).

Labels are optional for training from the pairs alone (``loss.similarity='pairs'``):
``labels_mode="required"`` (default) needs the labels field on every row, ``"optional"`` reads
it where present (a missing field or an empty list is an unlabelled row; no row labelled gives
(N, 0) labels), ``"ignore"`` never reads it ((N, 0) labels).
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adah.data.base import CrossModalData, Split
from adah.data.dcmh import MODALITIES, ON_EMPTY
from adah.data.lazy import LazyImages
from adah.data.vocab import Vocabulary
from adah.errors import AdahError
from adah.utils.images import DEFAULT_MAX_PIXELS, ImageTooLarge, check_max_pixels, open_image

LIST_FILE_NAMES = ("items.jsonl", "items.csv", "items.tsv")
RESIZE_MODES = ("stretch", "center_crop")
#: split column value -> role; extend or override with the ``split_map`` option
SPLIT_ROLES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "query", "query": "query",
    "retrieval": "retrieval", "database": "retrieval", "db": "retrieval",
}
ROLES = ("query", "train", "val", "retrieval")
LABELS_MODES = ("required", "optional", "ignore")


@dataclass
class Item:
    line: int  # 1-based line of the list file (for error messages)
    image: str | None
    text: str
    labels: list[str]
    split: str | None
    id: str | None = None  # the id field, when the row has one


@dataclass
class FolderDataset:
    """What :func:`read_folder` returns: the data, the vocabulary that made its BoW (save it
    with a model to encode new text), the split column (None when the file has none) and the
    list file."""

    data: CrossModalData
    vocabulary: Vocabulary
    splits: list[str] | None
    list_file: Path


# --------------------------------------------------------------------------- list file
def find_list_file(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file, else the first of :data:`LIST_FILE_NAMES` inside it."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in LIST_FILE_NAMES:
            if (path / name).is_file():
                return path / name
        raise AdahError(f"no list file in {path}: looked for {', '.join(LIST_FILE_NAMES)}")
    raise AdahError(f"list file not found: {path}")


def read_list_file(
    path: str | os.PathLike,
    *,
    image_field: str | None = "image",
    text_field: str = "text",
    labels_field: str | None = "labels",
    split_field: str | None = "split",
    label_sep: str = ";",
    delimiter: str | None = None,
    labels_required: bool = True,
    encoding: str = "utf-8",
    id_field: str | None = "id",
    on_duplicate_id: str = "error",
) -> list[Item]:
    """Parse a JSONL / CSV / TSV list file into :class:`Item` rows (no images opened).

    ``image_field=None`` skips images, ``labels_field=None`` labels (every row then has none);
    ``labels_required=False`` accepts rows without the labels field; the split field is optional
    (None where absent, but it must then be absent from every row). ``encoding``: of the file (a
    UTF-8 byte-order mark is accepted). ``id_field``: optional item ids; one id on several rows
    raises AdahError naming the lines (``on_duplicate_id="error"``) or warns (``"warn"``)."""
    if on_duplicate_id not in ON_EMPTY:
        raise AdahError(f"folder: options.on_duplicate_id must be one of {ON_EMPTY}, got {on_duplicate_id!r}")
    path = find_list_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path, encoding)
    elif suffix in (".csv", ".tsv", ".txt"):
        rows = _csv_rows(path, delimiter or ("\t" if suffix == ".tsv" else ","), encoding)
    else:
        raise AdahError(f"{path}: unknown list file type {suffix!r}; use .jsonl, .csv or .tsv")
    if not rows:
        raise AdahError(f"{path}: no items")
    items = []
    for line, row in rows:
        where = f"{path}: line {line}"
        required = [f for f in (image_field, text_field, labels_field if labels_required else None) if f]
        missing = [f for f in required if f not in row]
        if missing:
            raise AdahError(f"{where}: missing field(s) {missing}; fields found: {sorted(row)}")
        text = row[text_field]
        if isinstance(text, list) and all(isinstance(t, str) for t in text):
            text = " ".join(text)
        if not isinstance(text, str):
            raise AdahError(f"{where}: field '{text_field}' must be a string, got {type(text).__name__}")
        image = None
        if image_field:
            image = row[image_field]
            if not isinstance(image, str) or not image:
                raise AdahError(f"{where}: field '{image_field}' must be a non-empty image path, got {image!r}")
        raw_labels = row.get(labels_field) if labels_field else None
        labels = [] if raw_labels is None else _labels_of(raw_labels, where, labels_field, label_sep)
        item_id = row.get(id_field) if id_field else None
        if item_id is not None and (isinstance(item_id, (bool, float, list, dict)) or str(item_id).strip() == ""):
            raise AdahError(f"{where}: field '{id_field}' must be a non-empty string or integer, got {item_id!r}")
        items.append(Item(line, image, text, labels, _split_of(row, split_field, where),
                          None if item_id is None else str(item_id).strip()))
    if split_field:
        have = [it.split is not None for it in items]
        if any(have) and not all(have):
            first = items[have.index(False)].line
            raise AdahError(f"{path}: field '{split_field}' is set on some rows but not on line {first}; "
                            "set it on every row or on none")
    _check_duplicate_ids(items, path, id_field, on_duplicate_id)
    return items


def _check_duplicate_ids(items: list[Item], path: Path, id_field: str | None, on_duplicate: str) -> None:
    lines: dict[str, list[int]] = {}
    for it in items:
        if it.id is not None:
            lines.setdefault(it.id, []).append(it.line)
    dupes = {i: ls for i, ls in lines.items() if len(ls) > 1}
    if not dupes:
        return
    shown = "; ".join(f"{i!r} on lines {', '.join(map(str, ls[:5]))}{' ...' if len(ls) > 5 else ''}"
                      for i, ls in list(dupes.items())[:3])
    msg = (f"{path}: field '{id_field}': {len(dupes)} id(s) used on several rows: {shown}"
           f"{' ...' if len(dupes) > 3 else ''}")
    if on_duplicate == "error":
        raise AdahError(msg + "; make the ids unique (or set options.on_duplicate_id='warn' to keep them)")
    warnings.warn(msg + "; kept (an index will hold several rows with one id)", stacklevel=3)


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The list file's text: a UTF-8 byte-order mark is skipped; undecodable bytes raise AdahError
    naming the file, line and byte, and the ``encoding`` option."""
    import codecs

    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise AdahError(f"{path}: unknown encoding {encoding!r} (option encoding), e.g. 'utf-8' or 'latin-1'") from None
    data = path.read_bytes()
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"  # accepts and drops a byte-order mark
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise AdahError(f"{path}: line {line}, column {column}: byte 0x{data[exc.start]:02x} is not valid "
                        f"{exc.encoding}; save the file as UTF-8, or name its encoding with the option encoding "
                        "(e.g. data.options.encoding=latin-1)") from None


def _jsonl_rows(path: Path, encoding: str = "utf-8") -> list[tuple[int, dict]]:
    rows = []
    # split on newlines only (not splitlines): U+2028 and U+0085 may appear raw inside JSON strings
    for line, raw in enumerate(read_text(path, encoding).split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AdahError(f"{path}: line {line}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise AdahError(f"{path}: line {line}: expected a JSON object, got {type(obj).__name__}")
        rows.append((line, obj))
    return rows


class _CountedLines:
    """The lines of a text for :mod:`csv`, counting how many the reader has taken."""

    def __init__(self, text: str) -> None:
        self._lines = io.StringIO(text, newline="")  # split on \n, \r\n, \r only, ends kept
        self.taken = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._lines.readline()
        if not line:
            raise StopIteration
        self.taken += 1
        return line


def _csv_rows(path: Path, delimiter: str, encoding: str = "utf-8") -> list[tuple[int, dict]]:
    """CSV / TSV rows with strict quoting: a row is one line with as many values as the header.
    A stray quote (a quoted field left open, a quote inside one not doubled, a quoted field
    running over several lines) raises AdahError naming the line it opened on, never merging
    rows into one field."""
    lines = _CountedLines(read_text(path, encoding))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header, rows = None, []
    while True:
        start = lines.taken + 1
        try:
            values = next(reader, None)
        except csv.Error as exc:
            where = f"line {start}" if lines.taken <= start else f"lines {start}-{lines.taken}"
            raise AdahError(f"{path}: {where}: bad quoting ({exc}); a field that starts with a quote must end "
                            'with one, and a quote inside it must be doubled ("")') from None
        if values is None:
            break
        if lines.taken > start:
            raise AdahError(f"{path}: line {start}: a quoted field runs on to line {lines.taken} (a stray quote?); "
                            "a field may not hold a line break: close the quote on its line, or use a JSONL list "
                            "file for text with line breaks")
        if header is None:
            if values:
                header = values
            continue
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            more = "more" if len(values) > len(header) else "fewer"
            raise AdahError(f"{path}: line {start}: {len(values)} values, {more} than the {len(header)} header "
                            f"columns {header}")
        rows.append((start, dict(zip(header, values))))
    if header is None:
        raise AdahError(f"{path}: empty file; expected a header row")
    return rows


def _labels_of(value, where: str, field: str, sep: str) -> list[str]:
    if isinstance(value, str):
        names = [v.strip() for v in value.split(sep)] if sep else [value.strip()]
    elif isinstance(value, list):
        names = [str(v).strip() if isinstance(v, (str, int)) and not isinstance(v, bool) else None for v in value]
        if None in names:
            raise AdahError(f"{where}: field '{field}' must be a list of label names, got {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool):
        names = [str(value)]
    else:
        raise AdahError(f"{where}: field '{field}' must be a label name or a list of them, got {value!r}")
    return list(dict.fromkeys(n for n in names if n))


def _split_of(row: dict, split_field: str | None, where: str) -> str | None:
    if not split_field or split_field not in row:
        return None
    value = row[split_field]
    if not isinstance(value, str) or not value.strip():
        raise AdahError(f"{where}: field '{split_field}' must be a non-empty string, got {value!r}")
    return value.strip()


def _natural(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


# --------------------------------------------------------------------------- images
class FileImages(LazyImages):
    """Image files decoded on demand: (k, 3, S, S) uint8 RGB, resized to ``size``.

    paths: one file per row; lines: the list-file line of each row (for error messages);
    base: the folder the paths are relative to (their identity in the fingerprint)."""

    def __init__(self, paths: list[Path], lines: list[int], list_file: Path, size: int = 224,
                 resize: str = "stretch", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not isinstance(size, int) or size < 8:
            raise AdahError(f"image_size must be an integer >= 8, got {size!r}")
        if resize not in RESIZE_MODES:
            raise AdahError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if len(paths) != len(lines):
            raise AdahError("FileImages: one line number per path is needed")
        self.paths = [Path(p) for p in paths]
        self.lines = list(lines)
        self.list_file = Path(list_file)
        self.size = size
        self.resize = resize
        self.max_pixels = check_max_pixels(max_pixels, "folder: options.max_image_pixels")
        self._shape = (len(self.paths), 3, size, size)

    def __repr__(self) -> str:
        return f"FileImages({len(self)} files from {str(self.list_file)!r}, size={self.size})"

    def load_one(self, row: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.paths[row]
        where = f"{self.list_file}: line {self.lines[row]}"
        try:
            with open_image(path, max_pixels=self.max_pixels, what=f"{where}: image {path}") as im:
                im = im.convert("RGB")
                if self.resize == "center_crop":
                    w, h = im.size
                    s = self.size / min(w, h)
                    im = im.resize((max(self.size, round(w * s)), max(self.size, round(h * s))),
                                   Image.Resampling.BILINEAR)
                    left, top = (im.size[0] - self.size) // 2, (im.size[1] - self.size) // 2
                    im = im.crop((left, top, left + self.size, top + self.size))
                else:
                    im = im.resize((self.size, self.size), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except ImageTooLarge:
            raise
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise AdahError(f"{where}: cannot read image {path} ({exc})") from None
        return arr.transpose(2, 0, 1)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), 3, self.size, self.size), dtype=np.uint8)
        for k, row in enumerate(rows):
            out[k] = self.load_one(int(row))
        return out

    def _identity(self) -> bytes:
        base = self.list_file.parent
        names = []
        for p in self.paths:
            try:
                rel = p.relative_to(base)
            except ValueError:
                rel = p
            names.append(f"{rel.as_posix()}:{p.stat().st_size if p.exists() else -1}")
        return f"files:{self.size}:{self.resize}:".encode() + "\n".join(names).encode()


# --------------------------------------------------------------------------- reader
def read_folder(
    path: str | os.PathLike,
    *,
    modalities: str = "both",
    image_field: str = "image",
    text_field: str = "text",
    labels_field: str = "labels",
    split_field: str | None = "split",
    label_sep: str = ";",
    delimiter: str | None = None,
    encoding: str = "utf-8",
    id_field: str | None = "id",
    on_duplicate_id: str = "error",
    label_names: list[str] | None = None,
    image_size: int = 224,
    resize: str = "stretch",
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    load_images: str = "lazy",
    tokenizer: str = "words",
    ngram: list[int] | None = None,
    min_count: int = 1,
    max_size: int = 0,
    binary: bool = True,
    vocabulary: str | os.PathLike | Vocabulary | None = None,
    on_empty: str = "error",
    name: str = "folder",
    labels_mode: str = "required",
) -> FolderDataset:
    """Read a list file (or a folder holding ``items.jsonl`` / ``items.csv`` / ``items.tsv``).

    Every image file must exist (checked now, naming file and line); with
    ``load_images="eager"`` all are decoded now, with ``"lazy"`` when indexed (an unreadable
    file then raises at that point, naming file and line). ``modalities="text"`` skips images
    (``data.images`` is None). ``vocabulary``: a Vocabulary, or a saved JSON one (relative to
    the list file's folder), used instead of building one. on_empty: items with no label, or
    whose text has no vocabulary token, raise (``"error"``) or are kept with all-zero rows and
    a warning (``"warn"``). labels_mode: ``required``, ``optional`` or ``ignore`` (see the module
    docstring); unlabelled rows are accepted without a warning unless labels are required.
    """
    if labels_mode not in LABELS_MODES:
        raise AdahError(f"folder: options.labels_mode must be one of {LABELS_MODES}, got {labels_mode!r}")
    if modalities not in MODALITIES:
        raise AdahError(f"folder: options.modalities must be one of {MODALITIES}, got {modalities!r}")
    if load_images not in ("lazy", "eager"):
        raise AdahError(f"folder: options.load_images must be 'lazy' or 'eager', got {load_images!r}")
    if on_empty not in ON_EMPTY:
        raise AdahError(f"folder: options.on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    list_file = find_list_file(path)
    items = read_list_file(
        list_file, image_field=image_field if modalities == "both" else None, text_field=text_field,
        labels_field=None if labels_mode == "ignore" else labels_field, split_field=split_field, label_sep=label_sep,
        delimiter=delimiter, labels_required=labels_mode == "required", encoding=encoding, id_field=id_field,
        on_duplicate_id=on_duplicate_id,
    )
    texts_raw = [it.text for it in items]

    # labels -> multi-hot
    if label_names is None:
        names = sorted({n for it in items for n in it.labels}, key=_natural)
    else:
        if not isinstance(label_names, (list, tuple)) or not all(isinstance(n, str) for n in label_names):
            raise AdahError(f"folder: options.label_names must be a list of strings, got {label_names!r}")
        names = list(dict.fromkeys(label_names))
    col = {n: i for i, n in enumerate(names)}
    labels = np.zeros((len(items), len(names)), dtype=np.uint8)
    for r, it in enumerate(items):
        for n in it.labels:
            if n not in col:
                raise AdahError(f"{list_file}: line {it.line}: label {n!r} is not in options.label_names")
            labels[r, col[n]] = 1
    unlabelled = [it.line for it in items if not it.labels]
    if unlabelled and labels_mode == "required":
        msg = (f"{list_file}: field '{labels_field}': {len(unlabelled)} items have no label, "
               f"first on lines {unlabelled[:5]}")
        if on_empty == "error":
            raise AdahError(msg + "; every item needs at least one label (or set options.on_empty='warn')")
        warnings.warn(msg + "; kept with all-zero label rows", stacklevel=2)

    # texts -> bag-of-words
    if isinstance(vocabulary, Vocabulary):
        vocab = vocabulary
    elif vocabulary:
        vpath = Path(vocabulary)
        vocab = Vocabulary.load(vpath if vpath.is_absolute() else list_file.parent / vpath)
    else:
        vocab = Vocabulary.build(texts_raw, tokenizer=tokenizer, ngram=ngram, min_count=min_count,
                                 max_size=max_size, binary=binary)
    texts = vocab.encode(texts_raw)
    empty = np.flatnonzero(~texts.any(axis=1))
    if empty.size:
        lines = [items[i].line for i in empty[:5]]
        msg = (f"{list_file}: field '{text_field}': {empty.size} items have no token of the vocabulary "
               f"({len(vocab)} tokens), first on lines {lines}")
        if on_empty == "error":
            raise AdahError(msg + "; lower options.min_count or set options.on_empty='warn' to keep them")
        warnings.warn(msg + "; kept with all-zero bag-of-words rows", stacklevel=2)

    images = None
    if modalities == "both":
        paths = _image_paths(items, list_file)
        images = FileImages(paths, [it.line for it in items], list_file, size=image_size, resize=resize,
                            max_pixels=max_image_pixels)
        if load_images == "eager":
            images = images.to_numpy()
    splits = [it.split for it in items] if items[0].split is not None else None
    data = CrossModalData(images, texts, labels, label_names=names, name=name, text_vocabulary=vocab,
                          raw_texts=texts_raw)
    return FolderDataset(data=data, vocabulary=vocab, splits=splits, list_file=list_file)


def _image_paths(items: list[Item], list_file: Path) -> list[Path]:
    """Each item's image file (relative to the list file's folder); AdahError naming the line of
    the first one that is not there or that the OS refuses as a path (e.g. "File name too long")."""
    paths = [Path(it.image) if Path(it.image).is_absolute() else list_file.parent / it.image for it in items]
    for p, it in zip(paths, items):
        try:
            found = p.is_file()
        except OSError as exc:
            raise AdahError(f"{list_file}: line {it.line}: image path {str(p)[:200]!r}: {exc.strerror or exc}") from None
        if not found:
            raise AdahError(f"{list_file}: line {it.line}: image file not found: {p}")
    return paths


def read_split_column(path: str | os.PathLike, *, split_field: str = "split", **fields) -> list[str] | None:
    """The split column of a list file (None when it has none); no images or texts are processed."""
    fields.pop("labels_field", None)
    items = read_list_file(path, image_field=None, labels_field=None, split_field=split_field, **fields)
    return [it.split for it in items] if items[0].split is not None else None


def split_from_column(
    values: list[str],
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    split_map: dict[str, str] | None = None,
    source: str = "split column",
) -> Split:
    """A Split from per-row split names mapped to roles (:data:`SPLIT_ROLES`, updated by
    ``split_map``): ``query`` rows are the test queries; ``train``, ``val`` and ``retrieval``
    rows together form the retrieval set; ``train`` rows are the training set; validation rows
    are the ``val`` rows when there are any, else ``val_fraction`` of the training rows drawn
    with ``seed``."""
    roles_map = dict(SPLIT_ROLES)
    for key, role in (split_map or {}).items():
        if role not in ROLES:
            raise AdahError(f"{source}: options.split_map maps {key!r} to {role!r}; roles are {ROLES}")
        roles_map[str(key)] = role
    unknown = sorted({v for v in values if v not in roles_map})
    if unknown:
        raise AdahError(f"{source}: split values {unknown} have no role; map them with options.split_map "
                        f"(value -> one of {ROLES})")
    roles = np.array([roles_map[v] for v in values])
    rows = {r: np.flatnonzero(roles == r).astype(np.int64) for r in ROLES}
    found = sorted(set(values))
    if rows["query"].size == 0:
        raise AdahError(f"{source}: no query rows (values found: {found}); map a value to 'query' with "
                        "options.split_map, e.g. {\"val\": \"query\"}, or set options.use_split_column=false")
    if rows["train"].size < 2:
        raise AdahError(f"{source}: {rows['train'].size} training rows (values found: {found}); at least 2 are needed")
    if not 0.0 <= val_fraction < 1.0:
        raise AdahError(f"split: val_fraction must be in [0, 1), got {val_fraction}")
    train, val = rows["train"], rows["val"]
    if val.size == 0:
        num_val = int(round(train.size * val_fraction))
        if train.size - num_val < 2:
            raise AdahError(f"{source}: val_fraction={val_fraction} leaves {train.size - num_val} training rows; "
                            "at least 2 are needed")
        rng = np.random.default_rng(seed)
        val = np.sort(rng.choice(train, size=num_val, replace=False))
        train = np.setdiff1d(train, val)
    retrieval = np.sort(np.concatenate([rows["train"], rows["val"], rows["retrieval"]]))
    return Split(query=rows["query"], retrieval=retrieval, train=np.sort(train), val=np.sort(val), seed=seed)
