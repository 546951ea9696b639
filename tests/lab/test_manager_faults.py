"""Three real manager processes under closed-loop client load through faults (kill -9, partition, restart all),
every client op recorded and checked with tests/support/linearizability.py; LocalCluster (tests/support/cluster.py) runs them.

The key-value register is built from immutable configs only (no extra RPC): write(k, v) is CreateConfig of a
config named PREFIX-k<k>-<v>, read(k) is a linearizable ListConfigs by the name prefix PREFIX-k<k>- and returns
the v of the config with the highest version (= the Raft index that created it). So the register's value is
the last write in log order, and a stale read, a lost write or a write applied twice shows as a violation.

The partition test needs root: it runs the managers in network namespaces of their own (on a test bridge in
another namespace) and the whole scenario in a client namespace (`python -m tests.lab.test_manager_faults`),
because clients must reach the managers and the root namespace is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.support.cluster import ROOT, LocalCluster, Member
from tests.support.linearizability import INITIAL, Kind, Op, Outcome, check, read, write
from manager.transport import GRPC_OPTIONS
from proto import control_pb2, control_pb2_grpc, objects_pb2

pytestmark = pytest.mark.lab

TICK_MS = 50
ELECTION_TICKS = 10  # `python -m manager run` default; timeouts are randomized in [10, 20) ticks
ELECTION_TIMEOUT_MAX_S = 2 * ELECTION_TICKS * TICK_MS / 1000
RESUME_BUDGET_S = 3 * ELECTION_TIMEOUT_MAX_S  # the requirement: writes resume within 3 election timeouts
# What is asserted: a generous multiple, since 8 clients, 3 managers and the checker share 2 cores. The
# measured figure is printed (pytest -s) and kept in the report.
RESUME_DEADLINE_S = 5 * RESUME_BUDGET_S
CLIENTS = 8
KEYS = 5
RPC_TIMEOUT_S = 3.0
MAX_OPS_PER_CLIENT = 3000
WARMUP_WRITES = 40  # acknowledged writes before the fault
LOAD_AFTER_S = 2.0  # load kept up after writes resumed
DEADLINE_S = 60.0  # any single wait (leader, catch-up, final reads)
CLIENT_CHANNEL_OPTIONS = [
    *GRPC_OPTIONS,
    # reconnect quickly to a restarted manager: gRPC's default backoff grows to two minutes
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
# errors after which the create certainly did not happen (refused before proposing, or a failed transaction)
_DEFINITELY_FAILED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED}
_run_counter = itertools.count()


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: only the partition test needs root, and it checks for itself."""


# ---------------------------------------------------------------------------------- the register over configs
def key_prefix(prefix: str, key: int) -> str:
    return f"{prefix}-k{key}-"


def latest_value(configs: list[objects_pb2.Config], kprefix: str) -> str | None:
    """The register's value: the config under the key's prefix created last in Raft order."""
    mine = [c for c in configs if c.spec.annotations.name.startswith(kprefix)]
    if not mine:
        return INITIAL
    last = max(mine, key=lambda c: c.meta.version.index)
    return last.spec.annotations.name[len(kprefix):]


@dataclass(slots=True)
class Report:
    """Everything a scenario observed; JSON-able so the namespace child can hand it to the test."""

    prefix: str = ""  # of every config name this run made
    ops: list[Op] = field(default_factory=list)
    final_names: dict[int, list[str]] = field(default_factory=dict)  # member -> config names it lists at the end
    resumed_s: dict[str, float | None] = field(default_factory=dict)  # event -> seconds until a new write succeeded
    errors: Counter[str] = field(default_factory=Counter)

    def acked(self) -> list[str]:
        return [value_name(self.prefix, op.key, op.value) for op in self.ops if op.kind is Kind.WRITE and op.outcome is Outcome.OK]

    def to_json(self) -> str:
        ops = [[o.client, o.kind.value, o.key, o.value, o.invoke, o.complete, o.outcome.value] for o in self.ops]
        return json.dumps({"prefix": self.prefix, "ops": ops, "final_names": self.final_names, "resumed_s": self.resumed_s, "errors": self.errors})

    @classmethod
    def from_json(cls, text: str) -> Report:
        raw = json.loads(text)
        ops = [Op(c, Kind(k), key, v, i, t, Outcome(o)) for c, k, key, v, i, t, o in raw["ops"]]
        names = {int(m): n for m, n in raw["final_names"].items()}
        return cls(raw["prefix"], ops, names, raw["resumed_s"], Counter(raw["errors"]))


