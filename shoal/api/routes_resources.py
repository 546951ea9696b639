"""Resource routes of the Docker API: stats (stream and one-shot), top, pause, unpause, update.
Call engine.resources (shoal.engine.resources), shape stats with agent.executor.stats; wired by shoal.api.server."""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from agent.executor import stats as st
from agent.executor.cgroups import DOCKER_FIELDS
from shoal.api.create_fields import is_zero
from shoal.api import params, streams
from shoal.api.routes_system import mem_total
from shoal.api.server import ENGINE, JSON_TYPE, add_route, json_response
from shoal.engine.errors import InvalidParameter

STATS_INTERVAL = 1.0
_UPDATE_APPLIED = frozenset(k.lower() for k in DOCKER_FIELDS)  # Docker's collector publishes one reading a second


def _stats(engine: Any, container: Any, now: st.Reading | None, before: st.Reading | None) -> bytes:
    out = st.stats_json(container.name, container.id, now, before, mem_total(),
                        engine.resources.cgroups.version)
    return json.dumps(out).encode() + b"\n"


async def container_stats(request: web.Request) -> web.StreamResponse:
    """stream (default true): one object a second until the client goes; stream=false: one
    object whose precpu is a reading a second earlier (so the CLI can show CPU %);
    one-shot=true with stream=false: at once, precpu empty."""
    engine = request.app[ENGINE]
    container = engine.get_container(request.match_info["id"])
    raw_stream = request.query.get("stream")
    stream = True if raw_stream is None else params.bool_value(raw_stream)
    one_shot = params.bool_value(request.query.get("one-shot"))
    if stream and one_shot:
        raise InvalidParameter("cannot have stream=true and one-shot=true")
    resources = engine.resources
    if not stream:
        before = resources.reading(container)
        if before is None or one_shot:
            return web.Response(status=200, body=_stats(engine, container, before, None), content_type=JSON_TYPE)
        await asyncio.sleep(STATS_INTERVAL)
        now = resources.reading(container)
        return web.Response(status=200, body=_stats(engine, container, now, before if now else None),
                            content_type=JSON_TYPE)
    response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
    await response.prepare(request)
    gone = asyncio.ensure_future(streams.when_disconnected(request))
    before: st.Reading | None = None
    try:
        while not gone.done():
            now = resources.reading(container)
            await response.write(_stats(engine, container, now, before))
            before = now
            await asyncio.wait({gone}, timeout=STATS_INTERVAL)
            if container.id not in engine.containers:
                break
    except ConnectionError:
        pass
    finally:
        gone.cancel()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def container_top(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    result = await engine.resources.top(request.match_info["id"], request.query.get("ps_args", ""))
    return json_response(result)


async def pause_container(request: web.Request) -> web.Response:
    await request.app[ENGINE].resources.pause(request.match_info["id"])
    return web.Response(status=204)


async def unpause_container(request: web.Request) -> web.Response:
    await request.app[ENGINE].resources.unpause(request.match_info["id"])
    return web.Response(status=204)


async def update_container(request: web.Request) -> web.Response:
    body = params.parse_json_body(await request.read())
    for key, value in body.items():
        # The CLI sends every resource field (zero when not given) and RestartPolicy: a
        # non-zero one shoal does not apply is refused, never ignored.
        if key.lower() not in _UPDATE_APPLIED and not is_zero(value, key.lower() == "restartpolicy"):
            raise InvalidParameter(f"shoal does not support updating {key} yet (got {json.dumps(value)})")
    warnings = await request.app[ENGINE].resources.update(request.match_info["id"], body)
    return json_response({"Warnings": list(warnings)})


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/containers/{id}/stats", container_stats)
    add_route(app, "GET", "/containers/{id}/top", container_top)
    add_route(app, "POST", "/containers/{id}/pause", pause_container)
    add_route(app, "POST", "/containers/{id}/unpause", unpause_container)
    add_route(app, "POST", "/containers/{id}/update", update_container)
