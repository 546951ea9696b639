"""Service convergence: `service create --replicas N` on an overlay until every task runs and answers HTTP on
its task IP from every node, with Docker's swarm (dockerd 20.10), with shoal, and with a bare script doing
only the necessary work by hand, over the same 5 lab hosts (3 managers + 2 workers; bench/swarm.py builds them).

Steps, timed the same way for docker and shoal (their own CLI in h1 for the commands, their own Docker API
socket on every host to follow the task containers):
  create N     `service create --detach --replicas N --network bench-net --name web busybox httpd -f -p 80`
               until N task containers have started (each host's `GET /events` stream, opened before the
               create, announces them; each is inspected once for its address and pid: no polling of the
               daemons while they converge) and each task IP answers HTTP from every
               host that runs a task: the probe is busybox wget run by nsenter in the network namespace of
               one task container of that host (that namespace is attached to the overlay; no helper
               container is needed, so docker and shoal are probed alike); then `service rm web` and wait
               (untimed) for the containers to go.
  scale 100->0 `service scale web=0` until no task container runs on any host (Docker's is dominated by the
               10 s stop grace of httpd, which ignores SIGTERM as PID 1: both sides report as they are).
  VIP          `exec <a task container> wget http://web/` once per system: answered yes/no (Docker's
               VIPs need IPVS, which this kernel lacks).
bare: 4 runc containers per host from the busybox bundle, veths into a bridge in a per-host overlay namespace
with a VXLAN device (VNI 4097, local pinned, nolearning, proxy), every remote endpoint programmed by hand
(bridge fdb + ip neigh), `httpd -f -p 80` in each; timed from the first command to the same probe.
Everything made is removed on exit (lab down, dockerd's runc containers and their cgroups, namespaces), SIGTERM
and Ctrl-C included (then the figures so far are printed and the exit status is 130).
--timeline (docker and shoal): per task, when it reached each state (new, pending, assigned, accepted, preparing,
starting, running: the status timestamps of the task list, polled on h1) and answered from every host, with the
median and max of each hop (bench/timeline.py), and the shoal managers' timing notes (the lab daemons get
SHOAL_TIMING=1: manager/timing.py logs each pipeline pass and its raft waits); --keep-logs DIR copies each shoal
host's daemon.log there.
The swarm systems create each service after --settle seconds (default 10) on the swarm just made or after the
previous round's `service rm`, the same pause for both; bare has no daemons to settle (a new lab each round).
--rounds K: K creates of each N per system (bare: K labs), the median reported and every round printed.
--interleave (bare and one swarm system): each bare round runs right after a round of the swarm (its service removed,
its daemons and their processes stopped with SIGSTOP meanwhile, so bare does not pay for the idle swarm), so that both
see the same minutes of this machine, whose speed drifts by +-20% over minutes; the median of the pairs' ratios is
printed too.
Run: python bench/converge.py [--systems docker,bare,shoal] [--replicas 20,100] [--timeout 300] [--timeline] [--settle S]
[--rounds K] [--interleave]
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import http.client
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.swarm import (MANAGERS, WORKERS, StepFailed, System, attempt, bench_session, cannot_run,  # noqa: E402
                         docker_system, log, shoal_system, swarm_with_overlay)
from bench.timeline import Timeline, TimelinePoller  # noqa: E402
from bench.timeline import table as timeline_table  # noqa: E402
from shoal.lab import Lab, data_dir, run_dir  # noqa: E402

SYSTEMS = ("docker", "bare", "shoal")
HOSTS = MANAGERS + WORKERS
SUBNET_PREFIX = "10.0.9"
NETWORK = "bench-net"
SETTLE_S = 10.0  # --settle: pause before each create, after the swarm or the last rm (docker and shoal alike)
SERVICE = "web"
VNI = 4097
BUSYBOX = "/bin/busybox"
POLL_S = 0.2
# The goals at N=20: shoal <= 0.5x Docker and <= 1.5x bare.
GOAL_DOCKER = 0.5
GOAL_BARE = 1.5
# One probe round in a namespace: prints each address that answered HTTP (busybox wget exits 1 on a 404
# but says "HTTP/1.x 404": the server answered all the same). busybox 1.35's `wget -T` segfaults here,
# so `timeout` bounds each try instead.
PROBE_SCRIPT = r"""
for ip in "$@"; do
  out=$(/bin/busybox timeout 1 /bin/busybox wget -q -O /dev/null "http://$ip/" 2>&1) && { echo "$ip"; continue; }
  case "$out" in *HTTP/1*) echo "$ip";; esac
