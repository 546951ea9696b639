"""`shoal run` without click: builds the create body the docker CLI would send, creates, starts,
and (in the foreground) waits and copies the output. Used by the click command and the fast path.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up

from shoal.cli.common import Failed, err, out
from shoal.cli.format import UsageError, parse_env, parse_expose, parse_kv, parse_publish
from shoal.cli.proxies import config_path, proxy_env
from shoal.client import Client, DaemonError, demultiplex, read_chunks, stream_kind

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

BUILTIN_NETWORKS = ("bridge", "host", "none", "default")


def create_body(image: str, command: Sequence[str], *, env: Sequence[str] = (), labels: Mapping[str, str] | None = None,
                hostname: str = "", entrypoint: str | None = None, network: str = "",
                publish: Sequence[str] = (), expose: Sequence[str] = (), ip: str = "",
                aliases: Sequence[str] = (), links: Sequence[str] = (), workdir: str = "", user: str = "",
                auto_remove: bool = False, attach: bool = False, publish_all: bool = False,
                tty: bool = False, interactive: bool = False, log_opts: Mapping[str, str] | None = None,
                host_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The POST /containers/create body the docker CLI would send for these `run` flags."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in expose:
        for port in parse_expose(spec):
            exposed[port] = {}
    for spec in publish:
        for port, host_ip, host_port in parse_publish(spec):
            exposed[port] = {}
            bindings.setdefault(port, []).append({"HostIp": host_ip, "HostPort": host_port})
    endpoints: dict[str, Any] = {}
    if network and (ip or aliases or links or network not in BUILTIN_NETWORKS):
        endpoint: dict[str, Any] = {}
        if ip:
            endpoint["IPAMConfig"] = {"IPv4Address": ip}
        if aliases:
            endpoint["Aliases"] = list(aliases)
        if links:
            endpoint["Links"] = list(links)
        endpoints[network] = endpoint
    if entrypoint is None:
        entry: list[str] | None = None
    else:
        entry = [entrypoint]  # an explicit empty --entrypoint resets the image's, as [""]
    return {
        "Hostname": hostname, "Domainname": "", "User": user,
        "AttachStdin": attach and interactive, "AttachStdout": attach, "AttachStderr": attach,
        "ExposedPorts": exposed, "Tty": tty, "OpenStdin": interactive, "StdinOnce": attach and interactive,
        "Env": list(env), "Cmd": list(command) or None, "Image": image, "WorkingDir": workdir,
        "Entrypoint": entry, "Labels": dict(labels or {}),
        "HostConfig": {"NetworkMode": network or "bridge", "PortBindings": bindings, "AutoRemove": auto_remove,
                       "Links": list(links) or None, "PublishAllPorts": publish_all,
                       "LogConfig": {"Type": "json-file", "Config": dict(log_opts or {})},
                       "ConsoleSize": [0, 0], **(host_config or {})},
        "NetworkingConfig": {"EndpointsConfig": endpoints},
    }


def _run_failed(message: str, verb: str = "run") -> Failed:
    err(f"shoal: Error response from daemon: {message}\n\nRun 'shoal {verb} --help' for more information")
    return Failed(125)


def _create_request(detach: bool, remove: bool, network: str, hostname: str, env: Sequence[str],
                    label: Sequence[str], entrypoint: str | None, publish: Sequence[str], publish_all: bool,
                    expose: Sequence[str], ip: str, network_alias: Sequence[str], link: Sequence[str], workdir: str,
                    user: str, image: str, command: Sequence[str], interactive: bool, tty: bool,
                    log_opt: Sequence[str], host_config: Mapping[str, Any] | None,
                    adjust: Callable[[dict[str, Any]], None] | None, verb: str) -> dict[str, Any]:
    """The create body of `run` or `create` (for `create`, detach: its AutoRemove is --rm itself)."""
    if image.startswith("-"):
        err(f"shoal: unknown flag: {image}\n\nRun 'shoal {verb} --help' for more information")
        raise Failed(125)
    try:
        # Proxies from the config file first: the user's -e wins (the daemon keeps the last).
        environment = proxy_env(config_path()) + parse_env(env, os.environ)
        body = create_body(image, command, env=environment, labels=parse_kv(label),
                           hostname=hostname, entrypoint=entrypoint, network=network, publish=publish,
                           expose=expose, ip=ip, aliases=network_alias, links=link, workdir=workdir, user=user,
                           auto_remove=remove and detach, attach=not detach, publish_all=publish_all,
                           tty=tty, interactive=interactive, log_opts=parse_kv(log_opt),
                           host_config=host_config)
        if tty and not detach:
            from shoal.cli.interactive import terminal_size

            body["HostConfig"]["ConsoleSize"] = list(terminal_size() or (0, 0))
        if adjust is not None:
            if remove:
                body["HostConfig"]["AutoRemove"] = True  # for adjust's --restart/--rm check
            adjust(body)
            body["HostConfig"]["AutoRemove"] = remove and detach
    except (UsageError, ValueError) as exc:
        err(f"shoal: {exc}\n\nRun 'shoal {verb} --help' for more information")
        raise Failed(125) from None
    return body


def _create(c: Client, body: dict[str, Any], name: str, verb: str) -> str:
    try:
        created = c.post("/containers/create", body, {"name": name} if name else None) or {}
        for warning in created.get("Warnings") or []:
            err(f"WARNING: {warning}")
        return str(created["Id"])
    except DaemonError as exc:
        if verb == "create":  # docker create: the daemon's words alone, exit 1 (run's are 125 with a usage hint)
            err(f"Error response from daemon: {exc.message}")
            raise Failed(1) from None
        raise _run_failed(exc.message, verb) from None


def create_container(c: Client, remove: bool, name: str, network: str, hostname: str, env: Sequence[str],
                     label: Sequence[str], entrypoint: str | None, publish: Sequence[str], publish_all: bool,
                     expose: Sequence[str], ip: str, network_alias: Sequence[str], link: Sequence[str],
                     workdir: str, user: str, image: str, command: Sequence[str], interactive: bool = False,
                     tty: bool = False, log_opt: Sequence[str] = (), host_config: Mapping[str, Any] | None = None,
                     adjust: Callable[[dict[str, Any]], None] | None = None) -> None:
    """`shoal create`: run's create body (its streams attached, as docker create's), its ID printed."""
    body = _create_request(True, remove, network, hostname, env, label, entrypoint, publish, publish_all, expose, ip,
                           network_alias, link, workdir, user, image, command, interactive, tty, log_opt,
                           host_config, adjust, "create")
    body.update({"AttachStdout": True, "AttachStderr": True, "AttachStdin": interactive, "StdinOnce": interactive})
    out(f"{_create(c, body, name, 'create')}\n")


def run_container(c: Client, detach: bool, remove: bool, name: str, network: str, hostname: str,
                  env: Sequence[str], label: Sequence[str], entrypoint: str | None, publish: Sequence[str],
                  publish_all: bool, expose: Sequence[str], ip: str, network_alias: Sequence[str],
                  link: Sequence[str], workdir: str, user: str, image: str, command: Sequence[str],
                  interactive: bool = False, tty: bool = False, detach_keys: str = "",
                  log_opt: Sequence[str] = (),
                  host_config: Mapping[str, Any] | None = None,
                  adjust: Callable[[dict[str, Any]], None] | None = None) -> None:
    body = _create_request(detach, remove, network, hostname, env, label, entrypoint, publish, publish_all, expose,
                           ip, network_alias, link, workdir, user, image, command, interactive, tty, log_opt,
                           host_config, adjust, "run")
    cid = _create(c, body, name, "run")
    if not detach and (interactive or tty):
        _run_attached(c, cid, remove, interactive, tty, detach_keys)
        return
    try:
        c.post(f"/containers/{cid}/start")
    except DaemonError as exc:
        if remove and not detach:
            _remove_quietly(c, cid)
        raise _run_failed(exc.message) from None
    if detach:
        out(f"{cid}\n")
        return
    try:
        code = _wait(c, cid)
        copy_logs(c, cid, {"stdout": True, "stderr": True})
    except DaemonError as exc:
        raise _run_failed(exc.message) from None
    finally:
        if remove:
            _remove_quietly(c, cid)
    if code:
        raise Failed(code)


def _run_attached(c: Client, cid: str, remove: bool, interactive: bool, tty: bool, detach_keys: str) -> None:
    """`run -i`/`-t`: attach before the start (nothing is missed), stream, then the exit code."""
    from shoal.cli.interactive import Detached, hijack, monitor_size, stream

    query = {"stream": True, "stdin": interactive or None, "stdout": True, "stderr": True,
             "detachKeys": detach_keys or None}
    try:
        response = hijack(c, f"/containers/{cid}/attach", query)
        c.post(f"/containers/{cid}/start")
    except DaemonError as exc:
        if remove:
            _remove_quietly(c, cid)
        raise _run_failed(exc.message) from None
    if tty:
        monitor_size(lambda h, w: c.post(f"/containers/{cid}/resize", query={"h": h, "w": w}))
    try:
        stream(response, tty, interactive, detach_keys)
    except Detached:
        return  # the container keeps running
    try:
        code = _wait(c, cid)
    except DaemonError as exc:
        raise _run_failed(exc.message) from None
    finally:
        if remove:
            _remove_quietly(c, cid)
    if code:
        raise Failed(code)


def _wait(c: Client, cid: str) -> int:
    """Block until the container stops; Ctrl-C is forwarded as SIGINT (the third as SIGKILL)."""
    interrupts = 0
    while True:
        try:
            answer = c.post(f"/containers/{cid}/wait") or {}
            error = (answer.get("Error") or {}).get("Message")
            if error:
                err(f"shoal: {error}")
            return int(answer.get("StatusCode", 0))
        except KeyboardInterrupt:
            interrupts += 1
            c.close()  # the interrupted request left the connection mid-response
            signal = "SIGKILL" if interrupts >= 3 else "SIGINT"
            try:
                c.post(f"/containers/{cid}/kill", query={"signal": signal})
            except DaemonError:
                pass


def _remove_quietly(c: Client, cid: str) -> None:
    try:
        c.delete(f"/containers/{cid}", {"force": True})
    except DaemonError as exc:
        if exc.status != 404:  # 404: the daemon removed it already
            err(f"Error response from daemon: {exc.message}")


def copy_logs(c: Client, cid: str, query: dict[str, Any]) -> None:
    response = c.send("GET", f"/containers/{cid}/logs", query)
    kind = stream_kind(response)
    demultiplex(read_chunks(response), sys.stdout.buffer, sys.stderr.buffer, True if kind else None)


