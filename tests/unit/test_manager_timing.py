"""manager/timing.py's Span (the SHOAL_TIMING=1 notes of bench/converge.py --timeline): planning time apart from the
time its proposals waited, over a pass that makes several proposals."""

from __future__ import annotations

import logging

import pytest

from manager import timing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_span_counts_planning_apart_from_the_waits_of_its_proposals(caplog: pytest.LogCaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "ENABLED", True)
    clock = Clock()
    span = timing.Span("orchestrator s1", clock)
    for plan_s, wait_s, items in ((0.010, 0.200, 190), (0.005, 0.100, 10)):
        clock.now += plan_s
        span.plan_done()
        started = clock.now
        clock.now += wait_s
        span.proposed(started, items)
    with caplog.at_level(logging.INFO, logger="manager.timing"):
        span.end()
    assert caplog.messages == ["orchestrator s1: plan 15.0 ms, 2 proposals of 200 items waited 300.0 ms, total 315.0 ms"]


def test_a_span_logs_nothing_unless_shoal_timing_is_on(caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "ENABLED", False)
    span = timing.Span("scheduler", Clock())
    span.proposed(100.0, 3)
    with caplog.at_level(logging.INFO, logger="manager.timing"):
        span.end()
    assert caplog.messages == []