done
"""


# ---- pure parts (unit tested) -----------------------------------------------------------------
@dataclass(slots=True)
class Options:
    systems: list[str]
    replicas: list[int]
    timeout: float
    timeline: bool = False
    keep_logs: str = ""
    settle: float = SETTLE_S
    rounds: int = 1
    interleave: bool = False


def parse_args(argv: Sequence[str] | None = None) -> Options:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="docker,bare,shoal", help="comma-separated: docker, bare, shoal")
    ap.add_argument("--replicas", default="20,100", help="comma-separated replica counts (the largest is "
                    "also scaled to 0)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds any one step may take")
    ap.add_argument("--timeline", action="store_true", help="per task: when each state was reached and when it "
                    "answered from every host (docker and shoal)")
    ap.add_argument("--keep-logs", default="", metavar="DIR", help="copy each shoal host's daemon.log into DIR")
    ap.add_argument("--settle", type=float, default=SETTLE_S, metavar="S",
                    help=f"seconds between the swarm and its overlay being made (or the previous round's service rm) "
                         f"and each create, the same for every system (default {SETTLE_S:g}; 0: create while the swarm "
                         f"is still busy)")
    ap.add_argument("--rounds", type=int, default=1, metavar="K",
                    help="creates of each N per system (bare: K labs); the figure is their median, every round is "
                         "printed too (this 2-core machine varies by +-20%% from run to run)")
    ap.add_argument("--interleave", action="store_true",
                    help="each bare round right after a round of the (one) swarm system, that swarm stopped meanwhile; "
                         "the median of the pairs' ratios is printed too")
    a = ap.parse_args(argv)
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        ap.error(f"invalid --systems {a.systems!r}: use docker, bare, shoal (comma-separated)")
    replicas: list[int] = []
    for word in a.replicas.split(","):
        word = word.strip()
        if not word.isdigit() or int(word) < 1:
            ap.error(f"invalid --replicas {a.replicas!r}: {word!r} is not a positive number")
        replicas.append(int(word))
    if a.timeout <= 0:
        ap.error(f"invalid --timeout {a.timeout:g}: must be positive")
    if not 0 <= a.settle <= 600:
        ap.error(f"invalid --settle {a.settle:g}: must be between 0 and 600 seconds")
    if not 1 <= a.rounds <= 50:
        ap.error(f"invalid --rounds {a.rounds}: must be between 1 and 50")
    systems = list(dict.fromkeys(systems))
    if a.interleave and ("bare" not in systems or len(systems) != 2):
        ap.error(f"--interleave pairs bare with one swarm system: not with --systems {a.systems!r}")
    return Options(systems, list(dict.fromkeys(replicas)), a.timeout, a.timeline, a.keep_logs, a.settle, a.rounds,
                   a.interleave)


def ratio(value: float | None, base: float | None) -> float | None:
    """value/base, None when either is missing or the base is not positive."""
    if value is None or base is None or base <= 0:
        return None
    return value / base


@dataclass(slots=True)
class Result:
    """One system's figures: converge seconds by N, scale-to-0 seconds, VIP answered, why it stopped."""

    converge: dict[int, float] = field(default_factory=dict)  # the median of the rounds
    rounds: dict[int, list[float]] = field(default_factory=dict)  # every round's time, in the order run
    paired: dict[int, list[float]] = field(default_factory=dict)  # --interleave: this round / bare's right after
    scale_to_zero: dict[int, float] = field(default_factory=dict)  # by the N scaled from
    vip: bool | None = None
    error: str = ""


def _cell(value: float | None, unit: str = " s") -> str:
    return f"{value:.2f}{unit}" if value is not None else "n/a"


