"""Docker's swarm and node endpoints (/swarm/init|join|leave|update, /swarm, /nodes...) and /info's Swarm section,
over the daemon's SwarmNode (shoal/swarm/node.py). JSON conversion in swarm_json.py; errors are common.errdefs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.errdefs import InvalidParameter, Unavailable
from manager.nodes import NotLeaderHere
from proto import objects_pb2 as pb
from proto import swarm_pb2
from shoal.api import params
from shoal.api.server import ENGINE, add_route, json_response
from shoal.api.swarm_json import (
    AVAILABILITY,
    check_cert_expiry,
    cluster_spec_from_json,
    node_json,
    node_spec_from_json,
    swarm_json,
)


def _swarm(request: web.Request) -> Any:
    from shoal.swarm.node import NOT_IN_SWARM

    node = getattr(request.app[ENGINE], "swarm", None)
    if node is None:
        raise Unavailable(NOT_IN_SWARM)
    return node


def info_section(engine: Any) -> dict[str, Any]:
    node = getattr(engine, "swarm", None)
    if node is None:
        return {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                "Error": "", "RemoteManagers": None}
    return node.info_section()


def ping_swarm_header(engine: Any) -> str:
    """/_ping's Swarm header as dockerd sends it: inactive, active/worker or active/manager."""
    node = getattr(engine, "swarm", None)
    if node is None or not node.active:
        return "inactive"
    return "active/manager" if node.is_manager else "active/worker"


def _ok() -> web.Response:
    return web.Response(status=200)


def _duration_s(spec: dict[str, Any], section: str, key: str) -> float:
    v = (spec.get(section) or {}).get(key) if isinstance(spec.get(section), dict) else None
    if v in (None, 0):
        return 0.0
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InvalidParameter(f"invalid {section}.{key}: {v!r}")
    return v / 1e9


def _availability(body: dict[str, Any]) -> int:
    a = body.get("Availability") or "active"
    for k, v in AVAILABILITY.items():
        if v == a:
            return k
    raise InvalidParameter(f"invalid Availability: {a!r}")


