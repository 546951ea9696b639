"""common.aiowait.LeadingWindow: the first change after a quiet spell is handled at once, later ones at most once per
window. A fake clock and a recording sleep: what is asserted is the pause asked for, not time measured."""
from __future__ import annotations

import asyncio

import pytest

from common.aiowait import LeadingWindow


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def settle_at(window: LeadingWindow, t: FakeTime, at: float) -> None:
    t.now = at
    asyncio.run(window.settle())


def test_the_first_change_is_handled_after_one_turn_of_the_loop_not_a_window() -> None:
    t = FakeTime()
    window = LeadingWindow(0.02, clock=t.clock, sleep=t.sleep)
    settle_at(window, t, 100.0)
    assert t.slept == [0.0]


def test_a_change_within_the_window_waits_for_the_rest_of_it() -> None:
    t = FakeTime()
    window = LeadingWindow(0.05, clock=t.clock, sleep=t.sleep)
    settle_at(window, t, 100.0)
    settle_at(window, t, 100.01)
    assert t.slept[1] == pytest.approx(0.04)


def test_a_stream_of_changes_settles_once_per_window() -> None:
    t = FakeTime()
    window = LeadingWindow(0.02, clock=t.clock, sleep=t.sleep)
    settle_at(window, t, 100.0)
    settle_at(window, t, 100.0)  # the next change comes while the first is handled
    settle_at(window, t, t.now)  # and the next: each waits the whole window after the previous settle
    assert t.slept == [0.0, pytest.approx(0.02), pytest.approx(0.02)]


def test_a_change_after_a_quiet_window_is_handled_at_once_again() -> None:
    t = FakeTime()
    window = LeadingWindow(0.02, clock=t.clock, sleep=t.sleep)
    settle_at(window, t, 100.0)
    settle_at(window, t, 100.5)
    assert t.slept == [0.0, 0.0]


def test_a_zero_window_never_waits() -> None:
    t = FakeTime()
    window = LeadingWindow(0.0, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        settle_at(window, t, t.now)
    assert t.slept == [0.0, 0.0, 0.0]
