"""Restart policy (swarmkit's orchestrator/restart): whether a task that ended, or whose node failed, is replaced,
and when. Pure: the decision is a function of the service, the slot's task history and the time passed in."""

from __future__ import annotations

from dataclasses import dataclass

from proto import objects_pb2 as pb

from .tasks import S, same_spec

DEFAULT_DELAY_NS = 5_000_000_000  # swarmkit's default restart delay
Condition = pb.RestartPolicy.Condition
# ended on their own (a task the orchestrator stopped ends in SHUTDOWN and is not an attempt)
_ATTEMPT_STATES = frozenset({S.TASK_STATE_COMPLETE, S.TASK_STATE_FAILED, S.TASK_STATE_REJECTED})


@dataclass(slots=True, frozen=True)
class Decision:
    restart: bool
    at_ns: int = 0  # restart not before this time (0: now)
    reason: str = ""


def delay_ns(policy: pb.RestartPolicy) -> int:
    return policy.delay.ToNanoseconds() if policy.HasField("delay") else DEFAULT_DELAY_NS


def decide(service: pb.Service, ended: pb.Task, history: list[pb.Task], now_ns: int, node_failed: bool = False) -> Decision:
    """For a task the orchestrator still wants running: replace it? `history` is every task of its slot
    (or of its node, for a global service), `ended` included. A node failure is no attempt and has no delay."""
    policy = service.spec.task.restart
    if policy.condition == Condition.NONE:
        return Decision(False, reason="restart condition none")
    # a job's task that completed is done whatever the condition: swarmkit's supervisor reads `any` as on-failure there
    on_failure = policy.condition == Condition.ON_FAILURE or ended.HasField("job_iteration")
    if not node_failed and on_failure and ended.status.state == S.TASK_STATE_COMPLETE:
        return Decision(False, reason="task completed and restart condition is on-failure")
    if node_failed:
        return Decision(True)
    if policy.max_attempts:
        window = policy.window.ToNanoseconds() if policy.HasField("window") else 0
        # as swarmkit's restart supervisor: the attempts of the ended task's own spec (an update starts the count
        # anew), up to the ended one, and with a window only those that ended within it counted back from when
        # the ended one did (not from now: a late decision, e.g. a new leader's, counts the same)
        end = ended.status.timestamp.ToNanoseconds()
        attempts = [t for t in history if t.status.state in _ATTEMPT_STATES and same_spec(t.spec, ended.spec)
                    and t.status.timestamp.ToNanoseconds() <= end
                    and (window == 0 or t.status.timestamp.ToNanoseconds() > end - window)]
        # each earlier attempt ended and was restarted: restarts so far = attempts - 1
        if len(attempts) > policy.max_attempts:
            return Decision(False, reason=f"restart attempts exhausted ({policy.max_attempts})")
    return Decision(True, at_ns=ended.status.timestamp.ToNanoseconds() + delay_ns(policy))
