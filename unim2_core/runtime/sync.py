"""Approximate-time synchroniser for N timestamped streams, with ROS 2 message_filters semantics.

One synchroniser serves the node, the bag reader and the trainer's bag import, so a recording
replayed offline is grouped exactly as the live node would group it. The matching rule is the
one of ``message_filters.ApproximateTimeSynchronizer.add`` (ROS 2 Python), applied on every
arrival:

1. The item is stored in its input's queue under its stamp; an item already queued with the
   identical stamp is replaced. While the queue holds more than ``queue_size`` items, the one
   with the oldest stamp is evicted (this can be the new item itself).
2. For every other input, the candidates are its queued stamps within ``slop`` of the new stamp
   (``|delta| > slop`` is skipped), sorted nearest first; ties keep queue insertion order. If an
   input has no candidate, nothing is emitted.
3. The cartesian product of the candidate lists (the new stamp in its own slot) is scanned in
   lexicographic order; the first combination whose spread ``max - min`` is strictly below
   ``slop`` is the match. Its items are removed from the queues and returned together.

So at most one set is emitted per arrival, it always contains the new item, and a stamp pair
exactly ``slop`` apart never matches. Unlike message_filters, ``add`` returns the set instead of
calling callbacks (nothing is ever called while the lock is held), stamps are integer
nanoseconds, and the synchroniser counts what it emits and what it drops.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Collection, Sequence
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

_NS_PER_S = 1_000_000_000


class SyncStats(NamedTuple):
    """Counters of a synchroniser since it was built.

    Per input, ``received == emitted + dropped[i] + pending()[i]`` at all times.

    Attributes:
        emitted: Matched sets returned by ``add``.
        dropped: Per input, items discarded without ever being emitted: evicted by queue
            overflow, replaced by a later item with the identical stamp, or discarded by
            ``clear``.
    """

    emitted: int
    dropped: tuple[int, ...]


class ApproximateTimeSynchronizer(Generic[T]):
    """Groups items from ``n_inputs`` streams whose stamps lie within ``slop`` of each other.

    Thread-safe: ``add`` may be called concurrently from several subscription callbacks. One
    lock guards the queues and counters; no user code runs under it.

    Args:
        n_inputs: Number of input streams (at least 1).
        queue_size: Items kept per input while waiting for a match (at least 1).
        slop: Largest stamp spread within a set, in seconds (finite, positive). It is
            truncated to whole nanoseconds as ``rclpy.duration.Duration(seconds=slop)`` does.
            Sets must have a spread strictly below it.

    Raises:
        ValueError: If an argument is out of range; the message names it.
    """

    def __init__(self, n_inputs: int, *, queue_size: int, slop: float) -> None:
        if isinstance(n_inputs, bool) or not isinstance(n_inputs, int) or n_inputs < 1:
            raise ValueError(f"n_inputs must be an integer >= 1, got {n_inputs!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        if not isinstance(slop, (int, float)) or not math.isfinite(slop) or slop <= 0:
            raise ValueError(f"slop must be a finite number of seconds > 0, got {slop!r}")
        slop_ns = int(slop * _NS_PER_S)
        if slop_ns < 1:
            raise ValueError(f"slop must be at least 1 ns, got {slop!r} s")
        self._n_inputs = n_inputs
        self._queue_size = queue_size
        self._slop_ns = slop_ns
        self._lock = threading.Lock()
        self._queues: list[dict[int, T]] = [{} for _ in range(n_inputs)]
        self._dropped = [0] * n_inputs
        self._emitted = 0

    @property
    def n_inputs(self) -> int:
        """Number of input streams."""
        return self._n_inputs

    @property
    def queue_size(self) -> int:
        """Items kept per input while waiting for a match."""
        return self._queue_size

    @property
    def slop_ns(self) -> int:
        """Sets have a stamp spread strictly below this many nanoseconds."""
        return self._slop_ns

    def add(
        self, index: int, stamp_ns: int, item: T, *, skip: Collection[int] = ()
    ) -> tuple[T, ...] | None:
        """Queues ``item`` on input ``index`` and returns the set it completes, if any.

        Args:
            index: Input the item arrived on, in ``range(n_inputs)``.
            stamp_ns: The item's stamp in integer nanoseconds (e.g. header stamp
                ``sec * 10**9 + nanosec``); numpy integers are accepted.
            item: Anything; it is returned untouched inside a matched set.
            skip: Inputs that take no part in this arrival's match (a lost stream, see
                :class:`FallbackSynchronizer`): the rule above runs over the other inputs only,
                and the items queued on skipped inputs stay queued. Empty (default):
                message_filters exactly.

        Returns:
            One item per input not in ``skip``, in input order, including ``item``; or None
            when the arrival completes no set.

        Raises:
            IndexError: If ``index`` or an input in ``skip`` is not a valid input.
            ValueError: If ``index`` is in ``skip``.
            TypeError: If ``index`` or ``stamp_ns`` is not an integer.
        """
        if not 0 <= operator.index(index) < self._n_inputs:
            raise IndexError(f"index {index!r} is out of range for {self._n_inputs} inputs")
        skipped = frozenset(operator.index(i) for i in skip)
        if any(not 0 <= i < self._n_inputs for i in skipped):
            raise IndexError(f"skip {sorted(skipped)} is out of range for {self._n_inputs} inputs")
        if index in skipped:
            raise ValueError(f"input {index} cannot both deliver an item and be skipped")
        stamp = operator.index(stamp_ns)
        with self._lock:
            queue = self._queues[index]
            if stamp in queue:
                self._dropped[index] += 1
            queue[stamp] = item
            while len(queue) > self._queue_size:
                del queue[min(queue)]
                self._dropped[index] += 1
            if stamp not in queue:
                return None
            taking_part = [i for i in range(self._n_inputs) if i not in skipped]
            match = self._find_match(index, stamp, taking_part)
            if match is None:
                return None
            self._emitted += 1
            return tuple(self._queues[i].pop(s) for i, s in zip(taking_part, match, strict=True))

    def stats(self) -> SyncStats:
        """Returns the emitted and per-input dropped counts since construction."""
        with self._lock:
            return SyncStats(self._emitted, tuple(self._dropped))

    def pending(self) -> tuple[int, ...]:
        """Returns the number of items queued per input."""
        with self._lock:
            return tuple(len(q) for q in self._queues)

    def clear(self) -> None:
        """Discards every queued item (counted as dropped), e.g. after a time jump."""
        with self._lock:
            for i, queue in enumerate(self._queues):
                self._dropped[i] += len(queue)
                queue.clear()

    def _find_match(self, index: int, stamp: int, inputs: Sequence[int]) -> list[int] | None:
        """Returns the first matching stamp combination of ``inputs`` (in their order) in
        message_filters' scan order.

        The lexicographic scan of the candidates' cartesian product is done depth first, and a
        prefix whose spread already reaches ``slop`` is skipped with all its extensions: adding
        stamps never shrinks the spread, so the first match found is the product's first match.
        Must be called with the lock held.
        """
        candidates: list[list[int]] = []
        for i in inputs:
            queue = self._queues[i]
            if i == index:
                candidates.append([stamp])
                continue
            near = [s for s in queue if abs(s - stamp) <= self._slop_ns]
            if not near:
                return None
            near.sort(key=lambda s: abs(s - stamp))
            candidates.append(near)
        chosen: list[int] = []
        if self._extend(candidates, chosen, stamp, stamp):
            return chosen
        return None

    def _extend(self, candidates: list[list[int]], chosen: list[int], low: int, high: int) -> bool:
        """Depth-first step of ``_find_match``: appends to ``chosen`` until it is complete."""
        if len(chosen) == len(candidates):
            return True
        for s in candidates[len(chosen)]:
            new_low, new_high = min(low, s), max(high, s)
            if new_high - new_low >= self._slop_ns:
                continue
            chosen.append(s)
            if self._extend(candidates, chosen, new_low, new_high):
                return True
            chosen.pop()
        return False


class FallbackSynchronizer(Generic[T]):
    """Approximate-time sets that go on without an optional input whose stream is lost.

    Wraps :class:`ApproximateTimeSynchronizer`: while every input delivers, sets are exactly
    message_filters'. An optional input is *lost* while its latest stamp lies more than
    ``timeout`` behind the latest stamp of the required inputs (or, before it ever delivered,
    behind the first stamp the synchroniser saw). Each arrival is matched with the lost inputs
    skipped (``ApproximateTimeSynchronizer.add(..., skip=...)``), so an RGB image alone, or with
    the remaining modalities, forms a set, with None in each lost input's slot. The first item
    that arrives on a lost input with a stamp within ``timeout`` of the required inputs' makes
    it required again: full sets resume from the next match.

    Silence is measured in stamp time, not arrival time, so a bag replayed offline falls back
    and recovers exactly as the live node does. The latest stamp (not the largest) is used, so
    stamps that jump back (a replay restarted) do not mark an input lost.

    Thread-safe; no user code runs under its locks.

    Args:
        n_inputs: Number of input streams (at least 2).
        queue_size: Items kept per input while waiting for a match (at least 1).
        slop: Largest stamp spread within a set, in seconds (finite, positive).
        optional: Inputs that may be lost (not all of them; typically every auxiliary input).
        timeout: Seconds of stamp time an optional input may lag before it is lost (finite,
            positive; set it above the sensor's frame period and ``slop``).

    Raises:
        ValueError: An argument is out of range; the message names it.
    """

    def __init__(
        self,
        n_inputs: int,
        *,
        queue_size: int,
        slop: float,
        optional: Collection[int],
        timeout: float,
    ) -> None:
        self._sync: ApproximateTimeSynchronizer[T] = ApproximateTimeSynchronizer(
            n_inputs, queue_size=queue_size, slop=slop
        )
        optional_set = frozenset(operator.index(i) for i in optional)
        if any(not 0 <= i < n_inputs for i in optional_set):
            raise ValueError(f"optional inputs {sorted(optional_set)} out of range for {n_inputs}")
        if len(optional_set) >= n_inputs:
            raise ValueError("optional must leave at least one required input")
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self._optional = tuple(sorted(optional_set))
        self._required = tuple(i for i in range(n_inputs) if i not in optional_set)
        self._timeout_ns = int(timeout * _NS_PER_S)
        self._lock = threading.Lock()
        self._latest: list[int | None] = [None] * n_inputs
        self._first: int | None = None

    @property
    def n_inputs(self) -> int:
        """Number of input streams."""
        return self._sync.n_inputs

    @property
    def queue_size(self) -> int:
        """Items kept per input while waiting for a match."""
        return self._sync.queue_size

    @property
    def slop_ns(self) -> int:
        """Sets have a stamp spread strictly below this many nanoseconds."""
        return self._sync.slop_ns

    @property
    def optional(self) -> tuple[int, ...]:
        """Inputs that may be lost, ascending."""
        return self._optional

    @property
    def timeout_ns(self) -> int:
        """Stamp lag, in nanoseconds, beyond which an optional input is lost."""
        return self._timeout_ns

    def add(self, index: int, stamp_ns: int, item: T) -> tuple[T | None, ...] | None:
        """Queues ``item`` and returns the set it completes, if any.

        Returns:
            One entry per input, in input order, including ``item``; None in the slot of each
            input lost at this arrival. None when the arrival completes no set.

        Raises:
            IndexError: If ``index`` is not a valid input.
            TypeError: If ``index`` or ``stamp_ns`` is not an integer.
        """
        index = operator.index(index)
        if not 0 <= index < self.n_inputs:
            raise IndexError(f"index {index!r} is out of range for {self.n_inputs} inputs")
        stamp = operator.index(stamp_ns)
        with self._lock:
            if self._first is None:
                self._first = stamp
            self._latest[index] = stamp
            lost = self._lost()
            skip = [i for i in lost if i != index]
            matched = self._sync.add(index, stamp, item, skip=skip)
        if matched is None:
            return None
        members = iter(matched)
        return tuple(None if i in skip else next(members) for i in range(self.n_inputs))

    def lost(self) -> tuple[int, ...]:
        """The optional inputs lost now (as the next arrival would see them), ascending."""
        with self._lock:
            return self._lost()

    def stats(self) -> SyncStats:
        """Emitted sets (full or not) and per-input drops since construction."""
        return self._sync.stats()

    def pending(self) -> tuple[int, ...]:
        """The number of items queued per input."""
        return self._sync.pending()

    def clear(self) -> None:
        """Discards every queued item (counted as dropped) and forgets the stamps seen."""
        with self._lock:
            self._sync.clear()
            self._latest = [None] * self.n_inputs
            self._first = None

    def _lost(self) -> tuple[int, ...]:
        """Must be called with the lock held."""
        if self._first is None:
            return ()
        required = [s for s in (self._latest[i] for i in self._required) if s is not None]
        now = max(required, default=self._first)
        lost = []
        for i in self._optional:
            latest = self._latest[i]
            if now - (self._first if latest is None else latest) > self._timeout_ns:
                lost.append(i)
        return tuple(lost)
