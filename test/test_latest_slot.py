"""LatestSlot: only the newest item waits; replacements are counted; close wakes consumers.

consume_pipelined: a waiting item is staged before the one in flight finishes, in order."""

from __future__ import annotations

import threading
import time

from unim2_core.runtime.latest_slot import LatestSlot, consume_pipelined


def test_take_returns_the_item_put() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.take(timeout=0) == 1
    assert slot.take(timeout=0) is None
    assert slot.replaced == 0


def test_put_replaces_an_untaken_item_and_counts_it() -> None:
    slot: LatestSlot[str] = LatestSlot()
    slot.put("a")
    assert slot.put("b") is True
    assert slot.put("c") is True
    assert slot.take(timeout=0) == "c"
    assert slot.replaced == 2
    assert slot.put("d") is False
    assert slot.replaced == 2


def test_take_times_out_when_empty() -> None:
    slot: LatestSlot[int] = LatestSlot()
    start = time.monotonic()
    assert slot.take(timeout=0.05) is None
    assert time.monotonic() - start >= 0.04


def test_take_waits_for_a_put_from_another_thread() -> None:
    slot: LatestSlot[int] = LatestSlot()
    timer = threading.Timer(0.05, slot.put, args=(42,))
    timer.start()
    assert slot.take(timeout=5) == 42
    timer.join()


def test_close_wakes_a_waiting_consumer_and_refuses_new_items() -> None:
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    results: list[int | None] = []
    slot.take()
    consumer = threading.Thread(target=lambda: results.append(slot.take()))
    consumer.start()
    time.sleep(0.05)
    slot.close()
    consumer.join(timeout=5)
    assert not consumer.is_alive() and results == [None]
    assert slot.closed
    assert slot.put(2) is False
    assert slot.take(timeout=0) is None
    assert slot.replaced == 0


def test_close_discards_a_waiting_item() -> None:
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    slot.close()
    assert slot.take(timeout=0) is None


def test_slow_consumer_sees_increasing_items_and_every_item_is_accounted_for() -> None:
    slot: LatestSlot[int] = LatestSlot()
    taken: list[int] = []

    def consume() -> None:
        while (item := slot.take()) is not None:
            taken.append(item)
            time.sleep(0.002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    produced = 2000
    for item in range(produced):
        slot.put(item)
    time.sleep(0.05)
    slot.close()
    consumer.join(timeout=5)
    assert taken == sorted(taken) and len(set(taken)) == len(taken)
    assert taken[-1] == produced - 1
    assert len(taken) + slot.replaced == produced
    assert slot.replaced > 0


class _Recorder:
    """Fake stage / launch / finish steps that log their calls; ``on_launch`` puts items."""

    def __init__(
        self, slot: LatestSlot[str], on_launch: dict[str, list[str]], *, overlap: bool = True
    ) -> None:
        self.slot = slot
        self.on_launch = on_launch
        self.overlap = overlap
        self.calls: list[str] = []

    def stage(self, item: str) -> str | None:
        self.calls.append(f"stage {item}")
        return None if item.startswith("bad") else item

    def launch(self, item: str) -> str:
        self.calls.append(f"launch {item}")
        for arriving in self.on_launch.get(item, []):
            self.slot.put(arriving)  # as a camera callback would, while the device works
        return item

    def finish(self, item: str) -> None:
        self.calls.append(f"finish {item}")
        if item == "last":
            self.slot.close()

    def consume(self) -> None:
        consume_pipelined(self.slot, self.stage, self.launch, self.finish, overlap=self.overlap)


def test_pipelined_consumer_stages_a_waiting_item_before_finishing_the_one_in_flight() -> None:
    slot: LatestSlot[str] = LatestSlot()
    slot.put("a")
    recorder = _Recorder(slot, {"a": ["b"], "b": ["c0", "c"], "c": ["last"]})
    recorder.consume()
    assert recorder.calls == [
        "stage a",
        "launch a",
        "stage b",  # b was waiting: staged while a is in flight
        "finish a",
        "launch b",
        "stage c",  # c replaced c0 in the slot: only the newest is staged
        "finish b",
        "launch c",
        "stage last",
        "finish c",
        "launch last",
        "finish last",  # nothing waiting: finished at once, then the closed slot ends it
    ]
    assert slot.replaced == 1


def test_consumer_without_overlap_finishes_each_item_before_staging_the_next() -> None:
    slot: LatestSlot[str] = LatestSlot()
    slot.put("a")
    recorder = _Recorder(slot, {"a": ["b"], "b": ["last"]}, overlap=False)
    recorder.consume()
    assert recorder.calls == [
        "stage a",
        "launch a",
        "finish a",  # b is waiting, but a's outputs go first
        "stage b",
        "launch b",
        "finish b",
        "stage last",
        "launch last",
        "finish last",
    ]


def test_pipelined_consumer_never_holds_outputs_back_for_a_next_item() -> None:
    slot: LatestSlot[str] = LatestSlot()
    slot.put("a")
    recorder = _Recorder(slot, {})
    worker = threading.Thread(target=recorder.consume)
    worker.start()
    deadline = time.monotonic() + 10.0
    while recorder.calls != ["stage a", "launch a", "finish a"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.calls == ["stage a", "launch a", "finish a"]
    slot.put("last")
    worker.join(timeout=10.0)
    assert not worker.is_alive()
    assert recorder.calls[3:] == ["stage last", "launch last", "finish last"]


def test_pipelined_consumer_drops_an_item_its_stage_refuses_and_still_finishes_the_previous() -> (
    None
):
    slot: LatestSlot[str] = LatestSlot()
    slot.put("a")
    recorder = _Recorder(slot, {"a": ["bad b"]})
    worker = threading.Thread(target=recorder.consume)
    worker.start()
    deadline = time.monotonic() + 10.0
    while len(recorder.calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    slot.put("last")
    worker.join(timeout=10.0)
    assert not worker.is_alive()
    assert recorder.calls == [
        "stage a",
        "launch a",
        "stage bad b",
        "finish a",
        "stage last",
        "launch last",
        "finish last",
    ]
