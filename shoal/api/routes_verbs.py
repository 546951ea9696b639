"""Routes of the container verbs around the lifecycle: rename, container and image prune,
`system df`, and the build-cache prune `docker system prune` calls (shoal has no builder).

Parses with shoal.api.params; the work is shoal.engine.verbs; wired by shoal.api.server.
"""
from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from shoal.api import convert, params
from shoal.api.server import ENGINE, add_route, json_response
from shoal.engine import verbs


async def rename_container(request: web.Request) -> web.Response:
    await verbs.rename_container(request.app[ENGINE], request.match_info["id"], request.query.get("name", ""))
    return web.Response(status=204)


async def prune_containers(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query.get("filters"))
    return json_response(await verbs.prune_containers(request.app[ENGINE], filters))


async def prune_images(request: web.Request) -> web.Response:
    filters = params.parse_filters(request.query.get("filters"))
    return json_response(await verbs.prune_images(request.app[ENGINE], filters))


async def prune_build_cache(request: web.Request) -> web.Response:
    return json_response({"CachesDeleted": None, "SpaceReclaimed": 0})


async def system_df(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    networks = {n.id: n for n in engine.list_networks({})}
    now = datetime.now(timezone.utc)
    usage = await verbs.disk_usage(engine, lambda c: convert.container_summary(c, networks, now))
    return json_response(usage)


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/containers/{id}/rename", rename_container)
    add_route(app, "POST", "/containers/prune", prune_containers)
    add_route(app, "POST", "/images/prune", prune_images)
    add_route(app, "POST", "/build/prune", prune_build_cache)
    add_route(app, "GET", "/system/df", system_df)
