"""Benchmark: programming remote overlay endpoints (neighbour + FDB entries) on one node with
vxlan.dataplane, against iproute2's own batch mode (`ip -batch` + `bridge -batch`, one process each)
writing the same entries, and the cost of one change as the number of endpoints present grows.

Builds two private namespaces (a "host" with the VXLAN socket and a "container"), joins one local
endpoint so the network exists, then:
- 1,000 peers programmed at once (vxlan `add_peers`, then `sync_peers([])` to clear; median of N),
  and the same 1,000 written by `ip -batch`/`bridge -batch` into the same device (median of N);
- one peer added and removed while 1,000 / 10,000 are present (median of 50 each).
Prints the figures, the ratio to iproute2 and whether the goals hold (< 2 s for 1,000; one change
does not grow with the count). Everything is removed at the end, even on failure.
Usage: python bench/overlay_peers.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Address as A, IPv4Interface as I, IPv4Network as N
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vxlan import kernel, ns  # noqa: E402
from vxlan.dataplane import LocalEndpoint, OverlayDataPlane  # noqa: E402
from vxlan.types import OverlayPeer, OverlaySpec  # noqa: E402

NET_ID = "be0c4" + "0" * 59
VTEP = A("192.168.251.2")


def peers(count: int, start: int = 0) -> list[OverlayPeer]:
    """Distinct endpoints in 10.128.0.0/9 behind one remote VTEP."""
    out = []
    for i in range(start, start + count):
        ip = A(int(A("10.128.0.10")) + i)
        raw = int(ip).to_bytes(4, "big")
        out.append(OverlayPeer(ip=ip, mac="02:42:" + ":".join(f"{b:02x}" for b in raw), vtep=VTEP))
    return out


def run(argv: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


def iproute2_batch(netns: str, device: str, batch: list[OverlayPeer]) -> float:
    neigh = "".join(f"neigh replace {p.ip} lladdr {p.mac} dev {device} nud permanent\n" for p in batch)
    fdb = "".join(f"fdb replace {p.mac} dev {device} dst {p.vtep} self permanent\n" for p in batch)
    started = time.perf_counter()
    run(["ip", "-n", netns, "-batch", "-"], neigh)
    run(["bridge", "-n", netns, "-batch", "-"], fdb)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    prefix = f"shoal-bench-ovp{os.getpid():x}-"
    host_ns, peer_ns, sandbox_ns = f"{prefix}host", f"{prefix}peer", f"{prefix}c1"
    plane = None
    try:
        for name in (host_ns, peer_ns, sandbox_ns):
            ns.create(name)
        run(["ip", "-n", host_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer_ns])
        run(["ip", "-n", host_ns, "addr", "add", "192.168.251.1/24", "dev", "eth0"])
        run(["ip", "-n", host_ns, "link", "set", "eth0", "up"])
        plane = OverlayDataPlane(prefix, ns.path_of(host_ns))
        spec = OverlaySpec(NET_ID, "bench", 4999, N("10.128.0.0/9"), I("10.128.0.1/9"), A("192.168.251.1"))
        plane.join(spec, LocalEndpoint("ep", ns.path_of(sandbox_ns), "eth0", I("10.128.0.2/9"), "02:42:0a:80:00:02"))
        names = plane.networks[NET_ID].names
        thousand = peers(1000)

        ours, anchor = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            plane.add_peers(NET_ID, thousand)
            ours.append(time.perf_counter() - started)
            neigh, fdb = kernel.kernel_peers(names)
            assert len(neigh) == 1000 and len(fdb) == 1000, (len(neigh), len(fdb))
            plane.sync_peers(NET_ID, [])
            anchor.append(iproute2_batch(names.netns, names.vxlan, thousand))
            kernel.apply_peers(names, _deletes(thousand))
        t1000, a1000 = statistics.median(ours), statistics.median(anchor)
        print(f"program 1,000 remote endpoints: shoal {t1000 * 1000:.0f} ms, iproute2 -batch {a1000 * 1000:.0f} ms "
              f"(median of {args.rounds}): {t1000 / a1000:.2f}x iproute2; goal < 2 s: {'met' if t1000 < 2 else 'NOT met'}",
              flush=True)

        # 1,000 present, then 10,000, then 1,000 again: a drift of the machine's load shows as a
        # difference between the two 1,000 phases.
        change: dict[str, list[float]] = {"1,000": [], "10,000": []}
        extra = peers(1, start=20_000)
        for label, count in (("1,000", 1000), ("10,000", 10_000), ("1,000", 1000)):
            plane.sync_peers(NET_ID, peers(count))
            assert len(plane.peers[NET_ID]) == count
            for _ in range(50):
                started = time.perf_counter()
                plane.add_peers(NET_ID, extra)
                plane.remove_peers(NET_ID, extra)
                change[label].append((time.perf_counter() - started) / 2)
        small, big = statistics.median(change["1,000"]), statistics.median(change["10,000"])
        print(f"one change (add or remove one endpoint): {small * 1000:.2f} ms with 1,000 present (median of 100), "
              f"{big * 1000:.2f} ms with 10,000 present (median of 50)", flush=True)
        growth = big / small
        print(f"one change, 10,000 vs 1,000 present: {growth:.2f}x (goal: does not grow with the count: "
              f"{'met' if growth < 1.5 else 'NOT met'})")
        return 0
    finally:
        if plane is not None:
            plane.close()
        for name in (sandbox_ns, peer_ns, host_ns):
            ns.delete(name)


def _deletes(batch: list[OverlayPeer]):
    from vxlan.peers import Changes

    return Changes(neigh={p.ip: None for p in batch}, fdb={p.mac: None for p in batch})


if __name__ == "__main__":
    sys.exit(main())
