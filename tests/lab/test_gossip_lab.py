"""Gossip among the agents of a 3-host swarm (agent/gossip shell + netdb, started by shoal/swarm/gossip_agent.py):
every node sees every other alive on its advertise address, a killed daemon is dead for the others and alive again
when it is back, and the gossip on the wire is sealed (no node id in clear on the lab switch)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from shoal.lab import Lab, host_address, switch_netns
from tests.lab.helpers import running_lab, shoal, wait_until

HOSTS = ["h1", "h2", "h3"]


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_lab(3) as lab:
        shoal(lab, "swarm", "init", "--advertise-addr", host_address("h1"), "--dispatcher-heartbeat", "1s")
        token = shoal(lab, "swarm", "join-token", "-q", "worker").stdout.strip()
        for h in HOSTS[1:]:
            shoal(lab, "swarm", "join", "--token", token, host_address("h1"), host=h)
        yield lab


def gossip(lab: Lab, host: str) -> dict:
    return json.loads(shoal(lab, "node", "gossip", "--json", host=host).stdout)


def states(lab: Lab, host: str) -> dict[str, tuple[str, str]]:
    return {m["Name"]: (f"{m['Addr']}:{m['Port']}", m["State"]) for m in gossip(lab, host)["Members"]}


def ids(lab: Lab) -> dict[str, str]:
    return {h: lab.client(h).get("/info")["Swarm"]["NodeID"] for h in HOSTS}


def test_every_node_sees_every_other_alive_on_its_advertise_address(swarm: Lab) -> None:
    want = {ids(swarm)[h]: (f"{host_address(h)}:7946", "alive") for h in HOSTS}
    for h in HOSTS:
        wait_until(lambda h=h: states(swarm, h) == want, timeout=30)
        assert gossip(swarm, h)["Running"] is True


# Frames on the lab switch's ports for a few seconds, UDP/TCP payloads of port 7946 only (an AF_PACKET socket: no tcpdump here).
CAPTURE = """
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.2)  # every port of the switch: bridged frames never reach br0 itself
out = bytearray(); n = 0; end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try: f = s.recv(65535)
    except socket.timeout: continue
    if len(f) < 34 or f[12:14] != b"\\x08\\x00": continue
    ihl = (f[14] & 15) * 4; proto = f[23]; l4 = f[14 + ihl:]
    if proto not in (6, 17) or len(l4) < 8: continue
    sport, dport = struct.unpack("!HH", l4[:4])
    if 7946 not in (sport, dport): continue
    n += 1; out += l4[8:] if proto == 17 else l4[(l4[12] >> 4) * 4:]
sys.stdout.write(f"{n}\\n"); sys.stdout.flush(); sys.stdout.buffer.write(bytes(out))
"""


def test_gossip_on_the_wire_carries_no_node_id_in_clear(swarm: Lab) -> None:
    node_ids = ids(swarm)
    r = subprocess.run(["ip", "netns", "exec", switch_netns(swarm.name), sys.executable, "-c", CAPTURE, "5"],
                       capture_output=True, timeout=30, check=True)
    count, _, payload = r.stdout.partition(b"\n")
    assert int(count) > 20  # probes and gossip flowed meanwhile
    for nid in node_ids.values():
        assert nid.encode() not in payload


def test_a_killed_daemon_is_dead_for_the_others_and_alive_again_after_restart(swarm: Lab) -> None:
    h3 = ids(swarm)["h3"]
    swarm.kill("h3")
    try:
        t0 = time.monotonic()
        wait_until(lambda: states(swarm, "h1").get(h3, ("", ""))[1] == "dead", timeout=30)
        assert time.monotonic() - t0 < 30
        assert states(swarm, "h2")[h3][1] in ("suspect", "dead")
    finally:
        swarm.start("h3")
    wait_until(lambda: states(swarm, "h1").get(h3, ("", ""))[1] == "alive", timeout=60)
    wait_until(lambda: all(s == "alive" for _a, s in states(swarm, "h3").values()) and len(states(swarm, "h3")) == 3,
               timeout=60)
