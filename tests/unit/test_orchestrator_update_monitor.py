"""The update monitor (swarmkit's updater): a new task's failure is an update failure only when it ends within the
monitor period (UpdateConfig.monitor) after it started running, or before it ran at all; a task that ran longer fails
under the restart policy alone. The same for a rollback. Also: the time a task started running, as the manager keeps
it from the agents' reports (manager/orchestrator/update.py status_to_store, used by manager/dispatcher_tasks.py)."""

from __future__ import annotations

import asyncio

from manager.dispatcher_tasks import StatusBatcher
from manager.orchestrator.update import plan_update, status_to_store
from manager.store import MemoryStore
from proto import objects_pb2 as pb
from proto import swarm_pb2
from tests.unit.services_fixtures import NOW, SEC, S, ids, service, task
from tests.unit.test_dispatcher_tasks import Proposer, seed
from tests.unit.test_dispatcher_tasks import task as node_task

US = pb.UpdateStatus
PAUSED_MSG = "update paused due to failure or early termination of task new1"


def updating(monitor_s: int, action: int = pb.UpdateConfig.PAUSE) -> tuple[pb.Service, list[pb.Task], int]:
    """A 3-replica service updating v1 -> v2 for 30 s, one at a time; slot 1's v1 task was told to stop."""
    old = service(replicas=3, image="busybox:v1")
    tasks = [task(old, f"old{i}", i, "n1") for i in (1, 2, 3)]
    tasks[0].desired_state = S.TASK_STATE_SHUTDOWN
    svc = service(replicas=3, image="busybox:v2")
    svc.previous_spec.CopyFrom(old.spec)
    svc.spec.update.parallelism = 1
    svc.spec.update.monitor.FromNanoseconds(monitor_s * SEC)
    svc.spec.update.failure_action = action
    started = NOW - 30 * SEC
    svc.update_status.state = US.UPDATING
    svc.update_status.started_at.FromNanoseconds(started)
    return svc, tasks, started


def ended(svc: pb.Service, tid: str, slot: int, created: int, ran_from: int | None, at: int = NOW - SEC,
          state: int = S.TASK_STATE_FAILED) -> pb.Task:
    """A task of svc that ended at `at`, having run since `ran_from` (None: it never ran)."""
    t = task(svc, tid, slot, "n2", state=state, at=at, created=created)
    if ran_from is not None:
        t.status.started_at.FromNanoseconds(ran_from)
    return t


# ------------------------------------------------------------------------------------------------ update
def test_a_new_task_failing_within_the_monitor_after_it_started_running_pauses_the_update() -> None:
    svc, tasks, started = updating(monitor_s=5)
    bad = ended(svc, "new1", 1, started, ran_from=NOW - 4 * SEC)  # failed 3 s after it started running
    plan = plan_update(svc, tasks + [bad], NOW, ids("n"), set())
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (US.PAUSED, PAUSED_MSG)
    assert (plan.create, plan.update) == ([], [])


def test_a_new_task_failing_exactly_at_the_end_of_the_monitor_pauses_the_update() -> None:
    svc, tasks, started = updating(monitor_s=5)
    bad = ended(svc, "new1", 1, started, ran_from=NOW - 6 * SEC)  # ran 5 s: swarmkit's `<= monitoringPeriod`
    plan = plan_update(svc, tasks + [bad], NOW, ids("n"), set())
    assert plan.service is not None and plan.service.update_status.state == US.PAUSED


def test_a_new_task_failing_before_it_ever_ran_pauses_the_update() -> None:
    svc, tasks, started = updating(monitor_s=5)
    bad = ended(svc, "new1", 1, started, ran_from=None)
    plan = plan_update(svc, tasks + [bad], NOW, ids("n"), set())
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (US.PAUSED, PAUSED_MSG)


