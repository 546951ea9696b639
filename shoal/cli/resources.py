"""Resource commands (stats, top, pause, unpause, update) and the limit flags of `run`, with Docker's flags and output.
Talk to shoal.api.routes_resources through shoal.client; shoal.cli.container adds the limit flags to `run`."""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from shoal.cli import limits
from shoal.cli.common import Failed, client, err, out
from shoal.cli.format import bytes_size, human_size, render_table
from shoal.client import Client, DaemonError, ref

CONTEXT = {"help_option_names": ["--help"]}


# ---- the limit flags as click options (parsing: shoal.cli.limits) ----------------------------

class _Parsed(click.ParamType):
    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            names = ", ".join(param.opts) if param else ""
            self.fail(f'invalid argument "{value}" for "{names}" flag: {exc}', param, ctx)


LIMIT_PARAMS = limits.PARAMS


def limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the limit flags to a click command (run, update); values arrive as keyword arguments."""
    for names, param, parse, _, help_text in reversed(limits.FLAGS):
        fn = click.option(*names, param, type=_Parsed(param, parse), default=None, help=help_text)(fn)
    return fn


def host_config_limits(values: Mapping[str, Any]) -> dict[str, Any]:
    """The HostConfig fields for the limit flags given (Docker's names); unset flags are left out."""
    return limits.host_config(values)


# ---- stats formatting (docker CLI's formatter) ----------------------------------------------

def memory_usage(stats: Mapping[str, Any]) -> float:
    """The CLI's usage without the page cache it can drop (cgroup v1 total_inactive_file, v2 inactive_file)."""
    memory = stats.get("memory_stats") or {}
    usage = float(memory.get("usage") or 0)
    inner = memory.get("stats") or {}
    for key in ("total_inactive_file", "inactive_file"):
        if key in inner and inner[key] < usage:
            return usage - inner[key]
    return usage


def cpu_percent(stats: Mapping[str, Any]) -> float:
    now, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    cpu_delta = (now.get("cpu_usage") or {}).get("total_usage", 0) - (before.get("cpu_usage") or {}).get("total_usage", 0)
    if not before.get("system_cpu_usage"):
        return 0.0  # no earlier reading (a one-shot): no interval to measure over
    system_delta = (now.get("system_cpu_usage") or 0) - (before.get("system_cpu_usage") or 0)
    cpus = now.get("online_cpus") or len((now.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * cpus * 100.0
    return 0.0


def stats_row(stats: Mapping[str, Any], trunc: bool = True) -> list[str]:
    memory = stats.get("memory_stats") or {}
    usage, limit = memory_usage(stats), float(memory.get("limit") or 0)
    rx = sum(n.get("rx_bytes", 0) for n in (stats.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (stats.get("networks") or {}).values())
    blkio = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    read = sum(e.get("value", 0) for e in blkio if str(e.get("op", "")).lower() == "read")
    write = sum(e.get("value", 0) for e in blkio if str(e.get("op", "")).lower() == "write")
    cid = str(stats.get("id", ""))
    running = bool(memory)
    return [
        cid[:12] if trunc else cid,
        str(stats.get("name", "")).lstrip("/") or "--",
        f"{cpu_percent(stats):.2f}%" if running else "0.00%",
        f"{bytes_size(usage)} / {bytes_size(limit)}" if running else "0B / 0B",
        f"{usage / limit * 100:.2f}%" if running and limit else "0.00%",
        f"{human_size(rx)} / {human_size(tx)}" if running else "0B / 0B",
        f"{human_size(read)} / {human_size(write)}" if running else "0B / 0B",
        str((stats.get("pids_stats") or {}).get("current", 0)),
    ]


STATS_HEADER = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]


# ---- commands ---------------------------------------------------------------------------------

def _each(refs: Sequence[str], action: Callable[[str], Any]) -> None:
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
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def pause(containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers"""
    c = client()
    _each(containers, lambda r: c.post(f"/containers/{ref(r)}/pause"))


@click.command(context_settings=CONTEXT)
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def unpause(containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers"""
    c = client()
    _each(containers, lambda r: c.post(f"/containers/{ref(r)}/unpause"))


@click.command(context_settings=CONTEXT)
@limit_options
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def update(containers: tuple[str, ...], **limits: Any) -> None:
    """Update configuration of one or more containers"""
    body = host_config_limits(limits)
    if not body:
        err("shoal: you must provide one or more flags when using this command\n\n"
            "Run 'shoal update --help' for more information")
        raise Failed(1)
    c = client()
    _each(containers, lambda r: _print_warnings(c.post(f"/containers/{ref(r)}/update", body)))


def _print_warnings(answer: Any) -> None:
    for warning in (answer or {}).get("Warnings") or []:
        err(f"WARNING: {warning}")


@click.command(context_settings={"help_option_names": ["--help"], "ignore_unknown_options": True})
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
def top(container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container

    Usage: shoal top CONTAINER [ps OPTIONS]
    """
    try:
        answer = client().get(f"/containers/{ref(container)}/top", {"ps_args": " ".join(ps_args) or None}) or {}
    except DaemonError as exc:
        err(f"Error response from daemon: {exc.message}")
        raise Failed(1) from None
    out(render_table(list(answer.get("Titles") or []), [list(p) for p in answer.get("Processes") or []]))


@click.command(context_settings=CONTEXT)
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all containers (default shows just running)")
@click.option("--no-stream", is_flag=True, help="Disable streaming stats and only pull the first result")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.argument("containers", nargs=-1, metavar="[CONTAINER...]")
def stats(show_all: bool, no_stream: bool, no_trunc: bool, containers: tuple[str, ...]) -> None:
    """Display a live stream of container(s) resource usage statistics"""
    c = client()
    refs = list(containers)
    if not refs:
        listed = c.get("/containers/json", {"all": True if show_all else None}) or []
        refs = [entry["Id"] for entry in listed]
    rows = _read_all(c, refs, no_trunc)
    if no_stream:
        out(render_table(STATS_HEADER, rows))
        return
    try:
        while True:
            out("\033[2J\033[H" + render_table(STATS_HEADER, rows))
            sys.stdout.flush()
            time.sleep(1.0)  # the daemon's readings come once a second
            rows = _read_all(c, refs, no_trunc)
    except KeyboardInterrupt:
        return


def _read_all(c: Client, refs: Sequence[str], no_trunc: bool) -> list[list[str]]:
    """One `stream=false` reading per container, concurrently (each takes a second for CPU %)."""
    results: dict[str, list[str] | str] = {}

    def one(r: str) -> None:
        try:
            with Client(c.host) as own:
                results[r] = stats_row(own.get(f"/containers/{ref(r)}/stats", {"stream": False}) or {}, not no_trunc)
        except DaemonError as exc:
            results[r] = exc.message

    threads = [threading.Thread(target=one, args=(r,)) for r in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = []
    for r in refs:
        result = results.get(r)
        if isinstance(result, str):
            err(f"Error response from daemon: {result}")
            raise Failed(1)
        if result is not None:
            rows.append(result)
    return rows


COMMANDS = ((stats, "stats"), (top, "top"), (pause, "pause"), (unpause, "unpause"), (update, "update"))
