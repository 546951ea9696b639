"""Rolling updates: batches of `parallelism`, monitor and delay, stop-first and start-first, failure actions
pause/continue/rollback past the max failure ratio."""

from __future__ import annotations

from manager.orchestrator.runner import plan_service
from manager.orchestrator.update import plan_update
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import NOW, SEC, S, ids, node, nodes_by_id, service, task

US = pb.UpdateStatus
N = nodes_by_id(node("n1"), node("n2"))


def updated(parallelism: int = 1, delay_s: int = 0, monitor_s: int = 5, action: int = pb.UpdateConfig.PAUSE) -> tuple[pb.Service, list[pb.Task]]:
    """A 3-replica service on image v1 whose spec just changed to v2 (its tasks still run v1)."""
    old = service(replicas=3, image="busybox:v1")
    tasks = [task(old, f"old{i}", i, "n1") for i in (1, 2, 3)]
    svc = service(replicas=3, image="busybox:v2")
    svc.previous_spec.CopyFrom(old.spec)
    svc.spec.update.parallelism = parallelism
    svc.spec.update.delay.FromNanoseconds(delay_s * SEC)
    svc.spec.update.monitor.FromNanoseconds(monitor_s * SEC)
    svc.spec.update.failure_action = action
    return svc, tasks


def updating(svc: pb.Service, started: int) -> pb.Service:
    svc.update_status.state = US.UPDATING
    svc.update_status.started_at.FromNanoseconds(started)
    return svc


def test_update_starts_with_one_batch_of_parallelism_lowest_slots_first() -> None:
    svc, tasks = updated(parallelism=2)
    plan = plan_update(svc, tasks, NOW, ids("n"), set())
    assert plan.service is not None and plan.service.update_status.state == US.UPDATING
    assert plan.service.update_status.started_at.ToNanoseconds() == NOW
    assert [(t.id, t.desired_state) for t in plan.update] == [("old1", S.TASK_STATE_SHUTDOWN), ("old2", S.TASK_STATE_SHUTDOWN)]
    assert [(t.slot, t.spec.container.image) for t in plan.create] == [(1, "busybox:v2"), (2, "busybox:v2")]


def test_next_batch_waits_until_the_new_tasks_ran_for_the_monitor_period() -> None:
    svc, tasks = updated(parallelism=1, monitor_s=5)
    started = NOW - 10 * SEC
    updating(svc, started)
    tasks[0].desired_state = S.TASK_STATE_SHUTDOWN
    fresh = task(svc, "new1", 1, "n2", state=S.TASK_STATE_RUNNING, at=NOW - 2 * SEC, created=started)
    plan = plan_update(svc, tasks + [fresh], NOW, ids("n"), set())
    assert (plan.create, plan.update, plan.service) == ([], [], None)
    assert plan.wake_at_ns == NOW + 3 * SEC
    later = plan_update(svc, tasks + [fresh], NOW + 3 * SEC, ids("n"), set())
    assert [t.id for t in later.update] == ["old2"] and [t.slot for t in later.create] == [2]


def test_next_batch_waits_for_the_update_delay_after_the_last_became_healthy() -> None:
    svc, tasks = updated(parallelism=1, monitor_s=1, delay_s=10)
    started = NOW - 20 * SEC
    updating(svc, started)
    tasks[0].desired_state = S.TASK_STATE_SHUTDOWN
    fresh = task(svc, "new1", 1, "n2", state=S.TASK_STATE_RUNNING, at=NOW - 5 * SEC, created=started)
    plan = plan_update(svc, tasks + [fresh], NOW, ids("n"), set())
    assert plan.create == [] and plan.wake_at_ns == NOW - 4 * SEC + 10 * SEC


