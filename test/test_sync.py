"""Tests of unim2_core.runtime.sync: message_filters' approximate-time rule, counters, threads.

Like message_filters' test/test_approxsync.py, the synchroniser is driven with fake items and
seeded shuffles, no DDS. ``_ReferenceSync`` below is an independent transliteration of
``message_filters.ApproximateTimeSynchronizer.add`` (ROS 2, src/message_filters/__init__.py),
with rclpy Time/Duration replaced by integer nanoseconds and callbacks by a return value; the
synchroniser must emit exactly the same sets on every stream.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unim2_core.runtime.sync import ApproximateTimeSynchronizer, FallbackSynchronizer, SyncStats

Item = tuple[int, int]  # (input index, sequence number)
Event = tuple[int, int, Item]  # (input index, stamp in ns, item)

MS = 1_000_000


class _ReferenceSync:
    """message_filters' ApproximateTimeSynchronizer.add, line by line, on integer stamps."""

    def __init__(self, n_inputs: int, queue_size: int, slop_ns: int) -> None:
        self.queues: list[dict[int, Item]] = [{} for _ in range(n_inputs)]
        self.queue_size = queue_size
        self.slop = slop_ns

    def add(self, my_queue_index: int, stamp: int, msg: Item) -> tuple[Item, ...] | None:
        my_queue = self.queues[my_queue_index]
        my_queue[stamp] = msg
        while len(my_queue) > self.queue_size:
            del my_queue[min(my_queue)]
        search_queues = self.queues[:my_queue_index] + self.queues[my_queue_index + 1 :]
        stamps = []
        for queue in search_queues:
            topic_stamps = []
            for s in queue:
                stamp_delta = abs(s - stamp)
                if stamp_delta > self.slop:
                    continue
                topic_stamps.append((s, stamp_delta))
            if not topic_stamps:
                return None
            topic_stamps = sorted(topic_stamps, key=lambda x: x[1])
            stamps.append(topic_stamps)
        for combination in itertools.product(*[[s for s, _ in ts] for ts in stamps]):
            vv = list(combination)
            vv.insert(my_queue_index, stamp)
            qt = list(zip(self.queues, vv, strict=True))
            if max(vv) - min(vv) < self.slop and all(t in q for q, t in qt):
                msgs = tuple(q[t] for q, t in qt)
                for q, t in qt:
                    del q[t]
                return msgs
        return None


def _random_stream(rng: random.Random, n_inputs: int, length: int) -> list[Event]:
    """Sensor-like streams: own rate and phase, jitter, drops, repeated stamps, late arrivals."""
    events: list[tuple[float, Event]] = []
    for i in range(n_inputs):
        period = rng.choice([10, 33, 50, 100]) * MS
        t = rng.randrange(period)
        jitter = rng.choice([0, 1, 5, 20]) * MS
        drop_p = rng.choice([0.0, 0.1, 0.4])
        repeat_p = rng.choice([0.0, 0.05])
        latency = rng.choice([0, 5, 40]) * MS
        stamp = None
        for seq in range(length):
            t += period
            if rng.random() < drop_p:
                continue
            if stamp is None or rng.random() >= repeat_p:
                stamp = max(0, t + rng.randint(-jitter, jitter))
            arrival = stamp + rng.uniform(0, latency)
            events.append((arrival, (i, stamp, (i, seq))))
    events.sort(key=lambda e: e[0])
    ordered = [e for _, e in events]
    if rng.random() < 0.3:
        for start in range(0, len(ordered), 8):
            window = ordered[start : start + 8]
            rng.shuffle(window)
            ordered[start : start + 8] = window
    return ordered


def _run(sync: ApproximateTimeSynchronizer[Item], events: list[Event]) -> Iterator[object]:
    for index, stamp, item in events:
        yield sync.add(index, stamp, item)


