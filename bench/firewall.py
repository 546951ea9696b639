"""Benchmark: the cost of publishing one more port and attaching one more endpoint on a node that
already has 10, 100 and 1,000 of each; it must stay flat. Prints figures, asserts nothing.

What is timed is the kernel-facing half of `docker run -p`, as the engine does it on its kernel
thread: the endpoint attach (veth into the container's namespace, on the bridge; the firewall
has no per-endpoint step), then the host port reservation (shoal.engine.publish.PortPublisher:
the allocator and its state) and the firewall change (firewall_live.Firewall.publish, its share
shown apart); also the unpublish and the firewall watch's check (the cheap one of every tick,
and the deep one of every 15th). Runc and the API are left out: their cost does not depend on how many ports
exist and would only hide this one. Each size gets its own lab host namespace with a bridge and
one namespace per container; rounds are interleaved across sizes so that load changes on the
machine hit all sizes alike. Everything is torn down even on failure; no traffic is sent.
Usage: python bench/firewall.py [--sizes 10,100,1000] [--repeat 9]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.network import bridge, firewall, netns  # noqa: E402
from agent.network.firewall_live import Firewall  # noqa: E402
from common.mac import mac_from_ip  # noqa: E402
from agent.network.nsthread import entered  # noqa: E402
from shoal.engine import publish  # noqa: E402
from shoal.engine.records import ContainerRecord  # noqa: E402
from shoal.engine.state import StateDir  # noqa: E402

BRIDGE, GATEWAY, PREFIX = "br-bench", "10.90.0.1", 16
NET = firewall.BridgeNet(BRIDGE, "10.90.0.0/16")
FIRST_HOST_PORT = 20000


def container_ip(i: int) -> str:
    return f"10.90.{(i + 2) // 256}.{(i + 2) % 256}"


class Node:
    """The host namespace with its bridge, the containers attached so far and their ports."""

    def __init__(self, prefix: str, state_dir: Path) -> None:
        self.prefix = prefix
        state_dir.mkdir()
        self.host = str(netns.create_netns(f"{prefix}-h"))
        self.publisher = publish.PortPublisher(StateDir(state_dir))
        self.ports: dict[str, list[firewall.PublishedPort]] = {}
        self.count = 0
        self.fw_ms = 0.0  # the firewall's share of the last publish
        self.fw = Firewall()  # the network controller's, one per namespace
        with entered(self.host):
            bridge.ensure_bridge(BRIDGE, f"{GATEWAY}/{PREFIX}", 1500)
            firewall.enable_ip_forward()
            self.fw.apply_all([NET])

    def new_container(self) -> tuple[str, int]:
        """A namespace for container number `count` (made outside the timings)."""
        i = self.count
        self.count += 1
        name = f"{self.prefix}-c{i}"
        netns.create_netns(name)
        return name, i

    def attach(self, name: str, i: int) -> None:
        ip = container_ip(i)
        with entered(self.host):
            bridge.attach_endpoint(BRIDGE, name, bridge.host_ifname_for(name), "eth0", f"{ip}/{PREFIX}",
                                   mac_from_ip(ip), GATEWAY, 1500)

    def detach(self, name: str) -> None:
        with entered(self.host):
            bridge.detach_endpoint(bridge.host_ifname_for(name))

    def record(self, name: str, i: int) -> ContainerRecord:
        binding = {"container_port": 80, "proto": "tcp", "host_ip": "", "host_port": FIRST_HOST_PORT + i,
                   "host_port_end": 0}
        return ContainerRecord(id=name, name=name, image="busybox", image_id="", created="",
                               port_bindings=[binding])

    def reserve(self, name: str, i: int) -> firewall.PublishedPort:
        """The engine's PortPublisher.publish: one host port for the container, persisted."""
        record = self.record(name, i)
        with entered(self.host):  # its in-use probe binds the port: in the lab host, not here
            record.published = self.publisher.publish(record)
        return publish.firewall_ports(record, BRIDGE, container_ip(i))[0]

    def release(self, name: str) -> None:
        self.publisher.unpublish(self.record(name, 0))

    def all_ports(self) -> list[firewall.PublishedPort]:
        return [p for owner in sorted(self.ports) for p in self.ports[owner]]

    def publish(self, name: str, i: int) -> None:
        """What the engine does for `run -p`: reserve the port, then the firewall change."""
        self.ports[name] = [self.reserve(name, i)]
        start = time.perf_counter()
        with entered(self.host):
            self.fw.publish(name, self.ports[name])
        self.fw_ms = (time.perf_counter() - start) * 1000

    def unpublish(self, name: str) -> None:
        self.release(name)
        self.ports.pop(name, None)
        with entered(self.host):
            self.fw.unpublish(name)

    def check(self, deep: bool = False) -> bool:
        """One tick of the firewall watch (deep: the whole ruleset compared, every 15th tick)."""
        with entered(self.host):
            return self.fw.in_place(deep)

    def grow(self, target: int) -> None:
        """Attach and publish containers until `target` exist (one firewall batch at the end)."""
        while self.count < target:
            name, i = self.new_container()
            self.attach(name, i)
            self.ports[name] = [self.reserve(name, i)]
        with entered(self.host):
            self.fw.apply_all([NET], (), self.all_ports())


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def one_round(node: Node) -> dict[str, float]:
    """One more container attached and published, checked, then removed again (ms per step)."""
    name, i = node.new_container()
    out = {"attach": timed(lambda: node.attach(name, i)), "publish": timed(lambda: node.publish(name, i))}
    out["fw"] = node.fw_ms
    fine: list[bool] = []
    out["check"] = timed(lambda: fine.append(node.check()))
    out["deep"] = timed(lambda: fine.append(node.check(deep=True)))
    if not all(fine):
        raise SystemExit("after a publish the kernel's rules differ from the firewall's model")
    out["unpublish"] = timed(lambda: node.unpublish(name))
    node.detach(name)
    netns.delete_netns(name)
    node.count -= 1  # the next round reuses the same number: `present` stays exact
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    prefix = f"shoalbf{uuid.uuid4().hex[:6]}"
    rounds: dict[int, list[dict[str, float]]] = {size: [] for size in sizes}
    try:
        with tempfile.TemporaryDirectory(prefix="shoal-bench-fw-") as tmp:
            nodes = {}
            for size in sizes:  # one lab host per size, so the rounds can be interleaved
                nodes[size] = Node(f"{prefix}s{size}", Path(tmp) / str(size))
                nodes[size].grow(size)
            full = {size: node.fw.full_applies for size, node in nodes.items()}
            # Interleaved: a change in the machine's load hits every size alike. Round 0 warms up.
            for round_ in range(args.repeat + 1):
                for size in sizes:
                    result = one_round(nodes[size])
                    if round_:
                        rounds[size].append(result)
            if any(node.fw.full_applies != full[size] for size, node in nodes.items()):
                raise SystemExit("a publish fell back to rewriting every rule")
    finally:
        for name in netns.list_netns(prefix):
            netns.delete_netns(name)
    results = {size: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for size, rs in rounds.items()}
    print(f"{'present':>7}  {'publish-ms':>10}  {'attach-ms':>9}  {'(firewall-ms':>12}  {'unpublish-ms':>12}  "
          f"{'check-ms':>8}  {'deep-check-ms)':>14}")
    for size in sizes:
        r = results[size]
        print(f"{size:>7}  {r['publish']:>10.2f}  {r['attach']:>9.2f}  {r['fw']:>12.2f}  {r['unpublish']:>12.2f}  "
              f"{r['check']:>8.2f}  {r['deep']:>14.2f}")
    lo, hi = results[sizes[0]], results[sizes[-1]]
    print(f"ratio publish {sizes[-1]}/{sizes[0]} = {hi['publish'] / lo['publish']:.2f}")
    print(f"ratio attach {sizes[-1]}/{sizes[0]} = {hi['attach'] / lo['attach']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
