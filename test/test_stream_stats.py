"""RateMeter and WindowStats on a fake clock."""

from __future__ import annotations

import math

import pytest

from unim2_core.runtime.stream_stats import RateMeter, WindowStats


def test_rate_of_a_regular_stream_is_its_frequency() -> None:
    meter = RateMeter(2.0, start=0.0)
    for step in range(1, 101):
        meter.add(step * 0.05)  # 20 Hz for 5 s
    assert meter.rate(5.0) == pytest.approx(20.0, abs=0.5)
    assert meter.count(5.0) == 40


def test_rate_before_a_full_window_uses_the_time_since_start() -> None:
    meter = RateMeter(10.0, start=100.0)
    for step in range(1, 11):
        meter.add(100.0 + step * 0.1)
    assert meter.rate(101.0) == pytest.approx(10.0)
    assert RateMeter(1.0, start=5.0).rate(5.0) == 0.0


def test_rate_falls_to_zero_when_the_stream_stops() -> None:
    meter = RateMeter(1.0, start=0.0)
    for step in range(1, 11):
        meter.add(step * 0.1)
    assert meter.rate(1.5) == pytest.approx(5.0)
    assert meter.rate(2.0) == 0.0


def test_window_stats_give_last_mean_max_of_recent_values() -> None:
    stats = WindowStats(1.0)
    stats.add(0.1, 10.0)
    stats.add(0.5, 30.0)
    stats.add(0.9, 20.0)
    assert stats.summary(1.0) == (3, 20.0, 20.0, 30.0)
    assert stats.summary(1.4) == (2, 20.0, 25.0, 30.0)
    assert stats.summary(1.6) == (1, 20.0, 20.0, 20.0)


def test_window_stats_are_nan_when_empty() -> None:
    summary = WindowStats(1.0).summary(3.0)
    assert summary.samples == 0
    assert all(math.isnan(v) for v in (summary.last, summary.mean, summary.max))


@pytest.mark.parametrize("window", [0.0, -1.0, math.inf, math.nan])
def test_windows_must_be_positive_and_finite(window: float) -> None:
    with pytest.raises(ValueError, match="window must be a finite number of seconds > 0"):
        RateMeter(window, start=0.0)
    with pytest.raises(ValueError, match="window must be a finite number of seconds > 0"):
        WindowStats(window)
