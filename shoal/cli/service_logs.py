"""`shoal service logs SERVICE|TASK`, as the docker CLI's (cli/command/service/logs.go): each line after
`<service>.<slot>.<task id>@<node>    | `, names resolved from the details the daemon puts before each line
(`--raw` asks for none and prints the lines as they come; a TTY service's logs only that way)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import unquote_plus

import click

from shoal.cli.common import Failed, client, err
from shoal.cli.format import api_time
from shoal.client import Client, DaemonError, FrameDecoder, read_chunks

CONTEXT = {"help_option_names": ["--help"]}
L_NODE, L_SERVICE, L_TASK = "com.docker.swarm.node.id", "com.docker.swarm.service.id", "com.docker.swarm.task.id"


class LogFormatError(ValueError):
    pass


def parse_details(text: str) -> dict[str, str]:
    """The daemon's `k=v,k=v` details, each side query-unescaped (the docker CLI's logs.ParseLogDetails)."""
    out = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep:
            raise LogFormatError("invalid details format")
        out[unquote_plus(key)] = unquote_plus(value)
    return out


def digits(n: int) -> int:
    return len(str(n))


class LineFormatter:
    """Turns `[<ts> ]<details> <message>` into `[<ts> ]<task name>@<node><padding>    | [<details> ]<message>`.
    lookup(kind, id) gives the object of a node, service or task (the API's JSON); names are cached per context."""

    def __init__(self, lookup: Callable[[str, str], dict[str, Any]], timestamps: bool, details: bool,
                 no_resolve: bool, no_trunc: bool, no_task_ids: bool, padding: int) -> None:
        self.lookup, self.timestamps, self.details = lookup, timestamps, details
        self.no_resolve, self.no_trunc, self.no_task_ids, self.padding = no_resolve, no_trunc, no_task_ids, padding
        self._cache: dict[tuple[str, str, str], str] = {}

    def format(self, line: bytes) -> bytes:
        parts = line.split(b" ", 2 if self.timestamps else 1)
        if len(parts) != (3 if self.timestamps else 2):
            raise LogFormatError(f"invalid context in log message: {line.decode(errors='replace')}")
        details = parse_details(parts[-2].decode(errors="replace"))
        for key, what in ((L_NODE, "node"), (L_SERVICE, "service"), (L_TASK, "task")):
            if key not in details:
                shown = " ".join(f"{k}:{v}" for k, v in sorted(details.items()))  # as Go prints a map
                raise LogFormatError(f"missing {what} id in details: map[{shown}]")
        context = (details.pop(L_NODE), details.pop(L_SERVICE), details.pop(L_TASK))
        out = parts[0] + b" " if self.timestamps else b""
        out += (self._name(context) + "    | ").encode()
        if self.details:
            out += ",".join(sorted(f"{k}={v}" for k, v in details.items())).encode() + b" "
        return out + parts[-1]

    def _name(self, context: tuple[str, str, str]) -> str:
        if context not in self._cache:
            node_id, service_id, task_id = context
            node = node_id if self.no_resolve else self.lookup("nodes", node_id)["Description"]["Hostname"]
            service = service_id if self.no_resolve else self.lookup("services", service_id)["Spec"]["Name"]
            task = self.lookup("tasks", task_id)
            slot = task.get("Slot", 0)
            name = f"{service}.{slot}"
            if not self.no_task_ids:
                name += "." + (task["ID"] if self.no_trunc else task["ID"][:12])
            self._cache[context] = name + "@" + node + " " * max(0, self.padding - digits(slot))
        return self._cache[context]


def copy(chunks: Any, stdout: BinaryIO, stderr: BinaryIO, formatter: LineFormatter | None) -> None:
    """The multiplexed stream to stdout and stderr, each frame (one line) formatted unless formatter is None."""
    decoder = FrameDecoder()
    for chunk in chunks:
        for stream, payload in decoder.feed(chunk):
            target = stderr if stream in (2, 3) else stdout
            target.write(formatter.format(payload) if formatter is not None else payload)
            target.flush()


@click.command("logs", context_settings=CONTEXT)
@click.option("-f", "--follow", is_flag=True, help="Follow log output")
@click.option("--since", default="", help='Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)')
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps")
@click.option("--details", is_flag=True, help="Show extra details provided to logs")
@click.option("-n", "--tail", default="all", help="Number of lines to show from the end of the logs")
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names in output")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.option("--raw", is_flag=True, help="Do not neatly format logs")
@click.option("--no-task-ids", is_flag=True, help="Do not include task IDs in output")
@click.argument("target", metavar="SERVICE|TASK")
def logs(follow: bool, since: str, timestamps: bool, details: bool, tail: str, no_resolve: bool, no_trunc: bool,
         raw: bool, no_task_ids: bool, target: str) -> None:
    """Fetch the logs of a service or task"""
    try:
        since_q = api_time(since, "since") if since else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    c = client()
    try:
        path, tty, padding = _target(c, target)
        if tty and not raw:
            err("tty service logs only supported with --raw")
            raise Failed(1)
        query = {"stdout": True, "stderr": True, "since": since_q, "timestamps": timestamps or None,
                 "follow": follow or None, "tail": tail, "details": True if details or not raw else None}
        response = c.send("GET", path, query)
        if tty:
            for chunk in read_chunks(response):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            return
        lookups = Client(c.host)  # its own connection: `c`'s carries the stream
        formatter = None if raw else LineFormatter(lambda kind, ref: lookups.get(f"/{kind}/{ref}"), timestamps,
                                                    details, no_resolve, no_trunc, no_task_ids, padding)
        copy(read_chunks(response), sys.stdout.buffer, sys.stderr.buffer, formatter)
    except DaemonError as exc:
        err(f"Error response from daemon: {exc.message}")
        raise Failed(1) from None
    except LogFormatError as exc:
        err(str(exc))
        raise Failed(1) from None


def _target(c: Any, target: str) -> tuple[str, bool, int]:
    """The logs path, whether its tasks have a TTY, and the width slot numbers are padded to: a service's own, or
    else a task's (the docker CLI asks for the service first)."""
    try:
        service = c.get(f"/services/{target}")
    except DaemonError as exc:
        if exc.status != 404:
            raise
    else:
        spec = service["Spec"]
        replicas = (spec.get("Mode") or {}).get("Replicated", {}).get("Replicas")
        tty = bool(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("TTY"))
        return f"/services/{target}/logs", tty, digits(replicas) if replicas is not None else 1
    try:
        task = c.get(f"/tasks/{target}")
    except DaemonError as exc:
        if exc.status == 404:
            err(f"no such task or service: {target}")
            raise Failed(1) from None
        raise
    tty = bool(((task.get("Spec") or {}).get("ContainerSpec") or {}).get("TTY"))
    return f"/tasks/{target}/logs", tty, digits(task.get("Slot", 0))
