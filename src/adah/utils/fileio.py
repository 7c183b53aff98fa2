"""Atomic file writes: a reader never sees a half-written file."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from adah.errors import AdahError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file + fsync + rename."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is a file (so nothing under it can be made)."""
    for parent in path.parents:
        if parent.exists():
            return parent if not parent.is_dir() else None
    return None


def check_output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a folder to write into: AdahError when it is an existing file or lies under one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AdahError(f"{what} {path}: exists and is a file, not a folder; choose another path")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise AdahError(f"{what} {path}: cannot make this folder, {blocker} is a file")
    return path


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a file to (over)write: AdahError when it is a folder or lies under a file."""
    path = Path(path)
    if path.is_dir():
        raise AdahError(f"{what} {path}: is a folder; name a file")
    blocker = _blocking_file(path)
    if blocker is not None:
        raise AdahError(f"{what} {path}: cannot write here, {blocker} is a file, not a folder")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- identities
@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_identity(path: Path) -> str:
    """``<file name>#sha256:<16 hex>``: a where-independent name of a file's content (hashes cached
    by path, size and mtime)."""
    st = path.stat()
    return f"{path.name}#sha256:{_file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)[:16]}"
