"""Runs containers' health checks: one asyncio task per running container with a check; each probe
is an exec of the engine (so `docker events` shows its exec_create/exec_start/exec_die as Docker's).

The rules (status, streak, log, intervals) are shoal.engine.health's; the Engine (shoal.engine.engine)
starts a monitor at each start and restore, stops it at stop/exit/remove, and waits on its changes.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal as signals
import time
from typing import Any

from shoal.engine.errors import EngineError
from shoal.engine import health
from shoal.engine.records import ContainerRecord
from shoal.engine.requests import ExecCreate

log = logging.getLogger(__name__)

KILL_RETRY_SECONDS = 0.05  # runc may not have written the probe's pid file yet
KILL_GRACE_SECONDS = 5.0  # then runc exec itself is killed (its process may stay: logged)


class HealthMonitors:
    """The monitors of one engine. `changed(id)` wakes Engine.wait_health's waiters."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stops: dict[str, asyncio.Event] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._leftover: set[asyncio.Task[None]] = set()  # execs that would not end (see _kill_probe)

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, container: ContainerRecord) -> None:
        """Called on the loop once the container runs (start, restart, daemon restore): status
        "starting", FailingStreak 0, and a new monitor. A container without a check has no Health."""
        self._signal_stop(container.id)  # an earlier monitor, if one is left, ends by itself
        probe = health.probe_of(container.healthcheck, self._shell(container))
        if probe is None:
            if container.health is not None:
                container.health = None
                self.changed(container.id)
            return
        container.health = health.restarted(container.health)
        self.changed(container.id)
        stop = asyncio.Event()
        self._stops[container.id] = stop
        task = asyncio.get_running_loop().create_task(self._monitor(container, probe, stop))
        self._tasks[container.id] = task
        task.add_done_callback(lambda t, cid=container.id: self._forget(cid, t))

    async def stop(self, container_id: str) -> None:
        """Ends the container's monitor and waits for it: a probe in flight is killed first."""
        task = self._tasks.get(container_id)
        self._signal_stop(container_id)
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def close(self) -> None:
        """Daemon shutdown: every monitor ends (the containers keep running)."""
        tasks = list(self._tasks.values())
        for container_id in list(self._stops):
            self._signal_stop(container_id)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def running(self) -> list[str]:
        """Ids of containers with a monitor (tests check none is left)."""
        return [cid for cid, task in self._tasks.items() if not task.done()]

    def _signal_stop(self, container_id: str) -> None:
        stop = self._stops.pop(container_id, None)
        if stop is not None:
            stop.set()

    def _forget(self, container_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(container_id) is task:
            del self._tasks[container_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("container %s: health monitor failed", container_id[:12], exc_info=task.exception())

    # ---- waiting for changes --------------------------------------------------------
    def changed(self, container_id: str) -> None:
        """The health status changed, or the container stopped or went: wake the waiters."""
        event = self._changed.pop(container_id, None)
        if event is not None:
            event.set()

    def change_event(self, container_id: str) -> asyncio.Event:
        return self._changed.setdefault(container_id, asyncio.Event())

    # ---- the monitor ----------------------------------------------------------------
    async def _monitor(self, container: ContainerRecord, probe: health.Probe, stop: asyncio.Event) -> None:
        started_ns = _unix_ns(container.started_at) or time.time_ns()
        while True:
            status = (container.health or {}).get("Status", health.STARTING)
            wait = health.next_wait(probe, status, (time.time_ns() - started_ns) / health.NANOS)
            if await _stopped_within(stop, wait):
                return
            if container.state != "running" or container.id not in self._engine.containers:
                return
            if container.paused:  # a frozen container cannot run the probe; Docker skips it too
                continue
            result = await self._probe(container, probe, stop)
            if stop.is_set():  # the container stopped meanwhile: moby drops the result too
                return
            old = (container.health or {}).get("Status")
            container.health = health.apply_result(container.health or health.initial(), result, probe, started_ns)
            new = container.health["Status"]
            if new != old:
                self._engine.emit_container(container, f"health_status: {new}")
                self.changed(container.id)
                await self._save(container)

    async def _save(self, container: ContainerRecord) -> None:
        """Best effort: a restarted daemon begins again from "starting" anyway."""
        try:
            await self._engine._save_off_loop(container)
        except Exception as exc:  # noqa: BLE001 - the check goes on without the record
            log.warning("container %s: cannot save its health status: %s", container.id[:12], exc)

    async def _probe(self, container: ContainerRecord, probe: health.Probe, stop: asyncio.Event) -> health.Result:
        """One run of the check as an exec in the container (its user, working dir and env)."""
        engine = self._engine
        start_ns = time.time_ns()
        try:
            record = await engine.create_exec(container.id, ExecCreate(cmd=list(probe.argv)))
        except EngineError as exc:
            return health.Result(start_ns, time.time_ns(), -1, exc.message)
        runs: list[Any] = []
        output = bytearray()

        async def collect() -> None:
            async for _stream, chunk in engine.run_exec(record.id, started=runs.append, pid_file=True):
                if len(output) <= health.MAX_OUTPUT_LEN:  # one byte more tells a truncation
                    output.extend(chunk[: health.MAX_OUTPUT_LEN + 1 - len(output)])

        collecting = asyncio.get_running_loop().create_task(collect())
        stopping = asyncio.get_running_loop().create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({collecting, stopping}, timeout=probe.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        try:
            if collecting not in done:
                await self._kill_probe(container, runs, collecting)
                if not collecting.done():
                    self._leftover.add(collecting)
                    collecting.add_done_callback(self._leftover.discard)
                text = health.limited_output(bytes(output))
                return health.Result(start_ns, time.time_ns(), -1, health.timeout_output(probe.timeout_ns, text))
            collecting.result()
        except Exception as exc:  # noqa: BLE001 - the container stopped between create and start...
            return health.Result(start_ns, time.time_ns(), -1, getattr(exc, "message", None) or str(exc))
        finally:
            engine.execs.pop(record.id, None)  # probes are not the user's execs; they would pile up
        run = runs[0] if runs else None
        if run is None:  # runc could not run exec at all: run_exec yielded its message
            return health.Result(start_ns, time.time_ns(), -1, bytes(output).decode(errors="replace").strip())
        if run.error:  # runc could not start the process (no such file...)
            return health.Result(start_ns, time.time_ns(), -1, run.error)
        code = record.exit_code if record.exit_code is not None else -1
        return health.Result(start_ns, time.time_ns(), code, health.limited_output(bytes(output)))

    async def _kill_probe(self, container: ContainerRecord, runs: list[Any], collecting: asyncio.Task[None]) -> None:
        """Kills the probe's process inside the container and what it started (SIGKILL to runc
        exec is not forwarded), then waits for the exec to end."""
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while not collecting.done() and time.monotonic() < deadline:
            if runs:
                _kill_tree(runs[0].process_pid(), container.pid)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(collecting), KILL_RETRY_SECONDS)
        if not collecting.done():
            log.warning("container %s: a timed-out health probe would not die; killing its runc exec",
                        container.id[:12])
            if runs:
                runs[0].kill(signals.SIGKILL)
            # A process that holds the output pipe (frozen by a pause...) keeps the exec from
            # ending: the monitor goes on, the exec ends (exec_die) whenever the pipe closes.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(collecting), KILL_GRACE_SECONDS)
        if collecting.done() and not collecting.cancelled():
            collecting.exception()  # retrieved: its error is the timeout's, not news

    def _shell(self, container: ContainerRecord) -> list[str] | None:
        """Config.Shell of the container, else of its image (moby's getShell): CMD-SHELL's shell."""
        shell = _get_ci(container.create_config, "Shell")
        if not shell:
            with contextlib.suppress(Exception):
                shell = (self._engine.images.get(container.image_id).config or {}).get("Shell")
        return list(shell) if isinstance(shell, list) and shell else None


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))
        return True
    except asyncio.TimeoutError:
        return stop.is_set()


def _kill_tree(pid: int, container_pid: int) -> None:
    """SIGKILL to pid and its descendants, when pid is in the container's pid namespace (a pid
    file read late could name a reused pid: never kill outside the container)."""
    if pid <= 0:
        return
    try:
        if container_pid and os.readlink(f"/proc/{pid}/ns/pid") != os.readlink(f"/proc/{container_pid}/ns/pid"):
            return
    except OSError:
        return
    for victim in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signals.SIGKILL)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])  # after "(comm) state"
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _unix_ns(rfc3339: str) -> int:
    """Unix nanoseconds of a time common.timefmt wrote ("...T..:..:...123456789Z"); 0 if unknown."""
    from common.timefmt import unix_seconds

    seconds = unix_seconds(rfc3339)
    if not seconds:
        return 0
    _, _, frac = rfc3339.rstrip("Z").partition(".")
    digits = (frac + "000000000")[:9] if frac.isdigit() else "0"
    return seconds * health.NANOS + int(digits)


def _get_ci(data: dict[str, Any], key: str) -> Any:
    if key in data:
        return data[key]
    return next((v for k, v in data.items() if k.lower() == key.lower()), None)
