"""The bench's own arithmetic (pure functions; the bench itself runs with `make bench`)."""

from __future__ import annotations

from bench.sampling import readable_lag


def test_readable_lag_weights_each_tick_by_the_logs_it_acknowledged() -> None:
    ticks = [
        {"t": 1.0, "acked": 100},
        {"t": 2.0, "acked": 400},  # 300 logs, readable 1.5 s later
        {"t": 3.0, "acked": 400},  # nothing new: no weight
        {"t": 4.0, "acked": 500},
    ]
    stats = [
        {"t": 1.5, "landed": 0},
        {"t": 2.2, "landed": 100},  # tick 1: 1.2 s
        {"t": 3.5, "landed": 400},  # tick 2: 1.5 s
        {"t": 9.0, "landed": 500},  # tick 4: 5 s
    ]
    lag = readable_lag(ticks, stats)
    assert lag["p50"] == 1500.0  # 100 logs at 1.2 s, 300 at 1.5 s, 100 at 5 s
    assert lag["p99"] == 5000.0 and lag["max"] == 5000.0
    assert lag["logs_not_seen_landed"] == 0


def test_readable_lag_counts_what_never_showed_up_and_handles_nothing() -> None:
    ticks = [{"t": 1.0, "acked": 100}, {"t": 2.0, "acked": 300}]
    lag = readable_lag(ticks, [{"t": 1.1, "landed": 150}])
    assert lag["p50"] == 100.0 and lag["logs_not_seen_landed"] == 200
    empty = readable_lag([], [])
    assert (empty["p50"], empty["p99"], empty["max"], empty["logs_not_seen_landed"]) == (None, None, None, 0)
