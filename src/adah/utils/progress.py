"""Progress bars that suit where the output goes: a tqdm bar on a terminal; in a log file or a
pipe (``make demo > log``), where every redraw would be another ``\\r`` line, nothing while it
runs and one summary line when it closes (none for ``leave=False`` bars, which a summary line
printed by the caller replaces, e.g. the trainer's line per epoch)."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 leave: bool = True, disable: bool = False, file=None, **kwargs):
    """``tqdm(...)`` when ``file`` (default stderr) is a terminal, else a :class:`SummaryLine`
    with the same ``update`` / ``set_postfix`` / ``close`` / iteration interface."""
    file = file or sys.stderr
    if disable or _is_terminal(file):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=disable,
                    file=file, **kwargs)
    return SummaryLine(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=file)


def _is_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False


class SummaryLine:
    """Counts like a bar, prints ``desc: n/total unit in s (postfix)`` once, on close."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, leave=True, file=None) -> None:
        self.iterable, self.desc, self.unit, self.leave, self.file = iterable, desc, unit, leave, file
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.start_n, self.postfix, self.closed = initial, initial, "", False
        self.started = time.perf_counter()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.leave or self.n == self.start_n:
            return
        seconds = time.perf_counter() - self.started
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        line = f"{self.desc}: {done} {self.unit} in {seconds:.1f}s" + (f" ({self.postfix})" if self.postfix else "")
        print(line.lstrip(": "), file=self.file, flush=True)
