"""A reconcile plan: the tasks a core wants created and the task updates (desired state, status) it wants written,
returned by the pure cores (replicated.py, global_.py, update.py); and the runners' one wait helper."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from proto import objects_pb2 as pb


@dataclass(slots=True)
class Plan:
    create: list[pb.Task] = field(default_factory=list)
    update: list[pb.Task] = field(default_factory=list)  # full tasks, as read, with their changes made
    service: pb.Service | None = None  # the service with its update_status/spec changed, if it must be written
    wake_at_ns: int | None = None  # run again at this time (a restart delay, an update delay or monitor)

    def wake(self, at_ns: int) -> None:
        if self.wake_at_ns is None or at_ns < self.wake_at_ns:
            self.wake_at_ns = at_ns

    def merge(self, other: Plan) -> None:
        self.create += other.create
        self.update += other.update
        if other.service is not None:
            self.service = other.service
        if other.wake_at_ns is not None:
            self.wake(other.wake_at_ns)

    def __len__(self) -> int:
        return len(self.create) + len(self.update) + (1 if self.service is not None else 0)


def set_desired(task: pb.Task, state: int) -> pb.Task:
    t = pb.Task()
    t.CopyFrom(task)
    t.desired_state = state
    return t


async def wait_or_timeout(event: asyncio.Event, timeout: float) -> None:
    """Until event is set or timeout passes. asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
    cancellation that races with the event, and a runner's stop() would then wait forever."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