def test_a_failed_new_task_pauses_the_update_with_swarms_message() -> None:
    svc, tasks = updated(action=pb.UpdateConfig.PAUSE)
    started = NOW - 10 * SEC
    updating(svc, started)
    bad = task(svc, "new1", 1, "n2", state=S.TASK_STATE_FAILED, at=NOW - SEC, created=started)
    plan = plan_update(svc, tasks + [bad], NOW, ids("n"), set())
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (
        US.PAUSED, "update paused due to failure or early termination of task new1")
    assert plan.create == [] and plan.update == []
    assert plan_update(plan.service, tasks + [bad], NOW, ids("n"), set()).create == []


def test_a_failed_new_task_rolls_back_to_the_previous_spec() -> None:
    svc, tasks = updated(action=pb.UpdateConfig.ROLLBACK)
    started = NOW - 10 * SEC
    updating(svc, started)
    bad = task(svc, "new1", 1, "n2", state=S.TASK_STATE_FAILED, at=NOW - SEC, created=started)
    plan = plan_update(svc, tasks + [bad], NOW, ids("n"), set())
    s = plan.service
    assert s is not None and s.update_status.state == US.ROLLBACK_STARTED
    assert s.update_status.message == "update rolled back due to failure or early termination of task new1"
    # swarmkit's rollbackUpdate keeps no previous spec: the failed one is not something to go back to
    assert (s.spec.task.container.image, s.HasField("previous_spec")) == ("busybox:v1", False)


def rolled_back(started: int) -> tuple[pb.Service, pb.Task, pb.Task]:
    """A 2-replica service rolled back to v1 after slot 1's v2 task failed: (service, the failed task, slot 2's v1)."""
    svc = service(replicas=2, image="busybox:v1")
    svc.update_status.state = US.ROLLBACK_STARTED
    svc.update_status.started_at.FromNanoseconds(started)
    v2 = service(replicas=2, image="busybox:v2")
    failed = task(v2, "new1", 1, "n2", state=S.TASK_STATE_FAILED, at=started - SEC, created=started - 5 * SEC)
    return svc, failed, task(svc, "old2", 2, "n1")


def test_a_rollback_is_not_complete_while_a_slot_waits_for_its_restart() -> None:
    svc, failed, kept = rolled_back(NOW - SEC)
    plan = plan_update(svc, [failed, kept], NOW, ids("n"), set())
    assert (plan.service, plan.create, plan.update) == (None, [], [])


def test_a_rollback_is_not_complete_in_the_pass_whose_reconcile_restarts_a_task() -> None:
    svc, failed, kept = rolled_back(NOW - 10 * SEC)
    plan = plan_update(svc, [failed, kept], NOW, ids("n"), {failed.id})
    assert plan.service is None


def test_a_rollback_completes_once_the_restarted_task_ran_for_the_monitor_period() -> None:
    started = NOW - 20 * SEC
    svc, failed, kept = rolled_back(started)
    failed.desired_state = S.TASK_STATE_SHUTDOWN
    restarted = task(svc, "back1", 1, "n2", at=NOW - 6 * SEC, created=NOW - 8 * SEC)
    plan = plan_update(svc, [failed, restarted, kept], NOW - 2 * SEC, ids("n"), set())
    assert plan.service is None and plan.wake_at_ns == NOW - SEC  # running 4 s of the default 5 s monitor
    plan = plan_update(svc, [failed, restarted, kept], NOW, ids("n"), set())
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (US.ROLLBACK_COMPLETED,
                                                                                      "rollback completed")


def test_a_failed_new_task_with_continue_goes_on_with_the_next_batch() -> None:
    svc, tasks = updated(action=pb.UpdateConfig.CONTINUE, monitor_s=0)
    started = NOW - 10 * SEC
    updating(svc, started)
    tasks[0].desired_state = S.TASK_STATE_SHUTDOWN
    bad = task(svc, "new1", 1, "n2", state=S.TASK_STATE_FAILED, at=NOW - SEC, created=started)
    plan = plan_update(svc, tasks + [bad], NOW, ids("n"), set())
    assert plan.service is None and [t.id for t in plan.update] == ["old2"]


