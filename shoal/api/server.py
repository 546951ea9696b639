"""The aiohttp application serving the Docker Engine API subset, and its unix/tcp listener.

Routes live in shoal.api.routes_*; this module adds versioned paths, the standard headers and
the error shape (`{"message": ...}`, Content-Type exactly application/json).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiohttp import web

from shoal.api import params
from common.errdefs import NotModified, ShoalError, http_status

log = logging.getLogger(__name__)

ENGINE: web.AppKey[Any] = web.AppKey("engine", object)
BACKGROUND: web.AppKey[set] = web.AppKey("background", set)
JSON_TYPE = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    """JSON with Content-Type exactly `application/json` (the CLI compares it verbatim)."""
    body = json.dumps(data).encode() + b"\n"
    return web.Response(status=status, body=body, content_type=JSON_TYPE)


def error_response(status: int, message: str) -> web.Response:
    if status in (204, 304):
        return web.Response(status=status)
    return json_response({"message": message}, status=status)


def standard_headers(engine: Any) -> dict[str, str]:
    """Headers every response carries; the CLI reads Api-Version to pick its version."""
    return {
        "Api-Version": params.MAX_API_VERSION,
        "Ostype": "linux",
        "Server": f"Docker/{engine.version} (linux)",
        "Docker-Experimental": "false",
    }


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Registers `path` and `/v{X.Y}path`: the CLI versions every path but /_ping."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, r"/v{api_version:[0-9]+(?:\.[0-9]+)?}" + path, handler)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        params.check_version(request.match_info.get("api_version"))
        return await handler(request)
    except NotModified:
        return web.Response(status=304)
    except ShoalError as exc:  # the one place an error kind becomes an HTTP status
        return error_response(http_status(exc), exc.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "method not allowed")
    except web.HTTPException as exc:
        return error_response(exc.status, exc.text or exc.reason)
    except Exception as exc:  # noqa: BLE001 - the client gets a message, the log the trace
        if isinstance(exc, ConnectionError):
            raise
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, str(exc) or type(exc).__name__)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(standard_headers(request.app[ENGINE]))


async def _stop_background(app: web.Application) -> None:
    for task in list(app[BACKGROUND]):
        task.cancel()


def build_app(engine: Any) -> web.Application:
    from shoal.api import routes_archive, routes_containers, routes_images, routes_networks, routes_system
    from shoal.api import routes_configs, routes_gossip, routes_resources, routes_swarm, routes_verbs, routes_volumes

    # Image tarballs are streamed from request.content; only JSON bodies hit this cap.
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    app[ENGINE] = engine
    app[BACKGROUND] = set()
    app.on_response_prepare.append(_add_headers)
    app.on_shutdown.append(_stop_background)
    # routes_verbs first: its /containers/prune and /images/prune precede the {id} patterns
    for module in (routes_system, routes_verbs, routes_networks, routes_containers, routes_images, routes_volumes,
                   routes_archive, routes_swarm, routes_resources, routes_configs, routes_gossip):
        module.add_routes(app)
    from shoal.api import routes_service_logs, routes_services

    routes_services.add_routes(app)  # /services, /tasks (issue 12)
    routes_service_logs.add_routes(app)  # /services/{id}/logs, /tasks/{id}/logs
    return app


class ApiServer:
    """A running listener; `close()` stops accepting and ends open connections."""

    def __init__(self, runner: web.AppRunner, address: str, socket_path: Path | None) -> None:
        self._runner = runner
        self.address = address
        self.socket_path = socket_path

    async def close(self) -> None:
        await self._runner.cleanup()
        if self.socket_path is not None:
            try:
                if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                    self.socket_path.unlink()
            except FileNotFoundError:
                pass


def _prepare_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # stale: left by a daemon that died
    else:
        raise ValueError(f"{path} is in use by a running daemon")
    finally:
        probe.close()


async def serve(engine: Any, host: str) -> ApiServer:
    """Listens on `unix:///path` (mode 660) or `tcp://ip:port`."""
    url = urlparse(host)
    runner = web.AppRunner(build_app(engine), access_log=None, handler_cancellation=False)
    await runner.setup()
    try:
        if url.scheme == "unix":
            path = Path(url.path or url.netloc)
            _prepare_socket_path(path)
            site: web.BaseSite = web.UnixSite(runner, str(path))
            await site.start()
            os.chmod(path, 0o660)
            return ApiServer(runner, host, path)
        if url.scheme == "tcp":
            if not url.hostname or url.port is None:
                raise ValueError(f"invalid host {host!r}: expected tcp://ip:port")
            site = web.TCPSite(runner, url.hostname, url.port)
            await site.start()
            return ApiServer(runner, host, None)
        raise ValueError(f"invalid host {host!r}: expected unix:///path or tcp://ip:port")
    except BaseException:
        await runner.cleanup()
        raise
