"""Sliding-window statistics of a stream of events: arrival rate, and last / mean / max of a value.

Times are plain float seconds from any monotonic clock, passed in by the caller, so the same
code serves live diagnostics (``time.monotonic()``), offline replay (bag time) and tests (a fake
clock). The classes are not thread-safe: an owner that shares them guards them with its lock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple


class WindowSummary(NamedTuple):
    """Values recorded within the window.

    Attributes:
        samples: Number of values.
        last: The most recent value (NaN when the window is empty).
        mean: Mean value (NaN when empty).
        max: Largest value (NaN when empty).
    """

    samples: int
    last: float
    mean: float
    max: float


def _check_window(window: float) -> float:
    if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
        raise ValueError(f"window must be a finite number of seconds > 0, got {window!r}")
    return float(window)


class RateMeter:
    """Events per second over the last ``window`` seconds.

    Args:
        window: Length of the window in seconds.
        start: Time at which counting starts; before a full window has passed, the rate is
            taken over the time since ``start``.

    Raises:
        ValueError: ``window`` is not a positive finite number.
    """

    def __init__(self, window: float, *, start: float) -> None:
        self._window = _check_window(window)
        self._start = start
        self._times: deque[float] = deque()

    def add(self, time: float) -> None:
        """Records one event at ``time`` (times must not decrease)."""
        self._times.append(time)
        self._prune(time)

    def count(self, now: float) -> int:
        """Events within ``(now - window, now]``."""
        self._prune(now)
        return len(self._times)

    def rate(self, now: float) -> float:
        """Events per second within the window ending at ``now``."""
        span = min(self._window, now - self._start)
        if span <= 0:
            return 0.0
        return self.count(now) / span

    def _prune(self, now: float) -> None:
        horizon = now - self._window
        while self._times and self._times[0] <= horizon:
            self._times.popleft()


class WindowStats:
    """Last, mean and maximum of the values recorded within the last ``window`` seconds.

    Raises:
        ValueError: ``window`` is not a positive finite number.
    """

    def __init__(self, window: float) -> None:
        self._window = _check_window(window)
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, time: float, value: float) -> None:
        """Records ``value`` observed at ``time`` (times must not decrease)."""
        self._samples.append((time, float(value)))
        self._prune(time)

    def summary(self, now: float) -> WindowSummary:
        """Statistics of the values within ``(now - window, now]``."""
        self._prune(now)
        if not self._samples:
            return WindowSummary(0, math.nan, math.nan, math.nan)
        values = [value for _, value in self._samples]
        return WindowSummary(len(values), values[-1], sum(values) / len(values), max(values))

    def _prune(self, now: float) -> None:
        horizon = now - self._window
        while self._samples and self._samples[0][0] <= horizon:
            self._samples.popleft()
