"""Container commands: run, ps, exec, logs, rm, stop, kill, start (and `shoal container ...`).

Docker's flags, exit codes and output shapes over the daemon's /containers and /exec API
(shoal.client); pure parsing and formatting live in shoal.cli.format.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from shoal.cli import fast
from shoal.cli.common import Failed, client, err, inspect_each, out
from shoal.cli import resources as resource_cli
from shoal.cli import runflags, runner
from shoal.cli.format import parse_env
from shoal.client import Client, ClientError, DaemonError, demultiplex, read_chunks, ref

CONTEXT = {"help_option_names": ["--help"]}
# Options stop at IMAGE (or CONTAINER): what follows belongs to the container's command.
PASSTHROUGH = {"help_option_names": ["--help"], "ignore_unknown_options": True, "allow_interspersed_args": False}


def _create_options(f: Any) -> Any:
    """The options `run` and `create` share (docker's container create flags); then the log, limit and run flags."""
    for option in reversed([
        click.option("--name", default="", help="Assign a name to the container"),
        click.option("--network", "--net", "network", default="", help="Connect a container to a network"),
        click.option("-h", "--hostname", default="", help="Container host name"),
        click.option("-e", "--env", multiple=True, help="Set environment variables"),
        click.option("-l", "--label", multiple=True, help="Set meta data on a container"),
        click.option("--entrypoint", default=None, help="Overwrite the default ENTRYPOINT of the image"),
        click.option("-p", "--publish", multiple=True, help="Publish a container's port(s) to the host"),
        click.option("-P", "--publish-all", is_flag=True, help="Publish all exposed ports to random ports"),
        click.option("--expose", multiple=True, help="Expose a port or a range of ports"),
        click.option("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)"),
        click.option("--network-alias", multiple=True, help="Add network-scoped alias for the container"),
        click.option("--link", multiple=True, help="Add link to another container"),
        click.option("-w", "--workdir", default="", help="Working directory inside the container"),
        click.option("-u", "--user", default="", help="Username or UID"),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached"),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY"),
        click.option("--log-opt", multiple=True, help="Log driver options (max-size, max-file)"),
        resource_cli.limit_options,
        runflags.options,
        click.argument("image"),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ]):
        f = option(f)
    return f


@click.command(context_settings=PASSTHROUGH)
@click.option("-d", "--detach", is_flag=True, help="Run container in background and print container ID")
@click.option("--rm", "remove", is_flag=True, help="Automatically remove the container when it exits")
@click.option("--detach-keys", default="", help="Override the key sequence for detaching a container")
@_create_options
def run(detach: bool, remove: bool, name: str, network: str, hostname: str, env: tuple[str, ...],
        label: tuple[str, ...], entrypoint: str | None, publish: tuple[str, ...], publish_all: bool,
        expose: tuple[str, ...], ip: str,
        network_alias: tuple[str, ...], link: tuple[str, ...], workdir: str, user: str,
        interactive: bool, tty: bool, detach_keys: str, log_opt: tuple[str, ...], image: str,
        command: tuple[str, ...], **create_options: Any) -> None:
    """Create and run a new container from an image

    Usage: shoal run [OPTIONS] IMAGE [COMMAND] [ARG...]
    """
    runner.run_container(client(), detach, remove, name, network, hostname, env, label, entrypoint, publish,
                         publish_all, expose, ip, network_alias, link, workdir, user, image, command,
                         interactive=interactive, tty=tty, detach_keys=detach_keys, log_opt=log_opt,
                         host_config=resource_cli.host_config_limits(create_options),
                         adjust=runflags.adjust(create_options))  # --restart, --init, --dns... (shoal.cli.runflags)


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
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open even if not attached")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY")
@click.option("--detach-keys", default="", help="Override the key sequence for detaching a container")
@click.argument("container", metavar="CONTAINER")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(detach: bool, env: tuple[str, ...], workdir: str, user: str, interactive: bool, tty: bool,
          detach_keys: str, container: str, command: tuple[str, ...]) -> None:
    """Execute a command in a running container

    Usage: shoal exec [OPTIONS] CONTAINER COMMAND [ARG...]
    """
    if container.startswith("-"):
        raise click.UsageError(f"unknown flag: {container}")
    c = client()
    from shoal.cli.interactive import terminal_size

    size = list(terminal_size() or (0, 0)) if tty else None
    created = c.post(f"/containers/{ref(container)}/exec", {
        "User": user, "Privileged": False, "Tty": tty, "AttachStdin": interactive and not detach,
        "AttachStdout": not detach, "AttachStderr": not detach, "Detach": detach, "DetachKeys": detach_keys,
        "Env": parse_env(env, os.environ), "WorkingDir": workdir, "Cmd": list(command),
        "ConsoleSize": size}) or {}
    exec_id = created["Id"]
    if detach:
        c.post(f"/exec/{exec_id}/start", {"Detach": True, "Tty": tty})
        return
    from shoal.cli.interactive import Detached, hijack, monitor_size, stream

    response = hijack(c, f"/exec/{exec_id}/start", body={"Detach": False, "Tty": tty, "ConsoleSize": size})
    if tty:
        monitor_size(lambda h, w: c.post(f"/exec/{exec_id}/resize", query={"h": h, "w": w}))
    try:
        stream(response, tty, interactive, detach_keys)
    except Detached:
        return
    code = _exec_exit_code(c, exec_id)
    if code:
        raise Failed(code)


