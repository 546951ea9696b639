"""Container commands: run, ps, exec, logs, rm, stop, kill, start (and `shoal container ...`).

Docker's flags, exit codes and output shapes over the daemon's /containers and /exec API
(shoal.client); pure parsing and formatting live in shoal.cli.format.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from shoal.cli import fast
from shoal.cli.common import Failed, client, err, out
from shoal.cli.format import UsageError, parse_env, parse_expose, parse_kv, parse_publish, to_json
from shoal.cli.proxies import config_path, proxy_env
from shoal.client import Client, ClientError, DaemonError, demultiplex, read_chunks, ref, stream_kind

CONTEXT = {"help_option_names": ["--help"]}
# Options stop at IMAGE (or CONTAINER): what follows belongs to the container's command.
PASSTHROUGH = {"help_option_names": ["--help"], "ignore_unknown_options": True, "allow_interspersed_args": False}
BUILTIN_NETWORKS = ("bridge", "host", "none", "default")


def create_body(image: str, command: Sequence[str], *, env: Sequence[str] = (), labels: Mapping[str, str] | None = None,
                hostname: str = "", entrypoint: str | None = None, network: str = "",
                publish: Sequence[str] = (), expose: Sequence[str] = (), ip: str = "",
                aliases: Sequence[str] = (), links: Sequence[str] = (), workdir: str = "", user: str = "",
                auto_remove: bool = False, attach: bool = False, publish_all: bool = False) -> dict[str, Any]:
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
        "AttachStdin": False, "AttachStdout": attach, "AttachStderr": attach,
        "ExposedPorts": exposed, "Tty": False, "OpenStdin": False, "StdinOnce": False,
        "Env": list(env), "Cmd": list(command) or None, "Image": image, "WorkingDir": workdir,
        "Entrypoint": entry, "Labels": dict(labels or {}),
        "HostConfig": {"NetworkMode": network or "bridge", "PortBindings": bindings, "AutoRemove": auto_remove,
                       "Links": list(links) or None, "PublishAllPorts": publish_all},
        "NetworkingConfig": {"EndpointsConfig": endpoints},
    }


def _run_failed(message: str) -> Failed:
    err(f"shoal: Error response from daemon: {message}\n\nRun 'shoal run --help' for more information")
    return Failed(125)


@click.command(context_settings=PASSTHROUGH)
@click.option("-d", "--detach", is_flag=True, help="Run container in background and print container ID")
@click.option("--rm", "remove", is_flag=True, help="Automatically remove the container when it exits")
@click.option("--name", default="", help="Assign a name to the container")
@click.option("--network", "--net", "network", default="", help="Connect a container to a network")
@click.option("-h", "--hostname", default="", help="Container host name")
@click.option("-e", "--env", multiple=True, help="Set environment variables")
@click.option("-l", "--label", multiple=True, help="Set meta data on a container")
@click.option("--entrypoint", default=None, help="Overwrite the default ENTRYPOINT of the image")
@click.option("-p", "--publish", multiple=True, help="Publish a container's port(s) to the host")
@click.option("-P", "--publish-all", is_flag=True, help="Publish all exposed ports to random ports")
@click.option("--expose", multiple=True, help="Expose a port or a range of ports")
@click.option("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
@click.option("--network-alias", multiple=True, help="Add network-scoped alias for the container")
@click.option("--link", multiple=True, help="Add link to another container")
@click.option("-w", "--workdir", default="", help="Working directory inside the container")
@click.option("-u", "--user", default="", help="Username or UID")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(detach: bool, remove: bool, name: str, network: str, hostname: str, env: tuple[str, ...],
        label: tuple[str, ...], entrypoint: str | None, publish: tuple[str, ...], publish_all: bool,
        expose: tuple[str, ...], ip: str,
        network_alias: tuple[str, ...], link: tuple[str, ...], workdir: str, user: str, image: str,
        command: tuple[str, ...]) -> None:
    """Create and run a new container from an image

    Usage: shoal run [OPTIONS] IMAGE [COMMAND] [ARG...]
    """
    if image.startswith("-"):
        raise click.UsageError(f"unknown flag: {image}")
    try:
        # Proxies from the config file first: the user's -e wins (the daemon keeps the last).
        environment = proxy_env(config_path()) + parse_env(env, os.environ)
        body = create_body(image, command, env=environment, labels=parse_kv(label),
                           hostname=hostname, entrypoint=entrypoint, network=network, publish=publish,
                           expose=expose, ip=ip, aliases=network_alias, links=link, workdir=workdir, user=user,
                           auto_remove=remove and detach, attach=not detach, publish_all=publish_all)
    except (UsageError, ValueError) as exc:
        err(f"shoal: {exc}\n\nRun 'shoal run --help' for more information")
        raise Failed(125) from None
    c = client()
    try:
        created = c.post("/containers/create", body, {"name": name} if name else None) or {}
        cid = created["Id"]
        for warning in created.get("Warnings") or []:
            err(f"WARNING: {warning}")
    except DaemonError as exc:
        raise _run_failed(exc.message) from None
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
        _copy_logs(c, cid, {"stdout": True, "stderr": True})
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


def _copy_logs(c: Client, cid: str, query: dict[str, Any]) -> None:
    response = c.send("GET", f"/containers/{cid}/logs", query)
    kind = stream_kind(response)
    demultiplex(read_chunks(response), sys.stdout.buffer, sys.stderr.buffer, True if kind else None)


@click.command(context_settings=CONTEXT)
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all containers (default shows just running)")
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
              help="Filter output based on conditions provided")
@click.option("-n", "--last", type=int, default=-1, help="Show n last created containers (includes all states)")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container (includes all states)")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs")
def ps(show_all: bool, filters: tuple[str, ...], last: int, latest: bool, no_trunc: bool, quiet: bool) -> None:
    """List containers"""
    fast.container_ls(client(), show_all, filters, last, latest, no_trunc, quiet)


@click.command("exec", context_settings=PASSTHROUGH)
@click.option("-d", "--detach", is_flag=True, help="Detached mode: run command in the background")
@click.option("-e", "--env", multiple=True, help="Set environment variables")
@click.option("-w", "--workdir", default="", help="Working directory inside the container")
@click.option("-u", "--user", default="", help="Username or UID")
@click.argument("container", metavar="CONTAINER")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(detach: bool, env: tuple[str, ...], workdir: str, user: str, container: str,
          command: tuple[str, ...]) -> None:
    """Execute a command in a running container

    Usage: shoal exec [OPTIONS] CONTAINER COMMAND [ARG...]
    """
    if container.startswith("-"):
        raise click.UsageError(f"unknown flag: {container}")
    c = client()
    created = c.post(f"/containers/{ref(container)}/exec", {
        "User": user, "Privileged": False, "Tty": False, "AttachStdin": False,
        "AttachStdout": not detach, "AttachStderr": not detach, "Detach": detach,
        "Env": parse_env(env, os.environ), "WorkingDir": workdir, "Cmd": list(command)}) or {}
    exec_id = created["Id"]
    if detach:
        c.post(f"/exec/{exec_id}/start", {"Detach": True, "Tty": False})
        return
    response = c.send("POST", f"/exec/{exec_id}/start", body=json.dumps({"Detach": False, "Tty": False}).encode(),
                      headers={"Content-Type": "application/json", "Connection": "Upgrade", "Upgrade": "tcp"})
    # After 101 the body is the raw connection until the daemon closes it; a plain 200 is a
    # streamed body. Either way, without a TTY the frames are multiplexed.
    demultiplex(read_chunks(response), sys.stdout.buffer, sys.stderr.buffer, multiplexed=True)
    c.close()  # an upgraded connection cannot carry another request
    code = _exec_exit_code(c, exec_id)
    if code:
        raise Failed(code)


def _exec_exit_code(c: Client, exec_id: str, deadline_s: float = 10.0) -> int:
    """ExitCode of a finished exec; the stream can close a moment before the daemon records it."""
    deadline = time.monotonic() + deadline_s
    while True:
        info = c.get(f"/exec/{exec_id}/json") or {}
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        if time.monotonic() > deadline:
            raise ClientError(f"exec {exec_id} still running after its output ended")
        time.sleep(0.02)


@click.command(context_settings=CONTEXT)
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.option("-n", "--tail", default="all", help='Number of lines to show from the end of the logs (default "all")')
@click.option("--since", default="", help="Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)")
@click.argument("container", metavar="CONTAINER")
def logs(follow: bool, timestamps: bool, tail: str, since: str, container: str) -> None:
    """Fetch the logs of a container"""
    query: dict[str, Any] = {"stdout": True, "stderr": True, "follow": follow or None,
                             "timestamps": timestamps or None, "tail": tail, "since": since or None}
    _copy_logs(client(), ref(container), query)


def _each(refs: Sequence[str], action: Any) -> None:
    """Apply `action(ref)` per argument, print each ref done and each error; exit 1 if any."""
    failed = False
    for r in refs:
        try:
            action(r)
        except DaemonError as exc:
            err(f"Error response from daemon: {exc.message}")
            failed = True
            continue
        out(f"{r}\n")
        sys.stdout.flush()
    if failed:
        raise Failed(1)


@click.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container (uses SIGKILL)")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes associated with the container")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def rm(force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers"""
    c = client()
    _each(containers, lambda r: c.delete(f"/containers/{ref(r)}", {"force": force or None, "v": volumes or None}))


