"""A job in the control API (ServiceOps over a store): its first run at create, a new run per update (scale and
--force too), the mode change refused, and swarmkit's ServiceStatus of a job's current run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from manager.controlapi_services import ServiceOps, job_status
from manager.store import MemoryStore
from manager.store.errors import StoreError
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import S, service, task


class StoreRaft:
    """Just enough of RaftManager for ServiceOps: proposals applied at once to a MemoryStore."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.index = 0

    async def propose(self, fn: Any) -> Any:
        data, result = self.store.prepare(fn, f"r{self.index}")
        self.index += 1
        self.store.apply(self.index, data)
        return result

    async def read(self, fn: Any) -> Any:
        return fn(self.store.view())


def job_spec() -> pb.ServiceSpec:
    s = service(name="job", replicas=0).spec
    s.replicated_job.max_concurrent = 2
    s.replicated_job.total_completions = 4
    return s


def test_a_job_starts_at_run_0_and_every_update_is_a_new_run() -> None:
    async def go() -> tuple[int, int, int, int]:
        ops = ServiceOps(StoreRaft())
        svc = await ops.create_service(job_spec())
        first = svc.job_status.job_iteration.index
        started = svc.job_status.last_execution.ToNanoseconds()
        scaled = job_spec()
        scaled.replicated_job.total_completions = 6
        svc = await ops.update_service(svc.id, svc.meta.version.index, scaled)
        svc = await ops.update_service(svc.id, svc.meta.version.index, scaled)  # the same spec (--force's twin)
        return first, svc.job_status.job_iteration.index, int(started > 0), int(svc.job_status.last_execution.ToNanoseconds() >= started)

    assert asyncio.run(go()) == (0, 2, 1, 1)


def test_a_service_has_no_job_status() -> None:
    async def go() -> bool:
        ops = ServiceOps(StoreRaft())
        return (await ops.create_service(service().spec)).HasField("job_status")

    assert asyncio.run(go()) is False


@pytest.mark.parametrize("to", ["replicated", "global_job"])
def test_a_jobs_mode_cannot_change_with_swarmkits_message(to: str) -> None:
    async def go() -> str:
        ops = ServiceOps(StoreRaft())
        svc = await ops.create_service(job_spec())
        other = job_spec()
        if to == "replicated":
            other.replicated.replicas = 2
        else:
            other.global_job.SetInParent()
        with pytest.raises(StoreError) as e:
            await ops.update_service(svc.id, svc.meta.version.index, other)
        return e.value.message

    assert asyncio.run(go()) == "service mode change is not allowed"


def test_service_status_of_a_replicated_job_counts_only_its_current_run() -> None:
    svc = service(name="job", replicas=0)
    svc.spec.replicated_job.max_concurrent = 2
    svc.spec.replicated_job.total_completions = 5
    svc.job_status.job_iteration.index = 1
    tasks = []
    for tid, state, run in [("a", S.TASK_STATE_COMPLETE, 1), ("b", S.TASK_STATE_RUNNING, 1), ("c", S.TASK_STATE_COMPLETE, 0),
                            ("d", S.TASK_STATE_RUNNING, 0)]:
        t = task(svc, tid, 0, "n1", state=state, desired=S.TASK_STATE_COMPLETE)
        t.job_iteration.index = run
        tasks.append(t)
    assert job_status(svc, tasks, {"n1"}) == {"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 1}


def test_service_status_of_a_global_job_desires_the_tasks_not_yet_complete() -> None:
    svc = service(name="job", replicas=None)
    svc.spec.global_job.SetInParent()
    tasks = []
    for tid, node, state in [("a", "n1", S.TASK_STATE_COMPLETE), ("b", "n2", S.TASK_STATE_RUNNING), ("c", "n3", S.TASK_STATE_PENDING)]:
        t = task(svc, tid, 0, node, state=state, desired=S.TASK_STATE_COMPLETE)
        t.job_iteration.SetInParent()
        tasks.append(t)
    assert job_status(svc, tasks, {"n1", "n2", "n3"}) == {"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 1}
