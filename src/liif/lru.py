"""A least-recently-used map bounded in bytes: the one cache behind encoder features and served tiles."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

from liif.bounds import Number
from liif.errors import LiifError

Value = TypeVar("Value")


class ByteLRU(Generic[Value]):
    """At most ``max_bytes`` of values (each weighed by ``size_of``); the least recently used go first.
    A value larger than the whole bound is not kept. Safe to share between threads."""

    def __init__(self, max_bytes: int, size_of: Callable[[Value], int]) -> None:
        # NaN would never evict (no size is above it), a string fail at the first value put
        self.max_bytes = int(Number(low=0).check(max_bytes, "max_bytes", LiifError))
        self.size_of = size_of
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[Value, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def resize(self, max_bytes: int) -> None:
        """Bound the values to ``max_bytes`` from now on, dropping the least recently used beyond it."""
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def put(self, key: Hashable, value: Value) -> None:
        size = self.size_of(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self.bytes += size
            self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped
