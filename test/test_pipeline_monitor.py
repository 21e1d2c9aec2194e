"""PipelineMonitor verdicts and counters on a fake clock (no ROS)."""

from __future__ import annotations

import math

import pytest

from unim2_ros.pipeline_monitor import HealthReport, Level, PipelineMonitor

TOPICS = ("/cam/rgb", "/cam/depth")


def _values(report: HealthReport) -> dict[str, str]:
    values = dict(report.values)
    assert len(values) == len(report.values), "keys must be unique"
    return values


def _stream(monitor: PipelineMonitor, topics: tuple[int, ...], start: float, end: float) -> None:
    """Messages at 10 Hz on ``topics`` over ``(start, end]``."""
    steps = round((end - start) * 10)
    for step in range(1, steps + 1):
        for topic in topics:
            monitor.record_message(topic, start + step * 0.1)


def test_flowing_streams_are_ok_with_rates_and_timings() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=1.0)
    _stream(monitor, (0, 1), 0.0, 3.0)
    monitor.record_segmented(2.8, inference_s=0.2, latency_s=0.25)
    monitor.record_segmented(2.9, inference_s=0.1, latency_s=0.15)
    report = monitor.report(3.0, sync_dropped=(0, 0))
    assert report.level is Level.OK
    assert report.message == "segmenting at 2.0 Hz"
    values = _values(report)
    assert float(values["/cam/rgb rate (Hz)"]) == pytest.approx(10.0)
    assert float(values["/cam/depth rate (Hz)"]) == pytest.approx(10.0)
    assert values["groups segmented"] == "2"
    assert values["inference ms (last)"] == "100.0"
    assert values["inference ms (mean)"] == "150.0"
    assert values["inference ms (max)"] == "200.0"
    assert values["pipeline latency ms (mean)"] == "200.0"
    assert values["pipeline latency ms (max)"] == "250.0"
    assert values["/cam/depth bad messages"] == "0"


def test_silent_auxiliary_stream_warns_naming_it_and_recovers() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=1.0)
    _stream(monitor, (0, 1), 0.0, 2.0)
    _stream(monitor, (0,), 2.0, 3.5)
    report = monitor.report(3.5, sync_dropped=(0, 0))
    assert report.level is Level.WARN
    assert report.message == "no message on /cam/depth for 1.5 s"
    assert _values(report)["/cam/depth rate (Hz)"] == "0.00"
    _stream(monitor, (0, 1), 3.5, 4.0)
    assert monitor.report(4.0, sync_dropped=(0, 0)).level is Level.OK


def test_silent_rgb_warns_too() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=2.0)
    _stream(monitor, (0, 1), 0.0, 1.0)
    _stream(monitor, (1,), 1.0, 3.5)
    report = monitor.report(3.5, sync_dropped=(0, 0))
    assert report.level is Level.WARN and "/cam/rgb for 2.5 s" in report.message


def test_topics_that_never_delivered_warn_once_the_timeout_passed() -> None:
    monitor = PipelineMonitor(TOPICS, start=10.0, stream_timeout=1.0)
    assert monitor.report(10.5, sync_dropped=(0, 0)).level is Level.OK
    report = monitor.report(11.0, sync_dropped=(0, 0))
    assert report.level is Level.WARN
    assert report.message == (
        "no message on /cam/rgb since start-up; no message on /cam/depth since start-up"
    )
    assert _values(report)["/cam/rgb last message (s ago)"] == "never"


def test_stream_timeout_can_change() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=1.0)
    _stream(monitor, (0, 1), 0.0, 1.0)
    assert monitor.report(2.5, sync_dropped=(0, 0)).level is Level.WARN
    monitor.set_stream_timeout(5.0)
    assert monitor.report(2.5, sync_dropped=(0, 0)).level is Level.OK
    with pytest.raises(ValueError, match="stream_timeout must be > 0"):
        monitor.set_stream_timeout(0.0)


