"""Restart reconciliation of containers: the daemon's records against what runc and the shims
say (they are the truth for what runs). plan() is pure; Engine.restore applies the plan.

A start that had not been committed to the record when the daemon died is undone, not adopted:
the record on disk has no addresses or interface names for it (they are saved only once the
start succeeded), and the client was never told it started — like a transaction rolled back.
Docker's live-restore adopts, but containerd keeps the task's full state for it; we would have
to rebuild the endpoints from the kernel. A committed `running` record is adopted (live restore).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# runc states in which the container's process exists (or is being made)
RUNC_ALIVE = ("creating", "created", "running", "paused")
LOST_EXIT_CODE = 255  # the container is gone and its shim recorded no exit code
UNREADABLE = "unreadable"  # the recorded state of an id whose record was moved aside


@dataclass(slots=True, frozen=True)
class Observed:
    """What the runtime says of one container id."""

    state: str  # runtime status: running | exited | created | unknown | unreadable
    exit_code: int | None = None
    start_in_progress: bool = False  # a shim is alive for it


@dataclass(slots=True, frozen=True)
class RuncEntry:
    status: str  # runc's: creating | created | running | paused | stopped
    ours: bool  # its bundle is the one shoal makes for that id


@dataclass(slots=True)
class Plan:
    adopt: list[str] = field(default_factory=list)  # running record, running container
    finish: dict[str, int] = field(default_factory=dict)  # running record, container gone: exit code
    discard: list[str] = field(default_factory=list)  # uncommitted start: kill and remove from runc
    remove: list[str] = field(default_factory=list)  # no record: runc container and/or bundle of ours
    foreign: list[str] = field(default_factory=list)  # in our runc root, not our bundle: left alone
    remove_etc_dirs: list[str] = field(default_factory=list)  # /etc file directories without a record
    release: list[str] = field(default_factory=list)  # not running, its record still holds network resources


def plan(
    records: dict[str, str],
    observed: dict[str, Observed],
    runc: dict[str, RuncEntry] | None,
    bundles: set[str],
    etc_dirs: set[str],
    holding_network: set[str] = frozenset(),
) -> Plan:
    """records: id -> recorded state (UNREADABLE: neither adopted nor removed); observed: id -> runtime view (for every record id);
    runc: `runc list` (None when runc could not be asked: then nothing is removed on its word);
    bundles: ids with a bundle directory; etc_dirs: ids with an /etc file directory;
    holding_network: ids whose record still holds a namespace, addresses or ports."""
    result = Plan()
    known_runc = runc or {}
    for container_id, state in sorted(records.items()):
        if state == UNREADABLE:
            continue  # its record was moved aside: what runs under its id is left for a human
        seen = observed.get(container_id, Observed("unknown"))
        in_runc = known_runc.get(container_id)
        runc_alive = in_runc is not None and in_runc.status in RUNC_ALIVE
        if state == "running":
            if seen.state in ("running", "unreadable"):
                result.adopt.append(container_id)  # unreadable: the watcher retries, it decides
            elif seen.state == "exited" and seen.exit_code is not None:
                result.finish[container_id] = seen.exit_code
            elif runc_alive:
                result.adopt.append(container_id)
            else:
                result.finish[container_id] = LOST_EXIT_CODE
        elif seen.state == "running" or seen.start_in_progress or runc_alive:
            result.discard.append(container_id)
        elif container_id in holding_network:
            result.release.append(container_id)
    if runc is not None:
        for container_id, entry in sorted(runc.items()):
            if container_id in records:
                continue
            (result.remove if entry.ours else result.foreign).append(container_id)
    for container_id in sorted(bundles - set(records) - set(result.remove)):
        result.remove.append(container_id)
    result.remove_etc_dirs = sorted(etc_dirs - set(records))
    return result
