"""The live convergence display of `service create|update|scale|rollback` without --detach, like the docker CLI's:
one `rich` bar per slot (per node for a global service), `overall progress: 2 out of 2 tasks`, then
`verify: Service converged` once it stayed converged for the update monitor period. converge_state() is the pure
part (which tasks count, as docker decides it); follow() polls the daemon like the docker CLI (CLIENT-SPEC §6)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

# the order a task goes through; a bar fills up to "running"
STATES = ["new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"]
TERMINAL = {"complete", "shutdown", "failed", "rejected", "remove", "orphaned"}
ORDER = {s: i for i, s in enumerate(STATES + ["complete", "shutdown", "failed", "rejected", "remove", "orphaned"])}
POLL_S = 0.2


@dataclass(slots=True)
class Converge:
    desired: int
    running: int
    slots: list[tuple[str, str, str]] = field(default_factory=list)  # (label, state, error)
    error: str = ""  # the update paused: stop with this
    finished_early: bool = False  # UpdateStatus completed before convergence: docker stops at once

    @property
    def converged(self) -> bool:
        return self.running == self.desired and not self.error


def converge_state(service: dict[str, Any], tasks: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> Converge:
    spec = service.get("Spec") or {}
    up = {n["ID"] for n in nodes if (n.get("Status") or {}).get("State") != "down"}
    counted = [t for t in tasks if t.get("Status", {}).get("State") in ORDER and t.get("DesiredState") in ORDER
               and (not t.get("NodeID") or t["NodeID"] in up)]
    glob = "Global" in (spec.get("Mode") or {})
    key = (lambda t: t.get("NodeID", "")) if glob else (lambda t: t.get("Slot", 0))
    chosen: dict[Any, dict[str, Any]] = {}
    for t in counted:  # per slot (node), the task with the lowest desired state wins, then the newest
        k = key(t)
        best = chosen.get(k)
        rank = (ORDER[t["DesiredState"]], -_created(t))
        if best is None or rank < (ORDER[best["DesiredState"]], -_created(best)):
            chosen[k] = t
    live = {k: t for k, t in chosen.items() if ORDER[t["DesiredState"]] <= ORDER["running"]}
    running = sum(1 for t in live.values() if t["Status"]["State"] == "running")
    desired = len(live) if glob else int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 0)
    c = Converge(desired=desired, running=running)
    total = desired if not glob else len(live)
    for i, k in enumerate(sorted(live, key=str) if glob else range(1, desired + 1)):
        t = live.get(k)
        label = f"{(k or '')[:12]}" if glob else f"{k}/{total}"
        c.slots.append((label, t["Status"]["State"] if t else "", (t or {}).get("Status", {}).get("Err", "")))
    us = service.get("UpdateStatus") or {}
    if us.get("State") == "paused":
        c.error = f"service update paused: {us.get('Message', '')}"
    elif us.get("State") == "rollback_paused":
        c.error = f"service rollback paused: {us.get('Message', '')}"
    elif us.get("State") in ("completed", "rollback_completed") and not c.converged:
        c.finished_early = True
    return c


def _created(t: dict[str, Any]) -> float:
    from shoal.cli.format import parse_time

    d = parse_time(str(t.get("CreatedAt", "")))
    return d.timestamp() if d else 0.0


def fraction(state: str) -> float:
    if state in TERMINAL or state not in STATES:
        return 0.0
    return (STATES.index(state) + 1) / len(STATES)


def monitor_s(service: dict[str, Any]) -> float:
    m = ((service.get("Spec") or {}).get("UpdateConfig") or {}).get("Monitor")
    return (m / 1e9) if isinstance(m, int) and m >= 0 else 5.0


def follow(c: Any, service_id: str, verify: bool = True) -> None:
    """Polls until converged (then verifies for the monitor period); raises RuntimeError when the update paused."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 100, highlight=False)
    progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=50), TextColumn("{task.fields[err]}"),
                        console=console, transient=False, auto_refresh=sys.stdout.isatty())
    overall = progress.add_task("overall progress: 0 out of 0 tasks", total=1, err="")
    rows: dict[str, Any] = {}
    converged_at: float | None = None
    query = {"filters": json.dumps({"_up-to-date": {"true": True}, "service": {service_id: True}})}
    with progress:
        while True:
            service = c.get(f"/services/{service_id}", {"insertDefaults": "false"})
            state = converge_state(service, c.get("/tasks", query), c.get("/nodes"))
            progress.update(overall, description=f"overall progress: {state.running} out of {state.desired} tasks",
                            completed=state.running, total=max(state.desired, 1))
            for label, st, err in state.slots:
                if label not in rows:
                    rows[label] = progress.add_task(f"{label}: {st}", total=1, err="")
                progress.update(rows[label], description=f"{label}: {st or ' '}", completed=fraction(st), err=err)
            if state.error:
                raise RuntimeError(state.error)
            if state.finished_early:
                break
            if state.converged:
                converged_at = converged_at or time.monotonic()
                if not verify or time.monotonic() - converged_at >= monitor_s(service):
                    break
            else:
                converged_at = None
            time.sleep(POLL_S)
    if converged_at is not None:
        console.print("verify: Service converged")
