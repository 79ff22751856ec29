"""The arithmetic of the reliability campaigns (soak.py, kill9.py, powercut.py, reorder.py)."""

import random
import struct
import types

import pytest

from clip_edge_tools import kill9, powercut, reorder, soak


def test_drift_is_the_fitted_change_over_the_run_relative_to_the_mean():
    xs = [0.0, 10.0, 20.0, 30.0]
    assert soak.drift(xs, [100.0] * 4) == 0.0
    # 100 -> 130 along a line: +30 over a mean of 115.
    assert abs(soak.drift(xs, [100.0, 110.0, 120.0, 130.0]) - 30 / 115) < 1e-12
    assert soak.drift([0.0], [5.0]) == 0.0


def test_p99_takes_the_99th_percentile_sample():
    assert soak.p99(list(range(1, 101))) == 100
    assert soak.p99([3.0]) == 3.0
    assert soak.p99([]) != soak.p99([])  # NaN for an empty window


def test_the_expected_store_after_an_enrolment_caps_shots_per_class():
    c = kill9.Campaign.__new__(kill9.Campaign)
    before = (("dog", "class", True, 0),)
    assert c.after_add(before) == (("dog", "class", True, 0), (kill9.CLASS, "class", False, 2))
    full = before + ((kill9.CLASS, "class", False, 15),)
    assert c.after_add(full) == (("dog", "class", True, 0), (kill9.CLASS, "class", False, 16))
    assert c.after_remove(full) == before
    assert c.after_remove(before) is None


def test_a_push_sends_the_store_that_differs_from_what_the_board_holds():
    c = kill9.Campaign.__new__(kill9.Campaign)
    a, b = (("dog", "class", True, 0),), (("dog", "class", True, 0), ("pushed class", "class", False, 2))
    c.push_stores, c.push_listings = ["a.store", "b.store"], [a, b]
    assert (c.after_push(a), c.push_target) == (b, "b.store")
    assert (c.after_push(b), c.push_target) == (a, "a.store")
    assert (c.after_push((("cat", "class", True, 0),)), c.push_target) == (a, "a.store")


def test_rss_drift_fails_both_ways_and_p99_only_when_it_grows():
    ok = {"rss_drift": 0.01, "p99_drift": -0.57}
    assert soak.drift_problems(ok, 0.05, 0.5) == []
    assert soak.drift_problems({"rss_drift": -0.06, "p99_drift": 0.0}, 0.05, 0.5) == ["rss_drift -6.0% beyond ±5%"]
    assert soak.drift_problems({"rss_drift": 0.0, "p99_drift": 0.51}, 0.05, 0.5) == ["p99_drift +51.0% beyond +50%"]


def _judged(prev: bytes, now: bytes | None, writer: str, finished: bool, listings: dict,
            pushed: bytes | None = None) -> dict:
    c = powercut.Campaign.__new__(powercut.Campaign)
    c.listing = listings.get
    c.pusher = types.SimpleNamespace(pushed=pushed)
    stats = {"old_content": 0, "new_content": 0, "invalid": 0, "mixed": 0, "lost_after_finish": 0,
             "by_writer": {writer: {"cuts": 1, "old": 0, "new": 0, "bad": 0}}}
    c.judge(stats, 2, prev, now, (writer, finished))
    return {k: v for k, v in stats.items() if k != "by_writer" and v}


