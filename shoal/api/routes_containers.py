"""Container and exec routes of the Docker API: create/list/inspect/start/stop/kill/wait/rm,
logs, attach, exec create/start/inspect.

Parses with shoal.api.params, calls shoal.engine.Engine, streams through shoal.api.streams.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from agent.executor import logfile, stdio
from shoal.api import convert, params, streams
from shoal.api.create_versions import adjust_create_for_api_version, migrate_container_mac
from shoal.api.server import BACKGROUND, ENGINE, JSON_TYPE, add_route, json_response, standard_headers
from shoal.api.versioned import drop_path, request_version
from shoal.engine.errors import Conflict, EngineError, InvalidParameter, NotFound, NotModified
from shoal.engine.stdio import stdio_options
from shoal.swarm import container_attach

log = logging.getLogger(__name__)

_WAIT_CONDITIONS = ("", "not-running", "next-exit", "removed")
_START_POLL_S = 0.01


def _networks_by_id(engine: Any) -> dict[str, Any]:
    return {n.id: n for n in engine.list_networks({})}


# ---- lifecycle ----------------------------------------------------------------------

async def create_container(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    name = params.validate_container_name(request.query.get("name", ""))
    version = request_version(request)
    body = adjust_create_for_api_version(params.parse_json_body(await request.read()), version)
    mac_warnings = migrate_container_mac(body, version)
    create = params.parse_container_create(body)
    attached = await container_attach.before_create(engine, name, create)  # swarm overlays (issue 11)
    try:
        record, warnings = await engine.create_container(name, create)
    except BaseException:
        await container_attach.undo(engine, attached)
        raise
    container_attach.created(engine, record.id, attached)
    return json_response({"Id": record.id, "Warnings": [*(warnings or []), *mac_warnings]}, status=201)


async def list_containers(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    limit = params.int_value(request.query.get("limit"), "limit", 0) or 0
    show_all = params.bool_value(request.query.get("all")) or limit > 0
    filters = params.parse_filters(request.query.get("filters"))
    records = engine.list_containers(show_all, filters)
    if limit > 0:
        records = records[:limit]
    networks = _networks_by_id(engine)
    now = datetime.now(timezone.utc)
    return json_response([convert.container_summary(c, networks, now) for c in records])


async def inspect_container(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    record = engine.get_container(request.match_info["id"])
    return json_response(convert.container_inspect(record, _networks_by_id(engine), str(engine.sandboxes.etc_dir(record.id))))


async def start_container(request: web.Request) -> web.Response:
    await request.app[ENGINE].start_container(request.match_info["id"])
    return web.Response(status=204)


def _stop_args(request: web.Request) -> tuple[int | None, str]:
    return params.int_value(request.query.get("t"), "t"), request.query.get("signal", "")


async def stop_container(request: web.Request) -> web.Response:
    timeout, signal = _stop_args(request)
    await request.app[ENGINE].stop_container(request.match_info["id"], timeout, signal)
    return web.Response(status=204)


async def restart_container(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    timeout, signal = _stop_args(request)
    with contextlib.suppress(NotModified):
        await engine.stop_container(ref, timeout, signal)
    await engine.start_container(ref)
    engine.emit_container(engine.get_container(ref), "restart")  # moby's event after the start
    return web.Response(status=204)


async def kill_container(request: web.Request) -> web.Response:
    signal = request.query.get("signal") or "SIGKILL"
    await request.app[ENGINE].kill_container(request.match_info["id"], signal)
    return web.Response(status=204)


async def remove_container(request: web.Request) -> web.Response:
    force = params.bool_value(request.query.get("force"))
    volumes = params.bool_value(request.query.get("v"))  # rm -v: the anonymous volumes too
    await request.app[ENGINE].remove_container(request.match_info["id"], force, volumes)
    return web.Response(status=204)


async def wait_container(request: web.Request) -> web.StreamResponse:
    """The CLI calls wait before start for `docker run`, and only starts the container once
    the headers are back: so headers go out at once and the body when the container stops."""
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    condition = request.query.get("condition", "")
    if condition not in _WAIT_CONDITIONS:
        raise InvalidParameter(f"invalid condition: {json.dumps(condition)}")  # Go's %q
    engine.get_container(ref)  # a missing container is a 404, not a 200 with an error
    waiter = asyncio.ensure_future(engine.wait_container(ref, condition or "not-running"))
    gone = asyncio.ensure_future(streams.when_disconnected(request))
    response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
    try:
        await response.prepare(request)
        await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            return response  # the client went away; nobody reads the result
        try:
            result: dict[str, Any] = {"StatusCode": waiter.result(), "Error": None}
        except EngineError as exc:
            result = {"StatusCode": -1, "Error": {"Message": exc.message}}
        await response.write(json.dumps(result).encode() + b"\n")
        await response.write_eof()
    except ConnectionError:
        pass
    finally:
        gone.cancel()
        if not waiter.done():
            waiter.cancel()
    return response


# ---- output -------------------------------------------------------------------------

def _streams_wanted(request: web.Request) -> tuple[bool, bool]:
    return params.bool_value(request.query.get("stdout")), params.bool_value(request.query.get("stderr"))


def _log_time(request: web.Request, name: str) -> int:
    value = request.query.get(name, "")
    if value in ("", "0"):
        return 0
    try:
        return logfile.parse_unix_time(value, name)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


async def container_logs(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    stdout, stderr = _streams_wanted(request)
    if not (stdout or stderr):
        raise InvalidParameter("Bad parameters: you must choose at least one stream")
    record = engine.get_container(ref)
    follow = params.bool_value(request.query.get("follow"))
    tail = request.query.get("tail") or "all"
    if tail != "all":
        params.int_value(tail, "tail")
    since, until = _log_time(request, "since"), _log_time(request, "until")
    timestamps = params.bool_value(request.query.get("timestamps"))
    chunks = engine.container_logs(ref, stdout, stderr, tail=tail, follow=follow, since_ns=since,
                                   until_ns=until, timestamps=timestamps)
    content_type = streams.stream_content_type(record.tty, request_version(request))
    response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
    await response.prepare(request)
    gone = asyncio.ensure_future(streams.when_disconnected(request))
    try:
        await streams.pump(chunks, response.write, record.tty, gone if follow else None)
    except EngineError as exc:
        log.warning("logs of %s ended: %s", ref, exc.message)
    finally:
        gone.cancel()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


def _wants_upgrade(request: web.Request) -> bool:
    return "Upgrade" in request.headers  # moby: the header's presence, whatever its value or Connection's


async def _hijack(request: web.Request, tty: bool) -> streams.HijackedConnection:
    """Answers 101 UPGRADED (or 200 for a client that did not ask to upgrade) and takes the
    socket over; what follows is the raw or multiplexed output stream, ended by closing. The
    Content-Type is moby's: a 200 always says raw-stream, a 101 says what stream_content_type says."""
    if _wants_upgrade(request):
        status, reason = 101, "UPGRADED"
        headers = {"Content-Type": streams.stream_content_type(tty, request_version(request)),
                   "Connection": "Upgrade", "Upgrade": "tcp"}
    else:
        status, reason = 200, "OK"
        headers = {"Content-Type": streams.RAW_STREAM}
    headers.update(standard_headers(request.app[ENGINE]))
    conn = streams.HijackedConnection.take_over(request)
    await conn.write(streams.raw_response_head(status, reason, headers))
    await conn.until_read()  # the stream starts in a read of its own (docker-py loses bytes read with the head)
    return conn


