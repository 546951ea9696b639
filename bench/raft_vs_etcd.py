"""Write throughput of a 3-manager shoal cluster against a 3-member etcd 3.4 cluster on this machine (loopback only).
Starts both (tests/support/cluster.py's LocalCluster; /usr/bin/etcd), drives each with the same closed-loop gRPC load, prints the figures.

shoal: CreateConfig (unique names, 256-byte data) sent to the Raft leader; SQLite storage, fsync on, default tick.
etcd: KV Put (256-byte values) over etcd's own gRPC API to its leader; default quota, snapshot count, fsync.
Both go through grpc.aio from this one process, one task per client, with requests encoded by hand and responses
left unparsed (raw bytes in and out), so the harness costs both sides alike.
Run: python bench/raft_vs_etcd.py [--duration 10] [--clients 8,64] [--dir DIR]; the last line is
`ratio writes/s shoal/etcd = X` for the largest client count."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.cluster import LocalCluster, free_port  # noqa: E402
from manager.transport import GRPC_OPTIONS  # noqa: E402
from proto import control_pb2, objects_pb2  # noqa: E402

VALUE_BYTES = 256
ETCD = "/usr/bin/etcd"
ETCD_HOSTS = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]  # shoal's LocalCluster uses 127.0.0.1-3
SHOAL_TICK_MS = 100  # `python -m manager run` default (DESIGN §6)
READY_TIMEOUT_S = 60.0


@dataclass(slots=True)
class RunResult:
    system: str
    clients: int
    writes: int
    errors: int
    seconds: float
    latencies: list[float]

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
            except grpc.aio.AioRpcError:
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
    return (f"{r.system:5s} clients={r.clients:3d}  writes/s={r.writes_per_s:9.1f}  p50={r.pct(0.5) * 1000:7.2f} ms"
            f"  p99={r.pct(0.99) * 1000:7.2f} ms  (writes={r.writes}, errors={r.errors})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per system and client count")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    ap.add_argument("--clients", default="8,64", help="comma-separated client counts")
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
    check_wire_format()
    if not os.access(ETCD, os.X_OK):
        print(f"{ETCD} not found: install etcd-server", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="raft-vs-etcd-", dir=a.dir or "/var/tmp"))
    shoal = LocalCluster(base / "shoal", tick_ms=SHOAL_TICK_MS, storage="sqlite")
    etcd: EtcdCluster | None = None
    results: dict[tuple[str, int], RunResult] = {}
    try:
        (base / "shoal").mkdir()
        (base / "etcd").mkdir()
        shoal.start(3)
        etcd = EtcdCluster.start(base / "etcd")
        sl = shoal.leader(READY_TIMEOUT_S)
        el = etcd.leader()
        print(f"shoal leader m{sl} at {shoal.members[sl].addr}; etcd leader at {el}; data in {base}")
        for n in counts:
            before = shoal.status(sl)
            r = asyncio.run(run_shoal(shoal.members[sl].addr, n, a.duration, a.warmup, f"b{n}"))
            after = shoal.status(sl)
            results[("shoal", n)] = r
            print(fmt(r))
            if before is not None and after is not None and after.fsyncs > before.fsyncs:
                per = (after.entries_written - before.entries_written) / (after.fsyncs - before.fsyncs)
                print(f"shoal clients={n:3d}  leader entries per fsync = {per:.2f} over warm-up and run "
                      f"({after.entries_written - before.entries_written} entries, {after.fsyncs - before.fsyncs} fsyncs)")
            if after is None or after.role != "leader":
                print(f"warning: shoal leader changed during the run (m{sl} now {after.role if after else 'unreachable'})")
            r = asyncio.run(run_etcd(el, n, a.duration, a.warmup, f"b{n}"))
            results[("etcd", n)] = r
            print(fmt(r))
        print()
        for n in counts:
            s, e = results[("shoal", n)], results[("etcd", n)]
            ratio = s.writes_per_s / e.writes_per_s if e.writes_per_s else float("nan")
            print(f"clients={n:3d}  writes/s shoal/etcd = {ratio:.3f}  p50 shoal/etcd = {s.pct(0.5) / e.pct(0.5):.2f}"
                  f"  p99 shoal/etcd = {s.pct(0.99) / e.pct(0.99):.2f}")
        top = max(counts)
        s, e = results[("shoal", top)], results[("etcd", top)]
        print(f"ratio writes/s shoal/etcd = {s.writes_per_s / e.writes_per_s if e.writes_per_s else float('nan'):.3f}")
        return 0
    finally:
        shoal.stop_all()
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
