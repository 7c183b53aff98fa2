"""The on-disk index format (version 1): a folder written atomically, every file checksummed.

``DIR/index.json`` (the manifest), JSON::

    {"format": "adah-index", "version": 1, "bits": 32, "count": 2700,
     "modalities": ["image", "text"],            # which code files exist
     "model": {"fingerprint": "<32 hex>", "checkpoint": "/abs/best.pt", "checkpoint_relative": "../best.pt",
               "config": {...}, ...},
     "vocabulary": {...} | null,                  # adah.data.vocab.Vocabulary.to_dict()
     "collection": {"name": ..., "label_names": [...], "image_root": "/abs" | null,
                    "image_root_relative": "../../photos" | null, ...},
     "files": {"image.codes": {"bytes": ..., "sha256": ...}, ...},
     "created": "...", "adah_version": "...",
     "sha256": "<sha256 of this object without this field, canonical JSON>"}

Binary files (``image.codes``, ``text.codes``: packed codes, one row of ``ceil(bits/8)`` bytes
per item; ``meta.offsets``: ``count + 1`` little-endian uint64 byte offsets into
``meta.jsonl``) start with a 128-byte header::

    magic b"ADAHBIN\\0" | version u16 | header size u16 | kind 16s | bits u32 | row bytes u32 |
    count u64 | model fingerprint 32s (ascii hex) | sha256 of the payload 32s | zero padding

``meta.jsonl``: one JSON object a line: ``id``, ``row`` (row in the source dataset), ``image``
(path relative to ``collection.image_root``, or null), ``text``, ``caption``, ``labels``.

Paths (the checkpoint, the image root) are recorded twice: relative to the index folder
(``*_relative``, used first: a folder moved, copied or mounted elsewhere together with what it
points at works as before) and absolute as built (used when the relative one is not there, e.g.
the index folder moved alone; the only form in indexes written before: they still load).

Reading checks, in order: the manifest parses and says ``adah-index``; its version is one this
adah reads; its own checksum; each file's size (truncation) and sha256 (corruption); each
binary header's magic, version, kind, bits, count and fingerprint against the manifest. Any
failure raises :class:`IndexFormatError` naming the file and what was expected and found: a
damaged index never answers a query.

Writes go to a hidden staging folder beside ``DIR`` that is swapped into place when complete
(``renameat2(RENAME_EXCHANGE)`` on Linux: one atomic step, then the old index is removed), so a
reader, or a process killed at any moment, sees the old index or the new one, never a mix or a
half-written file. ``adah index add`` / ``remove`` (:mod:`adah.index.update`) write a whole new
version the same way; ``generation`` in the manifest counts them (absent in a fresh build: 0).

Every writer of an index folder (build, add, remove, copy) holds :func:`writer_lock` from
before it reads anything (the old version, the destination) until the new version is in place:
one lock file beside the folder (``.NAME.adah.lock``), the same for every writer, so an update
never writes a version derived from one that another writer has replaced meanwhile. A second
writer is refused at once, naming the holder's PID. The folder holds only what adah wrote: a
version is never written over a folder holding anything else (:func:`check_destination`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import struct
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from adah.errors import AdahError
from adah.utils.fileio import _umask

FORMAT = "adah-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"
META = "meta.jsonl"
OFFSETS = "meta.offsets"
CODE_FILES = {"image": "image.codes", "text": "text.codes"}
MAGIC = b"ADAHBIN\x00"
HEADER_SIZE = 128
_HEADER = struct.Struct("<8sHH16sIIQ32s32s")  # 108 bytes, zero padded to HEADER_SIZE
_CHUNK = 1 << 22


class IndexFormatError(AdahError):
    """An index folder or file that cannot be trusted: missing, truncated, corrupted, from
    another format version, or not an adah index at all."""


# --------------------------------------------------------------------------- checksums
def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != "sha256"})).hexdigest()


def file_sha256(path: Path, start: int = 0) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- binary files
class BinaryWriter:
    """Append fixed-size rows to a binary file; ``close`` writes the final header (count, sha256)."""

    def __init__(self, path: Path, *, kind: str, bits: int, row_bytes: int, fingerprint: str) -> None:
        if len(kind.encode()) > 16 or len(fingerprint.encode()) > 32:
            raise ValueError("kind is at most 16 bytes and fingerprint at most 32")
        self.path, self.kind, self.bits, self.row_bytes, self.fingerprint = path, kind, bits, row_bytes, fingerprint
        self.count = 0
        self._sha = hashlib.sha256()
        self._f = open(path, "wb")
        self._f.write(b"\0" * HEADER_SIZE)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows)
        if rows.ndim != 2 or rows.shape[1] * rows.itemsize != self.row_bytes:
            raise ValueError(f"{self.path.name}: rows of {self.row_bytes} bytes expected, got {rows.shape} {rows.dtype}")
        data = rows.tobytes()
        self._sha.update(data)
        self._f.write(data)
        self.count += rows.shape[0]

    def close(self) -> None:
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, self.kind.encode(), self.bits, self.row_bytes,
                              self.count, self.fingerprint.encode(), self._sha.digest())
        self._f.seek(0)
        self._f.write(header.ljust(HEADER_SIZE, b"\0"))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


def read_header(path: Path) -> dict:
    """The header of a binary index file as a dict (IndexFormatError when it is not one)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: file missing from the index") from None
    if len(raw) < HEADER_SIZE:
        raise IndexFormatError(f"{path}: truncated: {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, header_size, kind, bits, row_bytes, count, fingerprint, digest = _HEADER.unpack(
        raw[: _HEADER.size])
    if magic != MAGIC:
        raise IndexFormatError(f"{path}: not an adah index file (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: index file format version {version}; this adah reads version "
                               f"{FORMAT_VERSION}: rebuild the index with `adah index build`")
    if header_size != HEADER_SIZE:
        raise IndexFormatError(f"{path}: header size {header_size}, expected {HEADER_SIZE}")
    return {"kind": kind.rstrip(b"\0").decode("ascii", "replace"), "bits": bits, "row_bytes": row_bytes,
            "count": count, "fingerprint": fingerprint.rstrip(b"\0").decode("ascii", "replace"),
            "sha256": digest.hex()}


