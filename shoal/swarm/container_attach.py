"""Containers run outside services on a swarm's attachable overlays (`run --network OVERLAY`, `network connect OVERLAY
C`), as moby's findAndAttachNetwork: the node asks the managers for an attachment (shoal/swarm/attachments.py), makes
the network here with the managers' id, VNI and subnet (shoal/swarm/executor_net.ensure_network: the overlay driver
does the kernel part) and gives the endpoint the allocated address; the attachment is released by `network
disconnect` and when the container is removed, and the local copy goes with its last user (local_copies.py). Called
from shoal/api/routes_containers.py (create), routes_networks.py (connect, disconnect) and shoal/swarm/hooks.py (the
removal watcher)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from common.errdefs import GRPC_CODE, Conflict, NotFound, ShoalError, SystemError_
from common.fsutil import write_atomic
from shoal.engine.requests import ContainerCreate, EndpointRequest

log = logging.getLogger(__name__)

# container id -> attachment ids, so a restarted daemon still releases them; and attachment id -> network id, so a
# disconnect releases the right one (an attachment missing there is read as network "?<attachment id>")
STATE_FILE = "swarm-attachments.json"
NETWORKS_FILE = "swarm-attachment-networks.json"
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


async def before_create(engine: Any, name: str, request: ContainerCreate) -> dict[str, str]:
    """Attachments ({network id: attachment id}) for the swarm networks the create names; the request's endpoints
    get the allocated addresses and the networks exist here afterwards. A network the managers do not know is left
    to the engine (Docker's "network X not found"); any other refusal is the create's error, in dockerd's words,
    with nothing kept. The copies stay pinned until created() or undo()."""
    from shoal.swarm.attachments import attach_network
    from shoal.swarm.local_copies import pin

    node = _node(engine)
    if node is None:
        return {}
    made: dict[str, str] = {}
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
            except ShoalError as e:
                raise _as_dockerd(ref, e) from None
            made[att.network.id or f"?{aid}"] = aid
            if att.network.id:
                pin(engine, att.network.id)
            await ensure_network_of(engine, att)
            ep.ipv4 = next((a.split("/", 1)[0] for a in att.addresses if "." in a), ep.ipv4)
            request.endpoints[ref] = ep
    except BaseException:
        await _detach(engine, list(made.values()))
        _unpin(engine, made)
        raise
    return made


async def ensure_network_of(engine: Any, att: Any) -> Any:
    from shoal.swarm.executor_net import ensure_network

    return await ensure_network(engine, att.network)


def _as_dockerd(ref: str, e: ShoalError) -> ShoalError:
    """moby's Cluster.AttachNetwork: `Could not attach to network X: <the gRPC error>`, a plain error (500)."""
    code = "".join(w.capitalize() for w in GRPC_CODE[e.kind].split("_"))
    text = e.message if e.message.startswith("rpc error:") else f"rpc error: code = {code} desc = {e.message}"
    return SystemError_(f"Could not attach to network {ref}: {text}")


def _unpin(engine: Any, made: dict[str, str]) -> None:
    from shoal.swarm.local_copies import unpin

    for nid in made:
        if not nid.startswith("?"):
            unpin(engine, nid)


async def undo(engine: Any, attachments: dict[str, str]) -> None:
    """The create failed after its attachments were made: they go back to the managers, the copies if unused."""
    from shoal.swarm.local_copies import prune

    _unpin(engine, attachments)
    await _detach(engine, list(attachments.values()))
    if attachments:
        await prune(engine)


def created(engine: Any, container_id: str, attachments: dict[str, str]) -> None:
    _unpin(engine, attachments)
    if attachments:
        state = _load(engine)
        state.setdefault(container_id, {}).update(attachments)
        _save(engine, state)


# ---------------------------------------------------------------------------------- connect / disconnect
async def connect(engine: Any, ref: str, container_ref: str, endpoint: EndpointRequest) -> bool:
    """`network connect` of a swarm network on a swarm node (False: not ours, the engine connects as for any local
    network): the managers give the attachment, the copy is made here, then the engine connects the container
    (running or not) with the allocated address; on any failure the attachment goes back. dockerd's answers: a
    network the managers refuse or do not know is `Could not attach to network X: rpc error: ...` (500), a second
    connect `C is already attached to network X` (409)."""
    from shoal.swarm.attachments import attach_network
    from shoal.swarm.local_copies import pin, unpin

    node = _node(engine)
    if node is None or ref in _NOT_SWARM or not _swarm_or_missing(engine, ref):
        return False
    container = engine.get_container(container_ref)  # dockerd's "No such container" comes first
    try:
        known = engine.get_network(ref)
    except ShoalError:
        known = None
    if known is not None and known.id in container.endpoints:
        raise Conflict(f"{container.name} is already attached to network {known.name}")
    try:
        aid, att = await attach_network(list(node.state.managers), node.tls(), ref, container.id,
                                        endpoint.ipv4, endpoint.aliases)
    except ShoalError as e:
        raise _as_dockerd(ref, e) from None
    pin(engine, att.network.id)
    try:
        local = await ensure_network_of(engine, att)
        endpoint.ipv4 = next((a.split("/", 1)[0] for a in att.addresses if "." in a), endpoint.ipv4)
        if local.id in engine.get_container(container.id).endpoints:  # a concurrent connect won
            raise Conflict(f"{container.name} is already attached to network {local.name}")
        await engine.connect_network(local.id, container.id, endpoint)
    except BaseException:
        unpin(engine, att.network.id)
        await _detach(engine, [aid])
        await prune_copies(engine)
        raise
    unpin(engine, att.network.id)
    state = _load(engine)
    state.setdefault(container.id, {})[local.id] = aid
    _save(engine, state)
    return True


async def disconnect(engine: Any, ref: str, container_ref: str, force: bool) -> bool:
    """`network disconnect` of a swarm network's local copy (False: not ours): the engine disconnects, the managers
    release the attachment, and the copy goes if nothing else here uses it. A swarm network this node has no copy
    of is the engine's "network X not found", as dockerd answers."""
    node = _node(engine)
    try:
        local = engine.get_network(ref)
    except ShoalError:
        return False
    if node is None or local.scope != "swarm":
        return False
    container = engine.get_container(container_ref)
    await engine.disconnect_network(local.id, container.id, force)
    state = _load(engine)
    held = state.get(container.id, {})
    aid = held.pop(local.id, None)
    if not held:
        state.pop(container.id, None)
    _save(engine, state)
    if aid is not None:
        await _detach(engine, [aid])
    await prune_copies(engine)
    return True


async def release_all(engine: Any, timeout_s: float) -> int:
    """Every attachment this node holds goes back to the managers (swarm leave), within timeout_s; the state is
    cleared whatever they answer (a node out of the swarm cannot release them later). Returns how many there were."""
    held = [aid for attachments in _load(engine).values() for aid in attachments.values()]
    _save(engine, {})
    if held:
        try:
            await asyncio.wait_for(_detach(engine, held), timeout_s)
        except asyncio.TimeoutError:
            log.warning("swarm leave: %d attachments not released (no manager answered in time)", len(held))
    return len(held)


async def prune_copies(engine: Any) -> None:
    from shoal.swarm.local_copies import prune

    try:
        await prune(engine)
    except Exception:  # noqa: BLE001 - a copy left is tried again at the next prune
        log.exception("swarm: pruning local network copies failed")


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
    after a restart too: the state file outlives the process) and the swarm network copies no one uses any more
    go (a task's container included); attachments of containers gone while the daemon was down are released first."""
    sub = engine.events.subscribe({"type": ["container"], "event": ["destroy"]})
    try:
        state = _load(engine)
        for cid in [c for c in state if c not in engine.containers]:
            await _forget(engine, cid)
        await prune_copies(engine)
        while True:
            event = await sub.queue.get()
            if event is None:  # too slow (never expected): catch up from the containers that remain
                engine.events.unsubscribe(sub)
                sub = engine.events.subscribe({"type": ["container"], "event": ["destroy"]})
                for cid in [c for c in _load(engine) if c not in engine.containers]:
                    await _forget(engine, cid)
                await prune_copies(engine)
                continue
            cid = event.actor_id
            if cid in _load(engine):
                await _forget(engine, cid)
            if _node(engine) is not None:
                await prune_copies(engine)
    finally:
        engine.events.unsubscribe(sub)


async def _forget(engine: Any, container_id: str) -> None:
    state = _load(engine)
    attachments = state.pop(container_id, {})
    _save(engine, state)
    await _detach(engine, list(attachments.values()))


def start_watcher(engine: Any) -> None:
    """Once per engine (a swarm join after a leave keeps the first one)."""
    if getattr(engine, "_swarm_attach_watcher", None) is None:
        engine._swarm_attach_watcher = asyncio.get_running_loop().create_task(
            released_on_removal(engine), name="swarm-attachments")


def _path(engine: Any, name: str = STATE_FILE) -> Any:
    return engine.options.data_dir / name


def _read(engine: Any, name: str) -> dict[str, Any]:
    try:
        data = json.loads(_path(engine, name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load(engine: Any) -> dict[str, dict[str, str]]:
    """container id -> {network id: attachment id}."""
    networks = {str(a): str(n) for a, n in _read(engine, NETWORKS_FILE).items()}
    out: dict[str, dict[str, str]] = {}
    for cid, held in _read(engine, STATE_FILE).items():
        if isinstance(held, list):
            out[str(cid)] = {networks.get(str(a), f"?{a}"): str(a) for a in held}
    return out


def _save(engine: Any, state: dict[str, dict[str, str]]) -> None:
    """The networks first: a crash between the writes leaves an unused entry there, never an attachment of unknown
    network that a disconnect would miss."""
    networks = {aid: nid for held in state.values() for nid, aid in held.items() if not nid.startswith("?")}
    write_atomic(_path(engine, NETWORKS_FILE), json.dumps(networks, sort_keys=True).encode())
    lists = {cid: sorted(held.values()) for cid, held in state.items() if held}
    write_atomic(_path(engine, STATE_FILE), json.dumps(lists, sort_keys=True).encode())