def _assert_counts_balance(sync: ApproximateTimeSynchronizer[Item], events: list[Event]) -> None:
    received = [0] * sync.n_inputs
    for index, _, _ in events:
        received[index] += 1
    stats, pending = sync.stats(), sync.pending()
    for i in range(sync.n_inputs):
        assert received[i] == stats.emitted + stats.dropped[i] + pending[i]


@pytest.mark.parametrize("seed", range(120))
def test_sync_matches_message_filters_reference_on_random_streams(seed: int) -> None:
    rng = random.Random(seed)
    n_inputs = rng.choice([1, 2, 2, 3, 3, 4])
    queue_size = rng.choice([1, 2, 3, 5, 10])
    slop = rng.choice([0.005, 0.01, 0.02, 0.05, 0.1])
    events = _random_stream(rng, n_inputs, length=60)
    sync: ApproximateTimeSynchronizer[Item] = ApproximateTimeSynchronizer(
        n_inputs, queue_size=queue_size, slop=slop
    )
    reference = _ReferenceSync(n_inputs, queue_size, sync.slop_ns)
    emitted = 0
    for index, stamp, item in events:
        expected = reference.add(index, stamp, item)
        assert sync.add(index, stamp, item) == expected, (index, stamp, item)
        emitted += expected is not None
    assert sync.pending() == tuple(len(q) for q in reference.queues)
    assert sync.stats().emitted == emitted
    _assert_counts_balance(sync, events)


def test_reference_streams_exercise_matches_drops_and_misses() -> None:
    """Guards the comparison above against streams too easy to tell implementations apart."""
    emitted = dropped = misses = 0
    for seed in range(120):
        rng = random.Random(seed)
        n_inputs = rng.choice([1, 2, 2, 3, 3, 4])
        queue_size = rng.choice([1, 2, 3, 5, 10])
        slop = rng.choice([0.005, 0.01, 0.02, 0.05, 0.1])
        events = _random_stream(rng, n_inputs, length=60)
        sync: ApproximateTimeSynchronizer[Item] = ApproximateTimeSynchronizer(
            n_inputs, queue_size=queue_size, slop=slop
        )
        misses += sum(out is None for out in _run(sync, events))
        stats = sync.stats()
        emitted += stats.emitted
        dropped += sum(stats.dropped)
    assert emitted > 1000
    assert dropped > 1000
    assert misses > 1000


_events = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=80).map(
    lambda raw: [(i, stamp, (i, seq)) for seq, (i, stamp) in enumerate(raw)]
)


@settings(max_examples=300, deadline=None)
@given(
    n_inputs=st.integers(1, 3),
    queue_size=st.integers(1, 6),
    slop_ns=st.integers(1, 15),
    raw=_events,
)
def test_sync_matches_reference_on_dense_colliding_stamps(
    n_inputs: int, queue_size: int, slop_ns: int, raw: list[Event]
) -> None:
    events = [(i % n_inputs, stamp, (i % n_inputs, seq)) for i, stamp, (_, seq) in raw]
    sync: ApproximateTimeSynchronizer[Item] = ApproximateTimeSynchronizer(
        n_inputs, queue_size=queue_size, slop=slop_ns / 1e9
    )
    reference = _ReferenceSync(n_inputs, queue_size, sync.slop_ns)
    for index, stamp, item in events:
        out = sync.add(index, stamp, item)
        assert out == reference.add(index, stamp, item)
        if out is not None:
            assert out[index] == item
            assert [member[0] for member in out] == list(range(n_inputs))
    _assert_counts_balance(sync, events)


def test_jittered_pairs_are_matched_to_their_own_partner() -> None:
    rng = random.Random(7)
    sync: ApproximateTimeSynchronizer[int] = ApproximateTimeSynchronizer(2, queue_size=5, slop=0.01)
    matched = []
    for k in range(100):
        base = k * 33 * MS
        arrivals = [(0, base + rng.randint(-3, 3) * MS), (1, base + rng.randint(-3, 3) * MS)]
        rng.shuffle(arrivals)
        for index, stamp in arrivals:
            out = sync.add(index, stamp, k)
            if out is not None:
                matched.append(out)
    assert matched == [(k, k) for k in range(100)]
    assert sync.stats() == SyncStats(emitted=100, dropped=(0, 0))
    assert sync.pending() == (0, 0)


