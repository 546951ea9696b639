"""What a worker needs from the node to run a swarm task (swarmkit's agent/exec Executor/Controller), and the per-task
state machine driving it (exec.Do): ASSIGNED -> ACCEPTED -> PREPARING -> READY -> STARTING -> RUNNING -> COMPLETE/FAILED.
A container with a health check stays STARTING until it is healthy (moby's container controller): only RUNNING tasks
are put behind their service's VIP and DNS and count as updated, and an unhealthy container is stopped and FAILED.
agent/worker.py runs one TaskRunner per assigned task; the node implements the interface over its engine (shoal/swarm/executor.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from proto import objects_pb2 as pb

log = logging.getLogger(__name__)
S = pb.TaskState
TERMINAL = S.TASK_STATE_COMPLETE  # from here on a task never runs again (the orchestrator makes a new one)
DEFAULT_GRACE_S = 10.0  # swarmkit's default stop grace period


@dataclass(slots=True)
class Observed:
    """A task's container as the node sees it."""

    exists: bool
    running: bool = False
    exited: bool = False  # ran and stopped (exit_code is meaningful)
    exit_code: int = 0
    container_id: str = ""
    pid: int = 0
    error: str = ""  # e.g. the OOM killer's mark
    ports: list[tuple[str, int, int]] = field(default_factory=list)  # (proto, container port, host port) published
    health: str = ""  # a running container's health check: "starting", "healthy", "unhealthy"; "" when it has none


@dataclass(slots=True)
class Dependencies:
    """What an assignment brings besides the task: configs (and secrets once the store has them) and networks, by id."""

    configs: dict[str, pb.Config] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, pb.Network] = field(default_factory=dict)


class TaskController(Protocol):
    """One task's container. Every call is idempotent: the runner may repeat one after a crash of the daemon."""

    async def inspect(self) -> Observed: ...

    async def prepare(self) -> None:
        """Create the container (image, command, env, mounts, limits, configs and secrets) and attach it to the
        task's networks with the allocator's addresses. Raises on a refusal (the task is REJECTED)."""

    async def start(self) -> None: ...

    async def wait(self) -> Observed:
        """Returns once the container is not running any more."""

    async def wait_health(self, seen: str) -> str:
        """The container's health status once it differs from `seen`, or once the container is not running any
        more ("" then, and when it has no check or is gone). Only called when inspect() saw a health status."""

    async def shutdown(self, grace_s: float) -> None:
        """Stop: the stop signal, then SIGKILL after grace_s."""

    async def retire(self) -> None:
        """The task will not run again and its stopped container stays (for its logs): let go of what only a running
        task needs (the node's copies of its networks). Idempotent."""

    async def remove(self) -> None:
        """Remove the container and whatever prepare made for it (config/secret files)."""


class Executor(Protocol):
    def controller(self, task: pb.Task, deps: Dependencies) -> TaskController: ...

    async def task_containers(self) -> dict[str, str]:
        """task id -> container id of every container this node runs for swarm tasks (for adoption and cleanup)."""

    async def remove_container(self, container_id: str) -> None:
        """Remove a task container no assignment owns any more (force)."""


Report = Callable[[str, pb.TaskStatus], None]
UNHEALTHY = "dockerexec: unhealthy container"  # moby's ErrContainerUnhealthy
_PROTOS = {"tcp": pb.PortConfig.TCP, "udp": pb.PortConfig.UDP, "sctp": pb.PortConfig.SCTP}


def status(state: int, message: str, err: str = "", obs: Observed | None = None) -> pb.TaskStatus:
    st = pb.TaskStatus(state=state, message=message, err=err)
    st.timestamp.FromNanoseconds(time.time_ns())
    if obs is not None and obs.container_id:
        st.container.container_id = obs.container_id
        st.container.pid = obs.pid
        st.container.exit_code = obs.exit_code
    for proto, target, published in (obs.ports if obs is not None else []):  # what host-mode publishing got
        st.port_status.add(protocol=_PROTOS.get(proto, pb.PortConfig.TCP), target_port=target, published_port=published,
                           publish_mode=pb.PortConfig.HOST)
    return st


def exit_status(obs: Observed) -> pb.TaskStatus:
    if obs.exit_code == 0 and not obs.error:
        return status(S.TASK_STATE_COMPLETE, "finished", obs=obs)
    err = obs.error or f"task: non-zero exit ({obs.exit_code})"
    return status(S.TASK_STATE_FAILED, "started", err=err, obs=obs)


