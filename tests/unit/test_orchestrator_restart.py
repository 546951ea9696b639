"""Restart policy decisions: condition, delay (default 5 s), max attempts within a window."""

from __future__ import annotations

from manager.orchestrator.restart import DEFAULT_DELAY_NS, decide
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import NOW, SEC, S, service, task


def test_default_delay_is_five_seconds_after_the_task_ended() -> None:
    svc = service()
    svc.spec.task.restart.ClearField("delay")
    ended = task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW)
    d = decide(svc, ended, [ended], NOW)
    assert (d.restart, d.at_ns, DEFAULT_DELAY_NS) == (True, NOW + 5 * SEC, 5 * SEC)


def test_attempts_outside_the_window_do_not_count() -> None:
    svc = service(max_attempts=1)
    svc.spec.task.restart.window.FromNanoseconds(60 * SEC)
    old = task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - 120 * SEC)
    now_failed = task(svc, "b", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW)
    assert decide(svc, now_failed, [old, now_failed], NOW).restart is True
    recent = task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - 30 * SEC)
    assert decide(svc, now_failed, [recent, now_failed], NOW).restart is False


def test_node_failure_replaces_at_once_even_with_on_failure() -> None:
    svc = service(condition=pb.RestartPolicy.ON_FAILURE, delay_s=30)
    t = task(svc, "a", 1, "n1", state=S.TASK_STATE_RUNNING)
    assert decide(svc, t, [t], NOW, node_failed=True).at_ns == 0


def test_task_history_keeps_the_newest_finished_tasks_per_slot() -> None:
    from manager.orchestrator.runner import history_to_prune

    svc = service()
    old = [task(svc, f"old{i}", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, created=NOW + i * SEC)
           for i in range(7)]
    current = task(svc, "cur", 1, "n1", state=S.TASK_STATE_RUNNING, created=NOW + 10 * SEC)
    other_slot = task(svc, "s2", 2, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN)
    stopping = task(svc, "stopping", 1, "n1", state=S.TASK_STATE_RUNNING, desired=S.TASK_STATE_SHUTDOWN, created=NOW - SEC)
    pruned = history_to_prune([*old, current, other_slot, stopping], keep=5)
    assert [t.id for t in pruned] == ["old0", "old1"]  # the two oldest finished ones; running or stopping ones stay


def test_the_restart_window_is_counted_back_from_when_the_task_ended_not_from_now() -> None:
    """swarmkit's ShouldRestart looks back `window` from the ended task's own timestamp: a decision taken late (a new
    leader, a long restart delay) counts the same attempts as one taken at once."""
    svc = service(max_attempts=1)
    svc.spec.task.restart.window.FromNanoseconds(60 * SEC)
    recent = task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - 30 * SEC)
    now_failed = task(svc, "b", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW)
    late = decide(svc, now_failed, [recent, now_failed], NOW + 120 * SEC)
    assert (late.restart, late.reason) == (False, "restart attempts exhausted (1)")


def test_attempts_that_ended_after_the_task_in_question_do_not_count() -> None:
    svc = service(max_attempts=1)
    svc.spec.task.restart.window.FromNanoseconds(60 * SEC)
    first = task(svc, "a", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW - 10 * SEC)
    later = task(svc, "b", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW)
    assert decide(svc, first, [first, later], NOW).restart is True


def test_attempts_of_an_earlier_spec_do_not_count_after_an_update() -> None:
    """swarmkit clears a slot's restart history when the service spec changes: past failures do not count against
    the new definition."""
    old = service(max_attempts=1, image="busybox:v1")
    svc = service(max_attempts=1, image="busybox:v2")
    before = task(old, "a", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - 10 * SEC)
    now_failed = task(svc, "b", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW)
    assert decide(svc, now_failed, [before, now_failed], NOW).restart is True
    again = task(svc, "c", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW + SEC)
    exhausted = decide(svc, again, [before, now_failed, again], NOW + SEC)
    assert (exhausted.restart, exhausted.reason) == (False, "restart attempts exhausted (1)")


def test_a_slot_keeps_enough_finished_tasks_to_count_its_restart_attempts() -> None:
    """swarmkit counts restarts in memory, whatever the task history retention (5): here the count is read from the
    slot's finished tasks, so pruning must leave max_attempts of them or a crash loop would never stop."""
    from manager.orchestrator.runner import history_keep, history_to_prune

    svc = service(max_attempts=6)
    failed = [task(svc, f"f{i}", 1, "n1", state=S.TASK_STATE_FAILED, desired=S.TASK_STATE_SHUTDOWN, at=NOW - (10 - i) * SEC)
              for i in range(6)]
    current = task(svc, "cur", 1, "n1", state=S.TASK_STATE_FAILED, at=NOW)
    pruned = {t.id for t in history_to_prune([*failed, current], history_keep(svc, 5))}
    kept = [t for t in [*failed, current] if t.id not in pruned]
    d = decide(svc, current, kept, NOW)
    assert (d.restart, d.reason) == (False, "restart attempts exhausted (6)")


def test_the_history_kept_is_the_retention_limit_without_max_attempts() -> None:
    from manager.orchestrator.runner import history_keep

    assert (history_keep(service(), 5), history_keep(service(max_attempts=3), 5), history_keep(service(max_attempts=9), 5)) == (
        5, 5, 9)
