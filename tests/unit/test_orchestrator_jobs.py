"""The job orchestrators' cores (manager/orchestrator/jobs.py, swarmkit's orchestrator/jobs): concurrency, completions,
restarts within the policy, completed tasks never replaced, a new run per update, a global job on a later node."""

from __future__ import annotations

from manager.orchestrator.jobs import reconcile_global_job, reconcile_replicated_job
from manager.orchestrator.runner import plan_service
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import NOW, SEC, S, ids, node, nodes_by_id, service, task

DONE = S.TASK_STATE_COMPLETE


def replicated_job(max_concurrent: int = 2, total: int = 4, run: int = 0, **restart: object) -> pb.Service:
    svc = service(name="job", replicas=0, **restart)
    svc.spec.replicated_job.max_concurrent = max_concurrent
    svc.spec.replicated_job.total_completions = total
    svc.job_status.job_iteration.index = run
    return svc


def global_job(run: int = 0, **restart: object) -> pb.Service:
    svc = service(name="job", replicas=0, **restart)
    svc.spec.global_job.SetInParent()
    svc.job_status.job_iteration.index = run
    return svc


def job_task(svc: pb.Service, tid: str, slot: int = 0, node_id: str = "n1", state: int = S.TASK_STATE_RUNNING,
             desired: int = DONE, run: int | None = None, at: int = NOW - 60 * SEC) -> pb.Task:
    t = task(svc, tid, slot, node_id, state=state, desired=desired, at=at)
    t.job_iteration.index = svc.job_status.job_iteration.index if run is None else run
    return t


def test_a_new_replicated_job_starts_max_concurrent_tasks_in_slots_from_zero_desired_complete() -> None:
    svc = replicated_job(max_concurrent=2, total=4)
    plan = reconcile_replicated_job(svc, [], {}, NOW, ids())
    assert [(t.slot, t.desired_state, t.job_iteration.index) for t in plan.create] == [(0, DONE, 0), (1, DONE, 0)]


def test_no_more_tasks_start_while_max_concurrent_are_active() -> None:
    svc = replicated_job(max_concurrent=2, total=4)
    active = [job_task(svc, "a", 0, state=S.TASK_STATE_RUNNING), job_task(svc, "b", 1, state=S.TASK_STATE_PENDING, node_id="")]
    plan = reconcile_replicated_job(svc, active, {"n1": node("n1")}, NOW, ids())
    assert (plan.create, plan.update) == ([], [])


def test_a_completed_task_frees_its_concurrency_for_the_next_free_slot() -> None:
    svc = replicated_job(max_concurrent=2, total=4)
    tasks = [job_task(svc, "a", 0, state=DONE), job_task(svc, "b", 1)]
    plan = reconcile_replicated_job(svc, tasks, {"n1": node("n1")}, NOW, ids())
    assert [t.slot for t in plan.create] == [2] and plan.update == []


def test_no_task_starts_beyond_total_completions() -> None:
    svc = replicated_job(max_concurrent=3, total=4)
    tasks = [job_task(svc, "a", 0, state=DONE), job_task(svc, "b", 1, state=DONE), job_task(svc, "c", 2)]
    plan = reconcile_replicated_job(svc, tasks, {"n1": node("n1")}, NOW, ids())
    assert [t.slot for t in plan.create] == [3]


def test_a_job_with_every_completion_done_starts_nothing_and_changes_nothing() -> None:
    svc = replicated_job(max_concurrent=2, total=3)
    tasks = [job_task(svc, t, s, state=DONE) for s, t in enumerate("abc")]
    plan = reconcile_replicated_job(svc, tasks, {"n1": node("n1")}, NOW, ids())
    assert (plan.create, plan.update) == ([], [])


def test_a_completed_task_is_never_replaced_even_with_restart_condition_any() -> None:
    svc = replicated_job(max_concurrent=1, total=1, condition=pb.RestartPolicy.ANY)
    plan = reconcile_replicated_job(svc, [job_task(svc, "a", 0, state=DONE)], {"n1": node("n1")}, NOW, ids())
    assert (plan.create, plan.update) == ([], [])


def test_a_failed_task_is_restarted_in_its_slot_after_the_restart_delay() -> None:
    svc = replicated_job(max_concurrent=1, total=2, delay_s=5)
    failed = job_task(svc, "a", 0, state=S.TASK_STATE_FAILED, at=NOW - 2 * SEC)
    early = reconcile_replicated_job(svc, [failed], {"n1": node("n1")}, NOW, ids())
    assert (early.create, early.update, early.wake_at_ns) == ([], [], NOW + 3 * SEC)  # still counts as the active one
    plan = reconcile_replicated_job(svc, [failed], {"n1": node("n1")}, NOW + 3 * SEC, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert [(t.slot, t.desired_state, t.job_iteration.index) for t in plan.create] == [(0, DONE, 0)]


def test_a_failed_task_is_restarted_at_most_max_attempts_times_and_its_slot_then_stays_held() -> None:
    svc = replicated_job(max_concurrent=1, total=2, condition=pb.RestartPolicy.ON_FAILURE, max_attempts=2)
    history = [job_task(svc, "a", 0, state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - 30 * SEC),
               job_task(svc, "b", 0, state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - 20 * SEC)]
    third = job_task(svc, "c", 0, state=S.TASK_STATE_FAILED, at=NOW - 10 * SEC)
    plan = reconcile_replicated_job(svc, [*history, third], {"n1": node("n1")}, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("c", S.TASK_STATE_SHUTDOWN)]
    assert [t.slot for t in plan.create] == [1]  # the other slot runs; slot 0 is not refilled
    held = job_task(svc, "c", 0, state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - 10 * SEC)
    later = reconcile_replicated_job(svc, [*history, held, job_task(svc, "d", 1, state=DONE)], {"n1": node("n1")}, NOW, ids())
    assert (later.create, later.update) == ([], [])


def test_restart_condition_none_leaves_a_failed_task_down() -> None:
    svc = replicated_job(max_concurrent=1, total=1, condition=pb.RestartPolicy.NONE)
    plan = reconcile_replicated_job(svc, [job_task(svc, "a", 0, state=S.TASK_STATE_FAILED)], {"n1": node("n1")}, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)] and plan.create == []