def value_name(prefix: str, key: int, value: str) -> str:
    return key_prefix(prefix, key) + value


# ---------------------------------------------------------------------------------- clients
class Clients:
    """CLIENTS closed-loop clients, each with a channel per manager; a client that gets no answer moves on to
    the next manager (followers forward writes to the leader, so any live one will do)."""

    def __init__(self, addrs: dict[int, str], prefix: str, report: Report, seed: int) -> None:
        self.addrs = [addrs[i] for i in sorted(addrs)]
        self.prefix = prefix
        self.report = report
        self.seed = seed
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.channels: list[grpc.aio.Channel] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._client(c), name=f"client-{c}") for c in range(CLIENTS)]

    async def close(self) -> None:
        self.stop.set()
        # every RPC has a deadline, so clients end within RPC_TIMEOUT_S; the wait is bounded anyway
        done, pending = await asyncio.wait(self.tasks, timeout=RPC_TIMEOUT_S + 10)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        for ch in self.channels:
            await ch.close()

    def ok_write_invoked_after(self, t: float) -> float | None:
        """Completion time of the first acknowledged write invoked at or after t."""
        done = [o.complete for o in self.report.ops if o.kind is Kind.WRITE and o.outcome is Outcome.OK and o.invoke >= t]
        return min(done) if done else None

    async def wait_write_after(self, t: float, what: str) -> None:
        deadline = time.monotonic() + RESUME_DEADLINE_S + RPC_TIMEOUT_S
        while (done := self.ok_write_invoked_after(t)) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.report.resumed_s[what] = None if done is None else done - t
        print(f"writes resumed {what}: {self.report.resumed_s[what]}", flush=True)

    async def wait_acked(self, n: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while len(self.report.acked()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.report.acked())} of {n} warm-up writes acknowledged in {DEADLINE_S}s")
            await asyncio.sleep(0.02)

    async def _client(self, cid: int) -> None:
        rng = random.Random(self.seed * 1000 + cid)
        stubs = []
        for addr in self.addrs:
            ch = grpc.aio.insecure_channel(addr, options=CLIENT_CHANNEL_OPTIONS)
            self.channels.append(ch)
            stubs.append(control_pb2_grpc.ControlStub(ch))
        target = cid % len(stubs)
        for seq in range(MAX_OPS_PER_CLIENT):
            if self.stop.is_set():
                return
            key = rng.randrange(KEYS)
            kp = key_prefix(self.prefix, key)
            stub = stubs[target]
            t0 = time.monotonic()
            if rng.random() < 0.5:
                value = f"c{cid}n{seq}"
                req = control_pb2.CreateConfigRequest(
                    spec=objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=kp + value), data=value.encode())
                )
                try:
                    await stub.CreateConfig(req, timeout=RPC_TIMEOUT_S)
                    outcome = Outcome.OK
                except grpc.aio.AioRpcError as e:
                    self.report.errors[f"write {e.code().name}"] += 1
                    outcome = Outcome.FAILED if e.code() in _DEFINITELY_FAILED else Outcome.UNKNOWN
                self.report.ops.append(write(cid, key, value, t0, time.monotonic(), outcome))
            else:
                req_l = control_pb2.ListConfigsRequest(filters=control_pb2.ListConfigsRequest.Filters(name_prefixes=[kp]))
                try:
                    resp = await stub.ListConfigs(req_l, timeout=RPC_TIMEOUT_S)
                    outcome, seen = Outcome.OK, latest_value(list(resp.configs), kp)
                except grpc.aio.AioRpcError as e:
                    self.report.errors[f"read {e.code().name}"] += 1
                    outcome, seen = Outcome.UNKNOWN, None
                self.report.ops.append(read(cid, key, seen, t0, time.monotonic(), outcome))
            if outcome is not Outcome.OK:
                target = (target + 1) % len(stubs)
                await asyncio.sleep(TICK_MS / 1000)  # no hot loop while there is no leader


