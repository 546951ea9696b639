"""Write throughput of a 3-manager shoal cluster against a 3-member etcd 3.4 cluster and a 3-manager Docker swarm on this machine.
Starts all three (tests/support/cluster.py's LocalCluster; /usr/bin/etcd; dockerd 20.10 in a shoal lab), drives each with the same closed-loop load, prints the figures.

shoal: CreateConfig (unique names, 256-byte data) sent to the Raft leader; SQLite storage, fsync on, default tick.
etcd: KV Put (256-byte values) over etcd's own gRPC API to its leader; default quota, snapshot count, fsync.
docker-swarm: `docker config create` as the Engine API has it (POST /configs/create, unique names, the same 256 bytes)
to the swarm leader's unix socket; three dockerd from /opt/shoal-docker-ref/bin, each in a lab host namespace
(shoal.lab, DESIGN §10), swarm traffic on the lab switch only.
shoal and etcd go through grpc.aio from this one process, one task per client, with requests encoded by hand and
responses left unparsed (raw bytes in and out); Docker through aiohttp over the unix socket, one keep-alive HTTP/1.1
connection per client (HTTP/1.1 cannot multiplex). Everything is removed on exit, SIGTERM included.
Run: python bench/raft_vs_etcd.py [--duration 10] [--clients 8,64] [--systems shoal,etcd,docker-swarm] [--rounds 1]
[--dir DIR] [--variant-args ARGS] [--baseline REV]; every shoal and etcd line also gives the CPU its three server processes
(and shoal's front-ends) used per write; the last lines are `ratio writes/s shoal/etcd = X` and `ratio writes/s shoal/docker-swarm = Y` for the
largest client count."""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstat import process_cpu_s  # noqa: E402
from shoal.lab import DAEMON_CMD_ENV, Lab, run_dir  # noqa: E402
from tests.support.cluster import LocalCluster, free_port  # noqa: E402
from manager.transport import GRPC_OPTIONS  # noqa: E402
from proto import control_pb2, objects_pb2  # noqa: E402

VALUE_BYTES = 256
ETCD = "/usr/bin/etcd"
ETCD_HOSTS = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]  # shoal's LocalCluster uses 127.0.0.1-3
SHOAL_TICK_MS = 100  # `python -m manager run` default (DESIGN §6)
READY_TIMEOUT_S = 60.0
DOCKER_BIN = Path("/opt/shoal-docker-ref/bin")  # scripts/docker-ref.sh: Debian's docker.io 20.10 unpacked
DOCKER_API = "v1.41"
KEY_JSON = Path("/etc/docker/key.json")


class WriteFailed(Exception):
    """A write answered with an error status (counted as an error, like a gRPC error)."""


@dataclass(slots=True)
class RunResult:
    system: str
    clients: int
    writes: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu_s: float = 0.0  # CPU (user + system) the system's server processes used over warm-up and run; 0: not measured

    @property
    def cpu_ms_per_write(self) -> float:
        return 1000 * self.cpu_s / self.writes if self.writes and self.cpu_s else float("nan")

    @property
    def writes_per_s(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


# ---------------------------------------------------------------------------------- etcd
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def etcd_put_request(key: bytes, value: bytes) -> bytes:
    """etcdserverpb.PutRequest{key = 1, value = 2} in protobuf wire format (both length-delimited)."""
    return _field(1, key) + _field(2, value)


def shoal_create_config_request(name: bytes, data: bytes) -> bytes:
    """CreateConfigRequest{spec = 1: ConfigSpec{annotations = 1: Annotations{name = 1}, data = 2}} in wire format."""
    return _field(1, _field(1, _field(1, name)) + _field(2, data))


def check_wire_format() -> None:
    """The hand encoding must be what protobuf would send (a wrong one would benchmark error replies)."""
    want = control_pb2.CreateConfigRequest(spec=objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name="n-1"), data=b"x" * 300))
    if control_pb2.CreateConfigRequest.FromString(shoal_create_config_request(b"n-1", b"x" * 300)) != want:
        raise AssertionError("shoal_create_config_request does not encode a CreateConfigRequest")


