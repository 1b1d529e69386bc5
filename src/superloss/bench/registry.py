"""A registry of names for one kind of plug-in (datasets, noise models, models, methods, tasks, …).

Each kind has its own registry object, defined beside its base class (``DATASETS`` in
``data/base.py``, ``METHODS`` in ``methods/base.py``, …), as detectron2 does. A registry never imports
the modules that register into it: each kind's package ``__init__`` imports its files, so importing the
package (or anything in it) fills its registry. A new plug-in is one file that decorates its class or
builder with ``@REGISTRY.register("name")``, plus one import line in its package's ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that no entry of a registry has."""


class Registry(Generic[T]):
    """Names → entries of one kind, in registration order; ``get`` says what exists when it fails."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator: register the entry under ``name`` (and each alias, which ``get`` also takes)."""

        def add(entry: T) -> T:
            for key in (name, *aliases):
                known = self._entries.get(self._aliases.get(key, key))
                if known is not None and _origin(known) != _origin(entry):
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[name] = entry
            self._aliases.update({alias: name for alias in aliases})
            return entry

        return add

    def get(self, name: str) -> T:
        entry = self._entries.get(self._aliases.get(name, name))
        if entry is None:
            raise UnknownName(
                f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names(aliases=True))}"
            )
        return entry

    def names(self, aliases: bool = False) -> list[str]:
        """The registered names, sorted; with ``aliases``, the other names ``get`` takes too."""
        return sorted([*self._entries, *(self._aliases if aliases else ())])

    def entries(self) -> list[tuple[str, T]]:
        """(name, entry) in registration order (aliases left out)."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases


def _origin(entry: object) -> str:
    """Where an entry is defined: the same file imported twice (doctest collection) is no clash."""
    kind = entry if callable(entry) else type(entry)
    return f"{getattr(kind, '__module__', '')}.{getattr(kind, '__qualname__', '')}"