def test_update_completes_when_every_task_runs_the_new_spec() -> None:
    svc, _ = updated(monitor_s=1)
    started = NOW - 30 * SEC
    updating(svc, started)
    tasks = [task(svc, f"new{i}", i, "n1", at=NOW - 5 * SEC, created=started) for i in (1, 2, 3)]
    plan = plan_update(svc, tasks, NOW, ids("n"), set())
    assert plan.service is not None
    assert (plan.service.update_status.state, plan.service.update_status.message) == (US.COMPLETED, "update completed")
    assert plan.service.update_status.completed_at.ToNanoseconds() == NOW


def test_a_scale_only_change_is_no_update() -> None:
    svc = service(replicas=3)
    tasks = [task(svc, f"t{i}", i, "n1") for i in (1, 2)]
    plan = plan_service(svc, tasks, N, NOW, ids("n"))
    assert plan.service is None and [t.slot for t in plan.create] == [3] and plan.update == []


def test_stop_first_makes_the_new_task_ready_not_running() -> None:
    svc, tasks = updated(parallelism=2)
    plan = plan_update(svc, tasks, NOW, ids("n"), set())
    assert [(t.slot, t.desired_state) for t in plan.create] == [(1, S.TASK_STATE_READY), (2, S.TASK_STATE_READY)]


def _held(svc: pb.Service, old_state: int, made: int) -> tuple[pb.Service, list[pb.Task]]:
    """Slot 1 of `updated()` mid stop-first update: old1 told to stop (its observed state old_state), new1 made at
    `made`, prepared on n2 and held at desired READY."""
    updating(svc, made)
    old = task(svc, "old1", 1, "n1", state=old_state, desired=S.TASK_STATE_SHUTDOWN, at=made)
    old.spec.container.image = "busybox:v1"
    new = task(svc, "new1", 1, "n2", state=S.TASK_STATE_READY, desired=S.TASK_STATE_READY, at=made, created=made)
    return svc, [old, new]


def test_a_stop_first_replacement_stays_ready_while_the_task_it_replaces_still_runs() -> None:
    svc, _ = updated(parallelism=1)
    svc, slot1 = _held(svc, S.TASK_STATE_RUNNING, NOW - 5 * SEC)
    plan = plan_update(svc, slot1, NOW, ids("n"), set())
    assert (plan.create, plan.update, plan.service) == ([], [], None)
    assert plan.wake_at_ns == NOW + 55 * SEC  # the old task's timeout, a minute after the replacement was made


def test_a_stop_first_replacement_starts_once_the_task_it_replaces_stopped() -> None:
    svc, _ = updated(parallelism=1)
    svc, slot1 = _held(svc, S.TASK_STATE_SHUTDOWN, NOW - 5 * SEC)
    plan = plan_update(svc, slot1, NOW, ids("n"), set())
    assert [(t.id, t.desired_state) for t in plan.update] == [("new1", S.TASK_STATE_RUNNING)]
    assert plan.create == []


def test_a_stop_first_replacement_starts_a_minute_after_it_was_made_if_the_old_task_never_reports() -> None:
    svc, _ = updated(parallelism=1)
    svc, slot1 = _held(svc, S.TASK_STATE_RUNNING, NOW - 60 * SEC)
    plan = plan_update(svc, slot1, NOW, ids("n"), set())
    assert [(t.id, t.desired_state) for t in plan.update] == [("new1", S.TASK_STATE_RUNNING)]


def test_a_stop_first_replacement_starts_when_the_task_it_replaces_was_never_placed() -> None:
    svc, _ = updated(parallelism=1)
    svc, slot1 = _held(svc, S.TASK_STATE_PENDING, NOW - 5 * SEC)
    slot1[0].node_id = ""
    plan = plan_update(svc, slot1, NOW, ids("n"), set())
    assert [(t.id, t.desired_state) for t in plan.update] == [("new1", S.TASK_STATE_RUNNING)]


def test_a_stop_first_replacement_starts_while_the_update_is_paused() -> None:
    svc, _ = updated(parallelism=1)
    svc, slot1 = _held(svc, S.TASK_STATE_SHUTDOWN, NOW - 5 * SEC)
    svc.update_status.state = US.PAUSED
    plan = plan_update(svc, slot1, NOW, ids("n"), set())
    assert [(t.id, t.desired_state) for t in plan.update] == [("new1", S.TASK_STATE_RUNNING)]


