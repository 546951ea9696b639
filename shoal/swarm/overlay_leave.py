"""What `swarm leave` takes away from the node's networking, as dockerd's DaemonLeavesCluster: containers come off the
swarm's networks (their attachments released while the node can still reach the managers), then the routing mesh's
ingress sandbox (namespace, rules, its docker_gwbridge and ingress endpoints), the services' VIP tables and every local
copy of a swarm network go. Called by shoal/swarm/node.py's leave; uses container_attach.py, ingress_glue.py and
local_copies.py. docker_gwbridge itself stays, as Docker's does."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 10.0  # a leave --force of a cluster without quorum must not wait for each manager's deadline


def _swarm_endpoints(engine: Any) -> list[tuple[str, str]]:
    """(container id, network id) of every endpoint a container that is not a task's has on a swarm network."""
    from shoal.swarm.executor import L_TASK_ID

    out = []
    for c in list(engine.containers.values()):
        if c.labels.get(L_TASK_ID):
            continue  # task containers go whole with the membership (worker_glue.remove_task_containers)
        for nid in list(c.endpoints):
            net = engine.net.networks.get(nid)
            if net is not None and getattr(net, "scope", "") == "swarm":
                out.append((c.id, nid))
    return out


async def before_leave(engine: Any) -> None:
    """While still a member: containers are disconnected from the swarm's networks (forced, running or not) and
    their attachments released at the managers (bounded: leave goes on without them)."""
    from shoal.swarm import container_attach

    for cid, nid in _swarm_endpoints(engine):
        try:
            await engine.disconnect_network(nid, cid, True)
        except Exception:  # noqa: BLE001 - leaving goes on; after_leave keeps the copy the endpoint holds
            log.exception("swarm leave: could not disconnect container %s from network %s", cid[:12], nid[:12])
    await container_attach.release_all(engine, RELEASE_TIMEOUT_S)


async def after_leave(engine: Any) -> None:
    """Once out (tasks removed, session and gossip stopped): the mesh, VIP tables and swarm network copies go."""
    from shoal.swarm.ingress_glue import remove_mesh
    from shoal.swarm.local_copies import prune

    node = getattr(engine, "swarm", None)
    if node is not None:
        node.service_glue = None  # a later join starts from nothing (its state named this membership's gossip)
    try:
        await engine._kernel(remove_mesh, engine)
    except Exception:  # noqa: BLE001 - the namespace may be half gone; what remains is logged
        log.exception("swarm leave: the ingress sandbox could not be removed")
    try:
        await engine._kernel(engine.sandboxes.lb.set_bindings, [])
    except Exception:  # noqa: BLE001
        log.exception("swarm leave: the services' VIP tables could not be removed")
    try:
        await prune(engine, everything=True)
    except Exception:  # noqa: BLE001
        log.exception("swarm leave: the local copies of swarm networks could not be removed")
