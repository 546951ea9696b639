"""A task whose container has a health check (agent/taskexec.py, as moby's container controller): STARTING until the
check passes, then RUNNING; stopped and FAILED when it fails, before or after; over a fake controller whose
container's health the test sets step by step."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agent.taskexec import Dependencies, Observed, TaskRunner
from proto import objects_pb2 as pb

S = pb.TaskState
UNHEALTHY = "dockerexec: unhealthy container"


class Container:
    """One task's container with a health status ("" = no check) and the controller calls over it."""

    def __init__(self, health: str = "starting", stop_code: int = 143) -> None:
        self.state = ""  # "", "created", "running", "exited"
        self.health = health
        self.exit_code = 0
        self.stop_code = stop_code  # what the container exits with when it is shut down
        self.shutdowns: list[float] = []
        self.health_waits = 0
        self.changed = asyncio.Condition()

    def controller(self, task: pb.Task, deps: Dependencies) -> Any:
        return self

    async def task_containers(self) -> dict[str, str]:
        return {}

    async def remove_container(self, container_id: str) -> None:
        self.state = ""

    async def set(self, state: str | None = None, health: str | None = None, exit_code: int = 0) -> None:
        async with self.changed:
            if state is not None:
                self.state, self.exit_code = state, exit_code
            if health is not None:
                self.health = health
            self.changed.notify_all()

    async def inspect(self) -> Observed:
        if not self.state:
            return Observed(False)
        running = self.state == "running"
        return Observed(True, running=running, exited=self.state == "exited", exit_code=self.exit_code, container_id="c1",
                        health=self.health if running else "")

    async def prepare(self) -> None:
        self.state = "created"

    async def start(self) -> None:
        self.state = "running"

    async def wait(self) -> Observed:
        async with self.changed:
            await self.changed.wait_for(lambda: self.state != "running")
        return await self.inspect()

    async def wait_health(self, seen: str) -> str:
        self.health_waits += 1
        async with self.changed:
            await self.changed.wait_for(lambda: self.state != "running" or self.health != seen)
        return self.health if self.state == "running" else ""

    async def shutdown(self, grace_s: float) -> None:
        self.shutdowns.append(grace_s)
        if self.state == "running":
            await self.set("exited", exit_code=self.stop_code)

    async def retire(self) -> None:
        pass

    async def remove(self) -> None:
        self.state = ""


def task(state: int = S.TASK_STATE_ASSIGNED, grace_s: int = 0) -> pb.Task:
    t = pb.Task(id="t0123456789abcdef0123456", service_id="s1", slot=1, node_id="n1", desired_state=S.TASK_STATE_RUNNING)
    t.annotations.name = f"web.1.{t.id}"
    t.spec.container.image = "busybox"
    if grace_s:
        t.spec.container.stop_grace_period.FromSeconds(grace_s)
    t.status.state = state
    return t


Step = Callable[[Container, TaskRunner], Awaitable[None]]


def drive(c: Container, t: pb.Task, *steps: Step) -> list[list[tuple[int, str, str]]]:
    """The statuses reported after the runner settles, then after each step settles (one list per point)."""
    seen: list[tuple[int, str, str]] = []
    points: list[list[tuple[int, str, str]]] = []

    async def settle() -> None:
        for _ in range(50):
            await asyncio.sleep(0)
        points.append(seen[:])
        seen.clear()

    async def run() -> None:
        r = TaskRunner(t, Dependencies(), c, lambda _tid, st: seen.append((st.state, st.message, st.err)))
        r.start()
        await settle()
        for step in steps:
            await step(c, r)
            await settle()
        await r.close()

    asyncio.run(run())
    return points


def health(status: str) -> Step:
    async def step(c: Container, _r: TaskRunner) -> None:
        await c.set(health=status)
    return step


def exits(code: int) -> Step:
    async def step(c: Container, _r: TaskRunner) -> None:
        await c.set("exited", exit_code=code)
    return step


def desired(state: int) -> Step:
    async def step(c: Container, r: TaskRunner) -> None:
        t = pb.Task()
        t.CopyFrom(r.task)
        t.desired_state = state
        r.update(t, Dependencies())
    return step


UP_TO_STARTING = [(S.TASK_STATE_ACCEPTED, "accepted", ""), (S.TASK_STATE_PREPARING, "preparing", ""),
                  (S.TASK_STATE_READY, "prepared", ""), (S.TASK_STATE_STARTING, "starting", "")]


