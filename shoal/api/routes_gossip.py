"""GET /shoal/gossip: this node's gossip members (state, incarnation, address) and its networks' peer and entry
counts, from the GossipAgent (shoal/swarm/gossip_agent.py). Read by `shoal node gossip` (shoal/cli/gossip.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.errdefs import Unavailable
from shoal.api.server import ENGINE, add_route, json_response

NOT_STARTED = "gossip has not started: the dispatcher session has not given this node the gossip keys yet"


def gossip_status(engine: Any) -> dict[str, Any]:
    from shoal.swarm.node import NOT_PART

    node = getattr(engine, "swarm", None)
    if node is None or not node.active:
        raise Unavailable(NOT_PART)
    agent = getattr(node, "gossip", None)
    if agent is None:
        return {"NodeID": node.state.node_id, "Addr": "", "Running": False, "Error": NOT_STARTED, "KeyLamport": 0,
                "Keys": 0, "Members": [], "Networks": [], "Counters": {}}
    return agent.status()


async def gossip_get(request: web.Request) -> web.Response:
    return json_response(gossip_status(request.app[ENGINE]))


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/shoal/gossip", gossip_get)
