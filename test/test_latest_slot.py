"""LatestSlot: only the newest item waits; replacements are counted; close wakes consumers."""

from __future__ import annotations

import threading
import time

from unim2_core.runtime.latest_slot import LatestSlot


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
