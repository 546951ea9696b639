"""Benchmark: VIP load balancing (agent.network.lb) with many services programmed in one namespace.
Prints figures, asserts nothing.

For each size (services x 10 endpoints in one client namespace): the time to program them all,
the time for one endpoint change to take effect (ServiceLoadBalancer.update returns once the
nftables transaction is committed, so the next connection already follows it; median and p95 of
--changes changes to a service in the middle, alternating remove/add of one endpoint, each alone:
a removal's background conntrack run for UDP flows ends, untimed, before the next change), and the
cost of the watch's in_place check; against an anchor in the same run: the plain layout (a chain
per service with its backends in the rule, a change rewriting that chain) in a namespace of its
own, through the same libnftables context. Then, with the biggest size loaded, the first-packet latency:
TCP connect() from the client through a VIP whose 10 endpoints are real addresses of one backend,
against connect() straight to one of those addresses, interleaved (median of --connects each).
Namespaces are named shoal-lbb<hex>-... and removed at the end, even on failure.
Usage: python bench/lb.py [--sizes 100,1000] [--changes 50] [--connects 300]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

# The repository instead of bench/ (whose dns.py would hide dnspython's `dns`).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from agent.network.lb import ServiceLoadBalancer  # noqa: E402
from agent.network.lbnft import NftContext  # noqa: E402
from agent.network.service_binding import Backend, ServiceBinding  # noqa: E402
from tests.lab import lbtopo  # noqa: E402

ENDPOINTS = 10
PORT = 7000
REAL = [f"10.0.9.{5 + k}" for k in range(ENDPOINTS)]  # the backend's addresses
REAL_VIP = "10.0.9.2"


def binding(i: int, backends: list[str]) -> ServiceBinding:
    vip = IPv4Address("10.64.0.0") + 2 + i * 16  # fake services: nothing answers their addresses
    return ServiceBinding(f"svc{i}", f"s{i}", "net", vip,
                          tuple(Backend(f"t{i}-{k}", IPv4Address(ip)) for k, ip in enumerate(backends)))


def fake_backends(i: int) -> list[str]:
    base = IPv4Address("10.128.0.0") + i * 16
    return [str(base + 1 + k) for k in range(ENDPOINTS)]


def naive_change_times(size: int, changes: int, netns: str) -> list[float]:
    """The anchor: the same services laid out the plain way, a chain per VIP with its backends
    in the rule (dnat to numgen random mod N map { ... }), a change rewriting that chain (flush
    + add rule), through the same libnftables context: what the map layout is measured against."""
    nft = NftContext(lbtopo.NETNS / netns)
    try:
        lines = ["table ip naive_lb {", "  map vips { type ipv4_addr : verdict; }",
                 "  chain output { type nat hook output priority -100; policy accept;",
                 "    meta l4proto { tcp, udp } ip daddr vmap @vips", "  }", "}"]

        def rule(i: int, backends: list[str]) -> str:
            pairs = ", ".join(f"{k} : {ip}" for k, ip in enumerate(backends))
            return f"add rule ip naive_lb s{i} dnat to numgen random mod {len(backends)} map {{ {pairs} }}"
        for i in range(size):
            b = binding(i, fake_backends(i))
            lines += [f"add chain ip naive_lb s{i}", rule(i, fake_backends(i)),
                      f"add element ip naive_lb vips {{ {b.vip} : goto s{i} }}"]
        nft.run("\n".join(lines) + "\n")
        middle, full = size // 2, fake_backends(size // 2)
        timings = []
        for n in range(changes):
            wanted = full[:-1] if n % 2 == 0 else full
            start = time.perf_counter()
            nft.run(f"flush chain ip naive_lb s{middle}\n{rule(middle, wanted)}\n")
            timings.append(time.perf_counter() - start)
        nft.run("delete table ip naive_lb\n")
        return timings
    finally:
        nft.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(sizes: list[int], changes: int, connects: int, prefix: str) -> None:
    switch, client, server = f"{prefix}sw", f"{prefix}client", f"{prefix}backend"
    naive = f"{prefix}naive"
    procs: list[subprocess.Popen[bytes]] = []
    lbtopo.make_switch(switch)
    lbtopo.plug(switch, client, "eth0", "10.0.9.100/16")
    lbtopo.plug(switch, server, "eth0", f"{REAL[0]}/16")
    lbtopo.ip("netns", "add", naive)
    for address in REAL[1:]:
        lbtopo.ip("addr", "add", f"{address}/16", "dev", "eth0", netns=server)
    lbtopo.start_server(server, "backend", PORT, procs)
    try:
        deadline = time.monotonic() + 15
        while not lbtopo.reachable(client, REAL[0], PORT)():
            if time.monotonic() > deadline:
                raise SystemExit("backend did not come up")
            time.sleep(0.05)
        print(f"{'services':>9} {'program all':>12} {'change p50':>11} {'change p95':>11} {'in_place':>9}"
              f" {'anchor p50':>11} {'ratio':>6}")
        slb = None
        for size in sizes:
            if slb is not None:
                slb.close()
            slb = ServiceLoadBalancer()
            slb.attach("client", lbtopo.NETNS / client, ["net"])
            start = time.perf_counter()
            slb.set_bindings([binding(i, fake_backends(i)) for i in range(size)]
                             + [ServiceBinding("real", "real", "net", IPv4Address(REAL_VIP),
                                               tuple(Backend(f"r{k}", IPv4Address(a)) for k, a in enumerate(REAL)))])
            program = time.perf_counter() - start
            middle = size // 2
            full = fake_backends(middle)
            timings, removals, additions = [], [], []
            for n in range(changes):
                wanted = full[:-1] if n % 2 == 0 else full
                start = time.perf_counter()
                slb.update(binding(middle, wanted))
                took = time.perf_counter() - start
                timings.append(took)
                (removals if n % 2 == 0 else additions).append(took)
                # Untimed: let the background conntrack run of a removal end, so that each
                # change is measured alone (back to back they would share the CPU with it).
                slb.sandboxes["client"].lb.settle()  # type: ignore[union-attr]
            checks = []
            sandbox = slb.sandboxes["client"].lb
            for _ in range(10):
                start = time.perf_counter()
                assert sandbox.in_place()
                checks.append(time.perf_counter() - start)
            anchor = naive_change_times(size, changes, naive)
            ours, theirs = statistics.median(timings), statistics.median(anchor)
            print(f"{size:>9} {program * 1000:>10.0f}ms {ours * 1000:>9.2f}ms "
                  f"{pct(timings, 0.95) * 1000:>9.2f}ms {statistics.median(checks) * 1000:>7.2f}ms"
                  f" {theirs * 1000:>9.2f}ms {ours / theirs:>5.2f}x"
                  f"   (remove one: p50 {statistics.median(removals) * 1000:.2f}ms, "
                  f"add one: p50 {statistics.median(additions) * 1000:.2f}ms)")
        via_vip, direct = [], []
        for _ in range(connects):
            via_vip.append(lbtopo.connect_time(client, REAL_VIP, PORT))
            direct.append(lbtopo.connect_time(client, REAL[0], PORT))
        vip_ms, direct_ms = statistics.median(via_vip) * 1000, statistics.median(direct) * 1000
        print(f"first packet (TCP connect, {sizes[-1]} services loaded, median of {connects}): "
              f"via VIP {vip_ms:.3f} ms, direct {direct_ms:.3f} ms: {vip_ms / direct_ms:.2f}x "
              f"(p95 {pct(via_vip, 0.95) * 1000:.3f} / {pct(direct, 0.95) * 1000:.3f} ms)")
        if slb is not None:
            slb.close()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in (client, server, switch, naive):
            lbtopo.ip("netns", "del", name, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="numbers of services to program (comma-separated)")
    parser.add_argument("--changes", type=int, default=50, help="endpoint changes timed per size")
    parser.add_argument("--connects", type=int, default=300, help="connections timed each way")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if os.geteuid() != 0:
        raise SystemExit("bench/lb.py needs root (network namespaces)")
    run(sizes, args.changes, args.connects, f"shoal-lbb{os.getpid():x}-")


if __name__ == "__main__":
    main()
