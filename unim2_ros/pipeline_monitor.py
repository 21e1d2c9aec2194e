"""The segmentation node's counters and health verdict, kept free of ROS types.

Subscription callbacks, the inference thread and the diagnostics timer all report here; one
lock guards everything and nothing is called out while it is held. :meth:`PipelineMonitor.report`
turns the counters into a :class:`HealthReport` whose levels and key/value pairs map one to one
onto a ``diagnostic_msgs/DiagnosticStatus``.

Verdict, evaluated at each report:

- ERROR: inference failed ``failure_limit`` times in a row (an exception other than a bad
  input, e.g. out of GPU memory).
- WARN: an input topic has been silent for ``stream_timeout`` seconds or more (or never
  delivered since start-up), or bad messages arrived since the previous report.
- WARN, message starting ``DEGRADED``: the latest outputs were computed without an auxiliary
  modality whose stream was lost (``sync.aux_timeout``); keys ``degraded`` and ``missing
  modalities`` say which.
- OK otherwise. Nothing latches: when a stream returns the next report is OK again.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple

from unim2_core.runtime.stream_stats import RateMeter, WindowStats


class Level(IntEnum):
    """Health levels, numbered as ``diagnostic_msgs/DiagnosticStatus`` numbers them."""

    OK = 0
    WARN = 1
    ERROR = 2


class HealthReport(NamedTuple):
    """One diagnostics verdict.

    Attributes:
        level: Overall level.
        message: One line: the problems found, or a short summary when OK.
        values: Ordered ``(key, value)`` pairs, values formatted as text.
    """

    level: Level
    message: str
    values: tuple[tuple[str, str], ...]


class _Topic:
    """Counters of one input topic (guarded by the monitor's lock)."""

    def __init__(self, name: str, window: float, start: float) -> None:
        self.name = name
        self.rate = RateMeter(window, start=start)
        self.last_arrival: float | None = None
        self.bad: Counter[str] = Counter()
        self.bad_reported = 0


class PipelineMonitor:
    """Counts what happens to every input message and frame group; thread-safe.

    Args:
        topics: Resolved input topic names; index 0 is the RGB topic.
        start: Monotonic time of start-up, in seconds.
        stream_timeout: Seconds of silence after which a topic is reported (WARN).
        window: Seconds over which rates and timings are taken.
        failure_limit: Consecutive inference failures that make the verdict ERROR.

    Raises:
        ValueError: No topic, or a non-positive timeout, window or limit.
    """

    def __init__(
        self,
        topics: Sequence[str],
        *,
        start: float,
        stream_timeout: float,
        window: float = 1.0,
        failure_limit: int = 3,
    ) -> None:
        if not topics:
            raise ValueError("topics must name at least the RGB topic")
        if failure_limit < 1:
            raise ValueError(f"failure_limit must be >= 1, got {failure_limit}")
        self._check_timeout(stream_timeout)
        self._lock = threading.Lock()
        self._start = start
        self._window = window
        self._stream_timeout = float(stream_timeout)
        self._failure_limit = failure_limit
        self._topics = [_Topic(name, window, start) for name in topics]
        self._stale_drops = 0
        self._segmented = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._sync_drops_before = [0] * len(topics)
        self._outputs = RateMeter(window, start=start)
        self._inference_ms = WindowStats(window)
        self._latency_ms = WindowStats(window)
        self._missing: tuple[str, ...] = ()

    @staticmethod
    def _check_timeout(stream_timeout: float) -> None:
        if not (math.isfinite(stream_timeout) and stream_timeout > 0):
            raise ValueError(f"stream_timeout must be > 0 seconds, got {stream_timeout!r}")

    def set_stream_timeout(self, stream_timeout: float) -> None:
        """Changes the silence threshold (ValueError if not positive)."""
        self._check_timeout(stream_timeout)
        with self._lock:
            self._stream_timeout = float(stream_timeout)

    def record_message(self, topic: int, now: float) -> None:
        """A message arrived on input ``topic`` (counted whether or not it is usable)."""
        with self._lock:
            entry = self._topics[topic]
            entry.rate.add(now)
            entry.last_arrival = now

    def record_bad(self, topic: int, reason: str) -> None:
        """A message of ``topic`` was refused for ``reason`` (a short snake_case word)."""
        with self._lock:
            entry = self._topics[topic]
            entry.bad[reason] += 1

    def record_stale_drop(self) -> None:
        """A synchronised group was replaced before the model took it."""
        with self._lock:
            self._stale_drops += 1

    def add_retired_sync_drops(self, dropped: Sequence[int]) -> None:
        """Keeps the drop counts of a synchroniser that is being replaced (one per topic)."""
        with self._lock:
            for index, count in enumerate(dropped):
                self._sync_drops_before[index] += count

    def record_segmented(self, now: float, inference_s: float, latency_s: float) -> None:
        """A group was segmented in ``inference_s``; its outputs left ``latency_s`` after its
        stamp."""
        with self._lock:
            self._segmented += 1
            self._consecutive_failures = 0
            self._outputs.add(now)
            self._inference_ms.add(now, inference_s * 1e3)
            self._latency_ms.add(now, latency_s * 1e3)

    def set_missing(self, modalities: Sequence[str]) -> None:
        """The auxiliary modalities the latest outputs were computed without (empty: none)."""
        with self._lock:
            self._missing = tuple(modalities)

    def record_failure(self) -> None:
        """Inference raised an unexpected error for a group."""
        with self._lock:
            self._failures += 1
            self._consecutive_failures += 1

    def report(self, now: float, *, sync_dropped: Sequence[int]) -> HealthReport:
        """The verdict and counters at ``now``; bad messages are news until reported once.

        Args:
            now: Current monotonic time, seconds.
            sync_dropped: Per-topic drop counts of the current synchroniser.
        """
        with self._lock:
            problems: list[str] = []
            values: list[tuple[str, str]] = []
            for index, topic in enumerate(self._topics):
                silent = now - (self._start if topic.last_arrival is None else topic.last_arrival)
                if silent >= self._stream_timeout:
                    if topic.last_arrival is None:
                        problems.append(f"no message on {topic.name} since start-up")
                    else:
                        problems.append(f"no message on {topic.name} for {silent:.1f} s")
                bad = sum(topic.bad.values())
                if bad > topic.bad_reported:
                    problems.append(
                        f"{bad - topic.bad_reported} new bad message(s) on {topic.name}"
                    )
                    topic.bad_reported = bad
                values.append((f"{topic.name} rate (Hz)", f"{topic.rate.rate(now):.2f}"))
                last = "never" if topic.last_arrival is None else f"{silent:.2f}"
                values.append((f"{topic.name} last message (s ago)", last))
                drops = self._sync_drops_before[index] + sync_dropped[index]
                values.append((f"{topic.name} sync drops", str(drops)))
                values.append((f"{topic.name} bad messages", str(bad)))
                values.extend(
                    (f"{topic.name} bad messages ({reason})", str(count))
                    for reason, count in sorted(topic.bad.items())
                )
            inference = self._inference_ms.summary(now)
            latency = self._latency_ms.summary(now)
            output_rate = self._outputs.rate(now)
            values += [
                ("stale drops", str(self._stale_drops)),
                ("groups segmented", str(self._segmented)),
                ("inference failures", str(self._failures)),
                ("inference ms (last)", _ms(inference.last)),
                ("inference ms (mean)", _ms(inference.mean)),
                ("inference ms (max)", _ms(inference.max)),
                ("pipeline latency ms (mean)", _ms(latency.mean)),
                ("pipeline latency ms (max)", _ms(latency.max)),
                ("output rate (Hz)", f"{output_rate:.2f}"),
            ]
            missing = self._missing
            values += [
                ("degraded", "true" if missing else "false"),
                ("missing modalities", ", ".join(missing) if missing else "none"),
            ]
            if missing:
                problems.insert(0, f"DEGRADED: segmenting without {', '.join(missing)}")
            failing = self._consecutive_failures >= self._failure_limit
            consecutive = self._consecutive_failures
        if failing:
            problems.insert(0, f"inference failed {consecutive} times in a row")
            level = Level.ERROR
        elif problems:
            level = Level.WARN
        else:
            level = Level.OK
        message = "; ".join(problems) if problems else f"segmenting at {output_rate:.1f} Hz"
        return HealthReport(level, message, tuple(values))


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"
