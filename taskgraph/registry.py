"""One registry type for every pluggable kind: learners, benchmarks and encoders.

A :class:`Registry` maps lower-case names to objects (classes or specs)::

    LEARNERS = Registry("learner")

    @LEARNERS.register("my_learner")
    class MyLearner(BaseLearner): ...

    LEARNERS.get("my_learner")           # the class
    LEARNERS.create("my_learner", tasks, hidden=32)   # an instance
    LEARNERS.list()                      # every name, sorted

Unknown names and duplicate registrations raise :class:`~taskgraph.exceptions.ValidationError`
naming the kind and listing what is registered.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from taskgraph.exceptions import ValidationError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind (``kind`` names it in error messages).

    Args:
        kind (str): what is registered, e.g. ``"learner"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @staticmethod
    def _key(name: str) -> str:
        return str(name).lower()

    def register(self, name: str, obj: T | None = None, *, replace: bool = False
                 ) -> Callable[[T], T] | T:
        """Register ``obj`` as ``name``; without ``obj`` a decorator. A different object
        under a taken name is refused unless ``replace``."""
        key = self._key(name)

        def add(item: T) -> T:
            if key in self._items and self._items[key] is not item and not replace:
                raise ValidationError(f"name: a {self.kind} called {key!r} is already "
                                      f"registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``."""
        try:
            return self._items[self._key(name)]
        except KeyError:
            raise ValidationError(f"name: unknown {self.kind} {name!r}; registered "
                                  f"{self.kind}s: {self.list()}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the object registered as ``name`` (a class: an instance) with the arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def remove(self, name: str) -> T | None:
        """Unregister ``name``; returns what was registered (``None`` when nothing was)."""
        return self._items.pop(self._key(name), None)

    def list(self) -> builtins.list[str]:  # noqa: A003 - the registry's public verb
        """Every registered name, sorted."""
        return sorted(self._items)

    def items(self) -> builtins.list[tuple[str, T]]:
        """``(name, object)`` pairs in registration order."""
        return builtins.list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"