def test_a_task_with_a_check_stays_starting_until_healthy_then_runs() -> None:
    c = Container()
    assert drive(c, task(), health("healthy")) == [UP_TO_STARTING, [(S.TASK_STATE_RUNNING, "started", "")]]
    assert (c.state, c.shutdowns) == ("running", [])


def test_a_check_failing_before_healthy_stops_the_container_with_the_tasks_grace_and_fails_it() -> None:
    c = Container()
    assert drive(c, task(grace_s=3), health("unhealthy")) == [
        UP_TO_STARTING, [(S.TASK_STATE_FAILED, "starting", f"task: non-zero exit (143): {UNHEALTHY}")]]
    assert (c.state, c.shutdowns) == ("exited", [3.0])


def test_a_check_failing_while_running_stops_the_container_and_fails_it_with_its_exit_code() -> None:
    c = Container(stop_code=137)
    assert drive(c, task(), health("healthy"), health("unhealthy")) == [
        UP_TO_STARTING, [(S.TASK_STATE_RUNNING, "started", "")],
        [(S.TASK_STATE_FAILED, "started", f"task: non-zero exit (137): {UNHEALTHY}")]]
    assert (c.state, c.shutdowns) == ("exited", [10.0])


def test_an_unhealthy_container_that_stops_with_zero_still_fails() -> None:
    c = Container(stop_code=0)
    assert drive(c, task(), health("healthy"), health("unhealthy"))[-1] == [(S.TASK_STATE_FAILED, "started", UNHEALTHY)]


def test_a_container_exiting_while_its_check_is_starting_ends_the_task_with_its_exit_never_running() -> None:
    c = Container()
    assert drive(c, task(), exits(1)) == [UP_TO_STARTING, [(S.TASK_STATE_FAILED, "started", "task: non-zero exit (1)")]]
    assert c.shutdowns == []


def test_a_task_shut_down_while_its_check_is_starting_is_shutdown_and_its_container_kept_stopped() -> None:
    c = Container()
    assert drive(c, task(), desired(S.TASK_STATE_SHUTDOWN)) == [UP_TO_STARTING, [(S.TASK_STATE_SHUTDOWN, "shutdown", "")]]
    assert (c.state, c.shutdowns) == ("exited", [10.0])


def test_a_task_removed_from_the_assignments_while_its_check_is_starting_has_its_container_removed_unreported() -> None:
    async def removed(_c: Container, r: TaskRunner) -> None:
        r.remove()

    c = Container()
    assert drive(c, task(), removed) == [UP_TO_STARTING, []]
    assert (c.state, c.shutdowns) == ("", [10.0])


def test_a_task_changed_while_its_check_is_starting_keeps_waiting_for_healthy() -> None:
    c = Container()
    assert drive(c, task(), desired(S.TASK_STATE_RUNNING), health("healthy")) == [
        UP_TO_STARTING, [], [(S.TASK_STATE_RUNNING, "started", "")]]


def test_a_restarted_node_finding_a_starting_task_with_a_starting_check_keeps_waiting() -> None:
    c = Container()
    c.state = "running"
    assert drive(c, task(S.TASK_STATE_STARTING), health("healthy")) == [[], [(S.TASK_STATE_RUNNING, "started", "")]]


def test_a_restarted_node_finding_a_starting_task_already_healthy_reports_it_running() -> None:
    c = Container(health="healthy")
    c.state = "running"
    assert drive(c, task(S.TASK_STATE_STARTING)) == [[(S.TASK_STATE_RUNNING, "started", "")]]


def test_a_running_task_adopted_after_a_restart_is_still_watched_by_its_check() -> None:
    c = Container()
    c.state = "running"
    assert drive(c, task(S.TASK_STATE_RUNNING), health("unhealthy")) == [
        [], [(S.TASK_STATE_FAILED, "started", f"task: non-zero exit (143): {UNHEALTHY}")]]


def test_without_a_check_a_task_runs_as_soon_as_started_and_its_health_is_never_waited_for() -> None:
    c = Container(health="")
    assert drive(c, task(), exits(2)) == [UP_TO_STARTING + [(S.TASK_STATE_RUNNING, "started", "")],
                                          [(S.TASK_STATE_FAILED, "started", "task: non-zero exit (2)")]]
    assert c.health_waits == 0