def test_a_stop_first_replacement_the_reconcile_already_changes_is_left_to_it() -> None:
    svc, _ = updated(parallelism=1)
    svc, slot1 = _held(svc, S.TASK_STATE_SHUTDOWN, NOW - 5 * SEC)
    plan = plan_update(svc, slot1, NOW, ids("n"), {"new1"})
    assert [t.id for t in plan.update] == []


def test_a_stop_first_update_of_a_global_service_holds_the_replacement_on_the_same_node() -> None:
    old = service(replicas=None, image="busybox:v1")
    svc = service(replicas=None, image="busybox:v2")
    tasks = [task(old, "old1", 0, "n1")]
    plan = plan_update(svc, tasks, NOW, ids("n"), set())
    assert [(t.node_id, t.desired_state) for t in plan.create] == [("n1", S.TASK_STATE_READY)]
    new = plan.create[0]
    new.status.state = S.TASK_STATE_READY
    tasks[0].desired_state = S.TASK_STATE_SHUTDOWN
    assert plan_update(plan.service, tasks + [new], NOW + SEC, ids("m"), set()).update == []
    tasks[0].status.state = S.TASK_STATE_SHUTDOWN
    later = plan_update(plan.service, tasks + [new], NOW + 2 * SEC, ids("m"), set())
    assert [(t.id, t.desired_state) for t in later.update] == [(new.id, S.TASK_STATE_RUNNING)]


def test_start_first_makes_the_new_task_and_keeps_the_old_one_running() -> None:
    svc, tasks = updated(parallelism=1)
    svc.spec.update.order = pb.UpdateConfig.Order.START_FIRST
    plan = plan_update(svc, tasks, NOW, ids("n"), set())
    assert [(t.slot, t.spec.container.image) for t in plan.create] == [(1, "busybox:v2")] and plan.update == []


def test_start_first_keeps_the_old_task_while_the_new_one_starts() -> None:
    svc, tasks = updated(parallelism=1)
    svc.spec.update.order = pb.UpdateConfig.Order.START_FIRST
    started = NOW - 2 * SEC
    updating(svc, started)
    new = task(svc, "new1", 1, "n2", state=S.TASK_STATE_STARTING, at=NOW - SEC, created=started)
    plan = plan_update(svc, tasks + [new], NOW, ids("n"), set())
    assert (plan.create, plan.update, plan.service) == ([], [], None)


def test_start_first_stops_the_old_task_once_the_new_one_runs_and_waits_for_the_monitor() -> None:
    svc, tasks = updated(parallelism=1, monitor_s=5)
    svc.spec.update.order = pb.UpdateConfig.Order.START_FIRST
    started = NOW - 4 * SEC
    updating(svc, started)
    new = task(svc, "new1", 1, "n2", state=S.TASK_STATE_RUNNING, at=NOW - SEC, created=started)
    plan = plan_update(svc, tasks + [new], NOW, ids("n"), set())
    assert [(t.id, t.desired_state) for t in plan.update] == [("old1", S.TASK_STATE_SHUTDOWN)]
    assert plan.create == [] and plan.wake_at_ns == NOW + 4 * SEC


def test_failures_up_to_the_max_failure_ratio_do_not_stop_the_update() -> None:
    svc, tasks = updated(parallelism=2, action=pb.UpdateConfig.PAUSE, monitor_s=0)
    svc.spec.update.max_failure_ratio = 0.4
    started = NOW - 10 * SEC
    updating(svc, started)
    tasks[0].desired_state = tasks[1].desired_state = S.TASK_STATE_SHUTDOWN
    bad = task(svc, "new1", 1, "n2", state=S.TASK_STATE_FAILED, at=NOW - SEC, created=started)
    good = task(svc, "new2", 2, "n2", at=NOW - 2 * SEC, created=started)
    plan = plan_update(svc, tasks + [bad, good], NOW, ids("n"), set())
    # 1 of 3 slots failed: 0.33 <= 0.4, the next batch goes
    assert plan.service is None and [t.id for t in plan.update] == ["old3"]