def test_fast_input_is_paired_with_its_nearest_item_and_surplus_is_dropped() -> None:
    sync: ApproximateTimeSynchronizer[int] = ApproximateTimeSynchronizer(2, queue_size=3, slop=0.02)
    pairs = []
    for slow_ms in range(50, 1000, 50):
        for fast_ms in range(slow_ms - 40, slow_ms + 1, 10):
            assert sync.add(0, fast_ms * MS, fast_ms) is None
        pairs.append(sync.add(1, (slow_ms + 2) * MS, slow_ms + 2))
    assert pairs == [(slow_ms, slow_ms + 2) for slow_ms in range(50, 1000, 50)]
    assert sync.pending() == (2, 0)
    assert sync.stats() == SyncStats(emitted=19, dropped=(5 * 19 - 19 - 2, 0))


def test_out_of_order_item_older_than_a_full_queue_is_evicted_at_once() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(2, queue_size=2, slop=0.01)
    assert sync.add(1, 5 * MS, "b5") is None
    assert sync.add(0, 100 * MS, "a100") is None
    assert sync.add(0, 200 * MS, "a200") is None
    # message_filters evicts the oldest stamp even when it is the new one: no match with b5.
    assert sync.add(0, 5 * MS, "a5") is None
    assert sync.stats() == SyncStats(emitted=0, dropped=(1, 0))
    assert sync.pending() == (2, 1)
    assert sync.add(0, 6 * MS, "a6") is None
    assert sync.stats().dropped == (2, 0)


def test_out_of_order_item_within_queue_still_matches() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(2, queue_size=3, slop=0.01)
    assert sync.add(0, 100 * MS, "a100") is None
    assert sync.add(0, 200 * MS, "a200") is None
    assert sync.add(1, 198 * MS, "b198") == ("a200", "b198")
    assert sync.add(1, 103 * MS, "b103") == ("a100", "b103")
    assert sync.pending() == (0, 0)


def test_identical_stamp_replaces_queued_item_and_counts_a_drop() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(2, queue_size=5, slop=0.01)
    assert sync.add(0, 10 * MS, "first") is None
    assert sync.add(0, 10 * MS, "second") is None
    assert sync.pending() == (1, 0)
    assert sync.stats() == SyncStats(emitted=0, dropped=(1, 0))
    assert sync.add(1, 11 * MS, "partner") == ("second", "partner")


def test_equally_near_candidates_are_taken_in_queue_insertion_order() -> None:
    def pick(order: list[tuple[int, str]]) -> tuple[str, ...] | None:
        sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(
            2, queue_size=5, slop=0.02
        )
        for stamp, name in order:
            assert sync.add(1, stamp, name) is None
        return sync.add(0, 100 * MS, "new")

    assert pick([(90 * MS, "early"), (110 * MS, "late")]) == ("new", "early")
    assert pick([(110 * MS, "late"), (90 * MS, "early")]) == ("new", "late")
    # A replacement keeps the replaced item's place in the queue (dict semantics).
    assert pick([(110 * MS, "late"), (90 * MS, "early"), (110 * MS, "late2")]) == (
        "new",
        "late2",
    )


def test_first_combination_in_scan_order_wins_not_the_tightest() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(3, queue_size=5, slop=0.06)
    base = 1000 * MS
    for stamp, name in [(base - 5 * MS, "b-5"), (base + 30 * MS, "b+30")]:
        assert sync.add(1, stamp, name) is None
    for stamp, name in [(base + 40 * MS, "c+40"), (base - 45 * MS, "c-45")]:
        assert sync.add(2, stamp, name) is None
    # Nearest-first lists: b = [-5, +30], c = [+40, -45]. (-5, +40) spans 45 ms < 60 ms and
    # comes first, although (+30, +40) would span only 40 ms.
    assert sync.add(0, base, "a0") == ("a0", "b-5", "c+40")
    assert sync.pending() == (0, 1, 1)


