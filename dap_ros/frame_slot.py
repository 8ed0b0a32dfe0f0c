"""A one-frame mailbox between the subscription callback and the worker thread.

The callback puts every frame; the worker takes the newest. A frame replaced before the worker
took it is dropped (and counted by the caller), so under load nothing queues up: memory holds
at most one waiting frame whatever the input rate.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

__all__ = ["FrameSlot"]

T = TypeVar("T")


class FrameSlot(Generic[T]):
    """Holds the newest item; `put` reports whether it replaced one nobody took."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._arrived = 0.0
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item: T) -> bool:
        """Store `item` (the newest); True when an untaken item was replaced (a drop)."""
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._arrived = time.monotonic()
            self._ready.notify()
        return replaced

    def take(self, timeout: float) -> tuple[T, float] | None:
        """(newest item, monotonic arrival time), waiting up to `timeout` s; None if none/closed."""
        with self._ready:
            if self._item is None and not self._closed:
                self._ready.wait(timeout)
            if self._item is None or self._closed:
                return None
            item, self._item = self._item, None
            return item, self._arrived

    def close(self) -> None:
        """Wake a waiting `take` and refuse further items (node shutdown)."""
        with self._ready:
            self._closed = True
            self._item = None
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