def report(results: dict[str, Result], replicas: Sequence[int], notes: dict[str, str] | None = None) -> str:
    """The table: system, N, converge time, ratio vs Docker, ratio vs bare (and the goals at N=20)."""
    lines = [f"{'system':<8}{'step':<16}{'time':>10}{'vs docker':>12}{'vs bare':>10}  goal"]
    docker, bare = results.get("docker"), results.get("bare")
    for n in replicas:
        for name, res in results.items():
            v = res.converge.get(n)
            rd = ratio(v, docker.converge.get(n) if docker else None)
            rb = ratio(v, bare.converge.get(n) if bare else None)
            line = f"{name:<8}{f'create N={n}':<16}{_cell(v):>10}{_cell(rd, 'x'):>12}{_cell(rb, 'x'):>10}"
            if name == "shoal" and n == 20:
                verdicts = []
                if rd is not None:
                    verdicts.append(f"<= {GOAL_DOCKER:g}x docker {'ok' if rd <= GOAL_DOCKER else 'MISSED'}")
                if rb is not None:
                    verdicts.append(f"<= {GOAL_BARE:g}x bare {'ok' if rb <= GOAL_BARE else 'MISSED'}")
                line += "  " + ", ".join(verdicts)
            lines.append(line.rstrip())
    for name, res in results.items():
        for n, v in res.scale_to_zero.items():
            rd = ratio(v, docker.scale_to_zero.get(n) if docker else None)
            lines.append(f"{name:<8}{f'scale {n}->0':<16}{_cell(v):>10}{_cell(rd, 'x'):>12}{'':>10}".rstrip())
    vips = {name: res.vip for name, res in results.items() if name != "bare" and res.vip is not None}
    if vips:
        lines.append("VIP http://web/ answered from a task container: "
                     + ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in vips.items())
                     + ("  (Docker's VIP needs IPVS, absent here)" if "docker" in vips else ""))
    if any(res.scale_to_zero for res in results.values()):
        lines.append("scale ->0: Docker waits out the 10 s stop grace of httpd (PID 1 ignores SIGTERM)")
    for name, res in results.items():
        for n, times in res.rounds.items():
            if len(times) > 1:
                lines.append(f"{name} create N={n}: {len(times)} rounds " + " ".join(f"{t:.2f}" for t in times)
                             + f" s, median {statistics.median(times):.2f} s")
    for name, res in results.items():
        if res.error:
            lines.append(f"{name}: incomplete: {res.error}")
    for name, note in (notes or {}).items():
        lines.append(f"{name}: not run: {note}")
    shoal = results.get("shoal")
    if shoal:
        for n in replicas:
            for base_name, base in (("docker", docker), ("bare", bare)):
                r = ratio(shoal.converge.get(n), base.converge.get(n) if base else None)
                if r is not None:
                    lines.append(f"ratio converge N={n} shoal/{base_name} = {r:.2f}")
    for name, res in results.items():
        for n, pairs in res.paired.items():
            if pairs:
                lines.append(f"interleaved N={n}: {name}/bare round by round " + " ".join(f"{q:.2f}" for q in pairs)
                             + f", median {statistics.median(pairs):.2f}")
    return "\n".join(lines)


# ---- probing ------------------------------------------------------------------------------------
def probe(netns: str, addresses: Sequence[str]) -> set[str]:
    """The addresses that answered HTTP from inside the network namespace `netns` (a path)."""
    if not addresses:
        return set()
    r = subprocess.run(["nsenter", f"--net={netns}", BUSYBOX, "sh", "-c", PROBE_SCRIPT, "probe", *addresses],
                       capture_output=True, text=True, timeout=30 + 2 * len(addresses))
    return {line.strip() for line in r.stdout.splitlines() if line.strip()}


@dataclass(slots=True)
class Prober:
    """Which task address answered from which host, probe rounds run on every host at once."""

    answered: dict[str, set[str]] = field(default_factory=dict)
    on_answer: Callable[[str, str], None] | None = None  # (host, address) the first time it answered

    def round(self, from_netns: dict[str, str], addresses: Sequence[str]) -> bool:
        """Probe what has not answered yet; True once every address answered from every host given."""
        def one(host: str) -> None:
            done = self.answered.setdefault(host, set())
            new = probe(from_netns[host], [a for a in addresses if a not in done])
            if self.on_answer is not None:
                for address in sorted(new - done):
                    self.on_answer(host, address)
            done |= new
        with ThreadPoolExecutor(max(1, len(from_netns))) as pool:
            list(pool.map(one, from_netns))
        return all(set(addresses) <= self.answered.get(h, set()) for h in from_netns)


def wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise StepFailed(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_S)


# ---- docker and shoal: a swarm with a service ---------------------------------------------------
@dataclass(slots=True)
class TaskContainer:
    host: str
    id: str
    address: str  # on bench-net, "" until the daemon says
    pid: int


API_VERSION = "1.41"  # dockerd 20.10's; shoal answers it too


class ApiError(StepFailed):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class _Api:
    """GET of a Docker API socket at version 1.41 (shoal's client speaks its own newer version)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.conn = _UnixHTTP(path, timeout)

    def get(self, path: str) -> Any:
        self.conn.request("GET", f"/v{API_VERSION}{path}")
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise ApiError(resp.status, f"GET {path}: {resp.status} {body.decode(errors='replace').strip()[:300]}")
        return json.loads(body)

    def __enter__(self) -> _Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def overlay_address(networks: dict[str, Any]) -> str:
    """The container's address on bench-net from inspect's NetworkSettings.Networks: by the network's name, else
    the address inside bench-net's subnet (a daemon may key the network differently), "" while it has none."""
    named = (networks.get(NETWORK) or {}).get("IPAddress") or ""
    if named:
        return str(named)
    inside = [str(n.get("IPAddress")) for n in networks.values()
              if str(n.get("IPAddress") or "").startswith(f"{SUBNET_PREFIX}.")]
    return inside[0] if inside else ""