def test_one_silent_input_bounds_queues_counts_drops_then_recovers() -> None:
    sync: ApproximateTimeSynchronizer[int] = ApproximateTimeSynchronizer(3, queue_size=4, slop=0.01)
    for k in range(50):
        assert sync.add(0, k * 30 * MS, k) is None
        assert sync.add(1, k * 30 * MS + MS, k) is None
    assert sync.pending() == (4, 4, 0)
    assert sync.stats() == SyncStats(emitted=0, dropped=(46, 46, 0))
    # It returns: the queued items of the last 4 periods are still matched, then lockstep.
    out = [sync.add(2, k * 30 * MS + 2 * MS, k) for k in range(46, 50)]
    assert out == [(k, k, k) for k in range(46, 50)]
    for k in range(50, 56):
        assert sync.add(0, k * 30 * MS, k) is None
        assert sync.add(1, k * 30 * MS + MS, k) is None
        assert sync.add(2, k * 30 * MS + 2 * MS, k) == (k, k, k)
    assert sync.stats() == SyncStats(emitted=10, dropped=(46, 46, 0))
    assert sync.pending() == (0, 0, 0)


def test_single_input_emits_every_item_alone() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(1, queue_size=1, slop=1e-9)
    assert [sync.add(0, s, str(s)) for s in (5, 5, 3, 9)] == [("5",), ("5",), ("3",), ("9",)]
    assert sync.stats() == SyncStats(emitted=4, dropped=(0,))


def test_three_inputs_emit_only_when_all_are_within_slop() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(3, queue_size=3, slop=0.01)
    assert sync.add(0, 100 * MS, "a") is None
    assert sync.add(1, 104 * MS, "b") is None
    assert sync.add(2, 97 * MS, "c") == ("a", "b", "c")
    assert sync.add(0, 200 * MS, "a2") is None
    assert sync.add(2, 205 * MS, "c2") is None
    # b2 is within slop of a2 and c2 taken one at a time, but the three span exactly slop.
    assert sync.add(1, 195 * MS, "b2") is None
    assert sync.add(1, 196 * MS, "b3") == ("a2", "b3", "c2")
    assert sync.pending() == (0, 1, 0)


@pytest.mark.parametrize(("gap_ns", "matches"), [(99, True), (100, False), (101, False)])
def test_pair_matches_only_when_gap_is_strictly_below_slop(gap_ns: int, matches: bool) -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(
        2, queue_size=2, slop=100e-9
    )
    assert sync.slop_ns == 100
    assert sync.add(0, 1000, "a") is None
    out = sync.add(1, 1000 + gap_ns, "b")
    assert out == (("a", "b") if matches else None)