def test_a_new_task_failing_after_it_ran_longer_than_the_monitor_does_not_pause_the_update() -> None:
    svc, tasks, started = updating(monitor_s=5)
    bad = ended(svc, "new1", 1, started, ran_from=NOW - 20 * SEC)  # ran 19 s: the restart policy's business
    plan = plan_update(svc, tasks + [bad], NOW, ids("n"), set())
    assert plan.service is None  # still updating
    assert [(t.id, t.desired_state) for t in plan.update] == [("old2", S.TASK_STATE_SHUTDOWN)]
    assert [(t.slot, t.spec.container.image) for t in plan.create] == [(2, "busybox:v2")]


def test_a_new_task_completing_after_it_ran_longer_than_the_monitor_does_not_roll_the_update_back() -> None:
    svc, tasks, started = updating(monitor_s=5, action=pb.UpdateConfig.ROLLBACK)
    done = ended(svc, "new1", 1, started, ran_from=NOW - 20 * SEC, state=S.TASK_STATE_COMPLETE)
    plan = plan_update(svc, tasks + [done], NOW, ids("n"), set())
    assert plan.service is None and [t.id for t in plan.update] == ["old2"]


def test_a_new_task_completing_within_the_monitor_rolls_the_update_back() -> None:
    svc, tasks, started = updating(monitor_s=5, action=pb.UpdateConfig.ROLLBACK)
    done = ended(svc, "new1", 1, started, ran_from=NOW - 2 * SEC, state=S.TASK_STATE_COMPLETE)
    plan = plan_update(svc, tasks + [done], NOW, ids("n"), set())
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (
        US.ROLLBACK_STARTED, "update rolled back due to failure or early termination of task new1")
    assert plan.service.spec.task.container.image == "busybox:v1"


# ------------------------------------------------------------------------------------------------ rollback
def rolling_back(monitor_s: int) -> tuple[pb.Service, list[pb.Task], int]:
    """A 2-replica service rolling back v2 -> v1 for 30 s (rollback monitor monitor_s): slot 1's v2 task failed and
    was told to stop, slot 2 runs v1."""
    svc = service(replicas=2, image="busybox:v1")
    svc.spec.rollback.parallelism = 1
    svc.spec.rollback.monitor.FromNanoseconds(monitor_s * SEC)
    started = NOW - 30 * SEC
    svc.update_status.state = US.ROLLBACK_STARTED
    svc.update_status.started_at.FromNanoseconds(started)
    v2 = service(replicas=2, image="busybox:v2")
    failed = task(v2, "new1", 1, "n2", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=started - SEC,
                  created=started - 5 * SEC)
    return svc, [failed, task(svc, "old2", 2, "n1")], started


def test_a_restored_task_failing_within_the_rollback_monitor_pauses_the_rollback() -> None:
    svc, tasks, started = rolling_back(monitor_s=5)
    back = ended(svc, "back1", 1, started + SEC, ran_from=NOW - 3 * SEC)
    plan = plan_update(svc, tasks + [back], NOW, ids("n"), set())
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (
        US.ROLLBACK_PAUSED, "rollback paused due to failure or early termination of task back1")


def test_a_restored_task_failing_after_it_ran_longer_than_the_rollback_monitor_does_not_pause_the_rollback() -> None:
    svc, tasks, started = rolling_back(monitor_s=5)
    back = ended(svc, "back1", 1, started + SEC, ran_from=NOW - 20 * SEC)
    plan = plan_update(svc, tasks + [back], NOW, ids("n"), set())
    # nothing left to roll back and no failure counted: the rollback completes; slot 1 is the restart policy's
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (
        US.ROLLBACK_COMPLETED, "rollback completed")


# ------------------------------------------------------------------------------------------------ started_at
def status(state: int, at: int, started_at: int | None = None) -> pb.TaskStatus:
    st = pb.TaskStatus(state=state)
    st.timestamp.FromNanoseconds(at)
    if started_at is not None:
        st.started_at.FromNanoseconds(started_at)
    return st


