"""Network routes of the Docker API: list, inspect, create, remove, connect, disconnect, prune.

Parses with shoal.api.params, calls shoal.engine.Engine, answers with shoal.api.convert.
"""
from __future__ import annotations

from aiohttp import web

from common.errdefs import NotFound
from shoal.api import convert, params, swarm_networks
from shoal.api.server import ENGINE, add_route, json_response
from shoal.swarm import container_attach  # swarm overlays through the managers (issue 11)
from shoal.swarm.overlay_gossip import with_peers


async def list_networks(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    filters = params.parse_filters(request.query.get("filters"))
    networks = engine.list_networks(filters)
    docs = [convert.network_json(n) for n in networks]
    docs += await swarm_networks.listed(engine, filters, {n.id for n in networks})  # a manager's swarm networks
    return json_response(docs)


async def inspect_network(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    verbose = request.query.get("verbose", "") in ("1", "true", "True")
    try:
        net = engine.get_network(request.match_info["id"], request.query.get("scope", ""))
    except NotFound:
        scope = request.query.get("scope", "")
        swarm_net = await swarm_networks.find(engine, request.match_info["id"]) if scope in ("", "swarm") else None
        if swarm_net is None:
            raise
        return json_response(with_peers(engine, swarm_networks.network_json(swarm_net), verbose))
    if net.driver == "overlay" and request.query.get("scope", "") in ("", "swarm"):
        # a node's local copy of a swarm network (made for its tasks, containers or the ingress sandbox): on a
        # manager the cluster's network is what inspect shows (Ingress, Attachable, IPAM as allocated)
        swarm_net = await swarm_networks.find(engine, net.id)
        if swarm_net is not None:
            return json_response(with_peers(engine, swarm_networks.network_json(swarm_net), verbose))
    return json_response(with_peers(engine, convert.network_json(net, engine.network_endpoints(net.id)), verbose))


async def create_network(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = params.parse_json_body(await request.read())
    if swarm_networks.is_swarm_create(body):
        return json_response(await swarm_networks.create(engine, body), status=201)
    record, warning = await engine.create_network(params.parse_network_create(body))
    return json_response({"Id": record.id, "Warning": warning}, status=201)


async def remove_network(request: web.Request) -> web.Response:
    swarm_net = await swarm_networks.find(request.app[ENGINE], request.match_info["id"])
    if swarm_net is not None:  # as dockerd: a swarm network of that name or id goes through the cluster
        await swarm_networks.remove(request.app[ENGINE], swarm_net)
        return web.Response(status=204)
    await request.app[ENGINE].remove_network(request.match_info["id"])
    return web.Response(status=204)


async def connect_network(request: web.Request) -> web.Response:
    body = params.parse_json_body(await request.read())
    container, endpoint = params.parse_network_connect(body)
    if not await container_attach.connect(request.app[ENGINE], request.match_info["id"], container, endpoint):
        await request.app[ENGINE].connect_network(request.match_info["id"], container, endpoint)
    return web.Response(status=200)


async def disconnect_network(request: web.Request) -> web.Response:
    body = params.parse_json_body(await request.read())
    container, force = params.parse_network_disconnect(body)
    if not await container_attach.disconnect(request.app[ENGINE], request.match_info["id"], container, force):
        await request.app[ENGINE].disconnect_network(request.match_info["id"], container, force)
    return web.Response(status=200)


async def prune_networks(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query.get("filters"))
    deleted = await request.app[ENGINE].prune_networks(filters)
    return json_response({"NetworksDeleted": list(deleted)})


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/networks", list_networks)
    add_route(app, "GET", "/networks/", list_networks)
    add_route(app, "POST", "/networks/create", create_network)
    add_route(app, "POST", "/networks/prune", prune_networks)
    add_route(app, "GET", "/networks/{id}", inspect_network)
    add_route(app, "DELETE", "/networks/{id}", remove_network)
    add_route(app, "POST", "/networks/{id}/connect", connect_network)
    add_route(app, "POST", "/networks/{id}/disconnect", disconnect_network)
