"""One explicit table per extensible concern (activations, models, datasets, probes, sinks).

Each table is built in one place from the modules that define its entries, so import order
cannot change what it holds; `register` adds an entry at run time (a user's extension). A
name that is not there is one line naming the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from actlab.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, for one kind of thing (`kind` names it in errors)."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None,
                 error: type[UserError] = UserError):
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = dict(entries or {})

    def add(self, name: str, entry: T) -> T:
        """Add (or replace) the entry under `name`; returns it."""
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry under `name`, or a one-line error listing the known names."""
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} '{name}'; choose from: "
                             f"{', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in name order."""
        return [(n, self._entries[n]) for n in self.names()]

    def copy(self) -> Registry[T]:
        """A table with the same entries (to extend without changing this one)."""
        return Registry(self.kind, self._entries, error=self.error)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def union(kind: str, *parts: Registry[T], error: type[UserError] = UserError
              ) -> Registry[T]:
        """One table from several modules' tables; a name defined twice is a bug, refused."""
        out: Registry[T] = Registry(kind, error=error)
        for part in parts:
            for name, entry in part.items():
                if name in out:
                    raise ValueError(f"{kind} '{name}' is defined twice")
                out.add(name, entry)
        return out
