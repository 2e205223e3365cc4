"""One registry helper for everything chosen by name: models, ordinal formulations, loss weightings, detectors and
runtime backends.

A registry maps a name to an object (a class or a factory). Entries are added with the :meth:`Registry.register`
decorator where the object is defined, or lazily as ``"package.module:attribute"`` so that a lower layer can offer
a choice implemented in a higher one (the torch backend lives with the models) without importing it. Choices on the
command line and in configs come from :meth:`Registry.names`.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from faceattr.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind. Thread-safe; lookups of lazy entries import their module once."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | str] = {}
        self._lock = threading.Lock()

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T]:
        """``@reg.register("name")`` on a class or function, or ``reg.register("name", "pkg.mod:attr")``."""
        if obj is not None:
            self._add(name, obj)

        def deco(o: T) -> T:
            self._add(name, o)
            return o

        return deco

    def _add(self, name: str, obj: T | str) -> None:
        with self._lock:
            old = self._items.get(name)
            if old is not None and old is not obj and not isinstance(old, str):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj

    def get(self, name: str) -> T:
        with self._lock:
            obj = self._items.get(name)
        if obj is None:
            near = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UsageError(f"unknown {self.kind} {name!r}; choose one of {self.names()}{hint}")
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            loaded: T = getattr(importlib.import_module(module), attr)
            with self._lock:
                self._items[name] = loaded
            return loaded
        return obj

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
