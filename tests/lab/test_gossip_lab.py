"""Gossip among the agents of a 3-host swarm (agent/gossip shell + netdb, started by shoal/swarm/gossip_agent.py):
every node sees every other alive on its advertise address, a killed daemon is dead for the others and alive again
when it is back, and the gossip on the wire is sealed (no node id in clear on the lab switch, nor the endpoint record
of a container joining an overlay: address, MAC, name)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from shoal.lab import Lab, host_address, switch_netns
from tests.lab.helpers import shoal, wait_until
from tests.lab.swarm_lab import running_swarm

HOSTS = ["h1", "h2", "h3"]


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(3, workers=HOSTS[1:]) as lab:
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


# Frames on the lab switch's ports for a given time (an AF_PACKET socket: no tcpdump here), UDP/TCP payloads by port,
# argv: SECONDS PORT...; prints "<frames of the first port> <bytes of each port>...\n" then the payloads in port order.
CAPTURE = """
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.2)  # every port of the switch: bridged frames never reach br0 itself
ports = [int(p) for p in sys.argv[2:]]
out = {p: bytearray() for p in ports}; n = 0; end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try: f = s.recv(65535)
    except socket.timeout: continue
    if len(f) < 34 or f[12:14] != b"\\x08\\x00": continue
    ihl = (f[14] & 15) * 4; proto = f[23]; l4 = f[14 + ihl:]
    if proto not in (6, 17) or len(l4) < 8: continue
    sport, dport = struct.unpack("!HH", l4[:4])
    port = next((p for p in ports if p in (sport, dport)), 0)
    if not port: continue
    n += port == ports[0]; out[port] += l4[8:] if proto == 17 else l4[(l4[12] >> 4) * 4:]
sys.stdout.write(" ".join(str(x) for x in [n, *(len(out[p]) for p in ports)]) + "\\n"); sys.stdout.flush()
sys.stdout.buffer.write(b"".join(bytes(out[p]) for p in ports))
"""
GOSSIP_PORT, VXLAN_PORT = 7946, 4789


def capture_argv(lab: Lab, seconds: float, *ports: int) -> list[str]:
    """CAPTURE run on the lab switch for `seconds`, keeping the payloads of `ports`."""
    return ["ip", "netns", "exec", switch_netns(lab.name), sys.executable, "-c", CAPTURE, str(seconds), *map(str, ports)]


def captured(out: bytes) -> tuple[int, list[bytes]]:
    """(frames of the first port, the payloads of each port) from CAPTURE's output."""
    head, _, payload = out.partition(b"\n")
    frames, *lengths = map(int, head.split())
    parts, at = [], 0
    for n in lengths:
        parts.append(payload[at:at + n])
        at += n
    return frames, parts


def test_gossip_on_the_wire_carries_no_node_id_in_clear(swarm: Lab) -> None:
    node_ids = ids(swarm)
    r = subprocess.run(capture_argv(swarm, 5, GOSSIP_PORT), capture_output=True, timeout=30, check=True)
    count, (payload,) = captured(r.stdout)
    assert count > 20  # probes and gossip flowed meanwhile
    for nid in node_ids.values():
        assert nid.encode() not in payload


CAPTURE_S = 20.0


def plaintexts(ip: str, mac: str, name: str, cid: str) -> dict[str, bytes]:
    """The forms an endpoint record would show in clear: text (the tables hold JSON) and packed."""
    return {"ip": ip.encode(), "packed ip": ipaddress.IPv4Address(ip).packed, "mac": mac.encode(),
            "packed mac": bytes.fromhex(mac.replace(":", "")), "name": name.encode(), "short id": cid[:12].encode()}


def test_gossip_of_a_joining_container_carries_none_of_its_endpoint_record_in_clear(swarm: Lab) -> None:
    """A container joins an overlay on h2 while h3 has one on it: its peer and name records go to h3 by gossip
    (h3 programs its FDB entry and resolves its name meanwhile), and no 7946 payload holds its address, MAC, name
    or short id; the VXLAN payloads of a ping between the two do hold its address (the capture sees clear text
    where there is some)."""
    net, name = "sealed-net", "sealed-endpoint-name"
    shoal(swarm, "network", "create", "-d", "overlay", "--subnet", "10.0.29.0/24", "--attachable", net)
    shoal(swarm, "run", "-d", "--network", net, "--name", "witness", "busybox", "sleep", "3600", host="h3")
    capture = subprocess.Popen(capture_argv(swarm, CAPTURE_S, GOSSIP_PORT, VXLAN_PORT), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        shoal(swarm, "run", "-d", "--network", net, "--name", name, "busybox", "sleep", "3600", host="h2")
        doc = json.loads(shoal(swarm, "inspect", name, host="h2").stdout)[0]
        ep = doc["NetworkSettings"]["Networks"][net]
        ping = wait_until(lambda: (r := shoal(swarm, "exec", "witness", "ping", "-c1", "-W1", name, host="h3",
                                              check=False)).returncode == 0 and r, timeout=CAPTURE_S - 5)
        assert time.monotonic() - t0 < CAPTURE_S - 1  # the record went over the wire while the capture ran
        out, err = capture.communicate(timeout=CAPTURE_S + 30)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    assert capture.returncode == 0, err.decode()
    assert f"PING {name} ({ep['IPAddress']})" in ping.stdout
    frames, (gossip_bytes, vxlan_bytes) = captured(out)
    assert frames > 20 and len(vxlan_bytes) > 0
    found = {what: b in gossip_bytes for what, b in plaintexts(ep["IPAddress"], ep["MacAddress"], name, doc["Id"]).items()}
    assert found == dict.fromkeys(found, False)
    assert ipaddress.IPv4Address(ep["IPAddress"]).packed in vxlan_bytes


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
