"""bench/converge.py --timeline: per task, when it reached each state (the status timestamps the task API reports,
polled) and when its address first answered from each host, as seconds after `service create` started.

The poller (TimelinePoller) is the only part that talks to a daemon; Timeline and its tables are pure (unit tested).
A state that came and went between two polls has no timestamp ("-"): a hop is then measured from the last state seen.
"""
from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# The task states of swarm in order (docker's names); "ready" is swarm's, shoal goes preparing -> starting.
STATES = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")
# The hops of the table: (label, from, to). Manager side: create -> assigned; agent side: assigned -> running;
# network: running -> answered from every host.
HOPS = (("create->new", "t0", "new"), ("new->pending", "new", "pending"), ("pending->assigned", "pending", "assigned"),
        ("assigned->accepted", "assigned", "accepted"), ("accepted->running", "accepted", "running"),
        ("running->answered", "running", "answered"))
POLL_S = 0.05


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> float | None:
    """An RFC 3339 timestamp with up to nanoseconds ("2026-12-02T01:02:03.123456789Z") as epoch seconds; None for
    the zero time docker sends for an unset one, or for text that is no timestamp."""
    m = _RFC3339.match(text or "")
    if m is None or text.startswith("0001-01-01"):
        return None
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    zone = m.group(3)
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    return base + float(f"0.{m.group(2) or 0}") - offset


@dataclass(slots=True)
class TaskTimes:
    id: str
    slot: int = 0
    node: str = ""
    address: str = ""  # on the bench network, without the prefix length
    states: dict[str, float] = field(default_factory=dict)  # state -> its status timestamp (epoch seconds)
    answered: dict[str, float] = field(default_factory=dict)  # host -> first answer (epoch seconds)


@dataclass(slots=True)
class Timeline:
    """What the polls saw, by task id. t0: epoch seconds when `service create` was started."""

    t0: float
    network: str = ""
    tasks: dict[str, TaskTimes] = field(default_factory=dict)
    polls: int = 0

    def observe(self, listed: Iterable[dict[str, Any]]) -> None:
        """One poll of GET /tasks: records each task's current state with its status timestamp (first seen wins)."""
        self.polls += 1
        for t in listed:
            tid = str(t.get("ID") or "")
            if not tid:
                continue
            times = self.tasks.setdefault(tid, TaskTimes(tid))
            times.slot = int(t.get("Slot") or 0)
            times.node = str(t.get("NodeID") or times.node)
            status = t.get("Status") or {}
            state = str(status.get("State") or "")
            at = parse_time(str(status.get("Timestamp") or ""))
            if state and at is not None and state not in times.states:
                times.states[state] = at
            created = parse_time(str(t.get("CreatedAt") or ""))
            if created is not None and "created" not in times.states:
                times.states["created"] = created
            for att in t.get("NetworksAttachments") or []:
                if self.network and ((att.get("Network") or {}).get("Spec") or {}).get("Name") != self.network:
                    continue
                for addr in att.get("Addresses") or []:
                    times.address = str(addr).split("/")[0]

    def answered(self, host: str, address: str, at: float) -> None:
        for times in self.tasks.values():
            if times.address == address:
                times.answered.setdefault(host, at)


def reached(times: TaskTimes, point: str, t0: float) -> float | None:
    """When the task reached `point` (a state, "t0" or "answered": its last host's first answer), seconds after t0."""
    if point == "t0":
        return 0.0
    if point == "answered":
        return max(times.answered.values()) - t0 if times.answered else None
    at = times.states.get(point)
    return at - t0 if at is not None else None


def hop(times: TaskTimes, start: str, end: str, t0: float) -> float | None:
    """Seconds from `start` to `end`; a start state the polls missed is replaced by the latest earlier one seen."""
    b = reached(times, end, t0)
    if b is None:
        return None
    order = ("t0", "created", *STATES, "answered")
    for point in reversed(order[:order.index(start) + 1]):
        a = reached(times, point, t0)
        if a is not None:
            return b - a
    return None


def _cell(v: float | None) -> str:
    return f"{v:6.2f}" if v is not None else "     -"


def table(tl: Timeline, node_names: dict[str, str] | None = None) -> str:
    """One row per task (by slot): when it reached each state and answered from every host, then per hop the
    median and the max over the tasks."""
    names = node_names or {}
    shown = ("new", "pending", "assigned", "accepted", "preparing", "starting", "running", "answered")
    head = f"{'slot':>4} {'node':<8}" + "".join(f"{s[:7]:>8}" for s in shown)
    lines = [f"timeline: seconds after `service create` started ({tl.polls} polls of the task list, every "
             f"{POLL_S:g} s: a state shorter than that may be missed, '-')", head]
    rows = sorted(tl.tasks.values(), key=lambda t: (t.slot, t.id))
    for t in rows:
        lines.append(f"{t.slot:>4} {names.get(t.node, t.node[:8]):<8}"
                     + "".join(f"  {_cell(reached(t, s, tl.t0))}" for s in shown))
    lines.append(hop_summary(rows, tl.t0))
    return "\n".join(lines)


def hop_summary(rows: Sequence[TaskTimes], t0: float) -> str:
    parts = []
    for label, a, b in HOPS:
        values = [v for v in (hop(t, a, b, t0) for t in rows) if v is not None]
        if values:
            parts.append(f"{label} median {statistics.median(values):.2f} max {max(values):.2f} s")
        else:
            parts.append(f"{label} n/a")
    ends = []
    for point in ("assigned", "running", "answered"):
        seen = [v for v in (reached(t, point, t0) for t in rows) if v is not None]
        ends.append(f"last {point} {max(seen):.2f} s ({len(seen)} seen)" if seen else f"last {point} n/a")
    return "hops: " + "; ".join(parts) + "\n" + ", ".join(ends)


class TimelinePoller:
    """A thread polling `list_tasks()` every POLL_S until stop(): feeds a Timeline."""

    def __init__(self, timeline: Timeline, list_tasks: Callable[[], list[dict[str, Any]]]) -> None:
        self.timeline = timeline
        self.list_tasks = list_tasks
        self.lock = threading.Lock()
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.list_tasks()
            except Exception:  # noqa: BLE001 - a busy daemon: the next poll tries again
                self.errors += 1
                listed = []
            with self.lock:
                if listed:
                    self.timeline.observe(listed)
            self._stop.wait(POLL_S)

    def answered(self, host: str, address: str) -> None:
        with self.lock:
            self.timeline.answered(host, address, time.time())


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description="The timeline of bench/converge.py; it has no run of its own: "
                                        "python bench/converge.py --timeline").parse_args()
    print("run: python bench/converge.py --timeline")