@dataclass(slots=True)
class EtcdCluster:
    base_dir: Path
    procs: list[subprocess.Popen[bytes]]
    client_urls: list[str]

    @classmethod
    def start(cls, base_dir: Path) -> EtcdCluster:
        peers = [(f"e{i + 1}", h, free_port(h), free_port(h)) for i, h in enumerate(ETCD_HOSTS)]
        initial = ",".join(f"{name}=http://{h}:{pp}" for name, h, _cp, pp in peers)
        c = cls(base_dir, [], [f"{h}:{cp}" for _n, h, cp, _pp in peers])
        for name, h, cp, pp in peers:
            argv = [
                ETCD, "--name", name, "--data-dir", str(base_dir / name),
                "--listen-client-urls", f"http://{h}:{cp}", "--advertise-client-urls", f"http://{h}:{cp}",
                "--listen-peer-urls", f"http://{h}:{pp}", "--initial-advertise-peer-urls", f"http://{h}:{pp}",
                "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", f"bench-{os.getpid()}",
                "--logger", "zap", "--log-level", "error",
            ]
            with open(base_dir / f"{name}.log", "ab") as log:
                c.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        return c

    def status(self, addr: str) -> dict[str, object] | None:
        req = urllib.request.Request(f"http://{addr}/v3/maintenance/status", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=1.0) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def leader(self) -> str:
        """The client address of the member every member names as leader."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            sts = [self.status(a) for a in self.client_urls]
            if all(sts):
                leaders = {s.get("leader") for s in sts}  # type: ignore[union-attr]
                if len(leaders) == 1 and None not in leaders:
                    lid = leaders.pop()
                    for addr, s in zip(self.client_urls, sts):
                        if s["header"]["member_id"] == lid:  # type: ignore[index]
                            return addr
            time.sleep(0.1)
        raise TimeoutError(f"etcd elected no leader within {READY_TIMEOUT_S}s; logs in {self.base_dir}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)


# ---------------------------------------------------------------------------------- Docker swarm
@dataclass(slots=True)
class DockerSwarm:
    """Three dockerd 20.10 in hosts of a shoal lab (namespaces on a lab switch, DESIGN §10), one swarm of 3 managers.

    shoal.lab builds the namespaces and starts each daemon through its command override: `nsenter --net=NS`
    then sh execs dockerd with the lab's socket, data dir and exec root, so `lab.down` finds and removes
    everything (dockerd, its containerd and shims by namespace, mounts under the lab's dirs, namespaces, dirs)."""

    lab: Lab
    leader_host: str
    key_json_existed: bool

    @staticmethod
    def daemon_cmd() -> str:
        # Lab appends: daemon --host unix://SOCK --data-dir D --exec-root E --netns-prefix P  ($1..$9 below)
        script = (f'PATH={DOCKER_BIN}:$PATH exec dockerd -H "$3" --data-root "$5" --exec-root "$7" '
                  f'--pidfile "$7/dockerd.pid"')
        return shlex.join(["sh", "-c", script, "sh"])

    @classmethod
    def start(cls) -> DockerSwarm:
        existed = KEY_JSON.exists()
        name = f"rb{secrets.token_hex(4)}"
        saved = os.environ.get(DAEMON_CMD_ENV)
        os.environ[DAEMON_CMD_ENV] = cls.daemon_cmd()
        try:
            lab = Lab.up(name, 3, ping_deadline=READY_TIMEOUT_S)  # removes what it made if it fails
        finally:
            if saved is None:
                os.environ.pop(DAEMON_CMD_ENV, None)
            else:
                os.environ[DAEMON_CMD_ENV] = saved
        swarm = cls(lab, lab.hosts[0], existed)
        try:
            swarm._form()
        except BaseException:
            swarm.stop()
            raise
        return swarm

    def docker(self, host: str, *args: str) -> str:
        argv = [str(DOCKER_BIN / "docker"), "-H", self.lab.url(host), *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, "DOCKER_CONFIG": str(self.lab_dir())})
        if r.returncode:
            raise RuntimeError(f"{shlex.join(argv)} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout.strip()

    def lab_dir(self) -> Path:
        return run_dir(self.lab.name)

    def _form(self) -> None:
        first = self.leader_host
        self.docker(first, "swarm", "init", "--advertise-addr", self.lab.address(first))
        token = self.docker(first, "swarm", "join-token", "-q", "manager")
        for host in self.lab.hosts[1:]:
            self.docker(host, "swarm", "join", "--token", token, "--advertise-addr", self.lab.address(host),
                        f"{self.lab.address(first)}:2377")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            rows = self.docker(first, "node", "ls", "--format", "{{.ManagerStatus}}").split()
            if len(rows) == 3 and rows.count("Leader") == 1 and rows.count("Reachable") == 2:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"docker swarm not formed within {READY_TIMEOUT_S}s: {rows}; logs in {self.lab_dir()}")
            time.sleep(0.2)

    def leader(self) -> str:
        """The host whose manager is the swarm's Raft leader now."""
        for host in self.lab.hosts:
            if self.docker(host, "node", "inspect", "self", "--format", "{{.ManagerStatus.Leader}}") == "true":
                return host
        raise RuntimeError("no docker swarm manager reports itself leader")

    def stop(self) -> None:
        try:
            self.lab.down()
        finally:
            # dockerd 20.10 writes its trust key /etc/docker/key.json: remove it only if this run made it.
            if not self.key_json_existed and KEY_JSON.exists():
                KEY_JSON.unlink(missing_ok=True)
                try:
                    KEY_JSON.parent.rmdir()
                except OSError:
                    pass