def read_binary(path: Path, *, kind: str, bits: int, row_bytes: int, count: int, fingerprint: str,
                dtype=np.uint8, verify: bool = True) -> np.ndarray:
    """The payload of a binary index file as a (count, row_bytes / itemsize) array, after
    checking its header against what the manifest says and (``verify``) its sha256."""
    head = read_header(path)
    expected = {"kind": kind, "bits": bits, "row_bytes": row_bytes, "count": count, "fingerprint": fingerprint}
    for key, want in expected.items():
        if head[key] != want:
            raise IndexFormatError(f"{path}: header field '{key}' is {head[key]!r} but the manifest says {want!r}")
    size = path.stat().st_size
    want_size = HEADER_SIZE + count * row_bytes
    if size < want_size:
        raise IndexFormatError(f"{path}: truncated: {size} bytes, expected {want_size} ({count} rows of {row_bytes})")
    if size > want_size:
        raise IndexFormatError(f"{path}: {size - want_size} unexpected bytes after {count} rows of {row_bytes}")
    payload = np.empty(count * row_bytes, dtype=np.uint8)
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE)
        got = f.readinto(memoryview(payload))
    if got != payload.size:  # the file shrank while being read
        raise IndexFormatError(f"{path}: truncated while reading ({got} of {payload.size} payload bytes)")
    if verify and hashlib.sha256(payload).hexdigest() != head["sha256"]:
        raise IndexFormatError(f"{path}: checksum mismatch: the file is corrupted; rebuild the index")
    itemsize = np.dtype(dtype).itemsize
    return payload.view(np.dtype(dtype).newbyteorder("<")).reshape(count, row_bytes // itemsize)


# --------------------------------------------------------------------------- metadata
class MetaWriter:
    """JSON lines plus their byte offsets (so a row is read without parsing the others)."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.path = folder / META
        self._f = open(self.path, "wb")
        self._offsets = [0]
        self._folder, self._fingerprint = folder, fingerprint

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        self._f.write(line)
        self._offsets.append(self._offsets[-1] + len(line))

    @property
    def count(self) -> int:
        return len(self._offsets) - 1

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        w = BinaryWriter(self._folder / OFFSETS, kind="offsets", bits=64, row_bytes=8, fingerprint=self._fingerprint)
        w.append(np.asarray(self._offsets, dtype="<u8").reshape(-1, 1))
        w.close()


class MetaReader:
    """Row ``i`` of ``meta.jsonl`` on demand (memory-mapped; nothing parsed up front)."""

    def __init__(self, folder: Path, count: int, fingerprint: str, *, sha256: str, size: int,
                 verify: bool = True) -> None:
        path = folder / META
        if not path.is_file():
            raise IndexFormatError(f"{path}: file missing from the index")
        self.offsets = read_binary(folder / OFFSETS, kind="offsets", bits=64, row_bytes=8, count=count + 1,
                                   fingerprint=fingerprint, dtype=np.uint64, verify=verify).reshape(-1)
        actual = path.stat().st_size
        if actual != size or int(self.offsets[-1]) != size or self.offsets[0] != 0:
            raise IndexFormatError(f"{path}: {actual} bytes, expected {size}: the file is truncated or was replaced")
        if np.any(np.diff(self.offsets.astype(np.int64)) <= 0):
            raise IndexFormatError(f"{folder / OFFSETS}: offsets are not increasing: the file is corrupted")
        if verify and file_sha256(path) != sha256:
            raise IndexFormatError(f"{path}: checksum mismatch: the file is corrupted; rebuild the index")
        self.path = path
        self._file = open(path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> dict:
        lo, hi = int(self.offsets[row]), int(self.offsets[row + 1])
        try:
            return json.loads(self._map[lo:hi])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{self.path}: row {row} is not valid JSON ({exc})") from None

    def __iter__(self) -> Iterator[dict]:
        for row in range(len(self)):
            yield self[row]

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._file.close()


# --------------------------------------------------------------------------- manifest
def read_manifest(folder: Path) -> dict:
    """Parse and check ``folder/index.json`` (format, version, checksum, required fields)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.exists():
        raise IndexFormatError(f"index not found: {folder}")
    if not folder.is_dir():
        raise IndexFormatError(f"{folder}: an index is a folder (written by `adah index build`), found a file")
    if not path.is_file():
        raise IndexFormatError(f"{folder}: not an adah index (no {MANIFEST}); build one with `adah index build`")
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: not valid JSON ({exc}); the file is truncated or corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path}: not an adah index manifest (expected format {FORMAT!r})")
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: index format version {version!r}; this adah reads version "
                               f"{FORMAT_VERSION}: rebuild the index with `adah index build`")
    if manifest.get("sha256") != manifest_digest(manifest):
        raise IndexFormatError(f"{path}: checksum mismatch: the manifest was edited or corrupted; rebuild the index")
    for key, kind in (("bits", int), ("count", int), ("modalities", list), ("model", dict), ("files", dict),
                      ("collection", dict)):
        if not isinstance(manifest.get(key), kind):
            raise IndexFormatError(f"{path}: field '{key}' missing or not a {kind.__name__}")
    return manifest


