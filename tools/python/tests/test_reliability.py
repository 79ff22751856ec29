"""The arithmetic of the reliability campaigns (soak.py, kill9.py, powercut.py)."""

from clip_edge_tools import kill9, powercut, soak


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


def _judged(prev: bytes, now: bytes | None, writer: str, finished: bool, listings: dict) -> dict:
    c = powercut.Campaign.__new__(powercut.Campaign)
    c.listing = listings.get
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


def test_the_push_without_mosquitto_stops_with_a_message_naming_it(monkeypatch, tmp_path):
    monkeypatch.setattr(kill9.shutil, "which", lambda *a, **k: None)
    try:
        kill9.Broker(tmp_path)
    except SystemExit as e:
        assert "mosquitto" in str(e) and "--no-mqtt" in str(e)
    else:
        raise AssertionError("Broker started without mosquitto")