@pytest.mark.parametrize(("spread_ns", "matches"), [(99, True), (100, False)])
def test_triple_within_slop_of_new_stamp_but_wider_overall_needs_spread_below_slop(
    spread_ns: int, matches: bool
) -> None:
    # Both queued stamps pass the candidate filter (|delta| <= slop from the new stamp in the
    # middle); only the final spread check (max - min < slop) decides.
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(
        3, queue_size=2, slop=100e-9
    )
    assert sync.add(1, 1000, "b") is None
    assert sync.add(2, 1000 + spread_ns, "c") is None
    out = sync.add(0, 1000 + spread_ns // 2, "a")
    assert out == (("a", "b", "c") if matches else None)


def test_candidate_exactly_slop_away_is_passed_over_for_a_farther_valid_set() -> None:
    # b at +100 ns is a candidate (|delta| == slop is not filtered) and the nearest, yet any
    # set holding it spans >= slop; the scan moves on to b at -60 ns.
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(
        2, queue_size=3, slop=100e-9
    )
    assert sync.add(1, 1100, "b+100") is None
    assert sync.add(1, 940, "b-60") is None
    assert sync.add(0, 1000, "a") == ("a", "b-60")
    assert sync.pending() == (0, 1)


def test_slop_is_truncated_to_nanoseconds_like_rclpy_duration() -> None:
    duration = pytest.importorskip("rclpy.duration")
    for slop in (0.1, 0.033, 1e-9, 2.5e-9, 0.0123456789, 1.7, 3):
        sync: ApproximateTimeSynchronizer[int] = ApproximateTimeSynchronizer(
            2, queue_size=1, slop=slop
        )
        assert sync.slop_ns == duration.Duration(seconds=slop).nanoseconds


def test_clear_discards_pending_items_as_drops() -> None:
    sync: ApproximateTimeSynchronizer[int] = ApproximateTimeSynchronizer(2, queue_size=5, slop=0.01)
    for k in range(3):
        sync.add(0, k * 100 * MS, k)
    sync.add(1, 5000 * MS, 9)
    sync.clear()
    assert sync.pending() == (0, 0)
    assert sync.stats() == SyncStats(emitted=0, dropped=(3, 1))
    assert sync.add(0, 5000 * MS, 1) is None


def test_numpy_integer_stamps_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(2, queue_size=1, slop=0.01)
    assert sync.add(np.int64(0), np.int64(10), "a") is None
    assert sync.add(1, np.uint64(11), "b") == ("a", "b")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_inputs": 0}, "n_inputs"),
        ({"n_inputs": 2.0}, "n_inputs"),
        ({"n_inputs": True}, "n_inputs"),
        ({"queue_size": 0}, "queue_size"),
        ({"queue_size": None}, "queue_size"),
        ({"slop": 0.0}, "slop"),
        ({"slop": -0.1}, "slop"),
        ({"slop": float("nan")}, "slop"),
        ({"slop": float("inf")}, "slop"),
        ({"slop": 1e-10}, "slop must be at least 1 ns"),
        ({"slop": "0.1"}, "slop"),
    ],
)
def test_constructor_rejects_bad_arguments_naming_them(
    kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {"n_inputs": 2, "queue_size": 10, "slop": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        ApproximateTimeSynchronizer(args.pop("n_inputs"), **args)  # type: ignore[arg-type]


def test_add_rejects_unknown_input_and_non_integer_stamp() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(2, queue_size=1, slop=0.01)
    with pytest.raises(IndexError, match="index 2 is out of range for 2 inputs"):
        sync.add(2, 0, "x")
    with pytest.raises(IndexError, match="index -1"):
        sync.add(-1, 0, "x")
    with pytest.raises(TypeError):
        sync.add(0, 1.5, "x")  # type: ignore[arg-type]
    assert sync.pending() == (0, 0)


def test_concurrent_adds_emit_each_item_at_most_once_and_keep_counts() -> None:
    n_inputs, per_input = 3, 2000
    sync: ApproximateTimeSynchronizer[Item] = ApproximateTimeSynchronizer(
        n_inputs, queue_size=10, slop=0.015
    )
    results: list[list[tuple[Item, ...]]] = [[] for _ in range(n_inputs)]
    stamps: dict[Item, int] = {}
    streams = []
    for i in range(n_inputs):
        rng = random.Random(i)
        stream = [(i, k * 10 * MS + rng.randint(-4, 4) * MS, (i, k)) for k in range(per_input)]
        stamps.update({item: stamp for _, stamp, item in stream})
        streams.append(stream)
    barrier = threading.Barrier(n_inputs)

    def feed(i: int) -> None:
        barrier.wait()
        for index, stamp, item in streams[i]:
            out = sync.add(index, stamp, item)
            if out is not None:
                results[i].append(out)

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(n_inputs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sets = [s for per_thread in results for s in per_thread]
    members = [item for s in sets for item in s]
    assert len(members) == len(set(members))
    assert all(max(stamps[x] for x in s) - min(stamps[x] for x in s) < sync.slop_ns for s in sets)
    assert sync.stats().emitted == len(sets)
    assert len(sets) > 0
    _assert_counts_balance(sync, [e for stream in streams for e in stream])


def test_sync_module_does_not_import_ros() -> None:
    code = (
        "import sys, unim2_core.runtime.sync; "
        "assert not any(m.startswith('rclpy') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- skipped inputs and the fallback synchroniser ------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_skip_matches_a_synchroniser_built_without_the_skipped_input(seed: int) -> None:
    rng = random.Random(seed)
    events = _random_stream(rng, 3, length=60)
    sync: ApproximateTimeSynchronizer[Item] = ApproximateTimeSynchronizer(
        3, queue_size=5, slop=0.03
    )
    reference = _ReferenceSync(2, 5, sync.slop_ns)
    for index, stamp, item in events:
        if index == 2:
            continue
        assert sync.add(index, stamp, item, skip={2}) == reference.add(index, stamp, item)


def test_skipped_inputs_keep_their_queued_items() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(3, queue_size=5, slop=0.01)
    assert sync.add(2, 100 * MS, "c100") is None
    assert sync.add(1, 101 * MS, "b101") is None
    assert sync.add(0, 100 * MS, "a100", skip=[2]) == ("a100", "b101")
    assert sync.pending() == (0, 0, 1)
    assert sync.add(0, 200 * MS, "a200") is None
    assert sync.add(1, 200 * MS, "b200") is None


def test_skip_is_checked() -> None:
    sync: ApproximateTimeSynchronizer[str] = ApproximateTimeSynchronizer(2, queue_size=5, slop=0.01)
    with pytest.raises(IndexError, match=r"skip \[2\] is out of range for 2 inputs"):
        sync.add(0, 0, "a", skip=[2])
    with pytest.raises(ValueError, match="input 1 cannot both deliver an item and be skipped"):
        sync.add(1, 0, "b", skip=[1])
    assert sync.pending() == (0, 0)


def _camera(sync: FallbackSynchronizer[str], k: int, *, depth: bool) -> tuple[object, ...]:
    """One 100 ms frame: depth (when on) 2 ms late in stamp and arrival, after RGB."""
    out = [sync.add(0, k * 100 * MS, f"rgb{k}")]
    if depth:
        out.append(sync.add(1, k * 100 * MS + 2 * MS, f"depth{k}"))
    return tuple(out)


def test_fallback_groups_rgb_alone_while_depth_is_lost_then_recovers() -> None:
    sync: FallbackSynchronizer[str] = FallbackSynchronizer(
        2, queue_size=5, slop=0.02, optional=[1], timeout=0.5
    )
    for k in range(10):
        assert _camera(sync, k, depth=True) == (None, (f"rgb{k}", f"depth{k}"))
    assert sync.lost() == ()
    # Depth stops after frame 9 (stamp 902 ms). RGB waits for it until RGB's stamps are more
    # than 0.5 s ahead: frames 10..14 queue (the oldest evicted), frame 15 (1.5 s) falls back.
    outputs = [_camera(sync, k, depth=False) for k in range(10, 20)]
    assert outputs[:5] == [(None,)] * 5
    assert outputs[5:] == [((f"rgb{k}", None),) for k in range(15, 20)]
    assert sync.lost() == (1,)
    # Depth returns: the first item is queued (its RGB partner went out alone), full groups
    # resume with the next frame.
    assert sync.add(1, 1902 * MS, "depth19") is None
    assert sync.lost() == ()
    for k in range(20, 25):
        assert _camera(sync, k, depth=True) == (None, (f"rgb{k}", f"depth{k}"))
    stats, pending = sync.stats(), sync.pending()
    assert stats.emitted == 10 + 5 + 5
    # 25 RGB images, 20 in sets; 16 depth images, 15 in sets (depth19 never found a partner).
    assert (stats.dropped[0] + pending[0], stats.dropped[1] + pending[1]) == (5, 1)


def test_fallback_counts_balance_per_input() -> None:
    sync: FallbackSynchronizer[str] = FallbackSynchronizer(
        3, queue_size=4, slop=0.02, optional=[1, 2], timeout=0.3
    )
    received = [0, 0, 0]
    in_sets = [0, 0, 0]
    for k in range(60):
        for index in (0, 1, 2):
            if (index == 1 and 20 <= k < 40) or (index == 2 and k >= 30):
                continue
            received[index] += 1
            out = sync.add(index, k * 50 * MS + index * MS, f"{index}:{k}")
            if out is not None:
                for i, member in enumerate(out):
                    in_sets[i] += member is not None
    stats, pending = sync.stats(), sync.pending()
    for i in range(3):
        assert received[i] == in_sets[i] + stats.dropped[i] + pending[i]
    assert sync.lost() == (2,)
    assert in_sets[0] == sync.stats().emitted > 40


def test_fallback_keeps_the_remaining_modalities_in_the_set() -> None:
    sync: FallbackSynchronizer[str] = FallbackSynchronizer(
        3, queue_size=5, slop=0.02, optional=[1, 2], timeout=0.25
    )
    assert sync.add(0, 0, "rgb0") is None
    assert sync.add(1, MS, "depth0") is None
    assert sync.add(2, MS, "thermal0") == ("rgb0", "depth0", "thermal0")
    for k in range(1, 6):  # thermal is silent from here on
        sync.add(0, k * 100 * MS, f"rgb{k}")
        sync.add(1, k * 100 * MS + MS, f"depth{k}")
    assert sync.lost() == (2,)
    assert sync.add(0, 600 * MS, "rgb6") is None  # waits for depth, which is not lost
    assert sync.add(1, 601 * MS, "depth6") == ("rgb6", "depth6", None)


def test_fallback_before_an_optional_input_ever_delivers_waits_one_timeout() -> None:
    sync: FallbackSynchronizer[str] = FallbackSynchronizer(
        2, queue_size=20, slop=0.02, optional=[1], timeout=0.3
    )
    outputs = [sync.add(0, k * 100 * MS, f"rgb{k}") for k in range(6)]
    assert outputs == [None, None, None, None, ("rgb4", None), ("rgb5", None)]


def test_fallback_ignores_stamps_jumping_back_and_clear_forgets_them() -> None:
    sync: FallbackSynchronizer[str] = FallbackSynchronizer(
        2, queue_size=5, slop=0.02, optional=[1], timeout=0.3
    )
    for k in range(5):
        assert _camera(sync, k, depth=True)[-1] == (f"rgb{k}", f"depth{k}")
    # A replay restarts from an earlier time: RGB's latest stamp is now behind depth's.
    assert sync.add(0, 0, "again0") is None
    assert sync.lost() == ()
    assert sync.add(1, MS, "again_depth0") == ("again0", "again_depth0")
    sync.add(0, 5000 * MS, "late")
    assert sync.lost() == (1,)
    sync.clear()
    assert sync.lost() == () and sync.pending() == (0, 0)
    assert sync.add(0, 6000 * MS, "fresh") is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optional": [0, 1]}, "at least one required input"),
        ({"optional": [2]}, r"optional inputs \[2\] out of range for 2"),
        ({"timeout": 0.0}, "timeout must be a finite number of seconds > 0"),
        ({"timeout": float("nan")}, "timeout"),
        ({"slop": 0.0}, "slop"),
    ],
)
def test_fallback_constructor_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"queue_size": 5, "slop": 0.02, "optional": [1], "timeout": 0.5}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FallbackSynchronizer(2, **args)  # type: ignore[arg-type]