def current_digest(folder: Path) -> str | None:
    """The manifest sha256 of the version in ``folder`` (None when there is none or it does not
    parse): what a new version records as ``replaces``, under the writer lock, so the versions
    of a folder form one chain (each replaced at most once)."""
    try:
        digest = json.loads((Path(folder) / MANIFEST).read_bytes()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


def version_stamp(folder: Path) -> tuple | None:
    """(inode, size, mtime) of ``folder/index.json``: changes whenever a new version is swapped
    in (every write makes a new manifest file); None when there is none."""
    try:
        st = os.stat(Path(folder) / MANIFEST)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def file_entry(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def check_file_entry(folder: Path, name: str, manifest: dict) -> dict:
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or not isinstance(
            entry.get("sha256"), str):
        raise IndexFormatError(f"{folder / MANIFEST}: no valid entry for file {name!r}")
    path = folder / name
    if not path.is_file():
        raise IndexFormatError(f"{path}: file missing from the index")
    size = path.stat().st_size
    if size != entry["bytes"]:
        what = "truncated" if size < entry["bytes"] else "longer than written"
        raise IndexFormatError(f"{path}: {what}: {size} bytes, the manifest says {entry['bytes']}")
    return entry


def write_manifest(folder: Path, manifest: dict) -> dict:
    manifest = dict(manifest)
    manifest.pop("sha256", None)
    manifest["sha256"] = manifest_digest(manifest)
    path = folder / MANIFEST
    with open(path, "wb") as f:
        f.write(json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    return manifest


# --------------------------------------------------------------------------- portable paths
def record_path(section: dict, key: str, path: str | os.PathLike | None, folder: str | os.PathLike) -> dict:
    """``section`` with ``key`` set to ``path`` made absolute and ``key_relative`` to it relative
    to the index folder ``folder`` (None for both when ``path`` is None)."""
    out = dict(section)
    if path is None:
        out[key], out[f"{key}_relative"] = None, None
        return out
    target = Path(path).resolve()
    out[key] = str(target)
    out[f"{key}_relative"] = Path(os.path.relpath(target, Path(folder).resolve())).as_posix()
    return out


def recorded_path(section: dict, key: str, folder: str | os.PathLike) -> Path | None:
    """The path ``section`` records under ``key`` for the index folder ``folder``: the relative
    form when it exists there, else the absolute one (see the module docstring); None when none."""
    relative, absolute = section.get(f"{key}_relative"), section.get(key)
    if isinstance(relative, str) and relative:
        here = Path(os.path.normpath(Path(folder).absolute() / relative))
        if here.exists() or not absolute:
            return here
    return Path(absolute) if isinstance(absolute, str) and absolute else None


# --------------------------------------------------------------------------- writer lock
_HELD: dict[tuple[str, int], int] = {}  # (lock path, thread id) -> depth: re-entry by the holder
_HELD_GUARD = threading.Lock()


@contextmanager
def writer_lock(folder: str | os.PathLike) -> Iterator[None]:
    """The one lock every writer of the index folder ``folder`` holds, from before it reads the
    current version until its new version is in place (see the module docstring). Re-entrant in
    the holding thread (``build_index`` takes it, then ``write_index`` inside it); another
    process or thread is refused at once with :class:`adah.utils.locks.LockBusy`."""
    from adah.utils.locks import exclusive, lock_file_beside

    path = lock_file_beside(Path(folder).absolute())
    key = (str(path), threading.get_ident())
    with _HELD_GUARD:
        depth = _HELD.get(key, 0)
        if depth:
            _HELD[key] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return
    with exclusive(path, f"index {folder}"):
        with _HELD_GUARD:
            _HELD[key] = 1
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)


# --------------------------------------------------------------------------- atomic folder
def _looks_like_index(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


WRITTEN = frozenset({MANIFEST, META, OFFSETS, *CODE_FILES.values()})  # all an index folder ever holds


def check_destination(out: Path, *, overwrite: bool = True) -> None:
    """Refuse to replace a folder that is not an adah index (or any index when not ``overwrite``),
    an index folder holding anything adah did not write (a new version replaces the whole folder:
    it would be lost), and a destination inside another index folder."""
    out = Path(out)
    inside = next((p for p in Path(os.path.abspath(out)).parents if _looks_like_index(p)), None)
    if inside is not None:
        raise AdahError(f"{out}: inside the index folder {inside}, which holds only what adah writes there; "
                        "choose a folder outside it")
    if not out.exists():
        return
    if not out.is_dir():
        raise AdahError(f"{out}: exists and is not a folder; choose another --out")
    if _looks_like_index(out):
        foreign = sorted(p.name for p in out.iterdir() if p.name not in WRITTEN)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise AdahError(f"{out}: the index folder also holds {shown}, which adah did not write; a new version "
                            "replaces the whole folder, so move those out of it first (nothing was changed)")
        if not overwrite:
            raise AdahError(f"{out}: an index exists already; pass --overwrite (force=True in Python) to replace it")
        return
    if any(out.iterdir()):
        raise AdahError(f"{out}: a non-empty folder that is not an adah index; refusing to replace it")


def remove_stale_builds(out: Path) -> list[Path]:
    """Remove the hidden staging (``.NAME.building-*``) and replaced (``.NAME.old-*``) folders
    :class:`StagingFolder` leaves beside ``out`` when its process is killed. Call it only while
    holding the destination's lock (no other build of ``out`` can be running then)."""
    out = Path(out)
    stale = [p for pattern in (f".{out.name}.building-*", f".{out.name}.old-*") for p in out.parent.glob(pattern)
             if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


class StagingFolder:
    """A hidden folder beside ``out``; ``commit()`` moves it into place atomically."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.building-", dir=self.out.parent))
        os.chmod(self.path, 0o777 & ~_umask())

    def commit(self) -> None:
        for p in self.path.iterdir():
            os.chmod(p, 0o666 & ~_umask())
        _fsync_dir(self.path)
        old = None
        if self.out.exists():
            if self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            elif self.out.is_dir() and _exchange(self.path, self.out):
                # one atomic step: ``out`` is the new index, the staging path holds the old one;
                # a crash at any point leaves a complete index at ``out``, old or new
                _fsync_dir(self.out.parent)
                shutil.rmtree(self.path, ignore_errors=True)
                return
            else:  # no renameat2 (not Linux): two renames, with a moment where ``out`` is absent
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
                os.replace(self.out, old / "index")
        os.replace(self.path, self.out)
        _fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the call or
    the file system does not support it (the caller falls back to two renames)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b} into place: {os.strerror(err)}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