async def run_docker(sock: str, clients: int, duration: float, warmup: float, tag: str) -> RunResult:
    # HTTP/1.1 has one request in flight per connection: one keep-alive connection per client.
    conn = aiohttp.UnixConnector(path=sock, limit=clients)
    data = base64.b64encode(os.urandom(VALUE_BYTES // 2).hex().encode()).decode()

    async def op(cid: int, seq: int) -> None:
        body = {"Name": f"{tag}-{cid}-{seq}", "Data": data}
        async with session.post(f"http://docker/{DOCKER_API}/configs/create", json=body) as resp:
            await resp.read()
            if resp.status != 201:
                raise WriteFailed(resp.status)

    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
        n, err, secs, lat = await closed_loop(clients, duration, warmup, op)
    return RunResult("docker-swarm", clients, n, err, secs, lat)


# ---------------------------------------------------------------------------------- load
async def closed_loop(clients: int, duration: float, warmup: float, op: Callable[[int, int], Awaitable[None]]) -> tuple[int, int, float, list[float]]:
    """clients tasks, each issuing op(client, seq) back to back; counts what completes inside the measured window."""
    start = time.perf_counter() + warmup
    end = start + duration
    lat: list[float] = []
    counts = {"ok": 0, "err": 0}

    async def one(cid: int) -> None:
        seq = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            seq += 1
            try:
                await op(cid, seq)
                ok = True
            except (grpc.aio.AioRpcError, aiohttp.ClientError, asyncio.TimeoutError, WriteFailed):
                ok = False
            t1 = time.perf_counter()
            if t0 >= start and t1 <= end:
                if ok:
                    counts["ok"] += 1
                    lat.append(t1 - t0)
                else:
                    counts["err"] += 1

    await asyncio.gather(*(one(c) for c in range(clients)))
    return counts["ok"], counts["err"], duration, lat


def channels_for(addr: str, clients: int) -> list[grpc.aio.Channel]:
    # one HTTP/2 connection per 8 clients, alike for both systems
    return [grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS) for _ in range(max(1, clients // 8))]


async def run_shoal(addr: str, clients: int, duration: float, warmup: float, tag: str) -> RunResult:
    chans = channels_for(addr, clients)
    creates = [ch.unary_unary("/shoal.v1.Control/CreateConfig") for ch in chans]  # raw bytes in and out, like etcd's
    data = os.urandom(VALUE_BYTES // 2).hex().encode()

    async def op(cid: int, seq: int) -> None:
        await creates[cid % len(creates)](shoal_create_config_request(f"{tag}-{cid}-{seq}".encode(), data), timeout=30)

    try:
        n, err, secs, lat = await closed_loop(clients, duration, warmup, op)
    finally:
        for ch in chans:
            await ch.close()
    return RunResult("shoal", clients, n, err, secs, lat)


async def run_etcd(addr: str, clients: int, duration: float, warmup: float, tag: str) -> RunResult:
    chans = channels_for(addr, clients)
    puts = [ch.unary_unary("/etcdserverpb.KV/Put") for ch in chans]  # raw bytes in and out
    value = os.urandom(VALUE_BYTES // 2).hex().encode()

    async def op(cid: int, seq: int) -> None:
        await puts[cid % len(puts)](etcd_put_request(f"{tag}/{cid}/{seq}".encode(), value), timeout=30)

    try:
        n, err, secs, lat = await closed_loop(clients, duration, warmup, op)
    finally:
        for ch in chans:
            await ch.close()
    return RunResult("etcd", clients, n, err, secs, lat)


def fmt(r: RunResult) -> str:
    cpu = f"  server cpu/write={r.cpu_ms_per_write:.2f} ms" if r.cpu_s else ""
    return (f"{r.system:12s} clients={r.clients:3d}  writes/s={r.writes_per_s:9.1f}  p50={r.pct(0.5) * 1000:7.2f} ms"
            f"  p99={r.pct(0.99) * 1000:7.2f} ms  (writes={r.writes}, errors={r.errors}){cpu}")


def cluster_pids(c: LocalCluster) -> list[int]:
    """Every manager process and its children (control API front-ends)."""
    pids = []
    for m in c.members.values():
        if m.proc is None:
            continue
        pids.append(m.proc.pid)
        try:
            pids += [int(x) for x in Path(f"/proc/{m.proc.pid}/task/{m.proc.pid}/children").read_text().split()]
        except OSError:
            pass
    return pids


def measured(pids: list[int], run: Callable[[], RunResult], warmup: float) -> RunResult:
    """run() with the CPU its servers used, scaled from warm-up + run to the measured window."""
    before = process_cpu_s(pids)
    r = run()
    r.cpu_s = (process_cpu_s(pids) - before) * r.seconds / (r.seconds + warmup)
    return r


def baseline_cluster(base: Path, rev: str, extra: list[str]) -> LocalCluster:
    """A LocalCluster whose managers run the code of git revision `rev` (exported under base; its own cluster.py)."""
    src = base / "baseline-src"
    src.mkdir()
    root = Path(__file__).resolve().parent.parent
    paths = ["manager", "proto", "common", "tests/__init__.py", "tests/support"]
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, *paths], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    spec = importlib.util.spec_from_file_location("baseline_cluster", src / "tests/support/cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_cluster"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.LocalCluster(base / "shoal-baseline", tick_ms=SHOAL_TICK_MS, storage="sqlite", extra_args=extra)


SYSTEMS = ("shoal", "shoal-uvloop", "shoal-fe", "shoal-fe-uvloop", "shoal-variant", "shoal-baseline", "etcd", "docker-swarm")
FRONTENDS = 1  # front-end processes per manager for the shoal-fe systems (a 2-core machine: one is enough)


def merged(runs: list[RunResult]) -> RunResult:
    """Interleaved rounds of one system and client count as one run."""
    return RunResult(runs[0].system, runs[0].clients, sum(r.writes for r in runs), sum(r.errors for r in runs),
                     sum(r.seconds for r in runs), [x for r in runs for x in r.latencies], sum(r.cpu_s for r in runs))


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: clusters, swarm and temp dirs go


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per system, client count and round")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    ap.add_argument("--clients", default="8,64", help="comma-separated client counts")
    ap.add_argument("--systems", default="shoal,etcd,docker-swarm",
                    help=f"comma-separated, run in this order within a round: {', '.join(SYSTEMS)} "
                         "(shoal-uvloop: shoal's managers on uvloop's event loop; shoal-fe: clients on the managers' "
                         "control API front-end processes, --client-listen; shoal-fe-uvloop: both; shoal-variant: "
                         "managers with --variant-args; shoal-baseline: managers of git revision --baseline)")
    ap.add_argument("--variant-args", default="", help="extra `python -m manager run` arguments for shoal-variant, "
                    "e.g. '--max-uncommitted-bytes -1'")
    ap.add_argument("--baseline", default="main", help="git revision whose managers shoal-baseline runs (default main)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (each system once per round)")
    ap.add_argument("--dir", type=Path, default=None, help="parent of the data dirs (default: a temp dir under /var/tmp, on disk)")
    a = ap.parse_args(argv)
    try:
        counts = [int(x) for x in a.clients.split(",") if x.strip()]
    except ValueError:
        ap.error(f"invalid --clients {a.clients!r}: expected comma-separated positive integers")
    if not counts or min(counts) < 1:
        ap.error(f"invalid --clients {a.clients!r}: expected comma-separated positive integers")
    if a.duration <= 0:
        ap.error(f"invalid --duration {a.duration}: must be positive")
    if a.rounds < 1:
        ap.error(f"invalid --rounds {a.rounds}: must be at least 1")
    systems = [x.strip() for x in a.systems.split(",") if x.strip()]
    unknown = [x for x in systems if x not in SYSTEMS]
    if unknown or not systems or len(set(systems)) != len(systems):
        ap.error(f"invalid --systems {a.systems!r}: expected distinct names among {', '.join(SYSTEMS)}")
    check_wire_format()
    if "etcd" in systems and not os.access(ETCD, os.X_OK):
        print(f"{ETCD} not found: install etcd-server", file=sys.stderr)
        return 2
    if "docker-swarm" in systems and not os.access(DOCKER_BIN / "dockerd", os.X_OK):
        print(f"{DOCKER_BIN}/dockerd not found: run scripts/docker-ref.sh", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    base = Path(tempfile.mkdtemp(prefix="raft-vs-etcd-", dir=a.dir or "/var/tmp"))
    shoals: dict[str, LocalCluster] = {}
    etcd: EtcdCluster | None = None
    swarm: DockerSwarm | None = None
    results: dict[tuple[str, int], list[RunResult]] = {}
    try:
        for name in systems:
            if name.startswith("shoal"):
                (base / name).mkdir()
                extra = ["--event-loop", "uvloop"] if name.endswith("-uvloop") else []
                if name == "shoal-variant":
                    extra = shlex.split(a.variant_args)
                if name == "shoal-baseline":
                    shoals[name] = baseline_cluster(base, a.baseline, extra)
                else:
                    shoals[name] = LocalCluster(base / name, tick_ms=SHOAL_TICK_MS, storage="sqlite", extra_args=extra,
                                                frontends=FRONTENDS if "-fe" in name else 0)
                shoals[name].start(3)
        if "etcd" in systems:
            (base / "etcd").mkdir()
            etcd = EtcdCluster.start(base / "etcd")
        if "docker-swarm" in systems:
            swarm = DockerSwarm.start()
        where: dict[str, str] = {}
        leaders: dict[str, int] = {}
        for name, c in shoals.items():
            leaders[name] = c.leader(READY_TIMEOUT_S)
            where[name] = f"m{leaders[name]} at {c.members[leaders[name]].addr}"
        if etcd is not None:
            where["etcd"] = etcd.leader()
        if swarm is not None:
            swarm_leader = swarm.leader()
            where["docker-swarm"] = f"{swarm_leader} ({swarm.lab.address(swarm_leader)}) on {swarm.lab.socket(swarm_leader)}"
        print("leaders: " + "; ".join(f"{k} {v}" for k, v in where.items()) + f"; data in {base}", flush=True)
        for n in counts:
            for rnd in range(a.rounds):
                tag = f"b{n}r{rnd}"
                for name in systems:
                    if name in shoals:
                        c, sl = shoals[name], leaders[name]
                        before = c.status(sl)
                        # the front-ends' address if any (a baseline's LocalCluster may predate client_addrs)
                        target = getattr(c, "client_addrs", {}).get(sl) or c.members[sl].addr
                        r = measured(cluster_pids(c), lambda: asyncio.run(run_shoal(target, n, a.duration, a.warmup, tag)), a.warmup)
                        r.system = name
                        after = c.status(sl)
                        print(fmt(r), flush=True)
                        if before is not None and after is not None and after.fsyncs > before.fsyncs:
                            per = (after.entries_written - before.entries_written) / (after.fsyncs - before.fsyncs)
                            print(f"{name} clients={n:3d}  leader entries per fsync = {per:.2f} over warm-up and run "
                                  f"({after.entries_written - before.entries_written} entries, {after.fsyncs - before.fsyncs} fsyncs)")
                        if after is None or after.role != "leader":
                            print(f"warning: {name} leader changed during the run (m{sl} now {after.role if after else 'unreachable'})")
                    elif name == "etcd":
                        assert etcd is not None
                        r = measured([p.pid for p in etcd.procs], lambda: asyncio.run(run_etcd(where["etcd"], n, a.duration, a.warmup, tag)), a.warmup)
                        print(fmt(r), flush=True)
                    else:
                        assert swarm is not None
                        r = asyncio.run(run_docker(str(swarm.lab.socket(swarm_leader)), n, a.duration, a.warmup, tag))
                        print(fmt(r), flush=True)
                    results.setdefault((name, n), []).append(r)
        print()
        totals = {k: merged(v) for k, v in results.items()}
        if a.rounds > 1:
            for n in counts:
                for name in systems:
                    print(f"{fmt(totals[(name, n)])}  [all {a.rounds} rounds]")
            print()
        variants = [x for x in SYSTEMS if x.startswith("shoal-")]
        pairs = [(x, y) for x, y in (("shoal", "etcd"), ("shoal", "docker-swarm"), *((v, "shoal") for v in variants),
                                      *((v, "etcd") for v in variants)) if x in systems and y in systems]
        for n in counts:
            for x, y in pairs:
                s, e = totals[(x, n)], totals[(y, n)]
                ratio = s.writes_per_s / e.writes_per_s if e.writes_per_s else float("nan")
                print(f"clients={n:3d}  writes/s {x}/{y} = {ratio:.3f}  p50 {x}/{y} = {s.pct(0.5) / e.pct(0.5):.2f}"
                      f"  p99 {x}/{y} = {s.pct(0.99) / e.pct(0.99):.2f}")
        top = max(counts)
        for x, y in pairs:
            s, e = totals[(x, top)], totals[(y, top)]
            print(f"ratio writes/s {x}/{y} = {s.writes_per_s / e.writes_per_s if e.writes_per_s else float('nan'):.3f}")
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the teardown short
        try:
            for c in shoals.values():
                c.stop_all()
            if etcd is not None:
                etcd.stop()
            if swarm is not None:
                swarm.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
