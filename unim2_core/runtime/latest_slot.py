"""A single-slot hand-off between producers and one slow consumer: only the newest item waits.

The node's subscription callbacks put synchronised frame groups here and its inference thread
takes them. When the model is slower than the cameras, a group that is still waiting is replaced
by the newer one (and counted), so the delay between a frame and its output never grows beyond
one inference time, and memory stays bounded, whatever the input rate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
Staged = TypeVar("Staged")
InFlight = TypeVar("InFlight")


class LatestSlot(Generic[T]):
    """Holds at most one item; ``put`` replaces an item nobody has taken yet.

    Thread-safe: any number of threads may ``put``, ``take`` and ``close``.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._item: T | None = None
        self._full = False
        self._closed = False
        self._replaced = 0

    @property
    def replaced(self) -> int:
        """Items dropped because a newer one arrived before they were taken."""
        with self._condition:
            return self._replaced

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        with self._condition:
            return self._closed

    def put(self, item: T) -> bool:
        """Offers ``item`` to the consumer, replacing a waiting one.

        After :meth:`close`, the item is discarded (and not counted).

        Returns:
            True when a waiting item was replaced (dropped).
        """
        with self._condition:
            if self._closed:
                return False
            replaced = self._full
            if replaced:
                self._replaced += 1
            self._item = item
            self._full = True
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """Removes and returns the waiting item, waiting up to ``timeout`` seconds for one.

        Args:
            timeout: Seconds to wait; None waits until an item arrives or the slot is closed.

        Returns:
            The item, or None when the wait timed out or the slot is closed (a waiting item is
            discarded on close).
        """
        with self._condition:
            self._condition.wait_for(lambda: self._full or self._closed, timeout)
            if self._closed or not self._full:
                return None
            item = self._item
            self._item = None
            self._full = False
            return item

    def close(self) -> None:
        """Discards a waiting item, refuses new ones and wakes every waiting consumer."""
        with self._condition:
            self._closed = True
            self._item = None
            self._full = False
            self._condition.notify_all()


def consume_pipelined(
    slot: LatestSlot[T],
    stage: Callable[[T], Staged | None],
    launch: Callable[[Staged], InFlight | None],
    finish: Callable[[InFlight], None],
    *,
    overlap: bool = True,
) -> None:
    """Consume ``slot`` until it is closed, one item in flight, staging the next one early.

    Each item is staged (``stage``: host-side preparation and upload), launched (``launch``:
    device work queued) and finished (``finish``: wait for its outputs and deliver them). When an
    item is already waiting as one is in flight, it is staged before the in-flight one is
    finished, so its preparation overlaps the device's work; when none is waiting, the in-flight
    item is finished at once (never held back for the next one). Items finish in the order
    they were taken. ``stage`` or ``launch`` returning None drops that item.

    ``overlap=False`` finishes each item right after its launch: for a ``launch`` that returns
    only when the work is done (CPU), where staging early would delay every output by the next
    item's staging and overlap nothing.
    """
    in_flight: InFlight | None = None
    while True:
        item = slot.take(timeout=0.0 if in_flight is not None else None)
        if item is None and in_flight is None:
            return  # the slot is closed
        staged = None if item is None else stage(item)
        if in_flight is not None:
            finish(in_flight)
        in_flight = None if staged is None else launch(staged)
        if not overlap and in_flight is not None:
            finish(in_flight)
            in_flight = None
