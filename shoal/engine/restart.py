"""Restart policies (`--restart no|on-failure[:N]|always|unless-stopped`) applied by the daemon:
the policy's validation and moby's restart manager (pure), and the supervisor that restarts.

The engine (shoal.engine.engine) calls Supervisor.container_exited after each exit and
Supervisor.restore at start; the supervisor calls back Engine.restart_after_exit. Backoff as
moby's restartmanager: 100 ms doubling up to 1 min, back to 100 ms after 10 s of running.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common.errdefs import InvalidParameter

log = logging.getLogger(__name__)

NO, ALWAYS, ON_FAILURE, UNLESS_STOPPED = "no", "always", "on-failure", "unless-stopped"
FIRST_DELAY = 0.1  # seconds (moby's defaultTimeout)
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # a run this long resets the backoff


@dataclass(slots=True, frozen=True)
class RestartPolicy:
    name: str = NO  # "" is taken as "no"
    max_retries: int = 0

    @property
    def is_none(self) -> bool:
        return self.name in ("", NO)


def parse_policy(host_config: Mapping[str, Any]) -> RestartPolicy:
    """HostConfig.RestartPolicy -> RestartPolicy, validated with moby's messages, and the
    AutoRemove conflict as the daemon refuses it."""
    raw = next((v for k, v in host_config.items() if k.lower() == "restartpolicy"), None) or {}
    if not isinstance(raw, dict):
        raise InvalidParameter("invalid JSON: HostConfig.RestartPolicy must be an object")
    name = next((v for k, v in raw.items() if k.lower() == "name"), "") or ""
    count = next((v for k, v in raw.items() if k.lower() == "maximumretrycount"), 0) or 0
    if not isinstance(name, str) or not isinstance(count, int) or isinstance(count, bool):
        raise InvalidParameter("invalid JSON: HostConfig.RestartPolicy has the wrong type")
    policy = RestartPolicy(name or NO, count)
    validate_policy(policy)
    auto_remove = next((v for k, v in host_config.items() if k.lower() == "autoremove"), False)
    if auto_remove and not policy.is_none:
        raise InvalidParameter("can't create 'AutoRemove' container with restart policy")
    return policy


def validate_policy(policy: RestartPolicy) -> None:
    if policy.name in (ALWAYS, UNLESS_STOPPED, NO, ""):
        if policy.max_retries != 0:
            message = "invalid restart policy: maximum retry count can only be used with 'on-failure'"
            if policy.max_retries < 0:
                message += " and cannot be negative"
            raise InvalidParameter(message)
        return
    if policy.name == ON_FAILURE:
        if policy.max_retries < 0:
            raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")
        return
    raise InvalidParameter(
        f"invalid restart policy: unknown policy '{policy.name}'; use one of "
        f"'{NO}', '{ALWAYS}', '{ON_FAILURE}', or '{UNLESS_STOPPED}'"
    )


@dataclass(slots=True)
class Backoff:
    """moby's restartmanager state for one container: the current delay and whether the user
    cancelled restarts (stop, or kill with the stop signal) until the next start."""

    delay: float = 0.0
    cancelled: bool = False

    def decide(self, policy: RestartPolicy, exit_code: int, manually_stopped: bool,
               ran_for: float, restart_count: int) -> float | None:
        """The delay before the next start, or None when the container stays down."""
        if policy.is_none or self.cancelled:
            return None
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        self.delay = FIRST_DELAY if self.delay == 0.0 else min(self.delay * 2, MAX_DELAY)
        if policy.name == ALWAYS:
            restart = True
        elif policy.name == UNLESS_STOPPED:
            restart = not manually_stopped
        else:
            restart = exit_code != 0 and (policy.max_retries == 0 or restart_count < policy.max_retries)
        return self.delay if restart else None


def should_restart_at_boot(policy: RestartPolicy, exit_code: int, manually_stopped: bool,
                           restart_count: int) -> bool:
    """moby's restore: a stopped container that was started before comes back when its
    policy says so (`always` even after a user stop; `unless-stopped` unless the user
    stopped it; `on-failure` after a failure with retries left)."""
    return Backoff().decide(policy, exit_code, manually_stopped, 0.0, restart_count) is not None


class Supervisor:
    """Timers of the containers waiting for their next start (state "restarting")."""

    def __init__(self, start: Callable[[str], Awaitable[None]]) -> None:
        self._start = start  # Engine.restart_after_exit(container_id)
        self._backoff: dict[str, Backoff] = {}
        self._pending: dict[str, asyncio.Task] = {}

    def backoff(self, container_id: str) -> Backoff:
        return self._backoff.setdefault(container_id, Backoff())

    def container_exited(self, container: Any, policy: RestartPolicy, ran_for: float) -> float | None:
        """Schedules the next start when the policy wants one; returns its delay."""
        delay = self.backoff(container.id).decide(
            policy, container.exit_code, container.manually_stopped, ran_for, container.restart_count
        )
        if delay is not None:
            self._schedule(container.id, delay)
        return delay

    def _schedule(self, container_id: str, delay: float) -> None:
        self.cancel_pending(container_id)
        task = asyncio.get_running_loop().create_task(self._later(container_id, delay))
        self._pending[container_id] = task

    async def _later(self, container_id: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            self._pending.pop(container_id, None)
            await self._start(container_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # a restart that fails is logged; the container stays down
            log.exception("container %s: restart failed", container_id[:12])

    def start_now(self, container_id: str) -> None:
        """A restart at daemon start (no backoff, as moby's restore)."""
        self._schedule(container_id, 0.0)

    def is_pending(self, container_id: str) -> bool:
        return container_id in self._pending

    def cancel_pending(self, container_id: str) -> bool:
        task = self._pending.pop(container_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            return True
        return False

    def cancel(self, container_id: str) -> None:
        """The user stopped it: no restart until it is started again."""
        self.backoff(container_id).cancelled = True
        self.cancel_pending(container_id)

    def reset(self, container_id: str) -> None:
        """A start by the user: a fresh backoff."""
        self._backoff.pop(container_id, None)
        self.cancel_pending(container_id)

    def forget(self, container_id: str) -> None:
        self.reset(container_id)

    def close(self) -> None:
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()


# ---- what the engine calls (shoal.engine.engine) -------------------------------------

def policy_of(container: Any) -> RestartPolicy | None:
    """The record's policy; None when it cannot be read (a record an older shoal wrote)."""
    try:
        return parse_policy({"RestartPolicy": next(
            (v for k, v in container.host_config.items() if k.lower() == "restartpolicy"), None)})
    except InvalidParameter:
        return None


def schedule_after_exit(engine: Any, container: Any) -> bool:
    """After an exit the container did by itself (the engine holds its lock): its policy may
    want it back. Counts the restart when it decides, as moby does."""
    from shoal.engine.engine import _seconds_between  # the engine's clock helper

    policy = policy_of(container)
    if policy is None:
        return False
    ran_for = _seconds_between(container.started_at, container.finished_at)
    if engine.restarts.container_exited(container, policy, ran_for) is None:
        return False
    container.restart_count += 1
    container.restarting = True
    engine._save_quietly(container)
    return True


async def restart_after_exit(engine: Any, container_id: str) -> None:
    """The supervisor's call when a container's backoff is over."""
    container = engine.containers.get(container_id)
    if container is None:
        return
    async with engine._lock(container_id):
        if not container.restarting or container.state == "running":
            return
        try:
            await engine._start(container)
        except Exception as exc:  # noqa: BLE001 - the container stays down, as moby's monitor leaves it
            container.restarting = False
            engine._save_quietly(container)
            log.error("container %s: restart failed: %s", container.name, getattr(exc, "message", exc))


def restart_at_boot(engine: Any) -> None:
    """moby's restore: stopped containers started before whose policy wants them back. A container on a network
    whose driver this node cannot serve yet (a swarm overlay before the swarm session is back) waits for it:
    restart_deferred() starts it when the driver is there (shoal/swarm/hooks.on_joined)."""
    for container in engine.containers.values():
        if container.state == "running" or not container.started_before:
            continue
        policy = policy_of(container)
        if policy is not None and should_restart_at_boot(policy, container.exit_code, container.manually_stopped,
                                                         container.restart_count):
            container.restarting = True
            if _waits_for_a_driver(engine, container):
                deferred_at_boot(engine).add(container.id)
                continue
            engine.restarts.start_now(container.id)
        elif container.restarting:
            container.restarting = False
            engine._save_quietly(container)


def deferred_at_boot(engine: Any) -> set[str]:
    """Ids of containers whose restart at boot waits for a network driver (restart_at_boot)."""
    deferred = getattr(engine, "_deferred_boot_restarts", None)
    if deferred is None:
        deferred = set()
        engine._deferred_boot_restarts = deferred
    return deferred


def _waits_for_a_driver(engine: Any, container: Any) -> bool:
    from agent.network.drivers.base import UnavailableDriver

    for network_id in container.endpoints:
        try:
            net = engine.net.lookup(network_id)
        except Exception:  # noqa: BLE001 - a network gone: the start itself says so
            continue
        if isinstance(engine.net.drivers.find(net.driver), UnavailableDriver):
            return True
    return False


def restart_deferred(engine: Any) -> int:
    """Starts the containers restart_at_boot held back whose drivers are there now; returns how many."""
    deferred = deferred_at_boot(engine)
    started = 0
    for container_id in sorted(deferred):
        container = engine.containers.get(container_id)
        if container is None or container.state == "running" or not container.restarting:
            deferred.discard(container_id)
            continue
        if _waits_for_a_driver(engine, container):
            continue
        deferred.discard(container_id)
        engine.restarts.start_now(container_id)
        started += 1
    return started