def test_failures_past_the_max_failure_ratio_take_the_failure_action() -> None:
    svc, tasks = updated(parallelism=2, action=pb.UpdateConfig.PAUSE, monitor_s=0)
    svc.spec.update.max_failure_ratio = 0.4
    started = NOW - 10 * SEC
    updating(svc, started)
    tasks[0].desired_state = tasks[1].desired_state = S.TASK_STATE_SHUTDOWN
    bad = [task(svc, f"new{i}", i, "n2", state=S.TASK_STATE_FAILED, at=NOW - i * SEC, created=started) for i in (1, 2)]
    plan = plan_update(svc, tasks + bad, NOW, ids("n"), set())
    # 2 of 3 slots: 0.67 > 0.4; swarm names the failure that crossed the ratio (the latest)
    assert plan.service is not None and (plan.service.update_status.state, plan.service.update_status.message) == (
        US.PAUSED, "update paused due to failure or early termination of task new1")
    assert plan.create == [] and plan.update == []


def test_a_new_spec_task_waiting_for_its_restart_does_not_hold_the_update() -> None:
    svc, _ = updated(action=pb.UpdateConfig.CONTINUE, monitor_s=1)
    started = NOW - 30 * SEC
    updating(svc, started)
    tasks = [task(svc, f"new{i}", i, "n1", at=NOW - 5 * SEC, created=started) for i in (1, 2)]
    tasks.append(task(svc, "new3", 3, "n1", state=S.TASK_STATE_FAILED, at=NOW - SEC, created=started))
    plan = plan_update(svc, tasks, NOW, ids("n"), set())
    assert plan.service is not None and plan.service.update_status.state == US.COMPLETED


def placement_changed(constraint: str, preference: str = "") -> tuple[pb.Service, list[pb.Task]]:
    """3 tasks on n1 (zone a) of a spec without placement; the service's spec now has the given placement."""
    old = service(replicas=3)
    tasks = [task(old, f"t{i}", i, "n1") for i in (1, 2, 3)]
    svc = service(replicas=3)
    if constraint:
        svc.spec.task.placement.constraints.append(constraint)
    if preference:
        svc.spec.task.placement.preferences.add().spread.spread_descriptor = preference
    return svc, tasks


ZONED = nodes_by_id(node("n1", labels={"zone": "a"}), node("n2", labels={"zone": "b"}))


def test_a_new_preference_alone_moves_no_task_and_the_update_completes() -> None:
    svc, tasks = placement_changed("", "node.labels.zone")
    plan = plan_service(updating(svc, NOW - 30 * SEC), tasks, ZONED, NOW, ids("n"))
    assert (plan.create, plan.update, plan.service.update_status.state) == ([], [], US.COMPLETED)


def test_a_new_constraint_its_node_meets_moves_no_task() -> None:
    svc, tasks = placement_changed("node.labels.zone==a")
    plan = plan_service(svc, tasks, ZONED, NOW, ids("n"))
    assert (plan.create, plan.update, plan.service) == ([], [], None)


def test_a_new_constraint_its_node_does_not_meet_replaces_the_task() -> None:
    svc, tasks = placement_changed("node.labels.zone==b")
    plan = plan_service(svc, tasks, ZONED, NOW, ids("n"))
    assert ([t.slot for t in plan.create], [(t.id, t.desired_state) for t in plan.update]) == (
        [1], [("t1", S.TASK_STATE_SHUTDOWN)])


def test_a_placement_change_with_another_change_replaces_the_task() -> None:
    svc, tasks = placement_changed("node.labels.zone==a")
    svc.spec.task.container.image = "busybox:v2"
    plan = plan_service(svc, tasks, ZONED, NOW, ids("n"))
    assert [t.slot for t in plan.create] == [1]
