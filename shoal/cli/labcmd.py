"""`shoal lab ...`: up, down, exec, status, socket, and faults (kill, start, restart, partition, heal,
loss, add-host) for the multi-host lab on one machine.

A thin CLI over shoal.lab, which is imported only when a lab command runs.
"""
from __future__ import annotations

import os
import sys

import click

from shoal.cli.common import Failed, err, out
from shoal.cli.format import UsageError, host_name, render_table

CONTEXT = {"help_option_names": ["--help"]}
name_option = click.option("--name", default="lab", show_default=True, help="Name of the lab")


def _lab_errors(fn):  # type: ignore[no-untyped-def]
    """Print LabError as `Error: ...` and exit 1 (shoal.lab is imported lazily)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        from shoal.lab import LabError

        try:
            return fn(*args, **kwargs)
        except LabError as exc:
            err(f"Error: {exc}")
            raise Failed(1) from None
        except UsageError as exc:
            err(f"Error: {exc}")
            raise Failed(1) from None
    return wrapper


@click.group(context_settings=CONTEXT)
def lab() -> None:
    """Multi-host test lab: network namespaces on a switch, one shoal daemon each (needs root)"""


@lab.command(context_settings=CONTEXT)
@click.option("--hosts", type=click.IntRange(1, 200), required=True, help="Number of hosts (h1..hN)")
@name_option
@click.option("--force", is_flag=True, help="Tear down an existing lab of that name first")
@_lab_errors
def up(hosts: int, name: str, force: bool) -> None:
    """Build a lab and start a daemon on each host"""
    from shoal.lab import Lab

    built = Lab.up(name, hosts, force=force)
    rows = [[h, built.address(h), str(built.daemon_pid(h) or ""), str(built.socket(h))] for h in built.hosts]
    out(render_table(["HOST", "ADDRESS", "PID", "SOCKET"], rows))


@lab.command(context_settings=CONTEXT)
@name_option
@_lab_errors
def down(name: str) -> None:
    """Remove a lab: daemons, containers, namespaces, mounts and files (quiet if absent)"""
    from shoal.lab import down as lab_down

    lab_down(name)


@lab.command("exec", context_settings={**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False})
@name_option
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_lab_errors
def exec_(name: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in HOST's namespace with SHOAL_HOST/DOCKER_HOST set to its daemon

    Usage: shoal lab exec [--name LAB] HOST -- COMMAND [ARG...]
    """
    from shoal.lab import Lab

    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("missing COMMAND")
    opened = Lab.open(name)
    full = opened.exec_argv(host_name(host), argv)
    sys.stdout.flush()
    os.execvpe(full[0], full, opened.host_env(host_name(host)))  # exit code and signals pass through


@lab.command(context_settings=CONTEXT)
@name_option
@_lab_errors
def status(name: str) -> None:
    """Show hosts, addresses, daemon pids and whether each daemon answers"""
    from shoal.lab import Lab

    rows = []
    opened = Lab.open(name)
    for s in opened.status():
        state = "up" if s.answers else ("not answering" if s.running else "not running")
        rows.append([s.host, s.netns, s.address, str(s.pid or "-"), state, str(s.socket)])
    out(render_table(["HOST", "NETNS", "ADDRESS", "PID", "DAEMON", "SOCKET"], rows))
    faults = opened.faults()
    for pair in sorted(sorted(p, key=lambda h: int(h[1:])) for p in faults.partitions):
        out(f"partition: {pair[0]} x {pair[1]}\n")
    for host, percent in sorted(faults.loss.items()):
        out(f"loss: {host} {percent:g}%\n")


@lab.command(context_settings=CONTEXT)
@name_option
@click.argument("host")
@_lab_errors
def socket(name: str, host: str) -> None:
    """Print the path of HOST's daemon socket"""
    from shoal.lab import Lab

    out(f"{Lab.open(name).socket(host_name(host))}\n")


@lab.command(context_settings=CONTEXT)
@name_option
@click.argument("host")
@_lab_errors
def kill(name: str, host: str) -> None:
    """SIGKILL HOST's daemon (a crash); its containers keep running"""
    from shoal.lab import Lab

    Lab.open(name).kill(host_name(host))


@lab.command(context_settings=CONTEXT)
@name_option
@click.argument("host")
@_lab_errors
def start(name: str, host: str) -> None:
    """Start HOST's daemon again with the same arguments and wait until it answers"""
    from shoal.lab import Lab

    pid = Lab.open(name).start(host_name(host))
    out(f"{host_name(host)} {pid}\n")


@lab.command(context_settings=CONTEXT)
@name_option
@click.option("--kill", "kill9", is_flag=True, help="SIGKILL instead of SIGTERM")
@click.argument("host")
@_lab_errors
def restart(name: str, kill9: bool, host: str) -> None:
    """Stop HOST's daemon (SIGTERM, or SIGKILL with --kill) and start it again"""
    from shoal.lab import Lab

    pid = Lab.open(name).restart_daemon(host_name(host), kill9=kill9)
    out(f"{host_name(host)} {pid}\n")


@lab.command(context_settings=CONTEXT)
@name_option
@click.option("--from", "others", multiple=True, metavar="HOST",
              help="Cut HOSTs off from these hosts only (repeatable; default: every other host)")
@click.argument("hosts", nargs=-1, required=True)
@_lab_errors
def partition(name: str, others: tuple[str, ...], hosts: tuple[str, ...]) -> None:
    """Drop every frame between HOSTs and the other hosts on the lab switch (until `lab heal`)"""
    from shoal.lab import Lab

    pairs = Lab.open(name).partition([host_name(h) for h in hosts], [host_name(h) for h in others])
    out("".join(f"{a} x {b}\n" for a, b in pairs))


@lab.command(context_settings=CONTEXT)
@name_option
@_lab_errors
def heal(name: str) -> None:
    """Remove every partition from the lab switch (loss stays: `lab loss HOST 0`)"""
    from shoal.lab import Lab

    Lab.open(name).heal()


@lab.command(context_settings=CONTEXT)
@name_option
@click.argument("host")
@click.argument("percent", type=click.FloatRange(0, 100))
@_lab_errors
def loss(name: str, host: str, percent: float) -> None:
    """Drop PERCENT % of the frames to and from HOST at random on the lab switch (0 ends it)"""
    from shoal.lab import Lab

    Lab.open(name).loss(host_name(host), percent)


@lab.command("add-host", context_settings=CONTEXT)
@name_option
@_lab_errors
def add_host(name: str) -> None:
    """Grow a running lab by one host and start its daemon"""
    from shoal.lab import Lab

    opened = Lab.open(name)
    host = opened.add_host()
    rows = [[host, opened.address(host), str(opened.daemon_pid(host) or ""), str(opened.socket(host))]]
    out(render_table(["HOST", "ADDRESS", "PID", "SOCKET"], rows))
