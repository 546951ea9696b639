"""CLI verbs around the container lifecycle: events, rename, wait, container/image prune and
`system df/prune`, with the docker CLI's flags and output shapes.

Over the daemon's /events, /containers/{id}/rename|wait, /containers|images|networks/prune and
/system/df (shoal.client); registered by shoal.cli.root.
"""
from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import click

from shoal.cli.common import Failed, client, err, out
from shoal.cli.format import UsageError, human_size, parse_filters, render_table
from shoal.client import DaemonError, json_messages, read_chunks, ref

CONTEXT = {"help_option_names": ["--help"]}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


# ---- pure helpers (unit tested) -----------------------------------------------------

def timestamp_arg(value: str, now: float) -> str:
    """The docker CLI's GetTimestamp: a Go duration before now ("10m"), unix seconds, or an
    RFC 3339 date/time, as "seconds.nanoseconds" for the API."""
    if not value:
        return ""
    if re.fullmatch(r"(?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|ns))+", value):
        seconds = now - sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
        return f"{seconds:.9f}"
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f'failed to parse value as time or duration: "{value}"') from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # the CLI reads a zone-less time as local
    return f"{parsed.timestamp():.9f}"


def event_line(message: Mapping[str, Any]) -> str:
    """`docker events` default line: time, type, action, actor id, (sorted attributes)."""
    nanos = int(message.get("timeNano") or int(message.get("time", 0)) * 10**9)
    when = datetime.fromtimestamp(nanos // 10**9, tz=timezone.utc).astimezone()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos % 10**9:09d}" + _zone(when)
    actor = message.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    line = f"{stamp} {message.get('Type', '')} {message.get('Action', '')} {actor.get('ID', '')}"
    if attributes:
        line += " (" + ", ".join(f"{k}={attributes[k]}" for k in sorted(attributes)) + ")"
    return line


def _zone(when: datetime) -> str:
    offset = when.utcoffset()
    if not offset:
        return "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def df_rows(usage: Mapping[str, Any]) -> list[list[str]]:
    """`docker system df`: TYPE TOTAL ACTIVE SIZE RECLAIMABLE for images, containers,
    local volumes and the build cache."""
    images = usage.get("Images") or []
    containers = usage.get("Containers") or []
    volumes = usage.get("Volumes") or []
    image_size = int(usage.get("LayersSize") or 0)
    active_images = [i for i in images if (i.get("Containers") or 0) > 0]
    unused = sum(int(i.get("Size") or 0) for i in images if not i.get("Containers"))
    running = [c for c in containers if c.get("State") in ("running", "paused", "restarting")]
    container_size = sum(int(c.get("SizeRw") or 0) for c in containers)
    stopped_size = sum(int(c.get("SizeRw") or 0) for c in containers if c not in running)
    return [
        ["Images", str(len(images)), str(len(active_images)), human_size(image_size),
         _reclaimable(unused, image_size)],
        ["Containers", str(len(containers)), str(len(running)), human_size(container_size),
         _reclaimable(stopped_size, container_size)],
        ["Local Volumes", str(len(volumes)), "0", human_size(0), _reclaimable(0, 0)],
        ["Build Cache", "0", "0", human_size(0), human_size(0)],
    ]


def _reclaimable(part: int, total: int) -> str:
    if total == 0:
        return human_size(part)
    return f"{human_size(part)} ({int(part * 100 / total)}%)"


# ---- commands -----------------------------------------------------------------------

@click.command(context_settings=CONTEXT)
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
@click.option("--format", "fmt", default="", help="Format the output: 'json' or '{{json .}}'")
@click.option("--since", default="", help="Show all events created since timestamp")
@click.option("--until", default="", help="Stream events until this timestamp")
def events(filters: tuple[str, ...], fmt: str, since: str, until: str) -> None:
    """Get real time events from the server"""
    if fmt not in ("", "json", "{{json .}}"):
        raise UsageError(f"shoal events supports --format json or '{{{{json .}}}}' only, not {fmt!r}")
    now = time.time()
    query: dict[str, Any] = {"since": timestamp_arg(since, now) or None, "until": timestamp_arg(until, now) or None}
    if filters:
        query["filters"] = parse_filters(filters)
    response = client().send("GET", "/events", query)
    for message in json_messages(read_chunks(response)):
        out((json.dumps(message, separators=(",", ":")) if fmt else event_line(message)) + "\n")
        sys.stdout.flush()


@click.command(context_settings=CONTEXT)
@click.argument("container")
@click.argument("new_name")
def rename(container: str, new_name: str) -> None:
    """Rename a container"""
    try:
        client().post(f"/containers/{ref(container)}/rename", query={"name": new_name})
    except DaemonError as exc:
        err(f"Error response from daemon: {exc.message}\nError: failed to rename container named {container}")
        raise Failed(1) from None


@click.command(context_settings=CONTEXT)
@click.option("--condition", default="", help="not-running (default), next-exit or removed")
@click.argument("containers", nargs=-1, required=True, metavar="CONTAINER...")
def wait(condition: str, containers: tuple[str, ...]) -> None:
    """Block until one or more containers stop, then print their exit codes"""
    c = client()
    failed = False
    for name in containers:
        try:
            answer = c.post(f"/containers/{ref(name)}/wait", query={"condition": condition or None}) or {}
        except DaemonError as exc:
            err(f"Error response from daemon: {exc.message}")
            failed = True
            continue
        out(f"{answer.get('StatusCode', 0)}\n")
    if failed:
        raise Failed(1)


def _confirm(force: bool, warning: str) -> bool:
    if force:
        return True
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _prune(path: str, filters: Sequence[str], extra: Mapping[str, dict[str, bool]] | None = None) -> dict[str, Any]:
    parsed = parse_filters(filters)
    parsed.update(extra or {})
    return client().post(path, query={"filters": parsed} if parsed else None) or {}


def _print_deleted(title: str, items: Sequence[str]) -> None:
    if items:
        out(f"{title}:\n" + "".join(f"{i}\n" for i in items) + "\n")


@click.command("prune", context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. 'until=<timestamp>')")
def container_prune(force: bool, filters: tuple[str, ...]) -> None:
    """Remove all stopped containers"""
    if not _confirm(force, "WARNING! This will remove all stopped containers."):
        return
    report = _prune("/containers/prune", filters)
    _print_deleted("Deleted Containers", report.get("ContainersDeleted") or [])
    out(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}\n")


def _image_lines(deleted: Sequence[Mapping[str, str]]) -> list[str]:
    return [f"untagged: {d['Untagged']}" if "Untagged" in d else f"deleted: {d['Deleted']}" for d in deleted]


@click.command("prune", context_settings=CONTEXT)
@click.option("-a", "--all", "all_images", is_flag=True, help="Remove all unused images, not just dangling ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. 'until=<timestamp>')")
def image_prune(all_images: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused images"""
    warning = ("WARNING! This will remove all images without at least one container associated to them."
               if all_images else "WARNING! This will remove all dangling images.")
    if not _confirm(force, warning):
        return
    report = _prune("/images/prune", filters, {"dangling": {"false" if all_images else "true": True}})
    _print_deleted("Deleted Images", _image_lines(report.get("ImagesDeleted") or []))
    out(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed') or 0)}\n")


@click.group(context_settings=CONTEXT)
def system() -> None:
    """Manage shoal"""


@system.command("df", context_settings=CONTEXT)
@click.option("--format", "fmt", default="", help="Format the output: 'json' or '{{json .}}'")
def system_df(fmt: str) -> None:
    """Show docker disk usage"""
    rows = df_rows(client().get("/system/df") or {})
    if fmt:
        keys = ("Type", "TotalCount", "Active", "Size", "Reclaimable")
        out("".join(json.dumps(dict(zip(keys, row)), separators=(",", ":")) + "\n" for row in rows))
        return
    out(render_table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows))


@system.command("prune", context_settings=CONTEXT)
@click.option("-a", "--all", "all_images", is_flag=True, help="Remove all unused images not just dangling ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (e.g. 'label=<key>=<value>')")
def system_prune(all_images: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused data"""
    warning = ("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one "
               "container\n  - all " + ("images without at least one container associated to them"
                                      if all_images else "dangling images") + "\n  - unused build cache\n")
    if not _confirm(force, warning):
        return
    containers = _prune("/containers/prune", filters)
    networks = _prune("/networks/prune", filters)
    images = _prune("/images/prune", filters, {"dangling": {"false" if all_images else "true": True}})
    _print_deleted("Deleted Containers", containers.get("ContainersDeleted") or [])
    _print_deleted("Deleted Networks", networks.get("NetworksDeleted") or [])
    _print_deleted("Deleted Images", _image_lines(images.get("ImagesDeleted") or []))
    total = (containers.get("SpaceReclaimed") or 0) + (images.get("SpaceReclaimed") or 0)
    out(f"Total reclaimed space: {human_size(total)}\n")