def _default_pools(body: dict[str, Any]) -> tuple[list[str], int]:
    """DefaultAddrPool / SubnetSize of an init request, checked as dockerd does (manager/allocator/pools.py)."""
    from manager.allocator.pools import AllocationError, validate_default_pools

    pools = body.get("DefaultAddrPool") or []
    size = body.get("SubnetSize") or 0
    if not isinstance(pools, list) or not all(isinstance(p, str) for p in pools):
        raise InvalidParameter(f"invalid DefaultAddrPool: {pools!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidParameter(f"invalid SubnetSize: {size!r}")
    if not pools:
        return [], 0  # a mask length alone changes nothing, as with dockerd
    try:
        return validate_default_pools(pools, size)
    except AllocationError as e:
        raise InvalidParameter(e.message) from None


async def swarm_init(request: web.Request) -> web.Response:
    from shoal.swarm.node import InitRequest

    body = params.parse_json_body(await request.read())
    spec = body.get("Spec") or {}
    if not isinstance(spec, dict):
        raise InvalidParameter("invalid JSON: Spec must be an object")
    req = InitRequest(
        listen_addr=str(body.get("ListenAddr") or "0.0.0.0:2377"),
        advertise_addr=str(body.get("AdvertiseAddr") or ""),
        force_new_cluster=bool(body.get("ForceNewCluster")),
        heartbeat_s=_duration_s(spec, "Dispatcher", "HeartbeatPeriod"),
        cert_expiry_s=_duration_s(spec, "CAConfig", "NodeCertExpiry"),
        availability=_availability(body),
    )
    check_cert_expiry(req.cert_expiry_s)
    req.default_addr_pool, req.subnet_size = _default_pools(body)
    node_id = await _swarm(request).init(req)
    return json_response(node_id)


async def swarm_join(request: web.Request) -> web.Response:
    from shoal.swarm.node import JoinRequest

    body = params.parse_json_body(await request.read())
    remotes = body.get("RemoteAddrs") or []
    if not isinstance(remotes, list) or not remotes or not all(isinstance(r, str) and r for r in remotes):
        raise InvalidParameter("at least 1 RemoteAddr is required to join")
    req = JoinRequest(remote=remotes[0], token=str(body.get("JoinToken") or ""),
                      listen_addr=str(body.get("ListenAddr") or "0.0.0.0:2377"),
                      advertise_addr=str(body.get("AdvertiseAddr") or ""), availability=_availability(body))
    await _swarm(request).join(req)
    return _ok()


async def swarm_leave(request: web.Request) -> web.Response:
    await _swarm(request).leave(params.bool_value(request.query.get("force")))
    return _ok()


async def swarm_inspect(request: web.Request) -> web.Response:
    ops = _swarm(request).ops()
    return json_response(swarm_json(await ops.get_cluster()))


async def swarm_update(request: web.Request) -> web.Response:
    ops = _swarm(request).ops()
    version = params.int_value(request.query.get("version"), "version")
    if version is None:
        raise InvalidParameter("invalid swarm version")
    body = params.parse_json_body(await request.read())
    cluster = await ops.get_cluster()
    spec = cluster_spec_from_json(body, cluster.spec)
    await ops.update_cluster(version, spec, params.bool_value(request.query.get("rotateWorkerToken")),
                             params.bool_value(request.query.get("rotateManagerToken")))
    return _ok()


async def swarm_unlockkey(request: web.Request) -> web.Response:
    _swarm(request).ops()
    return json_response({"UnlockKey": ""})


def _ca_pem(request: web.Request) -> bytes:
    swarm = _swarm(request)
    try:
        return swarm.paths.ca.read_bytes()
    except OSError:
        return b""


async def nodes_list(request: web.Request) -> web.Response:
    ops = _swarm(request).ops()
    filters = params.parse_filters(request.query.get("filters"))
    nodes = await ops.list_nodes()
    roles = filters.get("role")
    if roles:
        nodes = [n for n in nodes if ("manager" if n.role == pb.NodeSpec.MANAGER else "worker") in roles]
    ca = _ca_pem(request)
    return json_response([node_json(n, ca) for n in nodes])


async def node_inspect(request: web.Request) -> web.Response:
    ops = _swarm(request).ops()
    node = await ops.get_node(request.match_info["id"])
    return json_response(node_json(node, _ca_pem(request)))


async def node_update(request: web.Request) -> web.Response:
    swarm = _swarm(request)
    ops = swarm.ops()
    version = params.int_value(request.query.get("version"), "version")
    if version is None:
        raise InvalidParameter("invalid node version")
    body = params.parse_json_body(await request.read())
    node = await ops.get_node(request.match_info["id"])
    spec = node_spec_from_json(body, node.spec)
    try:
        await ops.update_node(node.id, version, spec)
    except NotLeaderHere:  # a demotion changes raft membership: the leader does it
        await swarm.on_leader("UpdateNode", swarm_pb2.UpdateNodeRequest(
            node_id=node.id, node_version=pb.Version(index=version), spec=spec))
    return _ok()


async def node_delete(request: web.Request) -> web.Response:
    ops = _swarm(request).ops()
    await ops.remove_node(request.match_info["id"], params.bool_value(request.query.get("force")))
    return _ok()


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/swarm/init", swarm_init)
    add_route(app, "POST", "/swarm/join", swarm_join)
    add_route(app, "POST", "/swarm/leave", swarm_leave)
    add_route(app, "GET", "/swarm", swarm_inspect)
    add_route(app, "POST", "/swarm/update", swarm_update)
    add_route(app, "GET", "/swarm/unlockkey", swarm_unlockkey)
    add_route(app, "GET", "/nodes", nodes_list)
    add_route(app, "GET", "/nodes/{id}", node_inspect)
    add_route(app, "POST", "/nodes/{id}/update", node_update)
    add_route(app, "DELETE", "/nodes/{id}", node_delete)