def inspect_task(api: _Api, host: str, cid: str) -> TaskContainer | None:
    """A task container's address on bench-net and its pid (None: gone again before we looked)."""
    try:
        info = api.get(f"/containers/{cid}/json")
    except ApiError as e:
        if e.status == 404:
            return None
        raise
    nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
    return TaskContainer(host, cid, overlay_address(nets), int((info.get("State") or {}).get("Pid") or 0))


def task_containers(system: System, host: str, cache: dict[str, TaskContainer],
                    inspect: bool = True) -> list[TaskContainer]:
    """The running task containers of `web` on one host, through its Docker API socket; `inspect`: with
    their address and pid (a container gone between the list and its inspect is left out)."""
    assert system.lab is not None
    with _Api(str(system.lab.socket(host))) as client:
        listed = client.get("/containers/json")
        found = []
        for c in listed:
            names = [n.lstrip("/") for n in c.get("Names") or []]
            labels = c.get("Labels") or {}
            if not (labels.get("com.docker.swarm.service.name") == SERVICE
                    or any(n.startswith(f"{SERVICE}.") for n in names)):
                continue
            known = cache.get(c["Id"])
            if not inspect:
                known = known or TaskContainer(host, c["Id"], "", 0)
            elif known is None or not known.address:
                known = inspect_task(client, host, c["Id"])
                if known is None:
                    continue
                cache[c["Id"]] = known
            found.append(known)
        return found


