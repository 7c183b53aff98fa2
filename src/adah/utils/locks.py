"""Exclusive locks on what one process writes at a time: a run folder, a feature cache, an index
being built. A second process asking for a lock that is held is refused at once with
:class:`LockBusy`, naming the holder's PID.

The lock is ``flock`` on a small file (the holder's PID inside): the kernel drops it when the
holder exits, even after SIGKILL, so a stale lock file never blocks anyone. The holder removes
the file when done; a process that locked a file just removed notices and starts again.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from adah.errors import AdahError

LOCK_NAME = ".adah.lock"


class LockBusy(AdahError):
    """Another process holds the lock."""


def lock_file_in(folder: str | os.PathLike) -> Path:
    """The lock file of a folder that lives as long as its contents (run folder, feature cache)."""
    return Path(folder) / LOCK_NAME


def lock_file_beside(target: str | os.PathLike) -> Path:
    """The lock file of a folder that is replaced as a whole (an index moved into place)."""
    target = Path(target)
    return target.parent / f".{target.name}{LOCK_NAME}"


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str):
    """Hold the lock at ``lock_path`` (made with its folder when missing) inside the block;
    LockBusy naming ``what`` and the holder's PID when another process holds it. The lock file
    is removed on release (after a SIGKILL it stays, unlocked, and the next holder reuses it)."""
    import fcntl

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockBusy(f"{what} is in use by another adah process (PID {holder}, lock {lock_path}); wait for it "
                           "to finish or choose another path") from None
        try:  # the file may have been removed by its previous holder after we opened it: start again
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()  # while still holding it: whoever opened it meanwhile sees it is gone
        os.close(fd)  # releases the lock
