"""The index version the service answers from, switched when the folder holds a new one."""

from __future__ import annotations

import logging
import threading
import time

from starlette.exceptions import HTTPException

from adah.errors import AdahError

log = logging.getLogger("adah.serve")


class VersionWatcher:
    """The index the app serves, switched to the folder's new version when one appears: at most
    every ``seconds`` a request stats the manifest (:meth:`Index.changed_on_disk`); a changed one
    is loaded (by one thread; the others keep answering from the old version meanwhile) and
    replaces ``app.state.index``. A version that fails to load is logged and the old one kept."""

    def __init__(self, app, seconds: float | None) -> None:
        self.app, self.seconds = app, seconds
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self):
        index = self.app.state.index
        if self.seconds is not None and time.monotonic() - self._checked >= self.seconds:
            self.reload(False)
            index = self.app.state.index
        return index

    def reload(self, force: bool) -> bool:
        """Load the folder's version if it changed (``force``: check now); True when switched."""
        if not self._lock.acquire(blocking=force):
            return False
        try:
            self._checked = time.monotonic()
            old = self.app.state.index
            if not getattr(old, "path", None) or not old.changed_on_disk():
                return False
            try:
                self.app.state.index = old.reload()
            except (AdahError, OSError) as exc:
                log.warning("index %s changed but cannot be loaded, still serving the previous version: %s",
                            old.path, exc)
                if force:
                    raise HTTPException(409, f"the new version cannot be loaded: {exc}") from None
                return False
            return True
        finally:
            self._lock.release()