class StartWatch:
    """The task containers of `web` as their hosts announce them: one `GET /events` stream per host (Docker's
    API, which shoal serves too) from just before the create, each started task container inspected once for
    its address and pid. The converge step waits on this instead of listing every host's containers every
    poll: the observer's own API calls would cost the daemons (and this process) CPU while they converge,
    and a start is seen when it happens, not at the next poll."""

    def __init__(self, sockets: dict[str, str], timeout: float) -> None:
        self._sockets = dict(sockets)  # host -> its Docker API socket
        self._timeout = timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.tasks: dict[str, TaskContainer] = {}
        self.errors: list[str] = []
        self._streams: list[_UnixHTTP] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        """Open every host's stream (each answered with its headers: nothing after this is missed)."""
        since = f"{time.time() - 1:.3f}"  # the ring replays a start that raced the stream's subscription
        filters = urllib.parse.quote(json.dumps({"type": ["container"], "event": ["start"],
                                                 "label": [f"com.docker.swarm.service.name={SERVICE}"]}))
        for host, path in self._sockets.items():
            conn = _UnixHTTP(path, self._timeout)
            conn.request("GET", f"/v{API_VERSION}/events?since={since}&filters={filters}")
            resp = conn.getresponse()
            if resp.status != 200:
                raise StepFailed(f"GET /events on {host}: {resp.status} {resp.read()[:300]!r}")
            self._streams.append(conn)
            t = threading.Thread(target=self._follow, args=(host, path, resp), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopping = True
        for conn in self._streams:
            with contextlib.suppress(OSError):
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
        for t in self._threads:
            t.join(timeout=5)

    def _follow(self, host: str, path: str, resp: http.client.HTTPResponse) -> None:
        try:
            with _Api(path, self._timeout) as api:
                while line := resp.readline():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    cid = event.get("id") or (event.get("Actor") or {}).get("ID") or ""
                    if not cid or cid in self.tasks:
                        continue
                    task = inspect_task(api, host, cid)
                    if task is not None:
                        with self._changed:
                            self.tasks[cid] = task
                            self._changed.notify_all()
        except Exception as e:  # noqa: BLE001 - stop() cutting the stream ends up here too (http.client raises various)
            with self._changed:
                if not self._stopping:
                    self.errors.append(f"{host}: {type(e).__name__}: {e}")
                self._changed.notify_all()

    def refresh(self, tasks: Sequence[TaskContainer]) -> None:
        """Inspect again the tasks seen without an address or pid (a daemon may fill them in after the start)."""
        for t in tasks:
            with _Api(self._sockets[t.host], self._timeout) as api:
                task = inspect_task(api, t.host, t.id)
            with self._changed:
                if task is None:
                    self.tasks.pop(t.id, None)
                else:
                    self.tasks[t.id] = task

    def wait_for(self, n: int, timeout: float) -> list[TaskContainer]:
        """The task containers once at least n are known (or whatever is known at the timeout)."""
        end = time.monotonic() + timeout
        with self._changed:
            while len(self.tasks) < n and not self.errors and time.monotonic() < end:
                self._changed.wait(min(POLL_S, max(0.0, end - time.monotonic())))
            if self.errors:
                raise StepFailed("the event streams broke: " + "; ".join(self.errors))
            return list(self.tasks.values())


def all_tasks(system: System, cache: dict[str, TaskContainer], inspect: bool = True) -> list[TaskContainer]:
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        return [t for per_host in pool.map(lambda h: task_containers(system, h, cache, inspect), HOSTS)
                for t in per_host]


def list_service_tasks(system: System, host: str) -> list[dict[str, Any]]:
    """GET /tasks of the service on host's Docker API socket."""
    assert system.lab is not None
    query = urllib.parse.quote(json.dumps({"service": [SERVICE]}))
    with _Api(str(system.lab.socket(host)), timeout=10.0) as client:
        return list(client.get(f"/tasks?filters={query}"))


def node_names(system: System, host: str) -> dict[str, str]:
    assert system.lab is not None
    with _Api(str(system.lab.socket(host))) as client:
        return {str(n.get("ID")): str((n.get("Description") or {}).get("Hostname") or "") for n in client.get("/nodes")}


def converge(system: System, n: int, timeout: float, log: Callable[[str], None], timeline: bool = False) -> float:
    """`service create` of N replicas until every task runs and answers from every host with a task."""
    prober = Prober()
    poller: TimelinePoller | None = None
    if timeline:
        poller = TimelinePoller(Timeline(time.time(), NETWORK), lambda: list_service_tasks(system, MANAGERS[0]))
        prober.on_answer = poller.answered
        poller.start()
    assert system.lab is not None
    watch = StartWatch({h: str(system.lab.socket(h)) for h in HOSTS}, timeout)
    watch.start()
    t0 = time.monotonic()
    system.run(MANAGERS[0], "service", "create", "--detach", "--replicas", str(n), "--network", NETWORK,
               "--name", SERVICE, "busybox", "httpd", "-f", "-p", "80")
    command_s = time.monotonic() - t0
    seen = {"running": 0}

    def done() -> bool:
        tasks = watch.wait_for(n, max(0.0, t0 + timeout - time.monotonic()))
        seen["running"] = len(tasks)
        incomplete = [t for t in tasks if not t.address or not t.pid]
        if incomplete:
            watch.refresh(incomplete)
            return False
        if len(tasks) < n:
            return False
        from_netns: dict[str, str] = {}
        for t in tasks:
            from_netns.setdefault(t.host, f"/proc/{t.pid}/ns/net")
        seen["hosts"] = len(from_netns)
        return prober.round(from_netns, sorted(t.address for t in tasks))

    try:
        wait(f"{n} tasks running and answering HTTP from every host", done, timeout)
    except StepFailed as e:
        raise StepFailed(f"{system.name}: create N={n}: {e} ({seen['running']} running)") from None
    finally:
        watch.stop()
        if poller is not None:
            poller.stop()
    took = time.monotonic() - t0
    if poller is not None:
        try:
            names = node_names(system, MANAGERS[0])
        except (StepFailed, OSError):
            names = {}
        log(f"{system.name}: N={n} " + timeline_table(poller.timeline, names))
        if system.name == "shoal" and system.lab is not None:
            log("shoal: the managers' timing notes (SHOAL_TIMING=1):\n" + "\n".join(timing_notes(system.lab, poller.timeline.t0)))
    log(f"{system.name}: create N={n} converged in {took:.2f} s (the command {command_s:.2f} s; "
        f"every task answered from each of the {seen['hosts']} hosts running tasks)")
    return took


def running_count(system: System) -> int:
    return len(all_tasks(system, {}, inspect=False))


def remove_service(system: System, timeout: float) -> None:
    system.run(MANAGERS[0], "service", "rm", SERVICE)
    wait(f"{system.name}: no task container left after service rm", lambda: running_count(system) == 0, timeout)


def scale_to_zero(system: System, timeout: float, log: Callable[[str], None]) -> float:
    t0 = time.monotonic()
    system.run(MANAGERS[0], "service", "scale", "--detach", f"{SERVICE}=0")
    wait(f"{system.name}: scale to 0: no task container running on any host",
         lambda: running_count(system) == 0, timeout)
    took = time.monotonic() - t0
    log(f"{system.name}: scale ->0 {took:.2f} s")
    return took


def vip_answers(system: System, log: Callable[[str], None]) -> bool:
    """`wget http://web/` in one task container: does the service name (its VIP) answer HTTP?"""
    tasks = all_tasks(system, {})
    if not tasks:
        raise StepFailed(f"{system.name}: no task container to try the VIP from")
    t = tasks[0]
    r = system.run(t.host, "exec", t.id, "timeout", "3", "wget", "-q", "-O", "/dev/null", f"http://{SERVICE}/",
                   check=False)
    said = (r.stdout + r.stderr).strip()
    log(f"{system.name}: exec wget http://{SERVICE}/ in {t.id[:12]} on {t.host}: exit {r.returncode}"
        + (f", {said[-200:]}" if said else ""))
    return r.returncode == 0 or "HTTP/1" in said


def shoal_missing() -> str | None:
    """Why shoal cannot run the service part here (its overlay/service commands are missing), or None."""
    for args in (["swarm", "init", "--help"], ["service", "create", "--help"]):
        r = subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
        if r.returncode:
            said = next((line for line in reversed((r.stderr or r.stdout).strip().splitlines()) if line.strip()), "")
            return (f"`shoal {' '.join(args[:-1])}` is not in this checkout ({said.strip()}): the services issue's "
                    "commands have not landed here yet")
    return None


def measure_swarm(system: System, opts: Options, log: Callable[[str], None], workdir: Path,
                  between: Callable[[int], float | None] | None = None) -> Result:
    """The swarm's rounds; between(n), when given, runs after each round's service rm with the swarm stopped
    (--interleave: bare's round; its time, None when it failed, then no more are run)."""
    res = Result()

    def logs_kept() -> None:
        if system.lab is not None and opts.keep_logs and system.name == "shoal":
            keep_logs(system.lab, Path(opts.keep_logs), log)

    with attempt(system, log, before_down=logs_kept) as at:
        swarm_with_overlay(system, at, workdir, HOSTS, ["--subnet", f"{SUBNET_PREFIX}.0/24", NETWORK], log)
        biggest = max(opts.replicas)
        for n in opts.replicas:
            for r in range(opts.rounds):
                # Every create measures a settled swarm, as a user's would be, after the same pause for every system:
                # a swarm that has just formed is still busy (each node's ingress sandbox, gossip joins, certificates),
                # and so is one whose last service was just removed (the removed tasks' records, each node's copy of
                # the network: without the pause their removal overlapped the next create's first 0.1 s).
                at.step = f"settling {opts.settle:g} s"
                time.sleep(opts.settle)
                at.step = f"create N={n}" + (f" (round {r + 1})" if opts.rounds > 1 else "")
                record_round(res, n, converge(system, n, opts.timeout, log, opts.timeline))
                if res.vip is None:
                    at.step = "VIP check"
                    res.vip = vip_answers(system, log)
                    log(f"{system.name}: VIP http://{SERVICE}/ answered: {'yes' if res.vip else 'no'}")
                if n == biggest and r == opts.rounds - 1:
                    at.step = f"scale {n}->0"
                    res.scale_to_zero[n] = scale_to_zero(system, opts.timeout, log)
                at.step = f"service rm after N={n}"
                remove_service(system, opts.timeout)
                if between is not None and system.lab is not None:
                    at.step = f"bare N={n} between rounds (the swarm stopped)"
                    with stopped(system.lab):
                        other = between(n)
                    if other is None:
                        between = None
                    else:
                        res.paired.setdefault(n, []).append(res.rounds[n][-1] / other)
    res.error = at.error
    return res


def _descendants(roots: set[int]) -> set[int]:
    """roots and every process below them (from each process's parent in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _state(pid: int) -> str:
    """The process's state letter (T: stopped), "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@contextlib.contextmanager
def stopped(lab: Lab) -> Iterator[None]:
    """The lab's daemons and every process below them stopped (SIGSTOP) meanwhile, continued (SIGCONT) after, even
    on an error or an interrupt: a bare round between two of the swarm's runs without the idle swarm's background
    work (raft ticks, gossip, heartbeats) on the same 2 cores. The next swarm round waits --settle after it."""
    pids = _descendants({pid for host in lab.hosts if (pid := lab.daemon_pid(host))})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 2.0  # a signal is taken at the process's next return to user space
        while time.monotonic() < deadline and any(_state(pid) not in ("T", "") for pid in pids):
            time.sleep(0.005)
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def record_round(res: Result, n: int, took: float) -> None:
    """One more round of create N: kept in order, and the figure for N becomes the median so far."""
    res.rounds.setdefault(n, []).append(took)
    res.converge[n] = statistics.median(res.rounds[n])


def timing_notes(lab: Lab, since: float, limit: int = 80) -> list[str]:
    """The daemons' manager.timing lines logged since `since` (epoch seconds), host-prefixed, in time order."""
    found: list[str] = []
    since_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    for host in lab.hosts:
        try:
            lines = lab.log(host).read_text(errors="replace").splitlines()
        except OSError:
            continue
        found += [f"{line[:23]} {host} {line[24:].replace(' INFO manager.timing:', '')}" for line in lines
                  if "manager.timing" in line and line[:19] >= since_text]
    found.sort()
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


def keep_logs(lab: Lab, to: Path, log: Callable[[str], None]) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for host in lab.hosts:
        try:
            shutil.copyfile(lab.log(host), to / f"{host}.log")
        except OSError as e:
            log(f"cannot keep the log of {host}: {e}")
    log(f"daemon logs kept in {to}")


# ---- bare: the necessary work by hand ---------------------------------------------------------
@dataclass(slots=True)
class Endpoint:
    host: str
    index: int  # 1.. over the whole network
    address: str
    mac: str


def plan_endpoints(n: int, hosts: Sequence[str]) -> list[Endpoint]:
    """N endpoints spread round-robin over the hosts, addresses .2 up, MACs derived from them as Docker does."""
    if n > 253:
        raise ValueError(f"{n} endpoints do not fit in {SUBNET_PREFIX}.0/24")
    out = []
    for i in range(n):
        last = 2 + i
        out.append(Endpoint(hosts[i % len(hosts)], i + 1, f"{SUBNET_PREFIX}.{last}",
                            "02:42:0a:00:09:%02x" % last))
    return out


def bare_host_script(lab: str, host: str, local_ip: str, endpoints: Sequence[Endpoint],
                     host_ips: dict[str, str], runc_root: str, bundles: str) -> str:
    """The shell script run in host `host`'s namespace: overlay namespace, VXLAN, bridge, peers, containers."""
    ov = f"shoal-{lab}-{host}-bov"
    lines = ["set -e",
             f"ip netns add {ov}",
             f"ip link add bvx{VNI} type vxlan id {VNI} local {local_ip} dstport 4789 nolearning proxy",
             f"ip link set bvx{VNI} netns {ov}"]
    batch = ["link set lo up", "link add br0 type bridge", f"link set bvx{VNI} mtu 1450 master br0 up",
             "link set br0 up"]
    fdb = []
    for e in endpoints:
        if e.host != host:
            batch.append(f"neigh add {e.address} lladdr {e.mac} dev bvx{VNI} nud permanent")
            fdb.append(f"fdb add {e.mac} dev bvx{VNI} dst {host_ips[e.host]} self permanent")
    local = [e for e in endpoints if e.host == host]
    for e in local:
        batch.append(f"link add bv{e.index} type veth peer name eth0 netns shoal-{lab}-{host}-b{e.index}")
        batch.append(f"link set bv{e.index} mtu 1450 master br0 up")
    lines += [f"ip netns add shoal-{lab}-{host}-b{e.index}" for e in local]
    lines.append(f"ip -n {ov} -batch - <<'EOF'\n" + "\n".join(batch) + "\nEOF")
    if fdb:
        lines.append(f"bridge -n {ov} -batch - <<'EOF'\n" + "\n".join(fdb) + "\nEOF")
    for e in local:
        ns = f"shoal-{lab}-{host}-b{e.index}"
        lines.append(f"ip -n {ns} -batch - <<'EOF'\nlink set lo up\nlink set eth0 address {e.mac} mtu 1450\n"
                     f"addr add {e.address}/24 dev eth0\nlink set eth0 up\nEOF")
        # Every stdio away from the caller's pipes: the container inherits runc's and would hold them open.
        lines.append(f"runc --root {runc_root} run -d --bundle {bundles}/b{e.index} bare{e.index}-{lab} "
                     f"</dev/null >/dev/null 2>>{bundles}/{host}.err")
    return "\n".join(lines) + "\n"


def measure_bare(n: int, timeout: float, log: Callable[[str], None]) -> Result:
    from agent.executor.spec import ProcessSpec, build_oci_spec
    from agent.images.store import ImageStore

    res = Result()
    lab: Lab | None = None
    step = "lab up"
    try:
        lab = Lab.up(f"sc{secrets.token_hex(4)}", len(HOSTS), ping_deadline=timeout)
        step = "bundles"
        image = ImageStore(data_dir(lab.name, HOSTS[0]) / "images").get("busybox")
        work = run_dir(lab.name) / "bare"
        rootfs = work / "rootfs"
        shutil.copytree(image.rootfs, rootfs, symlinks=True)
        endpoints = plan_endpoints(n, HOSTS)
        import resource
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        for e in endpoints:
            bundle = work / f"b{e.index}"
            bundle.mkdir()
            # One parent cgroup for them all, as shoal's (/shoal/<daemon>/) and Docker's (/docker/) containers have:
            # at the root each would weigh as much as a whole daemon's containers against the rest of the machine.
            spec = build_oci_spec(ProcessSpec(args=["httpd", "-f", "-p", "80"], env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]),
                                  f"bare{e.index}", str(rootfs), f"/run/netns/shoal-{lab.name}-{e.host}-b{e.index}",
                                  [], cgroups_path=f"{bare_cgroup_parent(lab.name)}/bare{e.index}", nofile_limit=nofile)
            spec["root"]["readonly"] = True  # one rootfs shared by every container
            (bundle / "config.json").write_text(json.dumps(spec))
        host_ips = {h: lab.address(h) for h in HOSTS}
        scripts = {h: bare_host_script(lab.name, h, host_ips[h], endpoints, host_ips,
                                       str(run_dir(lab.name, h) / "runc"), str(work)) for h in HOSTS}
        step = f"bare N={n}"
        t0 = time.monotonic()
        procs = {h: subprocess.Popen(["nsenter", f"--net=/run/netns/{lab.netns(h)}", "--", "sh", "-c", scripts[h]],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for h in HOSTS}
        for h, p in procs.items():
            try:
                _, err = p.communicate(timeout=max(1.0, t0 + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise StepFailed(f"the script of {h} did not finish in {timeout:g}s") from None
            if p.returncode:
                runc_err = (work / f"{h}.err").read_text() if (work / f"{h}.err").exists() else ""
                raise StepFailed(f"the script of {h} failed: {(err + runc_err).strip()[-500:]}")
        script_s = time.monotonic() - t0
        from_netns = {h: f"/run/netns/shoal-{lab.name}-{h}-b{e.index}"
                      for e in reversed(endpoints) for h in [e.host]}
        prober = Prober()
        addresses = [e.address for e in endpoints]
        wait(f"bare: {n} endpoints answering HTTP from every host", lambda: prober.round(from_netns, addresses),
             timeout)
        res.converge[n] = time.monotonic() - t0
        log(f"bare: N={n} converged in {res.converge[n]:.2f} s (the scripts {script_s:.2f} s)")
    except (StepFailed, subprocess.TimeoutExpired, OSError) as e:
        res.error = f"{step}: {e}"
        log(f"bare: stopped at {step}: {e}")
    except Exception as e:
        res.error = f"{step}: {type(e).__name__}: {e}"
        log(f"bare: stopped at {step}: {res.error}")
    finally:
        if lab is not None:
            lab.down()  # kills the httpds (their namespaces are the lab's), deletes the runc containers
            remove_bare_cgroups(lab.name)
    return res


def bare_cgroup_parent(lab: str) -> str:
    """The cgroup (below every controller's root) holding the bare script's containers of lab."""
    return f"/shoal-bare-{lab}"


def remove_bare_cgroups(lab: str) -> None:
    """runc's cgroups of containers an interrupt caught half-made (runc delete never heard of them), then their
    parent; empty once lab down killed their processes."""
    root = Path("/sys/fs/cgroup")
    parent = bare_cgroup_parent(lab).lstrip("/")
    for path in [*sorted(root.glob(f"*/{parent}/bare*")), *sorted(root.glob(f"*/{parent}")),
                 *sorted(root.glob(f"*/bare*-{lab}"))]:
        try:
            path.rmdir()
        except OSError:
            pass


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    why = cannot_run("converge.py", opts.systems)
    if why:
        print(why, file=sys.stderr)
        return 2
    results: dict[str, Result] = {}
    notes: dict[str, str] = {}
    with bench_session("converge") as session:
        workdir = session.workdir
        if opts.timeline:
            os.environ["SHOAL_TIMING"] = "1"  # the lab's daemons inherit it: manager/timing.py logs its notes
        between = None
        if opts.interleave:
            results["bare"] = Result()

            def between(n: int) -> float | None:
                one = measure_bare(n, opts.timeout, log)
                if one.error:
                    results["bare"].error = one.error
                    return None
                record_round(results["bare"], n, one.converge[n])
                return one.converge[n]
        for name in opts.systems:
            if name == "docker":
                results["docker"] = measure_swarm(docker_system(opts.timeout), opts, log, workdir, between)
            elif name == "bare" and opts.interleave:
                continue  # run between the swarm's rounds
            elif name == "bare":
                res = Result()
                for n in opts.replicas:
                    for _ in range(opts.rounds):
                        one = measure_bare(n, opts.timeout, log)
                        if one.error:
                            res.error = one.error
                            break
                        record_round(res, n, one.converge[n])
                    if res.error:
                        break
                results["bare"] = res
            else:
                why = shoal_missing()
                if why:
                    notes["shoal"] = why
                    log(f"shoal: not run: {why}")
                    continue
                results["shoal"] = measure_swarm(shoal_system(opts.timeout, []), opts, log, workdir, between)
    print(report(results, opts.replicas, notes))
    if session.interrupted:
        return 130
    return 0 if all(not r.error for r in results.values()) and not notes else 1


if __name__ == "__main__":
    sys.exit(main())