def test_a_task_of_a_down_node_is_replaced_at_once_without_counting_as_an_attempt() -> None:
    svc = replicated_job(max_concurrent=1, total=1, delay_s=5)
    nodes = nodes_by_id(node("n1", state=pb.NodeStatus.DOWN), node("n2"))
    plan = reconcile_replicated_job(svc, [job_task(svc, "a", 0, "n1")], nodes, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert [t.slot for t in plan.create] == [0]


def test_a_new_run_removes_the_earlier_runs_unfinished_tasks_keeps_its_completed_ones_and_starts_afresh() -> None:
    svc = replicated_job(max_concurrent=2, total=2, run=1)
    old = [job_task(svc, "a", 0, state=DONE, run=0), job_task(svc, "b", 1, state=S.TASK_STATE_RUNNING, run=0)]
    plan = reconcile_replicated_job(svc, old, {"n1": node("n1")}, NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("b", S.TASK_STATE_REMOVE)]
    assert [(t.slot, t.job_iteration.index) for t in plan.create] == [(0, 1), (1, 1)]


def test_the_runner_gives_a_job_no_rolling_update() -> None:
    svc = replicated_job(max_concurrent=1, total=1)
    stale = job_task(svc, "a", 0)
    stale.spec.container.image = "busybox:old"  # another spec: a service's rolling update would replace it
    plan = plan_service(svc, [stale], {"n1": node("n1")}, NOW, ids())
    assert (plan.create, plan.update, plan.service) == ([], [], None)


def test_a_global_job_runs_one_task_per_eligible_node() -> None:
    svc = global_job()
    nodes = nodes_by_id(node("n1"), node("n2"), node("n3", availability=pb.NodeSpec.DRAIN),
                        node("n4", state=pb.NodeStatus.DOWN))
    plan = reconcile_global_job(svc, [], nodes, NOW, ids())
    assert sorted((t.node_id, t.slot, t.desired_state) for t in plan.create) == [("n1", 0, DONE), ("n2", 0, DONE)]


def test_a_global_job_gives_a_node_added_later_its_task_and_none_to_nodes_that_completed() -> None:
    svc = global_job()
    nodes = nodes_by_id(node("n1"), node("n2"))
    plan = reconcile_global_job(svc, [job_task(svc, "a", 0, "n1", state=DONE)], nodes, NOW, ids())
    assert [t.node_id for t in plan.create] == ["n2"] and plan.update == []


def test_a_global_jobs_failed_task_is_restarted_on_its_node() -> None:
    svc = global_job()
    plan = reconcile_global_job(svc, [job_task(svc, "a", 0, "n1", state=S.TASK_STATE_FAILED)], nodes_by_id(node("n1")),
                                NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)]
    assert [(t.node_id, t.desired_state) for t in plan.create] == [("n1", DONE)]


def test_a_global_jobs_task_leaves_a_drained_node_and_runs_there_again_once_it_is_active() -> None:
    svc = global_job()
    plan = reconcile_global_job(svc, [job_task(svc, "a", 0, "n1")], nodes_by_id(node("n1", availability=pb.NodeSpec.DRAIN)),
                                NOW, ids())
    assert [(t.id, t.desired_state) for t in plan.update] == [("a", S.TASK_STATE_SHUTDOWN)] and plan.create == []
    stopped = job_task(svc, "a", 0, "n1", state=S.TASK_STATE_SHUTDOWN, desired=S.TASK_STATE_SHUTDOWN)
    back = reconcile_global_job(svc, [stopped], nodes_by_id(node("n1")), NOW, ids())
    assert [t.node_id for t in back.create] == ["n1"]


def test_a_new_global_run_removes_every_task_of_the_earlier_run() -> None:
    svc = global_job(run=3)
    old = [job_task(svc, "a", 0, "n1", state=DONE, run=2), job_task(svc, "b", 0, "n2", run=2)]
    plan = reconcile_global_job(svc, old, nodes_by_id(node("n1"), node("n2")), NOW, ids())
    assert sorted((t.id, t.desired_state) for t in plan.update) == [("a", S.TASK_STATE_REMOVE), ("b", S.TASK_STATE_REMOVE)]
    assert sorted((t.node_id, t.job_iteration.index) for t in plan.create) == [("n1", 3), ("n2", 3)]
