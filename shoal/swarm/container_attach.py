"""Containers run outside services on a swarm's attachable overlays (`run --network OVERLAY`), as moby's
findAndAttachNetwork: the node asks the managers for an attachment (shoal/swarm/attachments.py), makes the network
here with the managers' id, VNI and subnet (shoal/swarm/executor_net.ensure_network: the overlay driver does the
kernel part) and gives the endpoint the allocated address; the attachment is released when the container is
removed. Called from shoal/api/routes_containers.py (create) and shoal/swarm/hooks.py (the removal watcher)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from common.errdefs import NotFound, ShoalError
from common.fsutil import write_atomic
from shoal.engine.requests import ContainerCreate, EndpointRequest

log = logging.getLogger(__name__)

STATE_FILE = "swarm-attachments.json"  # container id -> attachment ids, so a restarted daemon still releases them
_NOT_SWARM = {"", "default", "bridge", "host", "none"}


def _node(engine: Any) -> Any | None:
    node = getattr(engine, "swarm", None)
    if node is None or not getattr(node, "active", False) or getattr(node, "state", None) is None:
        return None
    return node


def _refs(request: ContainerCreate) -> list[str]:
    """The networks the create names, NetworkMode first (the docker CLI repeats it in EndpointsConfig)."""
    out = []
    for ref in (request.network_mode, *request.endpoints):
        if ref not in _NOT_SWARM and not ref.startswith("container:") and ref not in out:
            out.append(ref)
    return out


def _swarm_or_missing(engine: Any, ref: str) -> bool:
    """ref is a swarm network's local copy, or no local network at all (then the managers may know it)."""
    try:
        return engine.get_network(ref).scope == "swarm"
    except NotFound:
        return True
    except ShoalError:
        return False


async def before_create(engine: Any, name: str, request: ContainerCreate) -> list[str]:
    """Attachments for the swarm networks the create names; the request's endpoints get the allocated
    addresses and the networks exist here afterwards. A network the managers do not know is left to the
    engine (Docker's "network X not found"); any other refusal is the create's error, with nothing kept."""
    from shoal.swarm.attachments import attach_network, detach_network
    from shoal.swarm.executor_net import ensure_network

    node = _node(engine)
    if node is None:
        return []
    made: list[str] = []
    try:
        for ref in _refs(request):
            if not _swarm_or_missing(engine, ref):
                continue
            ep = request.endpoints.get(ref) or EndpointRequest()
            try:
                aid, att = await attach_network(list(node.state.managers), node.tls(), ref, name or "container",
                                                ep.ipv4, ep.aliases)
            except NotFound:
                continue
            made.append(aid)
            await ensure_network(engine, att.network)
            ep.ipv4 = next((a.split("/", 1)[0] for a in att.addresses if "." in a), ep.ipv4)
            request.endpoints[ref] = ep
    except BaseException:
        for aid in made:
            with contextlib.suppress(Exception):
                await detach_network(list(node.state.managers), node.tls(), aid)
        raise
    return made


async def undo(engine: Any, attachments: list[str]) -> None:
    """The create failed after its attachments were made: they go back to the managers."""
    await _detach(engine, attachments)


def created(engine: Any, container_id: str, attachments: list[str]) -> None:
    if attachments:
        state = _load(engine)
        state[container_id] = attachments
        _save(engine, state)


async def _detach(engine: Any, attachments: list[str]) -> None:
    from shoal.swarm.attachments import detach_network

    node = _node(engine)
    if node is None:
        return
    for aid in attachments:
        try:
            await detach_network(list(node.state.managers), node.tls(), aid)
        except NotFound:
            pass  # already gone (the node left and came back, or a manager cleaned it)
        except Exception as e:  # noqa: BLE001 - the managers reap a node's attachments when it leaves
            log.warning("swarm: attachment %s could not be released: %s", aid, e)


async def released_on_removal(engine: Any) -> None:
    """Runs for the daemon's life: a destroyed container's attachments are released (its own daemon does it,
    after a restart too: the state file outlives the process); attachments of containers gone while the
    daemon was down are released first."""
    sub = engine.events.subscribe({"type": ["container"], "event": ["destroy"]})
    try:
        state = _load(engine)
        for cid in [c for c in state if c not in engine.containers]:
            await _forget(engine, cid)
        while True:
            event = await sub.queue.get()
            if event is None:  # too slow (never expected): catch up from the containers that remain
                engine.events.unsubscribe(sub)
                sub = engine.events.subscribe({"type": ["container"], "event": ["destroy"]})
                for cid in [c for c in _load(engine) if c not in engine.containers]:
                    await _forget(engine, cid)
                continue
            cid = event.actor_id
            if cid in _load(engine):
                await _forget(engine, cid)
    finally:
        engine.events.unsubscribe(sub)


async def _forget(engine: Any, container_id: str) -> None:
    state = _load(engine)
    attachments = state.pop(container_id, [])
    _save(engine, state)
    await _detach(engine, attachments)


def start_watcher(engine: Any) -> None:
    """Once per engine (a swarm join after a leave keeps the first one)."""
    if getattr(engine, "_swarm_attach_watcher", None) is None:
        engine._swarm_attach_watcher = asyncio.get_running_loop().create_task(
            released_on_removal(engine), name="swarm-attachments")


def _path(engine: Any) -> Any:
    return engine.options.data_dir / STATE_FILE


def _load(engine: Any) -> dict[str, list[str]]:
    try:
        data = json.loads(_path(engine).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(a) for a in v] for k, v in data.items() if isinstance(v, list)}


def _save(engine: Any, state: dict[str, list[str]]) -> None:
    write_atomic(_path(engine), json.dumps(state, sort_keys=True).encode())