# ---------------------------------------------------------------------------------- cluster helpers (async)
async def status(addr: str) -> control_pb2.StatusResponse | None:
    async with grpc.aio.insecure_channel(addr, options=CLIENT_CHANNEL_OPTIONS) as ch:
        try:
            return await control_pb2_grpc.ControlStub(ch).Status(control_pb2.StatusRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return None


async def agreed_leader(cluster: LocalCluster) -> int:
    """The leader every live member names (like LocalCluster.leader, without blocking the event loop)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        live = [i for i in cluster.members if cluster.alive(i)]
        sts = [s for s in await asyncio.gather(*(status(cluster.members[i].addr) for i in live)) if s is not None]
        leaders = {s.leader_id for s in sts}
        if len(sts) == len(live) and len(leaders) == 1 and 0 not in leaders:
            lid = leaders.pop()
            if any(s.node_id == lid and s.role == "leader" for s in sts):
                return lid
        await asyncio.sleep(0.05)
    raise AssertionError(f"no agreed leader within {DEADLINE_S}s; logs in {cluster.base_dir}")


async def wait_all_answer(cluster: LocalCluster) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if all(await asyncio.gather(*(status(m.addr) for m in cluster.members.values()))):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"managers did not all answer within {DEADLINE_S}s; logs in {cluster.base_dir}")


async def final_reads(cluster: LocalCluster, prefix: str, report: Report) -> None:
    """After the load: a linearizable list on every live member, recorded as one read per key."""
    for i in sorted(cluster.members):
        if not cluster.alive(i):
            continue
        deadline = time.monotonic() + DEADLINE_S
        async with grpc.aio.insecure_channel(cluster.members[i].addr, options=CLIENT_CHANNEL_OPTIONS) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            req = control_pb2.ListConfigsRequest(filters=control_pb2.ListConfigsRequest.Filters(name_prefixes=[prefix + "-"]))
            while True:
                t0 = time.monotonic()
                try:
                    resp = await stub.ListConfigs(req, timeout=RPC_TIMEOUT_S)
                    break
                except grpc.aio.AioRpcError as e:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"final read on manager {i} failed: {e.code().name} {e.details()}") from None
                    await asyncio.sleep(0.1)
            t1 = time.monotonic()
        configs = list(resp.configs)
        report.final_names[i] = sorted(c.spec.annotations.name for c in configs)
        for key in range(KEYS):
            report.ops.append(read(-i, key, latest_value(configs, key_prefix(prefix, key)), t0, t1))


# ---------------------------------------------------------------------------------- scenarios
Fault = Callable[[LocalCluster, Clients, int], Awaitable[None]]


async def run_scenario(cluster: LocalCluster, fault: Fault, seed: int) -> Report:
    """Start the cluster's load, wait for WARMUP_WRITES acknowledged writes, inject the fault (which records
    when writes resumed), keep the load LOAD_AFTER_S more, stop it, then read everything back everywhere."""
    prefix = f"r{os.getpid():x}x{seed}"
    report = Report(prefix)
    leader = await agreed_leader(cluster)
    clients = Clients(cluster.addresses(), prefix, report, seed)
    clients.start()
    try:
        await clients.wait_acked(WARMUP_WRITES)
        await fault(cluster, clients, leader)
        end = time.monotonic() + LOAD_AFTER_S
        while time.monotonic() < end:
            await asyncio.sleep(0.05)
    finally:
        await clients.close()
    await agreed_leader(cluster)
    await final_reads(cluster, prefix, report)
    return report


async def kill_leader(cluster: LocalCluster, clients: Clients, leader: int) -> None:
    t = time.monotonic()
    cluster.kill(leader, signal.SIGKILL)
    await clients.wait_write_after(t, "after kill -9 of the leader (majority left)")
    # the old leader comes back and must catch up: it serves the final reads too
    cluster.restart(leader)
    await wait_all_answer(cluster)


async def restart_all(cluster: LocalCluster, clients: Clients, leader: int) -> None:
    for i in sorted(cluster.members):
        cluster.kill(i, signal.SIGKILL)
    for i in sorted(cluster.members):
        cluster.restart(i)
    await wait_all_answer(cluster)
    await clients.wait_write_after(time.monotonic(), "after all three managers were restarted")


def assert_sound(report: Report) -> None:
    """The verdicts every fault scenario must reach."""
    res = check(report.ops)
    assert res.ok, res.explain()
    acked = set(report.acked())
    assert len(acked) >= WARMUP_WRITES
    members = sorted(report.final_names)
    assert len(members) == 3
    for i in members:
        lost = acked - set(report.final_names[i])
        assert not lost, f"manager {i} lost {len(lost)} acknowledged writes: {sorted(lost)[:5]}"
    assert len({tuple(report.final_names[i]) for i in members}) == 1, "members list different configs at rest"
    # the reads really saw writes (a checker fed only initial values would prove little)
    assert any(op.kind is Kind.READ and op.outcome is Outcome.OK and op.value is not INITIAL and op.client >= 0 for op in report.ops)
    for what, took in report.resumed_s.items():
        assert took is not None and took <= RESUME_DEADLINE_S, f"writes did not resume {what} within {RESUME_DEADLINE_S}s ({took})"


# ---------------------------------------------------------------------------------- real-process tests
@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, tick_ms=TICK_MS)
    try:
        c.start(3)
        yield c
    finally:
        c.stop_all()


def test_kill_9_of_the_leader_under_load_keeps_the_history_linearizable_and_every_acknowledged_write(cluster: LocalCluster) -> None:
    report = asyncio.run(run_scenario(cluster, kill_leader, next(_run_counter)))
    print(summary(report))
    assert_sound(report)


def test_restart_of_all_managers_under_load_keeps_the_history_linearizable_and_every_acknowledged_write(cluster: LocalCluster) -> None:
    report = asyncio.run(run_scenario(cluster, restart_all, next(_run_counter)))
    print(summary(report))
    assert_sound(report)


# ---------------------------------------------------------------------------------- partition (network namespaces)
MANAGER_PORT = 2377  # each manager has a namespace, so a port of its own
SUBNET = "10.231.7"  # exists only inside the test's namespaces


@dataclass(slots=True)
class NetnsCluster(LocalCluster):
    """LocalCluster whose member i runs in network namespace namespaces[i] at ips[i]; isolate() cuts a member
    off from the other managers with iptables inside its own namespace (clients still reach it)."""

    namespaces: dict[int, str] = field(default_factory=dict)
    ips: dict[int, str] = field(default_factory=dict)

    def start(self, n: int = 3) -> dict[int, str]:
        for i in range(1, n + 1):
            self.members[i] = Member(i, f"{self.ips[i]}:{MANAGER_PORT}", self.base_dir / f"m{i}", self.base_dir / f"m{i}.log")
        for i in self.members:
            self._spawn(i)
        return self.addresses()

    def _argv(self, m: Member) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[m.node_id], *LocalCluster._argv(self, m)]

    def _iptables(self, i: int, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.namespaces[i], "iptables", "-w", *args], check=True, capture_output=True, timeout=30)

    def isolate(self, i: int) -> None:
        for j in self.members:
            if j != i:
                self._iptables(i, "-A", "INPUT", "-s", self.ips[j], "-j", "DROP")
                self._iptables(i, "-A", "OUTPUT", "-d", self.ips[j], "-j", "DROP")

    def heal(self, i: int) -> None:
        self._iptables(i, "-F", "INPUT")
        self._iptables(i, "-F", "OUTPUT")


PARTITION_HOLD_S = 2.0  # load kept up against the cut-off leader after the majority resumed


async def partition_leader(cluster: LocalCluster, clients: Clients, leader: int) -> None:
    assert isinstance(cluster, NetnsCluster)
    t = time.monotonic()
    cluster.isolate(leader)
    # the partition is real only if the majority elects someone else (clients still reach every member)
    deadline = time.monotonic() + DEADLINE_S
    others = [i for i in cluster.members if i != leader]
    while not any(s is not None and s.role == "leader" for s in await asyncio.gather(*(status(cluster.members[i].addr) for i in others))):
        if time.monotonic() > deadline:
            raise AssertionError(f"the majority elected no leader within {DEADLINE_S}s of isolating {leader}")
        await asyncio.sleep(0.05)
    await clients.wait_write_after(t, "while the leader is cut off (majority left)")
    end = time.monotonic() + PARTITION_HOLD_S
    while time.monotonic() < end:
        await asyncio.sleep(0.05)
    t = time.monotonic()
    cluster.heal(leader)
    await clients.wait_write_after(t, "after the partition healed")


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


@contextlib.contextmanager
def namespaces(prefix: str) -> Iterator[tuple[dict[object, str], dict[object, str]]]:
    """Namespaces PREFIX{sw,m1,m2,m3,c}: a bridge in sw, one veth port per other namespace. Torn down whatever
    happened: the processes still inside (managers, the scenario child) are killed by pid, then the namespaces go."""
    names: dict[object, str] = {"sw": f"{prefix}sw", 1: f"{prefix}m1", 2: f"{prefix}m2", 3: f"{prefix}m3", "c": f"{prefix}c"}
    ips: dict[object, str] = {1: f"{SUBNET}.1", 2: f"{SUBNET}.2", 3: f"{SUBNET}.3", "c": f"{SUBNET}.100"}
    made: list[str] = []
    try:
        for ns in names.values():
            _sh("ip", "netns", "add", ns)
            made.append(ns)
        sw = names["sw"]
        _sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", sw, "link", "set", "br0", "up")
        for port, k in enumerate((1, 2, 3, "c"), 1):
            ns = names[k]
            _sh("ip", "-n", sw, "link", "add", f"v{port}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "-n", sw, "link", "set", f"v{port}", "master", "br0", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{ips[k]}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield names, ips
    finally:
        for ns in reversed(made):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_partition_of_the_leader_under_load_keeps_the_history_linearizable_and_every_acknowledged_write(tmp_path: Path) -> None:
    prefix = f"sf{os.getpid():x}{next(_run_counter)}"
    with namespaces(prefix) as (names, ips):
        out = tmp_path / "report.json"
        cfg = {"base_dir": str(tmp_path / "cluster"), "namespaces": {str(i): names[i] for i in (1, 2, 3)},
               "ips": {str(i): ips[i] for i in (1, 2, 3)}, "seed": next(_run_counter), "out": str(out)}
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        child = subprocess.run(
            ["ip", "netns", "exec", names["c"], sys.executable, "-m", "tests.lab.test_manager_faults", "partition", json.dumps(cfg)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
        print(child.stdout)
        assert child.returncode == 0, f"scenario failed in the client namespace:\n{child.stderr[-4000:]}"
        report = Report.from_json(out.read_text())
    print(summary(report))
    assert_sound(report)
    assert set(report.resumed_s) == {"while the leader is cut off (majority left)", "after the partition healed"}


def _partition_child(cfg: dict[str, object]) -> None:
    """Runs inside the client namespace: the cluster in the managers' namespaces, load, partition, report."""
    cluster = NetnsCluster(
        Path(str(cfg["base_dir"])), tick_ms=TICK_MS,
        namespaces={int(k): v for k, v in cfg["namespaces"].items()},  # type: ignore[attr-defined]
        ips={int(k): v for k, v in cfg["ips"].items()},  # type: ignore[attr-defined]
    )
    try:
        cluster.start(3)
        report = asyncio.run(run_scenario(cluster, partition_leader, int(cfg["seed"])))  # type: ignore[arg-type]
    finally:
        cluster.stop_all()
    Path(str(cfg["out"])).write_text(report.to_json())


def summary(report: Report) -> str:
    by = Counter((op.kind.value, op.outcome.value) for op in report.ops if op.client >= 0)
    return f"ops {dict(by)} errors {dict(report.errors)} resumed {report.resumed_s}"


if __name__ == "__main__":
    if sys.argv[1:2] != ["partition"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.lab.test_manager_faults partition CONFIG_JSON")
    _partition_child(json.loads(sys.argv[2]))
