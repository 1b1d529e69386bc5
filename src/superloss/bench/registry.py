"""The one registry of names: datasets, noise models, models, methods and tasks.

A new dataset (method, …) is one file that decorates its builder with ``@DATASETS.register("name")``,
plus one import line in its package's ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that no entry of a registry has."""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries and _origin(self._entries[name]) != _origin(entry):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        _load_catalog()
        if name not in self._entries:
            raise UnknownName(
                f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        _load_catalog()
        return sorted(self._entries)


def _origin(entry: object) -> str:
    """Where an entry is defined: the same file imported twice (doctest collection) is no clash."""
    kind = entry if callable(entry) else type(entry)
    return f"{getattr(kind, '__module__', '')}.{getattr(kind, '__qualname__', '')}"


DATASETS: Registry[Callable[..., object]] = Registry("dataset")
NOISES: Registry[Callable[..., object]] = Registry("noise type")
MODELS: Registry[Callable[..., object]] = Registry("model")
METHODS: Registry[Any] = Registry("method")
TASKS: Registry[Any] = Registry("task")


def _load_catalog() -> None:
    """Import every entry's module once, so that each registers itself."""
    from superloss.bench import data, methods, models, noise, tasks  # noqa: F401
