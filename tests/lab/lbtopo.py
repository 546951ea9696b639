"""Stand-in networks for the load-balancing lab tests and bench/lb.py: namespaces joined by veths to
a bridge (an overlay's L2 segment), backends that answer with their name and their client's address.

Every namespace is named shoal-<lab>-..., so the lab's teardown removes them (and their
processes) whatever happens; the overlay and ingress networks are bridges in namespaces of
their own, standing in for the VXLAN data plane the overlay driver builds.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from agent.network.nsthread import entered

NETNS = Path("/run/netns")

# Answers every line with "<name> <client address>", over one connection as long as the client
# keeps it, and every UDP datagram on the same port likewise; serves HTTP GET too (so busybox
# wget and plain sockets both work).
SERVER = r'''
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port)); srv.listen(128)
def serve(conn, peer):
    with conn:
        f = conn.makefile("rb")
        for line in f:
            if line.startswith(b"GET "):
                body = f"{name} {peer[0]}\n".encode()
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                return
            conn.sendall(f"{name} {peer[0]}\n".encode())
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", port))
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(f"{name} {peer[0]}\n".encode(), peer)
threading.Thread(target=udp, daemon=True).start()
while True:
    c, p = srv.accept()
    threading.Thread(target=serve, args=(c, p), daemon=True).start()
'''


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def in_ns(netns: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={NETNS / netns}", *argv], capture_output=True, text=True,
                          check=check, timeout=timeout)


def make_switch(name: str) -> None:
    """A namespace holding bridge br0: one L2 segment."""
    ip("netns", "add", name)
    ip("link", "add", "br0", "type", "bridge", netns=name)
    ip("link", "set", "br0", "up", netns=name)
    ip("link", "set", "lo", "up", netns=name)


_veths = iter(range(10_000))


def plug(switch: str, netns: str, ifname: str, cidr: str, gateway: str | None = None) -> None:
    """Make `netns` if needed and give it interface `ifname` with `cidr`, on the switch's br0."""
    if not (NETNS / netns).exists():
        ip("netns", "add", netns)
        ip("link", "set", "lo", "up", netns=netns)
    port = f"p{next(_veths)}"
    ip("link", "add", port, "type", "veth", "peer", "name", ifname, "netns", netns, netns=switch)
    ip("link", "set", port, "master", "br0", "up", netns=switch)
    ip("addr", "add", cidr, "dev", ifname, netns=netns)
    ip("link", "set", ifname, "up", netns=netns)
    if gateway:
        ip("route", "replace", "default", "via", gateway, netns=netns)


def bridge_in(netns: str, bridge: str, cidr: str) -> None:
    """A bridge with an address in a host namespace (the gateway bridge stand-in)."""
    ip("link", "add", bridge, "type", "bridge", netns=netns)
    ip("addr", "add", cidr, "dev", bridge, netns=netns)
    ip("link", "set", bridge, "up", netns=netns)


def start_server(netns: str, name: str, port: int, procs: list[subprocess.Popen[bytes]]) -> None:
    procs.append(subprocess.Popen(["nsenter", f"--net={NETNS / netns}", sys.executable, "-c", SERVER, name, str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def ns_socket(netns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in `netns` (a socket keeps the namespace it was made in)."""
    with entered(NETNS / netns):
        return socket.socket(socket.AF_INET, kind)


def ask(netns: str, address: str, port: int, timeout: float = 3.0) -> str:
    """One new connection from `netns`: the server's answer ("<name> <client address>")."""
    with ns_socket(netns) as s:
        s.settimeout(timeout)
        s.connect((address, port))
        s.sendall(b"hello\n")
        return s.makefile().readline().strip()


def answers(netns: str, address: str, port: int, count: int) -> list[str]:
    return [ask(netns, address, port).split()[0] for _ in range(count)]


def reachable(netns: str, address: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            ask(netns, address, port, timeout=0.5)
            return True
        except OSError:
            return False
    return check


def connect_time(netns: str, address: str, port: int) -> float:
    """Seconds from connect() to established (the first packet's round trip, plus NAT setup)."""
    with ns_socket(netns) as s:
        s.settimeout(3.0)
        start = time.perf_counter()
        s.connect((address, port))
        return time.perf_counter() - start
