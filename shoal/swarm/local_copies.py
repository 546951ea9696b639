"""A node's local copies of swarm networks (made by shoal/swarm/executor_net.ensure_network for a task, an attached
container or the ingress sandbox) go when nothing on this node uses them, as a Docker worker's do: `network ls` there
lists a swarm network only while a local container or task is on it. Called by container_attach.py (disconnect, a
container's removal, a failed connect) and overlay_leave.py (everything, at swarm leave); the managers' view is theirs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from common.errdefs import ShoalError

log = logging.getLogger(__name__)


def _lock(engine: Any) -> asyncio.Lock:
    """Held while a copy is made (ensure_network) or removed here: a copy found by one is never one the other is
    taking away."""
    lock = getattr(engine, "_swarm_copies_lock", None)
    if lock is None:
        lock = asyncio.Lock()
        engine._swarm_copies_lock = lock
    return lock


def _pins(engine: Any) -> dict[str, int]:
    pins = getattr(engine, "_swarm_copies_pins", None)
    if pins is None:
        pins = {}
        engine._swarm_copies_pins = pins
    return pins


@contextlib.asynccontextmanager
async def making(engine: Any) -> AsyncIterator[None]:
    """Around finding or creating a copy (executor_net.ensure_network)."""
    async with _lock(engine):
        yield


def pin(engine: Any, network_id: str) -> None:
    """Keeps network_id's copy while a connect or create that will put an endpoint on it is under way (unpin after)."""
    pins = _pins(engine)
    pins[network_id] = pins.get(network_id, 0) + 1


def unpin(engine: Any, network_id: str) -> None:
    pins = _pins(engine)
    left = pins.get(network_id, 0) - 1
    if left > 0:
        pins[network_id] = left
    else:
        pins.pop(network_id, None)


def _task_networks(engine: Any) -> set[str]:
    """Networks of the tasks this node is to run (a task's container may not exist yet): their copies stay. A task
    told to stop, or whose runner is removing it, no longer counts: its container, while it exists, holds the copy."""
    from proto import objects_pb2 as pb

    worker = getattr(getattr(engine, "swarm", None), "worker", None)
    if worker is None:
        return set()
    tasks = list(getattr(worker, "tasks", {}).values())
    tasks += [r.task for r in list(getattr(worker, "runners", {}).values()) if not getattr(r, "removed", False)]
    statuses = getattr(worker, "statuses", {})
    out: set[str] = set()
    for t in tasks:
        if t.desired_state > pb.TASK_STATE_COMPLETE:  # a job's task is desired COMPLETE
            continue
        if t.desired_state == pb.TASK_STATE_COMPLETE and (statuses.get(t.id) or t.status).state > pb.TASK_STATE_RUNNING:
            continue  # a job's task that ended: it stays desired COMPLETE and never runs again
        for att in t.networks:
            out.add(att.network.id)
            if att.network.spec.annotations.name:
                out.add(att.network.spec.annotations.name)
    return out


def _ingress(engine: Any) -> set[str]:
    """The ingress network's id as the node knows it: its own ingress attachment, the mesh's network and the ingress
    sandbox's endpoints (not containers': no record lists them)."""
    from shoal.swarm.ingress_glue import mesh_network_ids

    out = set(mesh_network_ids(engine))
    att = getattr(getattr(getattr(engine, "swarm", None), "node_object", None), "attachment", None)
    if att is not None and att.network.id:
        out.add(att.network.id)
    return out


def unused(engine: Any, everything: bool = False) -> list[Any]:
    """The swarm network copies nothing on this node uses: no container's endpoint (whatever its state: a stopped
    container starts again on it; but a task's stopped container never does: it stays only for its logs while its task
    is in the history, and a task still meant to run holds its networks through the assignments; until its sandbox is
    torn down, though, its endpoints are still plumbed and announced), no assigned task,
    no connect or create under way, not the ingress sandbox. The ingress network stays while the node is in a swarm
    (the routing mesh's sandbox is on it, and a worker lists it as Docker's do); `everything`: the node left, ingress
    too once its sandbox is gone."""
    from shoal.swarm.executor import L_TASK_ID

    used: set[str] = set(_pins(engine)) | _task_networks(engine)
    for c in list(engine.containers.values()):
        if c.state != "running" and c.labels.get(L_TASK_ID) and not getattr(c, "netns", ""):
            continue  # a task's container whose sandbox is gone (one that exited but is not torn down yet still
            # holds its endpoints: removing the copy under it skipped their leave, and gossip kept them for good)
        used.update(c.endpoints)
    from shoal.swarm.ingress_glue import mesh_network_ids

    used.update(mesh_network_ids(engine))
    ingress = _ingress(engine)
    out = []
    for net in list(engine.net.networks.values()):
        if getattr(net, "scope", "") != "swarm" or net.id in used or net.name in used:
            continue
        if (net.ingress or net.id in ingress or net.name == "ingress") and not everything:
            continue
        out.append(net)
    return out


async def prune(engine: Any, everything: bool = False) -> list[str]:
    """Removes the unused copies (their namespaces went with their last endpoint); returns their names. A failure
    is logged: the copy is retried at the next prune."""
    gone: list[str] = []
    async with _lock(engine):
        for net in unused(engine, everything):
            if net.id not in {n.id for n in unused(engine, everything)}:
                continue  # used meanwhile (the loop ran while the last removal was on the kernel thread)
            try:
                await engine.remove_network(net.id)
                gone.append(net.name)
            except ShoalError as e:
                log.warning("swarm: the local copy of network %s stays: %s", net.name, e.message)
            except Exception:  # noqa: BLE001 - a kernel refusal; the next prune tries again
                log.exception("swarm: the local copy of network %s could not be removed", net.name)
    if gone:
        log.info("swarm: local copies removed (no local container or task uses them): %s", ", ".join(gone))
    return gone