def test_bad_messages_are_counted_per_topic_and_reason_and_warn_in_the_next_report() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=5.0)
    _stream(monitor, (0, 1), 0.0, 3.0)
    monitor.record_bad(1, "wrong_encoding")
    monitor.record_bad(1, "wrong_encoding")
    monitor.record_bad(1, "malformed")
    monitor.record_bad(0, "empty")
    report = monitor.report(3.0, sync_dropped=(0, 0))
    assert report.level is Level.WARN
    assert report.message == (
        "1 new bad message(s) on /cam/rgb; 3 new bad message(s) on /cam/depth"
    )
    values = _values(report)
    assert values["/cam/depth bad messages"] == "3"
    assert values["/cam/depth bad messages (wrong_encoding)"] == "2"
    assert values["/cam/depth bad messages (malformed)"] == "1"
    assert values["/cam/rgb bad messages (empty)"] == "1"
    _stream(monitor, (0, 1), 3.0, 4.0)
    later = monitor.report(4.0, sync_dropped=(0, 0))
    assert later.level is Level.OK
    assert _values(later)["/cam/depth bad messages"] == "3"
    monitor.record_bad(1, "empty")
    again = monitor.report(4.0, sync_dropped=(0, 0))
    assert again.message == "1 new bad message(s) on /cam/depth"


def test_repeated_inference_failures_are_an_error_until_a_success() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=5.0, failure_limit=3)
    _stream(monitor, (0, 1), 0.0, 1.0)
    monitor.record_failure()
    monitor.record_failure()
    assert monitor.report(1.0, sync_dropped=(0, 0)).level is Level.OK
    monitor.record_failure()
    report = monitor.report(1.0, sync_dropped=(0, 0))
    assert report.level is Level.ERROR
    assert report.message == "inference failed 3 times in a row"
    assert _values(report)["inference failures"] == "3"
    monitor.record_segmented(1.0, inference_s=0.1, latency_s=0.1)
    assert monitor.report(1.0, sync_dropped=(0, 0)).level is Level.OK


def test_drops_add_retired_synchronisers_and_count_stale_groups() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=5.0)
    monitor.add_retired_sync_drops((2, 1))
    monitor.add_retired_sync_drops((1, 0))
    monitor.record_stale_drop()
    monitor.record_stale_drop()
    values = _values(monitor.report(1.0, sync_dropped=(4, 5)))
    assert values["/cam/rgb sync drops"] == "7"
    assert values["/cam/depth sync drops"] == "6"
    assert values["stale drops"] == "2"


def test_timings_without_outputs_are_not_available() -> None:
    values = _values(
        PipelineMonitor(TOPICS, start=0.0, stream_timeout=5.0).report(1.0, sync_dropped=(0, 0))
    )
    assert values["inference ms (mean)"] == "n/a"
    assert values["output rate (Hz)"] == "0.00"


@pytest.mark.parametrize(
    ("topics", "timeout", "limit", "match"),
    [
        ((), 1.0, 3, "at least the RGB topic"),
        (TOPICS, 0.0, 3, "stream_timeout must be > 0"),
        (TOPICS, math.nan, 3, "stream_timeout must be > 0"),
        (TOPICS, 1.0, 0, "failure_limit must be >= 1"),
    ],
)
def test_monitor_rejects_bad_settings(
    topics: tuple[str, ...], timeout: float, limit: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        PipelineMonitor(topics, start=0.0, stream_timeout=timeout, failure_limit=limit)


def test_outputs_without_a_modality_are_degraded_until_it_is_back() -> None:
    monitor = PipelineMonitor(TOPICS, start=0.0, stream_timeout=1.0)
    _stream(monitor, (0, 1), 0.0, 1.0)
    assert _values(monitor.report(1.0, sync_dropped=(0, 0)))["degraded"] == "false"
    monitor.set_missing(["depth"])
    _stream(monitor, (0,), 1.0, 1.5)
    report = monitor.report(1.5, sync_dropped=(0, 0))
    assert report.level is Level.WARN
    assert report.message == "DEGRADED: segmenting without depth"
    assert _values(report)["degraded"] == "true"
    assert _values(report)["missing modalities"] == "depth"
    monitor.set_missing([])
    _stream(monitor, (0, 1), 1.5, 2.0)
    report = monitor.report(2.0, sync_dropped=(0, 0))
    assert report.level is Level.OK
    assert _values(report)["missing modalities"] == "none"
