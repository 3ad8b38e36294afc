"""Registries: a model type, a metric or a split is registered where it is defined, and found by
name everywhere else (no hand-kept lists)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

from personalize.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects of one kind (``what``: e.g. "model type").

    ``discover`` names a package whose modules are imported on the first lookup, so that
    everything defined there has registered itself (a new model is one new file).
    """

    def __init__(self, what: str, discover: str | None = None):
        self.what = what
        self._discover = discover
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"{self.what} {name!r} is registered twice: {self._items[name]!r} and {item!r}")
        self._items[name] = item
        return item

    def _load(self) -> None:
        if self._discover is None:
            return
        package, self._discover = importlib.import_module(self._discover), None
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)

    def get(self, name: str) -> T:
        """The object registered under ``name``; a ConfigError lists the known names."""
        if name not in self._items:
            self._load()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}; available: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def items(self) -> list[tuple[str, T]]:
        """Registered (name, object) pairs in registration order."""
        self._load()
        return list(self._items.items())