def test_a_power_cut_leaves_the_old_or_the_new_store_and_nothing_else():
    base = (("dog", "class", True, 0),)
    listings = {b"old": base, b"new": base + ((powercut.CLASS, "class", False, 2),),
                b"one": base + ((powercut.CLASS, "class", False, 1),), b"other": (("cat", "class", True, 0),)}
    assert _judged(b"old", b"old", "enroll", False, listings) == {"old_content": 1}
    assert _judged(b"old", b"new", "enroll", False, listings) == {"new_content": 1}
    assert _judged(b"old", b"new", "enroll", True, listings) == {"new_content": 1}
    # A write the guest saw finish must survive the cut.
    assert _judged(b"old", b"old", "enroll", True, listings) == {"lost_after_finish": 1}
    # The CLI enrols 2 frames; a button press stores 1 or 2.
    assert _judged(b"old", b"one", "enroll", False, listings) == {"mixed": 1}
    assert _judged(b"old", b"one", "button", False, listings) == {"new_content": 1}
    assert _judged(b"old", b"other", "button", False, listings) == {"mixed": 1}
    assert _judged(b"old", b"torn", "enroll", False, listings) == {"invalid": 1}
    assert _judged(b"old", None, "enroll", False, listings) == {"invalid": 1}


def test_at_the_cap_a_new_store_differs_in_bytes_only():
    full = (("dog", "class", True, 0), (powercut.CLASS, "class", False, 16))
    listings = {b"a": full, b"b": full}
    assert _judged(b"a", b"b", "enroll", False, listings) == {"new_content": 1}
    assert _judged(b"a", b"a", "enroll", False, listings) == {"old_content": 1}


def test_a_cut_push_leaves_the_old_store_or_exactly_the_pushed_one():
    base = (("dog", "class", True, 0),)
    pushed = base + (("pushed class", "class", False, 2),)
    listings = {b"old": base, b"pushed": pushed, b"alike": pushed}
    assert _judged(b"old", b"old", "push", False, listings, b"pushed") == {"old_content": 1}
    assert _judged(b"old", b"pushed", "push", False, listings, b"pushed") == {"new_content": 1}
    assert _judged(b"old", b"old", "push", True, listings, b"pushed") == {"lost_after_finish": 1}
    # Another store with the same listing is not what was pushed.
    assert _judged(b"old", b"alike", "push", False, listings, b"pushed") == {"mixed": 1}
    assert _judged(b"old", None, "push", False, listings, b"pushed") == {"invalid": 1}


def test_the_push_without_mosquitto_stops_with_a_message_naming_it(monkeypatch, tmp_path):
    monkeypatch.setattr(kill9.shutil, "which", lambda *a, **k: None)
    try:
        kill9.Broker(tmp_path)
    except SystemExit as e:
        assert "mosquitto" in str(e) and "--no-mqtt" in str(e)
    else:
        raise AssertionError("Broker started without mosquitto")