@click.command(context_settings=CONTEXT)
@click.option("--detach-keys", default="", help="Override the key sequence for detaching a container")
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN")
@click.option("--sig-proxy", is_flag=True, default=True, help="Proxy all received signals to the process")
@click.argument("container", metavar="CONTAINER")
def attach(detach_keys: str, no_stdin: bool, sig_proxy: bool, container: str) -> None:
    """Attach local standard input, output, and error streams to a running container"""
    from shoal.cli.interactive import Detached, hijack, monitor_size, stream

    c = client()
    info = c.get(f"/containers/{ref(container)}/json") or {}
    if not (info.get("State") or {}).get("Running"):
        err("You cannot attach to a stopped container, start it first")
        raise Failed(1)
    cid, config = info["Id"], info.get("Config") or {}
    tty, stdin = bool(config.get("Tty")), not no_stdin and bool(config.get("OpenStdin"))
    response = hijack(c, f"/containers/{cid}/attach", {"stream": True, "stdin": stdin or None, "stdout": True,
                                                      "stderr": True, "detachKeys": detach_keys or None})
    if tty:
        monitor_size(lambda h, w: c.post(f"/containers/{cid}/resize", query={"h": h + 1, "w": w + 1}))
        size = None
        from shoal.cli.interactive import terminal_size

        size = terminal_size()
        if size:  # as docker: one size off and back, so the shell redraws its prompt
            c.post(f"/containers/{cid}/resize", query={"h": size[0], "w": size[1]})
    try:
        stream(response, tty, stdin, detach_keys)
    except Detached:
        err("read escape sequence")
        raise Failed(1) from None
    answer = c.get(f"/containers/{cid}/json") or {}
    code = int((answer.get("State") or {}).get("ExitCode") or 0)
    if code and not (answer.get("State") or {}).get("Running"):
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
@click.option("--until", default="", help="Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)")
@click.argument("container", metavar="CONTAINER")
def logs(follow: bool, timestamps: bool, tail: str, since: str, until: str, container: str) -> None:
    """Fetch the logs of a container"""
    from shoal.cli.format import api_time

    try:
        since_q, until_q = api_time(since, "since") if since else None, api_time(until, "until") if until else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    query: dict[str, Any] = {"stdout": True, "stderr": True, "follow": follow or None,
                             "timestamps": timestamps or None, "tail": tail, "since": since_q, "until": until_q}
    runner.copy_logs(client(), ref(container), query)


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


@click.command(context_settings=PASSTHROUGH)
@click.option("--rm", "remove", is_flag=True,
              help="Automatically remove the container and its associated anonymous volumes when it exits")
@_create_options
def create(remove: bool, name: str, network: str, hostname: str, env: tuple[str, ...], label: tuple[str, ...],
           entrypoint: str | None, publish: tuple[str, ...], publish_all: bool, expose: tuple[str, ...], ip: str,
           network_alias: tuple[str, ...], link: tuple[str, ...], workdir: str, user: str, interactive: bool,
           tty: bool, log_opt: tuple[str, ...], image: str, command: tuple[str, ...], **create_options: Any) -> None:
    """Create a new container

    Usage: shoal create [OPTIONS] IMAGE [COMMAND] [ARG...]
    """
    runner.create_container(client(), remove, name, network, hostname, env, label, entrypoint, publish, publish_all,
                            expose, ip, network_alias, link, workdir, user, image, command, interactive=interactive,
                            tty=tty, log_opt=log_opt, host_config=resource_cli.host_config_limits(create_options),
                            adjust=runflags.adjust(create_options))


@click.command(context_settings=CONTEXT)
@click.option("-s", "--signal", default="", help="Signal to send to the container")
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds to wait before killing the container")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def restart(signal: str, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers"""
    c = client()
    _each(containers, lambda r: c.post(f"/containers/{ref(r)}/restart", query={"t": timeout, "signal": signal or None}))


@click.command(context_settings=CONTEXT)
@click.argument("container")
@click.argument("private_port", required=False, metavar="[PRIVATE_PORT[/PROTO]]")
def port(container: str, private_port: str | None) -> None:
    """List port mappings or a specific mapping for the container"""
    from shoal.cli.ports_view import port_lines

    try:
        lines = port_lines(client().get(f"/containers/{ref(container)}/json"), private_port, container)
    except DaemonError as exc:
        err(f"Error response from daemon: {exc.message}")
        raise Failed(1) from None
    except ValueError as exc:
        err(str(exc))
        raise Failed(1) from None
    out("".join(f"{line}\n" for line in lines))


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
    inspect_each(client(), containers, lambda r: f"/containers/{r}/json")


@click.group(context_settings=CONTEXT)
def container() -> None:
    """Manage containers"""


for _cmd, _names in (*((cmd, [name]) for cmd, name in resource_cli.COMMANDS), (run, ["run"]), (ps, ["ls", "ps", "list"]), (exec_, ["exec"]), (logs, ["logs"]),
                     (attach, ["attach"]),
                     (rm, ["rm", "remove"]), (stop, ["stop"]), (kill, ["kill"]), (start, ["start"]),
                     (create, ["create"]), (restart, ["restart"]), (port, ["port"]),
                     (inspect, ["inspect"])):
    for _name in _names:
        container.add_command(_cmd, _name)
