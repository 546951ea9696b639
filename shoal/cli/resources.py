"""Resource commands (stats, top, pause, unpause, update) and the limit flags of `run`, with Docker's flags and output.
Talk to shoal.api.routes_resources through shoal.client; shoal.cli.container adds the limit flags to `run`."""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from shoal.cli.common import Failed, client, err, out
from shoal.cli.format import bytes_size, human_size, render_table
from shoal.client import Client, DaemonError, ref

CONTEXT = {"help_option_names": ["--help"]}
_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


# ---- parsing (docker's go-units and opts) ---------------------------------------------------

def ram_in_bytes(text: str) -> int:
    """go-units RAMInBytes: "16m", "1.5g", "1024" (binary units; b/k/m/g/t/p, optional "b"/"ib")."""
    s = text.strip().lower()
    for suffix in ("ib", "b"):
        if s.endswith(suffix) and len(s) > len(suffix) and s[-len(suffix) - 1] in _UNITS:
            s = s[: -len(suffix)]
            break
    unit = 1
    if s and s[-1] in _UNITS:
        unit, s = _UNITS[s[-1]], s[:-1]
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"invalid size: '{text}'") from None
    if value < 0 or not value.is_finite():
        raise ValueError(f"invalid size: '{text}'")
    return int(value * unit)


def nano_cpus(text: str) -> int:
    """docker's opts.NanoCPUs: "0.5" → 500000000."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"failed to parse {text} as a rational number") from None
    nano = value * 1_000_000_000
    if nano != nano.to_integral_value():
        raise ValueError("value is too precise")
    return int(nano)


class _Parsed(click.ParamType):
    def __init__(self, name: str, parse: Callable[[str], int]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return self._parse(str(value))
        except ValueError as exc:
            self.fail(f'invalid argument "{value}" for "{param.opts[-1] if param else ""}" flag: {exc}', param, ctx)


def _swap(text: str) -> int:
    return -1 if text.strip() == "-1" else ram_in_bytes(text)


BYTES = _Parsed("bytes", ram_in_bytes)
SWAP = _Parsed("bytes", _swap)
CPUS = _Parsed("decimal", nano_cpus)

_LIMIT_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-m", "--memory"), {"type": BYTES, "default": None, "help": "Memory limit"}),
    (("--memory-swap",), {"type": SWAP, "default": None,
                          "help": "Swap limit equal to memory plus swap: '-1' to enable unlimited swap"}),
    (("--memory-reservation",), {"type": BYTES, "default": None, "help": "Memory soft limit"}),
    (("--cpus",), {"type": CPUS, "default": None, "help": "Number of CPUs"}),
    (("-c", "--cpu-shares"), {"type": int, "default": None, "help": "CPU shares (relative weight)"}),
    (("--cpu-period",), {"type": int, "default": None, "help": "Limit CPU CFS (Completely Fair Scheduler) period"}),
    (("--cpu-quota",), {"type": int, "default": None, "help": "Limit CPU CFS (Completely Fair Scheduler) quota"}),
    (("--cpuset-cpus",), {"default": None, "help": "CPUs in which to allow execution (0-3, 0,1)"}),
    (("--cpuset-mems",), {"default": None, "help": "MEMs in which to allow execution (0-3, 0,1)"}),
    (("--pids-limit",), {"type": int, "default": None, "help": "Tune container pids limit (set -1 for unlimited)"}),
]
LIMIT_PARAMS = ("memory", "memory_swap", "memory_reservation", "cpus", "cpu_shares", "cpu_period", "cpu_quota",
                "cpuset_cpus", "cpuset_mems", "pids_limit")
_HOST_CONFIG_KEYS = {"memory": "Memory", "memory_swap": "MemorySwap", "memory_reservation": "MemoryReservation",
                     "cpus": "NanoCpus", "cpu_shares": "CpuShares", "cpu_period": "CpuPeriod",
                     "cpu_quota": "CpuQuota", "cpuset_cpus": "CpusetCpus", "cpuset_mems": "CpusetMems",
                     "pids_limit": "PidsLimit"}


def limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the limit flags to a click command (run, update); values arrive as keyword arguments."""
    for decls, kwargs in reversed(_LIMIT_OPTIONS):
        fn = click.option(*decls, **kwargs)(fn)
    return fn


def host_config_limits(values: Mapping[str, Any]) -> dict[str, Any]:
    """The HostConfig fields for the limit flags given (Docker's names); unset flags are left out."""
    return {_HOST_CONFIG_KEYS[k]: v for k, v in values.items() if k in _HOST_CONFIG_KEYS and v is not None}


def split_limits(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pops the limit flags out of a click command's kwargs; their HostConfig fields."""
    return host_config_limits({k: kwargs.pop(k) for k in LIMIT_PARAMS if k in kwargs})


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