def unhealthy_status(obs: Observed, message: str = "started") -> pb.TaskStatus:
    """A task's container stopped because its check failed, before it ran (message "starting") or while it ran:
    moby's exitError with the unhealthy cause, in both of its controller's paths."""
    err = f"task: non-zero exit ({obs.exit_code}): {UNHEALTHY}" if obs.exit_code else UNHEALTHY
    return status(S.TASK_STATE_FAILED, message, err=err, obs=obs if obs.exists else None)


def grace_of(task: pb.Task) -> float:
    c = task.spec.container
    if any(f.name == "stop_grace_period" for f in c.DESCRIPTOR.fields) and c.HasField("stop_grace_period"):
        return c.stop_grace_period.ToNanoseconds() / 1e9
    return DEFAULT_GRACE_S


class TaskRunner:
    """Drives one task's container toward its desired state and reports each state it reaches. The task (and its
    dependencies) may be replaced at any time by update(); the loop re-reads it after every step."""

    def __init__(self, task: pb.Task, deps: Dependencies, executor: Executor, report: Report,
                 adopted: Report | None = None) -> None:
        self.task = task
        self.deps = deps
        self.executor = executor
        self.ctl = executor.controller(task, deps)
        self._report = report
        # told (task id, the managers' status) when the container of a task the managers already hold RUNNING is
        # found running (a daemon restart's adoption): nothing to report, but this node runs it
        self._adopted = adopted
        self.state = task.status.state  # the last state known to the managers or reported by us
        self.changed = asyncio.Event()
        self.removed = False  # the task left the assignments: remove the container and end
        self._retired = False  # a job's ended task let go of its networks (retire)
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name=f"task-{self.task.id[:12]}")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop

    @property
    def done(self) -> bool:
        return self._loop is not None and self._loop.done()

    def update(self, task: pb.Task, deps: Dependencies) -> None:
        self.task = task
        self.deps = deps
        self.ctl = self.executor.controller(task, deps)  # controllers hold no state: a new one sees the new spec
        self.changed.set()

    def remove(self) -> None:
        self.removed = True
        self.changed.set()

    def report(self, st: pb.TaskStatus) -> None:
        if st.state < self.state:
            return  # never backwards (the managers would refuse it anyway)
        self.state = st.state
        log.debug("perf: task %s %s", self.task.id[:12], S.Name(st.state))
        self._report(self.task.id, st)

    async def _run(self) -> None:
        while True:
            self.changed.clear()
            try:
                idle = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the step's own refusal was reported; anything else too
                log.exception("task %s: step failed", self.task.id)
                if self.state < TERMINAL:
                    self.report(status(S.TASK_STATE_FAILED, "failed", err=str(e)))
                idle = True
            if self.removed and idle:
                return
            if idle:
                await self.changed.wait()

    async def _step(self) -> bool:
        """One move toward the desired state; True when there is nothing to do until the task changes."""
        task = self.task
        # a job's task is desired COMPLETE: it runs like a service's until it ends (swarmkit: desired <= COMPLETE)
        if self.removed or task.desired_state > S.TASK_STATE_COMPLETE:
            obs = await self.ctl.inspect()
            if obs.exists:
                if obs.running:
                    await self.ctl.shutdown(grace_of(task))
                    obs = await self.ctl.inspect()
                # A task only shut down (replaced by an update or a restart) keeps its stopped container, as swarm's
                # workers do: its logs and exit stay readable (`service logs`, `ps -a`) until the task leaves the
                # history (the orchestrator deletes it: it leaves the assignments) or is removed (scaled away).
                if self.removed or task.desired_state >= S.TASK_STATE_REMOVE:
                    await self.ctl.remove()
                else:
                    await self.ctl.retire()
            if self.state < TERMINAL and not self.removed:
                self.report(status(S.TASK_STATE_SHUTDOWN, "shutdown", obs=obs if obs.exists else None))
            return True
        if self.state >= TERMINAL:
            if task.desired_state == S.TASK_STATE_COMPLETE and not self._retired:
                # a job's task that ended is never shut down (swarmkit leaves it desired COMPLETE): it lets go of
                # what only a running task needs now
                self._retired = True
                await self.ctl.retire()
            return True
        obs = await self.ctl.inspect()
        if obs.exists and obs.running:
            if self.state < S.TASK_STATE_RUNNING:
                if obs.health and obs.health != "healthy":  # started, not healthy yet (a restart, or the task changed)
                    if self.state < S.TASK_STATE_STARTING:
                        self.report(status(S.TASK_STATE_STARTING, "starting"))
                    return await self._wait_healthy(obs.health)
                self.report(status(S.TASK_STATE_RUNNING, "started", obs=obs))
            elif self._adopted is not None:
                self._adopted(task.id, task.status)
            return await self._wait_exit(obs.health)
        if obs.exists and obs.exited:  # ended while we were away (daemon restart) or before we looked
            self.report(exit_status(obs))
            return True
        if not obs.exists and self.state >= S.TASK_STATE_STARTING:  # someone removed it: never run it twice
            self.report(status(S.TASK_STATE_FAILED, "started", err="task: container removed"))
            return True
        if self.state < S.TASK_STATE_ACCEPTED:
            self.report(status(S.TASK_STATE_ACCEPTED, "accepted"))
        if not obs.exists:
            self.report(status(S.TASK_STATE_PREPARING, "preparing"))
            try:
                await self.ctl.prepare()
            except Exception as e:  # noqa: BLE001 - e.g. no such image, a network not on this node
                self.report(status(S.TASK_STATE_REJECTED, "preparing", err=str(e)))
                return True
            self.report(status(S.TASK_STATE_READY, "prepared"))
        if task.desired_state < S.TASK_STATE_RUNNING:  # READY: prepared, not started (start-first updates)
            return True
        self.report(status(S.TASK_STATE_STARTING, "starting"))
        try:
            await self.ctl.start()
        except Exception as e:  # noqa: BLE001
            obs = await self.ctl.inspect()
            self.report(status(S.TASK_STATE_FAILED, "starting", err=str(e), obs=obs if obs.exists else None))
            return True
        obs = await self.ctl.inspect()
        if obs.running:
            if obs.health:
                return await self._wait_healthy(obs.health)
            self.report(status(S.TASK_STATE_RUNNING, "started", obs=obs))
            return await self._wait_exit()
        if obs.exited:  # it was quicker than our look
            self.report(exit_status(obs))
        return True

    @property
    def _wanted(self) -> bool:
        """Still meant to run: a change of the task (shutdown, removal) is the next step's, not a failure."""
        return self.task.desired_state <= S.TASK_STATE_COMPLETE and not self.removed

    async def _wait_healthy(self, seen: str) -> bool:
        """STARTING with a running container whose check has not passed yet (moby's controller.Start): RUNNING once
        it is healthy; stopped and FAILED if it is unhealthy first. A change of the task, or the container
        stopping, ends the wait: the next step looks again (and comes back here while it still is starting)."""
        while seen != "healthy":
            if seen == "unhealthy":
                if not self._wanted:
                    return False
                await self.ctl.shutdown(grace_of(self.task))
                obs = await self.ctl.inspect()
                self.report(unhealthy_status(obs, "starting"))
                return True
            if not seen:  # stopped or removed: the next step reports how it ended
                return False
            health = asyncio.create_task(self.ctl.wait_health(seen))
            if not await self._until(health) or health.result() == seen:  # (the same again: not running any more)
                return False
            seen = health.result()
        obs = await self.ctl.inspect()
        if not obs.running:
            return False
        self.report(status(S.TASK_STATE_RUNNING, "started", obs=obs))
        return await self._wait_exit(obs.health or "healthy")

    async def _until(self, work: asyncio.Task[Any]) -> bool:
        """Waits for work or a change of the task, whichever is first; True when work finished (without raising)."""
        changed = asyncio.create_task(self.changed.wait())
        try:
            finished, _ = await asyncio.wait({work, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(work, changed)
        if work in finished and work.exception() is None:
            return True
        return False

    async def _wait_exit(self, health: str = "") -> bool:
        """RUNNING until the container exits or the task changes; with a health check, until it turns unhealthy too
        (moby's controller.Wait): then it is stopped and FAILED with the unhealthy cause."""
        waiter = asyncio.create_task(self.ctl.wait())
        changed = asyncio.create_task(self.changed.wait())
        watched: set[asyncio.Task[Any]] = {waiter, changed}
        watcher = None
        if health:  # no check: no watcher (the converge benchmark measures this path)
            watcher = asyncio.create_task(self._until_unhealthy(health))
            watched.add(watcher)
        try:
            finished, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel(*watched)
        if watcher is not None and watcher in finished and watcher.exception() is None:
            if not self._wanted:
                return False
            await self.ctl.shutdown(grace_of(self.task))
            obs = await self.ctl.inspect()
            self.report(unhealthy_status(obs))
            return True
        if waiter in finished and waiter.exception() is None:
            obs = waiter.result()
            if self._wanted:
                self.report(exit_status(obs))
            return False  # look again: a shutdown may have caused it
        return False

    async def _until_unhealthy(self, seen: str) -> None:
        """Returns once the check fails; never when the container stops first: that exit is the waiter's to report."""
        while seen and seen != "unhealthy":
            current = await self.ctl.wait_health(seen)
            seen = current if current != seen else ""  # the same again: not running any more
        if not seen:
            await asyncio.Event().wait()


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        if not t.done():
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