def test_the_first_running_report_stamps_the_time_the_task_started_running() -> None:
    stored = status_to_store(status(S.TASK_STATE_STARTING, NOW - SEC), status(S.TASK_STATE_RUNNING, NOW))
    assert (stored.state, stored.started_at.ToNanoseconds()) == (S.TASK_STATE_RUNNING, NOW)


def test_the_time_a_task_started_running_stays_on_its_later_states() -> None:
    stored = status_to_store(status(S.TASK_STATE_RUNNING, NOW - 9 * SEC, started_at=NOW - 9 * SEC),
                             status(S.TASK_STATE_FAILED, NOW))
    assert (stored.state, stored.timestamp.ToNanoseconds(), stored.started_at.ToNanoseconds()) == (
        S.TASK_STATE_FAILED, NOW, NOW - 9 * SEC)


def test_a_task_failing_before_it_ran_has_no_start_time() -> None:
    stored = status_to_store(status(S.TASK_STATE_STARTING, NOW - SEC), status(S.TASK_STATE_FAILED, NOW))
    assert (stored.state, stored.HasField("started_at")) == (S.TASK_STATE_FAILED, False)


def report(tid: str, st: pb.TaskStatus) -> swarm_pb2.TaskStatusUpdate:
    return swarm_pb2.TaskStatusUpdate(task_id=tid, status=st)


def test_the_dispatcher_stores_the_start_time_and_keeps_it_when_the_task_fails_later() -> None:
    store = MemoryStore()
    seed(store, node_task("t1", "n1"))
    b = StatusBatcher(store, Proposer(store), interval=3600)
    b.submit("n1", [report("t1", status(S.TASK_STATE_RUNNING, NOW - 9 * SEC))])
    asyncio.run(b.flush())
    b.submit("n1", [report("t1", status(S.TASK_STATE_FAILED, NOW))])
    asyncio.run(b.flush())
    st = store.view().get("task", "t1").status
    assert (st.state, st.timestamp.ToNanoseconds(), st.started_at.ToNanoseconds()) == (
        S.TASK_STATE_FAILED, NOW, NOW - 9 * SEC)


def test_the_dispatcher_keeps_the_start_time_of_a_running_report_overtaken_in_the_same_batch() -> None:
    store = MemoryStore()
    seed(store, node_task("t1", "n1"))
    b = StatusBatcher(store, Proposer(store), interval=3600)
    b.submit("n1", [report("t1", status(S.TASK_STATE_RUNNING, NOW - 2 * SEC))])
    b.submit("n1", [report("t1", status(S.TASK_STATE_FAILED, NOW))])
    asyncio.run(b.flush())
    st = store.view().get("task", "t1").status
    assert (st.state, st.started_at.ToNanoseconds()) == (S.TASK_STATE_FAILED, NOW - 2 * SEC)


def test_the_dispatcher_writes_nothing_for_a_resent_running_report() -> None:
    store = MemoryStore()
    seed(store, node_task("t1", "n1"))
    b = StatusBatcher(store, Proposer(store), interval=3600)
    b.submit("n1", [report("t1", status(S.TASK_STATE_RUNNING, NOW))])
    asyncio.run(b.flush())
    b.submit("n1", [report("t1", status(S.TASK_STATE_RUNNING, NOW))])  # an agent re-sends after reconnecting
    asyncio.run(b.flush())
    assert b.stats.written == 1


def test_a_new_task_reported_running_again_is_healthy_a_monitor_after_it_first_ran() -> None:
    svc, tasks, started = updating(monitor_s=5)
    new = task(svc, "new1", 1, "n2", at=NOW - SEC, created=started)  # re-reported RUNNING 1 s ago (agent reconnect)
    new.status.started_at.FromNanoseconds(NOW - 10 * SEC)
    plan = plan_update(svc, tasks + [new], NOW, ids("n"), set())
    assert [t.id for t in plan.update] == ["old2"] and [t.slot for t in plan.create] == [2]