@click.command(context_settings=CONTEXT)
@click.option("-s", "--signal", default="", help="Signal to send to the container")
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds to wait before killing the container")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def stop(signal: str, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers"""
    c = client()
    _each(containers, lambda r: c.post(f"/containers/{ref(r)}/stop", query={"t": timeout, "signal": signal or None}))


@click.command(context_settings=CONTEXT)
@click.option("-s", "--signal", default="", help="Signal to send to the container")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def kill(signal: str, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers"""
    c = client()
    _each(containers, lambda r: c.post(f"/containers/{ref(r)}/kill", query={"signal": signal or None}))


@click.command(context_settings=CONTEXT)
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def start(containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers"""
    c = client()
    _each(containers, lambda r: c.post(f"/containers/{ref(r)}/start"))


@click.command("inspect", context_settings=CONTEXT)
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def inspect(containers: tuple[str, ...]) -> None:
    """Display detailed information on one or more containers"""
    c = client()
    found, errors = [], []
    for r in containers:
        try:
            found.append(c.get(f"/containers/{ref(r)}/json"))
        except DaemonError as exc:
            if exc.status != 404:
                raise
            errors.append(exc.message)
    out(to_json(found) + "\n")
    if errors:
        for message in errors:
            err(f"Error response from daemon: {message}")
        raise Failed(1)


@click.group(context_settings=CONTEXT)
def container() -> None:
    """Manage containers"""


for _cmd, _names in ((run, ["run"]), (ps, ["ls", "ps", "list"]), (exec_, ["exec"]), (logs, ["logs"]),
                     (rm, ["rm", "remove"]), (stop, ["stop"]), (kill, ["kill"]), (start, ["start"]),
                     (inspect, ["inspect"])):
    for _name in _names:
        container.add_command(_cmd, _name)
