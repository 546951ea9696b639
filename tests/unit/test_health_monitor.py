"""shoal.engine.healthmon against a fake engine: probes go through the engine's exec calls, results
become the container's Health, a stop ends the monitor with no probe and no task left."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.timefmt import now_rfc3339
from shoal.engine import healthmon
from shoal.engine.records import ContainerRecord, ExecRecord

MS = 1_000_000


class FakeRun:
    def __init__(self) -> None:
        self.error: str | None = None
        self.killed = asyncio.Event()

    def process_pid(self) -> int:
        return 0

    def kill(self, sig: int) -> None:
        self.killed.set()


class FakeEngine:
    """Each probe takes the next (exit code, output, hangs) of `script`; the last one repeats."""

    def __init__(self, script: list[tuple[int, bytes, bool]]) -> None:
        self.script = script
        self.containers: dict[str, ContainerRecord] = {}
        self.execs: dict[str, ExecRecord] = {}
        self.events: list[str] = []
        self.probes = 0
        self.hanging: list[FakeRun] = []
        self.images = None

    async def create_exec(self, container_id: str, request: Any) -> ExecRecord:
        self.events.append(f"exec_create: {' '.join(request.cmd)}")
        record = ExecRecord(id=f"e{len(self.events)}", container_id=container_id, args=list(request.cmd))
        self.execs[record.id] = record
        return record

    async def run_exec(self, exec_id: str, started: Any = None, pid_file: bool = False):  # noqa: ANN201
        assert pid_file  # the monitor must be able to kill its probe
        code, output, hangs = self.script[min(self.probes, len(self.script) - 1)]
        self.probes += 1
        run = FakeRun()
        started(run)
        if output:
            yield 1, output
        if hangs:
            self.hanging.append(run)
            await run.killed.wait()
            self.hanging.remove(run)
            code = 137
        self.execs[exec_id].exit_code = code

    def emit_container(self, container: ContainerRecord, action: str, **extra: Any) -> None:
        self.events.append(action)

    async def _save_off_loop(self, container: ContainerRecord) -> None:
        pass


def _container(check: dict[str, Any]) -> ContainerRecord:
    return ContainerRecord(id="c" * 64, name="c", image="busybox", image_id="sha256:x", created="",
                           state="running", started_at=now_rfc3339(),
                           healthcheck={"Test": ["CMD", "probe"], "Interval": 10 * MS, **check})


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _run(script: list[tuple[int, bytes, bool]], check: dict[str, Any], body: Any) -> None:
    async def main() -> None:
        engine = FakeEngine(script)
        container = _container(check)
        engine.containers[container.id] = container
        monitors = healthmon.HealthMonitors(engine)
        monitors.start(container)
        try:
            await body(engine, container, monitors)
        finally:
            await monitors.close()
        assert monitors.running() == []
    asyncio.run(main())


def test_a_container_with_a_check_starts_as_starting() -> None:
    async def body(engine: FakeEngine, container: ContainerRecord, monitors: healthmon.HealthMonitors) -> None:
        assert container.health == {"Status": "starting", "FailingStreak": 0, "Log": []}
    _run([(0, b"", False)], {"Interval": 3600 * 10**9}, body)


def test_a_passing_probe_makes_it_healthy_with_one_event() -> None:
    async def body(engine: FakeEngine, container: ContainerRecord, monitors: healthmon.HealthMonitors) -> None:
        await _until(lambda: engine.probes >= 3)
        assert container.health is not None and container.health["Status"] == "healthy"
        assert engine.events.count("health_status: healthy") == 1
        assert engine.execs == {}  # probes' exec records do not pile up
    _run([(0, b"ok\n", False)], {}, body)


def test_failing_probes_make_it_unhealthy_after_retries() -> None:
    async def body(engine: FakeEngine, container: ContainerRecord, monitors: healthmon.HealthMonitors) -> None:
        await _until(lambda: container.health is not None and container.health["Status"] == "unhealthy")
        assert container.health["FailingStreak"] == 2
        assert container.health["Log"][-1]["ExitCode"] == 1 and container.health["Log"][-1]["Output"] == "no\n"
        assert engine.events[-1] == "health_status: unhealthy"
    _run([(1, b"no\n", False)], {"Retries": 2}, body)


def test_a_probe_past_its_timeout_is_killed_and_reported_as_docker_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(healthmon, "KILL_GRACE_SECONDS", 0.05)  # the fake has no pid: runc exec is killed

    async def body(engine: FakeEngine, container: ContainerRecord, monitors: healthmon.HealthMonitors) -> None:
        await _until(lambda: container.health is not None and len(container.health["Log"]) >= 1)
        entry = container.health["Log"][0]
        assert (entry["ExitCode"], entry["Output"]) == (-1, "Health check exceeded timeout (50ms): partial")
        assert engine.hanging == [] or engine.probes > 1
    _run([(0, b"partial", True)], {"Timeout": 50 * MS, "Interval": 3600 * 10**9, "StartInterval": 10 * MS,
                                   "StartPeriod": 3600 * 10**9}, body)


def test_stop_kills_the_probe_in_flight_and_ends_the_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(healthmon, "KILL_GRACE_SECONDS", 0.05)

    async def body(engine: FakeEngine, container: ContainerRecord, monitors: healthmon.HealthMonitors) -> None:
        await _until(lambda: engine.hanging != [])
        await monitors.stop(container.id)
        assert engine.hanging == []
        assert monitors.running() == []
        assert container.health == {"Status": "starting", "FailingStreak": 0, "Log": []}  # the result is dropped
        probes = engine.probes
        await asyncio.sleep(0.05)
        assert engine.probes == probes
    _run([(0, b"", True)], {"Timeout": 3600 * 10**9}, body)


def test_no_probe_runs_while_paused() -> None:
    async def body(engine: FakeEngine, container: ContainerRecord, monitors: healthmon.HealthMonitors) -> None:
        await _until(lambda: engine.probes >= 1)
        container.paused = True
        await asyncio.sleep(0.02)  # a probe that had begun ends
        probes = engine.probes
        await asyncio.sleep(0.1)
        assert engine.probes == probes
        container.paused = False
        await _until(lambda: engine.probes > probes)
    _run([(0, b"", False)], {}, body)


def test_a_container_without_a_check_has_no_health_and_no_monitor() -> None:
    async def main() -> None:
        engine = FakeEngine([(0, b"", False)])
        container = _container({"Test": ["NONE"]})
        monitors = healthmon.HealthMonitors(engine)
        monitors.start(container)
        assert container.health is None
        assert monitors.running() == []
    asyncio.run(main())


def test_a_change_wakes_a_waiter() -> None:
    async def body(engine: FakeEngine, container: ContainerRecord, monitors: healthmon.HealthMonitors) -> None:
        woken = monitors.change_event(container.id)
        await asyncio.wait_for(woken.wait(), 5)
        assert container.health is not None and container.health["Status"] == "healthy"
    _run([(0, b"", False)], {}, body)


# ---- Engine.wait_health (the swarm executor's wait) ----------------------------------------

def _waiter_engine(container: ContainerRecord | None) -> Any:
    from types import SimpleNamespace

    engine = SimpleNamespace(containers={container.id: container} if container else {})
    engine.health_monitors = healthmon.HealthMonitors(engine)
    return engine


def _wait_health(engine: Any, container_id: str, seen: str) -> Any:
    from shoal.engine.engine import Engine

    return Engine.wait_health(engine, container_id, seen)


def test_wait_health_answers_empty_for_an_unknown_container_or_one_without_a_check() -> None:
    async def main() -> None:
        assert await _wait_health(_waiter_engine(None), "x" * 64, "starting") == ""
        container = _container({})
        assert await _wait_health(_waiter_engine(container), container.id, "") == ""
    asyncio.run(main())


def test_wait_health_returns_the_new_status_once_it_changes() -> None:
    async def main() -> None:
        container = _container({})
        container.health = {"Status": "starting", "FailingStreak": 0, "Log": []}
        engine = _waiter_engine(container)
        waiting = asyncio.create_task(_wait_health(engine, container.id, "starting"))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        container.health = {"Status": "healthy", "FailingStreak": 0, "Log": []}
        engine.health_monitors.changed(container.id)
        assert await asyncio.wait_for(waiting, 5) == "healthy"
    asyncio.run(main())


def test_wait_health_returns_once_the_container_stops_or_goes() -> None:
    async def main() -> None:
        container = _container({})
        container.health = {"Status": "healthy", "FailingStreak": 0, "Log": []}
        engine = _waiter_engine(container)
        stopped = asyncio.create_task(_wait_health(engine, container.id, "healthy"))
        await asyncio.sleep(0.01)
        container.state = "exited"
        engine.health_monitors.changed(container.id)
        assert await asyncio.wait_for(stopped, 5) == "healthy"
        container.state = "running"
        removed = asyncio.create_task(_wait_health(engine, container.id, "healthy"))
        await asyncio.sleep(0.01)
        del engine.containers[container.id]
        engine.health_monitors.changed(container.id)
        assert await asyncio.wait_for(removed, 5) == ""
    asyncio.run(main())
