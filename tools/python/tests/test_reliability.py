"""The arithmetic of the reliability campaigns (soak.py, kill9.py)."""

from clip_edge_tools import kill9, soak


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


def test_rss_drift_fails_both_ways_and_p99_only_when_it_grows():
    ok = {"rss_drift": 0.01, "p99_drift": -0.57}
    assert soak.drift_problems(ok, 0.05, 0.5) == []
    assert soak.drift_problems({"rss_drift": -0.06, "p99_drift": 0.0}, 0.05, 0.5) == ["rss_drift -6.0% beyond ±5%"]
    assert soak.drift_problems({"rss_drift": 0.0, "p99_drift": 0.51}, 0.05, 0.5) == ["p99_drift +51.0% beyond +50%"]