def _taken_over() -> web.Response:
    # The socket is closed by now: aiohttp fails to send this and drops the connection.
    return web.Response(status=204)


def _detach_keys(value: str) -> bytes:
    try:
        return stdio.parse_detach_keys(value or stdio.DEFAULT_DETACH_KEYS)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


async def attach_container(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    ref = request.match_info["id"]
    stdout, stderr = _streams_wanted(request)
    stdin = params.bool_value(request.query.get("stdin"))
    stream = params.bool_value(request.query.get("stream"))
    logs = params.bool_value(request.query.get("logs"))
    keys = _detach_keys(request.query.get("detachKeys", ""))
    record = engine.get_container(ref)
    # Announced before the 101 goes out: the client starts the container as soon as it has it,
    # and that start must hold the output for this attach.
    announced = _announce(engine.runtime, record.id, stream and record.state != "running")
    try:
        conn = await _hijack(request, record.tty)
    except BaseException:
        announced.close()
        raise
    engine.emit_container(record, "attach")
    try:
        with announced:
            async with engine.reading_output(record.id):
                if logs and (stdout or stderr):
                    await streams.pump(engine.container_logs(record.id, stdout, stderr), conn.write, record.tty,
                                       conn.closed)
                if stream:
                    await _attach_stream(engine, record, conn, stdin, stdout, stderr, keys, announced)
    except EngineError as exc:
        log.info("attach to %s ended: %s", ref, exc.message)
    except ConnectionError:
        pass
    finally:
        await conn.close()
    return _taken_over()


class _announce:
    """Counts an attach waiting for a container's start in runtime.attach_waiting (the start
    tells the shim to hold the output until that many clients are connected); once."""

    def __init__(self, runtime: Any, container_id: str, active: bool) -> None:
        self.runtime, self.id, self.active = runtime, container_id, active
        if active:
            runtime.attach_waiting[container_id] = runtime.attach_waiting.get(container_id, 0) + 1

    def close(self) -> None:
        if self.active:
            self.active = False
            left = self.runtime.attach_waiting.get(self.id, 1) - 1
            if left > 0:
                self.runtime.attach_waiting[self.id] = left
            else:
                self.runtime.attach_waiting.pop(self.id, None)

    def __enter__(self) -> "_announce":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _attach_stream(engine: Any, record: Any, conn: streams.HijackedConnection,
                         stdin: bool, stdout: bool, stderr: bool, keys: bytes, announced: _announce) -> None:
    """Through the container's shim, which outlives this daemon: output, stdin, detach keys.
    Before a start (`docker run`, `start -a`) the start is told to hold the output for us."""
    runtime = engine.runtime
    stdin = stdin and stdio_options_of(record).open_stdin
    if record.state != "running":
        if not announced.active:  # it stopped while the logs were replayed: wait for the next start
            announced = _announce(runtime, record.id, True)
        with announced:
            while record.state != "running" and not conn.is_closed and record.id in engine.containers:
                await asyncio.sleep(_START_POLL_S)
        if record.state != "running":
            return
    announced.close()
    try:
        shim = await stdio.ShimConnection.open(runtime.bundle_dir(record.id), stdin, stdout, stderr)
    except OSError:
        return  # its shim has gone: the container exited meanwhile
    try:
        await streams.bridge(conn, shim.output(), record.tty, shim.send_stdin if stdin else None,
                             shim.close_stdin if stdin else None, keys if record.tty and stdin else b"")
    finally:
        await shim.close()


def stdio_options_of(record: Any) -> stdio.StdioOptions:
    return stdio_options(record.create_config, record.host_config, record.tty)


def _size(request: web.Request) -> tuple[int, int]:
    rows = params.int_value(request.query.get("h"), "h")
    cols = params.int_value(request.query.get("w"), "w")
    if rows is None or cols is None or rows < 0 or cols < 0:
        raise InvalidParameter(f"invalid size: h={request.query.get('h', '')!r} w={request.query.get('w', '')!r}")
    return rows, cols


async def resize_container(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    rows, cols = _size(request)
    record = engine.get_container(request.match_info["id"])
    if record.state != "running":
        raise Conflict(f"Container {record.id} is not running")
    try:
        shim = await stdio.ShimConnection.open(engine.runtime.bundle_dir(record.id))
    except OSError:
        raise Conflict(f"Container {record.id} is not running") from None
    try:
        await shim.resize(rows, cols)
    finally:
        await shim.close()
    return web.Response(status=200)


# ---- exec ---------------------------------------------------------------------------

async def create_exec(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = params.parse_json_body(await request.read())
    if params.version_before(request_version(request), "1.42") and isinstance(body, dict):
        drop_path(body, ("ConsoleSize",))  # moby: not supported before 1.42
    record = await engine.create_exec(request.match_info["id"], params.parse_exec_create(body))
    return json_response({"Id": record.id}, status=201)


async def _drain(chunks: Any) -> None:
    try:
        async for _ in chunks:
            pass
    except EngineError as exc:
        log.warning("detached exec failed: %s", exc.message)


async def start_exec(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    exec_id = request.match_info["id"]
    body = params.parse_json_body(await request.read())
    detach, tty = params.parse_exec_start(body)
    size = params.get_ci(body, "ConsoleSize")
    console_size = (size[0], size[1]) if isinstance(size, list) and len(size) == 2 and all(
        isinstance(x, int) and x > 0 for x in size) else None
    if params.version_before(request_version(request), "1.42"):
        console_size = None  # moby: not supported before 1.42
    record = engine.get_exec(exec_id)
    if record.running or record.exit_code is not None:
        # Checked here because after the upgrade an error can only go into the stream.
        state = "is already running" if record.running else "has already run"
        raise Conflict(f"Error: Exec command {exec_id} {state}")
    keys = _detach_keys(record.detach_keys)
    if detach:
        task = asyncio.ensure_future(_drain(engine.run_exec(exec_id, console_size)))
        request.app[BACKGROUND].add(task)
        task.add_done_callback(request.app[BACKGROUND].discard)
        return web.Response(status=200)
    tty = tty or record.tty
    conn = await _hijack(request, tty)
    started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    chunks = engine.run_exec(exec_id, console_size, lambda run: started.done() or started.set_result(run))

    async def send(data: bytes) -> None:
        await (await started).write_stdin(data)

    async def close() -> None:
        await (await started).close_stdin()

    stdin = record.attach_stdin
    try:
        await streams.bridge(conn, chunks, tty, send if stdin else None, close if stdin else None,
                             keys if tty and stdin else b"")
    except EngineError as exc:
        # moby writes a failure after the upgrade into the stream, as stdout.
        with contextlib.suppress(ConnectionError):
            await conn.write(streams.encode_output(streams.STDOUT, (exc.message + "\r\n").encode(), tty))
    except ConnectionError:
        pass
    finally:
        await conn.close()
    return _taken_over()


async def resize_exec(request: web.Request) -> web.Response:
    rows, cols = _size(request)
    record = request.app[ENGINE].get_exec(request.match_info["id"])
    if record.run is None:
        raise Conflict(f"Exec {record.id} is not running")
    record.run.resize(rows, cols)
    return web.Response(status=200)


async def inspect_exec(request: web.Request) -> web.Response:
    record = request.app[ENGINE].get_exec(request.match_info["id"])
    return json_response(convert.exec_inspect(record, tty=record.tty))


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/containers/create", create_container)
    add_route(app, "GET", "/containers/json", list_containers)
    add_route(app, "GET", "/containers/{id}/json", inspect_container)
    add_route(app, "POST", "/containers/{id}/start", start_container)
    add_route(app, "POST", "/containers/{id}/stop", stop_container)
    add_route(app, "POST", "/containers/{id}/restart", restart_container)
    add_route(app, "POST", "/containers/{id}/kill", kill_container)
    add_route(app, "POST", "/containers/{id}/wait", wait_container)
    add_route(app, "DELETE", "/containers/{id}", remove_container)
    add_route(app, "GET", "/containers/{id}/logs", container_logs)
    add_route(app, "POST", "/containers/{id}/attach", attach_container)
    add_route(app, "POST", "/containers/{id}/resize", resize_container)
    add_route(app, "POST", "/exec/{id}/resize", resize_exec)
    add_route(app, "POST", "/containers/{id}/exec", create_exec)
    add_route(app, "POST", "/exec/{id}/start", start_exec)
    add_route(app, "GET", "/exec/{id}/json", inspect_exec)
