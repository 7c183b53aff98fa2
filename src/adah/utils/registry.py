"""One small registry for every kind of part: backbones, text encoders, attention variants,
similarities, dataset readers, search engines, index stores, training methods.

Each kind has one :class:`Registry`; each entry is whatever the kind registers (a builder
function or a small spec object carrying the metadata the rest of the code asks for). Config
validation asks the registry (``names()``, ``get()``) instead of keeping tuples of names, so adding
a part is one module that calls ``register`` plus its tests.

    BACKBONES = Registry("image backbone", key="model.image_backbone")

    @BACKBONES.register("my_net")
    def build(**kwargs): ...

    BACKBONES.get("my_net")      # the entry; an AdahError naming the choices when unknown
    BACKBONES.names()            # registration order
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Iterator, TypeVar

from adah.errors import AdahError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, in registration order. ``kind`` names the part in messages; ``key`` is the
    config key that selects it (``model.text_encoder``), so an unknown name says where it came from."""

    def __init__(self, kind: str, key: str | None = None) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a second entry under one name is a programming error."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(entry: T) -> T:
            return self.add(name, entry)

        return wrap

    def get(self, name: str) -> T:
        if name not in self._entries:
            where = f"{self.key} must be one of" if self.key else f"unknown {self.kind} {name!r}; available:"
            got = f", got {name!r}" if self.key else ""
            raise AdahError(f"{where} {', '.join(self._entries) or '(none registered)'}{got}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def remove(self, name: str) -> None:
        """Unregister (tests that register a throw-away part clean up with this)."""
        self._entries.pop(name, None)

    def __contains__(self, name: Any) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
