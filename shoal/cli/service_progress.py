"""The live convergence display of `service create|update|scale|rollback` without --detach, like the docker CLI's:
one `rich` bar per slot (per node for a global service), `overall progress: 2 out of 2 tasks`, then
`verify: Service converged` once it stayed converged for the update monitor period; for a job, `job progress: 3 out
of 4 complete` and `active tasks: 1 out of 1 tasks` until the run completed, then `job complete`. converge_state() is the pure
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


@dataclass(slots=True)
class JobProgress:
    """A job run's progress as the docker CLI's replicatedJobProgressUpdater / globalJobProgressUpdater show it."""

    total: int  # completions wanted (replicated) or nodes of the run (global: those with a task at the first look)
    completed: int = 0
    active: int = 0  # tasks of the run not yet complete nor ended
    concurrent: int | None = None  # MaxConcurrent (replicated)
    slots: list[tuple[str, str, str]] = field(default_factory=list)  # (label, state, error)

    @property
    def done(self) -> bool:
        return self.completed == self.total

    def lines(self) -> list[str]:
        width = len(str(self.total))
        out = [f"job progress: {self.completed:>{width}} out of {self.total} complete"]
        if self.concurrent is not None:
            wanted = min(self.total - self.completed, self.concurrent)
            w = len(str(self.concurrent))
            out.append(f"active tasks: {self.active:>{w}} out of {wanted:>{w}} tasks")
        return out


def job_state(service: dict[str, Any], tasks: list[dict[str, Any]], nodes: set[str] | None = None) -> JobProgress:
    """Only the current run's tasks count (JobIteration); per slot (node) the task with the lowest state. A global
    job's nodes are fixed by the first call (`nodes` None then; later calls pass the nodes it returned in slots)."""
    mode = (service.get("Spec") or {}).get("Mode") or {}
    run = ((service.get("JobStatus") or {}).get("JobIteration") or {}).get("Index", 0)
    mine = [t for t in tasks if t.get("JobIteration") is not None and t["JobIteration"].get("Index", 0) == run
            and t.get("Status", {}).get("State") in ORDER and t.get("DesiredState") in ORDER]
    glob = "GlobalJob" in mode
    key = (lambda t: t.get("NodeID", "")) if glob else (lambda t: t.get("Slot", 0))
    lowest: dict[Any, dict[str, Any]] = {}
    for t in mine:
        k = key(t)
        if glob and nodes is not None and k not in nodes:
            continue  # a node that came later: docker follows the first nodes only
        if k not in lowest or ORDER[t["Status"]["State"]] < ORDER[lowest[k]["Status"]["State"]]:
            lowest[k] = t
    if glob:
        p = JobProgress(total=len(nodes) if nodes is not None else len(lowest))
        keys: list[Any] = sorted(lowest)
    else:
        job = mode.get("ReplicatedJob") or {}
        p = JobProgress(total=int(job.get("TotalCompletions") or 0), concurrent=int(job.get("MaxConcurrent") or 0))
        keys = list(range(len(lowest)))  # docker reads slots 0 .. n-1 of the n it has
    for k in keys:
        t = lowest.get(k) or {"Status": {"State": ""}}
        st = t["Status"]["State"]
        if st in ORDER and ORDER[st] < ORDER["complete"]:
            p.active += 1
        if st == "complete":
            p.completed += 1
        label = k if glob else f"{k + 1}/{p.total}"
        p.slots.append((label, st, t["Status"].get("Err", "")))
    return p


def follow_job(c: Any, service_id: str) -> None:
    """Polls a job's run until every task of it completed, then prints `job complete` (no verify period: a job stays
    done). A global job waits for its first tasks before it counts its nodes."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 100, highlight=False)
    progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=50), TextColumn("{task.fields[err]}"),
                        console=console, transient=False, auto_refresh=sys.stdout.isatty())
    rows: dict[str, Any] = {}
    nodes: set[str] | None = None
    query = {"filters": json.dumps({"_up-to-date": {"true": True}, "service": {service_id: True}})}
    with progress:
        while True:
            service = c.get(f"/services/{service_id}", {"insertDefaults": "false"})
            tasks = c.get("/tasks", query)
            glob = "GlobalJob" in ((service.get("Spec") or {}).get("Mode") or {})
            if glob and nodes is None:
                if not tasks and c.get("/nodes"):
                    _show(progress, rows, "job progress", "job progress: waiting for tasks", 0.0, "")
                    time.sleep(POLL_S)
                    continue
                nodes = {str(label) for label, _st, _err in job_state(service, tasks).slots}
            state = job_state(service, tasks, nodes)
            for i, line in enumerate(state.lines()):
                _show(progress, rows, "job progress" if i == 0 else "active tasks", line,
                      state.completed / max(state.total, 1) if i == 0 else 0.0, "")
            if state.total <= 20:  # docker draws a bar per task only up to 20 of them
                for label, st, err in state.slots:
                    name = str(label)[:12] if glob else str(label)
                    _show(progress, rows, str(label), f"{name}: {st or ' '}", fraction(st) if st != "complete" else 1.0,
                          err)
            if state.done:
                break
            time.sleep(POLL_S)
    console.print("job complete")


def _show(progress: Any, rows: dict[str, Any], key: str, text: str, done: float, err: str) -> None:
    if key not in rows:
        rows[key] = progress.add_task(text, total=1, err="")
    progress.update(rows[key], description=text, completed=done, err=err)


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
    """Polls until converged (then verifies for the monitor period); raises RuntimeError when the update paused.
    A job's run has its own display (follow_job)."""
    import sys

    if c.get(f"/services/{service_id}", {"insertDefaults": "false"}).get("JobStatus") is not None:
        follow_job(c, service_id)
        return

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