def write_log(requests: list[tuple[int, int, bytes]], ss: int = 512) -> bytes:
    """A dm-log-writes log of (sector, flags, data) requests, as QEMU's blklogwrites writes it."""
    out = struct.pack("<QQQI", reorder.MAGIC, 1, len(requests), ss).ljust(ss, b"\0")
    for sector, flags, data in requests:
        out += struct.pack("<QQQQ", sector, len(data) // ss, flags, 0).ljust(ss, b"\0") + data
    return out


def test_a_write_log_replays_to_the_disk_it_recorded():
    a, b, c = b"a" * 1024, b"b" * 512, b"c" * 512
    log = write_log([(2, 0, a), (0, reorder.FLUSH, b""), (3, 0, b), (1, 0, c), (0, reorder.FLUSH, b"")])
    entries, count = reorder.parse_log(log + bytes(2048))  # zeros after the last entry end the log
    assert count == len(entries) == 5
    assert [(e.offset, e.length, e.flags) for e in entries] == [
        (1024, 1024, 0), (0, 0, reorder.FLUSH), (1536, 512, 0), (512, 512, 0), (0, 0, reorder.FLUSH)]
    img = bytearray(4096)
    for e in entries:
        reorder.apply(img, log, e)
    assert img == bytes(512) + c + a[:512] + b + bytes(2048)
    eps = reorder.epochs(entries)
    assert [[e.index for e in ep] for ep in eps] == [[0], [2, 3], []]


def test_a_cut_short_or_foreign_log_is_an_error():
    log = write_log([(2, 0, b"a" * 1024)])
    with pytest.raises(reorder.LogError, match="cut short"):
        reorder.parse_log(log[:-1])
    with pytest.raises(reorder.LogError, match="not a dm-log-writes log"):
        reorder.parse_log(b"\0" * 512 + log[512:])
    with pytest.raises(reorder.LogError, match="past the disk"):
        reorder.apply(bytearray(1024), log, reorder.parse_log(log)[0][0])


def test_a_fua_write_ends_its_epoch_and_a_discard_reads_as_zeros():
    log = write_log([(0, 0, b"x" * 512), (1, reorder.FUA, b"y" * 512), (2, 0, b"z" * 512)])
    log += struct.pack("<QQQQ", 0, 1, reorder.DISCARD, 0).ljust(512, b"\0")
    entries, _ = reorder.parse_log(log)
    assert [[e.index for e in ep] for ep in reorder.epochs(entries)] == [[0, 1], [2, 3]]
    img = bytearray(b"q" * 2048)
    reorder.apply(img, log, entries[3])
    assert img[:512] == bytes(512)


def test_the_crash_states_of_an_epoch_hold_every_prefix_and_every_subset_of_a_short_one():
    rng = random.Random(1)
    short = reorder.subsets(3, rng, 32)
    assert len(short) == len(set(short)) == 8
    long = reorder.subsets(10, rng, 32)
    assert len(long) == len(set(long))
    assert all(tuple(range(k)) in long for k in range(11))
    assert all((i,) in long and tuple(j for j in range(10) if j != i) in long for i in range(10))
    assert all(list(c) == sorted(c) for c in long)


def test_a_state_holds_the_finished_write_only_with_every_write_before_it():
    log = write_log([(0, 0, b"a" * 512), (1, 0, b"b" * 512), (0, reorder.FLUSH, b""), (2, 0, b"c" * 512)])
    eps = reorder.epochs(reorder.parse_log(log)[0])
    assert reorder.holds_all_before(eps, 0, (0, 1), 2)
    assert not reorder.holds_all_before(eps, 0, (1,), 2)
    assert not reorder.holds_all_before(eps, 0, (0, 1), 4)  # entry 3 lies in the next epoch
    assert reorder.holds_all_before(eps, 1, (0,), 4)
    assert not reorder.holds_all_before(eps, 1, (), 4)


def test_the_sampled_crash_states_keep_every_flush_point_and_skip_the_epochs_before_the_writer():
    requests = []
    for k in range(6):  # six epochs of 8 writes, then a flush each
        requests += [(k * 8 + j, 0, b"w" * 512) for j in range(8)] + [(0, reorder.FLUSH, b"")]
    eps = reorder.epochs(reorder.parse_log(write_log(requests))[0])
    first = 2 * 9  # the writer started with the third epoch
    everything = reorder.plan_states(eps, first, 10**6, random.Random(1))
    assert {i for i, _ in everything} == {2, 3, 4, 5}
    capped = reorder.plan_states(eps, first, 20, random.Random(1))
    assert len(capped) == 20 and set(capped) <= set(everything)
    assert all((i, tuple(range(8))) in capped for i in (2, 3, 4, 5))


def test_the_end_mark_waits_for_the_log_to_settle_and_gives_up_on_one_that_keeps_growing(tmp_path):
    import threading
    import time

    log = tmp_path / "log"
    log.write_bytes(b"x" * 10)

    def grow(times):
        for _ in range(times):
            time.sleep(0.1)
            with log.open("ab") as f:
                f.write(b"y")

    t = threading.Thread(target=grow, args=(3,))
    t.start()
    assert reorder.settled_size(log, quiet=0.3, within=2.0) == 13
    t.join()
    t = threading.Thread(target=grow, args=(12,))
    t.start()
    assert reorder.settled_size(log, quiet=0.3, within=0.8) is None
    t.join()
