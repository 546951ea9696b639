"""Lab specification of the embedded DNS server (S11): real sockets at 127.0.0.11 in container netns.

The "daemon" is an asyncio loop on a thread moved into a test namespace, linked by a veth to an
"upstream" namespace running dnsmasq; containers are bare namespaces queried with dig/busybox."""
from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.message
import pytest

from agent.network.dns import NameTable
from agent.network.dnsserver import MAX_QUERIES_PER_TCP, MAX_QUERY_SIZE, DnsSetupError, EmbeddedDns
from tests.lab.helpers import wait_until

pytestmark = pytest.mark.lab

T = TypeVar("T")
PREFIX = f"dn{os.getpid():x}"
DAEMON_IP, UPSTREAM_IP = "10.77.0.1", "10.77.0.2"
NET_A, NET_B = "a" * 64, "b" * 64
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def busybox() -> str | None:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path):
            return path
    return None


class DaemonLoop:
    """An event loop on a thread that lives in the daemon namespace, like shoal's daemon."""

    def __init__(self, netns: str) -> None:
        self.loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, 0x40000000) != 0:
                    ready.set_exception(OSError(ctypes.get_errno(), "setns"))
                    return
            finally:
                os.close(fd)
            asyncio.set_event_loop(self.loop)
            ready.set_result(None)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="dns-test-daemon", daemon=True)
        self.thread.start()
        ready.result(timeout=10)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop's thread (the table belongs to the loop)."""
        async def wrapped() -> T:
            return fn(*args)
        return self.run(wrapped())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class World:
    daemon_ns: str
    upstream_ns: str
    dnsmasq: subprocess.Popen[bytes]
    containers: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Daemon and upstream namespaces joined by a veth; dnsmasq answers upstream.test and
    NXDOMAIN for everything else; a TXT record too big for a UDP answer forces TCP."""
    assert shutil.which("dnsmasq") and shutil.which("dig"), "scripts/install.sh installs dnsmasq-base and dnsutils"
    daemon_ns, upstream_ns = f"{PREFIX}-d", f"{PREFIX}-u"
    tmp = tmp_path_factory.mktemp("dns")
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        sh("ip", "netns", "add", daemon_ns)
        sh("ip", "netns", "add", upstream_ns)
        sh("ip", "link", "add", f"{PREFIX}a", "netns", daemon_ns, "type", "veth",
           "peer", "name", f"{PREFIX}b", "netns", upstream_ns)
        for ns, dev, ip in ((daemon_ns, f"{PREFIX}a", DAEMON_IP), (upstream_ns, f"{PREFIX}b", UPSTREAM_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        big = [f"{chr(97 + i)}" * 250 for i in range(6)]
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", upstream_ns, "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", "--no-resolv", "--no-hosts", f"--listen-address={UPSTREAM_IP}",
             "--port=53", "--bind-interfaces", f"--pid-file={tmp / 'dnsmasq.pid'}",
             "--log-facility=/dev/null", "--address=/upstream.test/10.9.9.9",
             f"--txt-record=big.test,{','.join(big)}", "--local=/#/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: dig_in(upstream_ns, "upstream.test", server=UPSTREAM_IP) == ["10.9.9.9"],
                   timeout=10)
        yield World(daemon_ns, upstream_ns, dnsmasq)
    finally:
        if dnsmasq is not None:
            dnsmasq.send_signal(signal.SIGCONT)
            dnsmasq.terminate()
            try:
                dnsmasq.wait(timeout=10)
            except subprocess.TimeoutExpired:
                dnsmasq.kill()
                dnsmasq.wait()
        for ns in (daemon_ns, upstream_ns):
            sh("ip", "netns", "del", ns, check=False)


@dataclass
class Served:
    """One EmbeddedDns on the daemon loop, and helpers to make containers it serves."""
    loop: DaemonLoop
    table: NameTable
    server: EmbeddedDns
    namespaces: list[str]

    def container(self, key: str, networks: list[tuple[str, str, str, list[str]]]) -> str:
        """A bare netns (lo up) registered as container `key`; networks: (id, name, ipv4, names)."""
        ns = f"{PREFIX}-{key}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for network_id, network_name, ipv4, names in networks:
            self.loop.call(self.table.set_endpoint, key, network_id, network_name, ipv4, names)
        self.loop.run(self.server.add_container(key, f"/run/netns/{ns}"))
        return ns


@pytest.fixture
def served(world: World) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def make(timeout: float = 4.0, upstreams: list[str] | None = None, **limits: Any) -> Served:
        loop = DaemonLoop(world.daemon_ns)
        table = NameTable()
        ups = [UPSTREAM_IP] if upstreams is None else upstreams
        server = loop.run(_make_server(table, ups, timeout, limits))
        result = Served(loop, table, server, [])
        made.append(result)
        return result

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for s in made:  # every server and namespace goes, even if one close fails
            try:
                s.loop.run(s.server.close())
            except BaseException as exc:
                errors.append(exc)
            s.loop.stop()
            for ns in s.namespaces:
                sh("ip", "netns", "del", ns, check=False)
        if errors:
            raise errors[0]


async def _make_server(table: NameTable, upstreams: list[str], timeout: float,
                       limits: dict[str, Any]) -> EmbeddedDns:
    # Created on the daemon loop's thread, so its "home" namespace is the daemon's.
    return EmbeddedDns(table, upstreams, timeout=timeout, **limits)


def dig(ns: str, *args: str, server: str = "127.0.0.11") -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, "dig", "+time=8", "+tries=1", f"@{server}", *args, check=False)


def dig_in(ns: str, name: str, rdtype: str = "A", *extra: str, server: str = "127.0.0.11") -> list[str]:
    return dig(ns, "+short", name, rdtype, *extra, server=server).stdout.split()


def status(ns: str, name: str, rdtype: str = "A", *extra: str) -> str:
    out = dig(ns, name, rdtype, *extra).stdout
    for line in out.splitlines():
        if "status:" in line:
            return line.split("status:")[1].split(",")[0].strip()
    return f"no answer: {out!r}"


def web_and_db(s: Served) -> tuple[str, str]:
    web = s.container("web", [(NET_A, "front", "172.30.0.2", ["web", "webid", "www"])])
    db = s.container("db", [(NET_A, "front", "172.30.0.3", ["db"])])
    return web, db


# --- names we own --------------------------------------------------------------------------

def test_a_for_container_name(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    assert dig_in(web, "db") == ["172.30.0.3"]


def test_a_for_alias(served: Callable[..., Served]) -> None:
    _, db = web_and_db(served())
    assert dig_in(db, "www") == ["172.30.0.2"]


def test_a_for_name_dot_network(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    assert dig_in(web, "DB.front") == ["172.30.0.3"]


def test_answer_has_ttl_600_and_ra_without_aa(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    out = dig(web, "+noall", "+answer", "+comments", "db").stdout
    assert "db.\t\t\t600\tIN\tA\t172.30.0.3" in out
    flags = next(line for line in out.splitlines() if line.startswith(";; flags:"))
    assert " ra" in flags and " aa" not in flags


def test_aaaa_for_ipv4_only_name_is_noerror_without_data(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    assert status(web, "db", "AAAA") == "NOERROR"
    assert dig_in(web, "db", "AAAA") == []


def test_ptr_for_container_ip(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    assert dig_in(web, "-x", "172.30.0.3") == ["db.front."]


def test_tcp_query(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    assert dig_in(web, "db", "A", "+tcp") == ["172.30.0.3"]


def test_busybox_nslookup_resolves_container_name(served: Callable[..., Served]) -> None:
    path = busybox()
    assert path is not None, "scripts/install.sh installs busybox-static"
    web, _ = web_and_db(served())
    out = sh("ip", "netns", "exec", web, path, "nslookup", "db", "127.0.0.11", check=False).stdout
    assert "Address: 172.30.0.3" in out


# --- scoping and updates -------------------------------------------------------------------

def test_container_on_other_network_is_forwarded_and_gets_upstream_nxdomain(
        served: Callable[..., Served]) -> None:
    s = served()
    web_and_db(s)
    other = s.container("other", [(NET_B, "back", "172.31.0.2", ["other"])])
    assert status(other, "db") == "NXDOMAIN"
    assert dig_in(other, "other") == ["172.31.0.2"]


def test_remove_endpoint_makes_name_vanish_at_once(served: Callable[..., Served]) -> None:
    s = served()
    web, _ = web_and_db(s)
    assert dig_in(web, "db") == ["172.30.0.3"]
    s.loop.call(s.table.remove_endpoint, "db", NET_A)
    assert status(web, "db") == "NXDOMAIN"


def test_shared_alias_returns_every_address(served: Callable[..., Served]) -> None:
    s = served()
    web, _ = web_and_db(s)
    s.container("web2", [(NET_A, "front", "172.30.0.4", ["web2", "www"])])
    assert sorted(dig_in(web, "www")) == ["172.30.0.2", "172.30.0.4"]


def test_removed_container_no_longer_listens(served: Callable[..., Served]) -> None:
    s = served()
    web, _ = web_and_db(s)
    s.loop.run(s.server.remove_container("web"))
    assert "no answer" in status(web, "db", "A", "+time=1")


def test_add_container_is_idempotent(served: Callable[..., Served]) -> None:
    s = served()
    web, _ = web_and_db(s)
    s.loop.run(s.server.add_container("web", f"/run/netns/{web}"))
    assert dig_in(web, "db") == ["172.30.0.3"]
    assert sorted(s.server.containers()) == ["db", "web"]


def test_add_container_reopens_when_namespace_was_replaced(served: Callable[..., Served]) -> None:
    s = served()
    web, _ = web_and_db(s)
    # A restarted container gets a fresh namespace under the same name: the old sockets are dead.
    sh("ip", "netns", "del", web)
    sh("ip", "netns", "add", web)
    sh("ip", "-n", web, "link", "set", "lo", "up")
    s.loop.run(s.server.add_container("web", f"/run/netns/{web}"))
    assert dig_in(web, "db") == ["172.30.0.3"]


def test_add_container_with_missing_namespace_names_it(served: Callable[..., Served]) -> None:
    s = served()
    missing = f"/run/netns/{PREFIX}-missing"
    with pytest.raises(DnsSetupError, match=missing):
        s.loop.run(s.server.add_container("ghost", missing))
    assert s.server.containers() == []


def test_many_containers_served_by_one_server(served: Callable[..., Served]) -> None:
    s = served()
    names = [f"m{n}" for n in range(20)]
    spaces = [s.container(name, [(NET_A, "front", f"172.30.1.{n + 2}", [name])])
              for n, name in enumerate(names)]
    for n, ns in enumerate(spaces):
        peer = names[(n + 1) % len(names)]
        assert dig_in(ns, peer) == [f"172.30.1.{(n + 1) % len(names) + 2}"]
    assert threading.active_count() < 20  # no thread per container


# --- forwarding --------------------------------------------------------------------------

def test_unknown_name_is_forwarded_to_upstream(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    assert dig_in(web, "upstream.test") == ["10.9.9.9"]


def test_forwarded_answer_over_tcp(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    assert dig_in(web, "upstream.test", "A", "+tcp") == ["10.9.9.9"]


def test_truncated_upstream_answer_is_fetched_over_tcp(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    # +ignore: dig must not retry over TCP itself; our server must have done it.
    out = dig(web, "+ignore", "+bufsize=4096", "big.test", "TXT").stdout
    flags = next(line for line in out.splitlines() if line.startswith(";; flags:"))
    assert " tc" not in flags
    assert "f" * 250 in out


def test_no_upstream_is_servfail(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served(upstreams=[]))
    assert status(web, "upstream.test") == "SERVFAIL"


def test_dead_upstream_port_is_servfail(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served(upstreams=[DAEMON_IP]))  # nothing listens on :53 there
    assert status(web, "upstream.test") == "SERVFAIL"


def test_silent_upstream_is_servfail_after_timeout(world: World, served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served(timeout=1.0))
    world.dnsmasq.send_signal(signal.SIGSTOP)  # the kernel queues queries nobody answers
    try:
        assert status(web, "upstream.test") == "SERVFAIL"
    finally:
        world.dnsmasq.send_signal(signal.SIGCONT)


def test_second_upstream_answers_when_first_is_dead(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served(upstreams=[DAEMON_IP, UPSTREAM_IP]))
    assert dig_in(web, "upstream.test") == ["10.9.9.9"]


# --- bounded resources (issue 7 §3) ----------------------------------------------------------

# A client run inside a container's namespace: holds COUNT TCP connections to 127.0.0.11:53
# (non-blocking connects: beyond the server's cap they wait in the kernel's queue) until stdin
# closes; or sends UDP queries as fast as it can until killed ("flood"); or sends QUERIES length-prefixed queries on one connection and
# reports how many answers came back before the server closed it.
CLIENT = r"""
import os, resource, select, socket, sys, time
mode = sys.argv[1]
if mode == "hold":
    count = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, count + 64))
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.11", 53))
        socks.append(s)
    print("holding", len(socks), flush=True)
    sys.stdin.read()
elif mode == "flood":
    wire = bytes.fromhex(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    print("flooding", flush=True)
    while True:  # until killed; answers are never read
        try:
            s.sendto(wire, ("127.0.0.11", 53))
        except OSError:
            pass
else:
    queries, wire = int(sys.argv[2]), bytes.fromhex(sys.argv[3])
    s = socket.create_connection(("127.0.0.11", 53), timeout=30)
    s.sendall((len(wire).to_bytes(2, "big") + wire) * queries)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    answers = 0
    while len(data) >= 2:
        size = int.from_bytes(data[:2], "big")
        data = data[2 + size:]
        answers += 1
    print("answers", answers, "eof", flush=True)
"""


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, *args]


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def query_hex(name: str) -> str:
    return dns.message.make_query(name, "A", id=7).to_wire().hex()


def test_tcp_connections_beyond_the_per_container_cap_are_not_accepted(served: Callable[..., Served]) -> None:
    s = served(max_tcp_per_container=8, max_tcp_total=12)
    web, db = web_and_db(s)
    before = own_fds()
    holder = subprocess.Popen(in_ns(web, "hold", "500"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding 500\n"
        wait_until(lambda: s.server.stats()["tcp_connections"] == 8, timeout=10)
        # The other 492 wait in the kernel: the daemon holds 8 more fds, not 500.
        assert own_fds() - before <= 8 + 2
        assert s.server.stats()["tcp_connections"] == 8
        # Everyone else is still served, over UDP and over TCP.
        assert dig_in(db, "web") == ["172.30.0.2"]
        assert dig_in(db, "web", "A", "+tcp") == ["172.30.0.2"]
    finally:
        holder.communicate(timeout=30)
    wait_until(lambda: s.server.stats()["tcp_connections"] == 0, timeout=20)


def test_tcp_connections_beyond_the_global_cap_are_not_accepted(served: Callable[..., Served]) -> None:
    s = served(max_tcp_per_container=8, max_tcp_total=10)
    web, db = web_and_db(s)
    holders = [subprocess.Popen(in_ns(ns, "hold", "50"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for ns in (web, db)]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline() == "holding 50\n"
        wait_until(lambda: s.server.stats()["tcp_connections"] == 10, timeout=10)
        assert dig_in(db, "web") == ["172.30.0.2"]  # UDP is never capped by TCP
        assert s.server.stats()["tcp_connections"] == 10
    finally:
        for holder in holders:
            holder.communicate(timeout=30)
    wait_until(lambda: s.server.stats()["tcp_connections"] == 0, timeout=20)


def test_udp_flood_from_one_container_leaves_another_served(served: Callable[..., Served]) -> None:
    s = served()
    web, db = web_and_db(s)
    # Four senders outpace the one loop: its socket for `web` is never empty while they run.
    floods = [subprocess.Popen(in_ns(web, "flood", query_hex("db")), stdout=subprocess.PIPE, text=True)
              for _ in range(4)]
    try:
        for flood in floods:
            assert flood.stdout is not None and flood.stdout.readline() == "flooding\n"
        for _ in range(5):
            assert dig(db, "+short", "+time=2", "web").stdout.split() == ["172.30.0.2"]
    finally:
        for flood in floods:
            flood.kill()
            flood.wait(timeout=10)


def test_idle_tcp_connection_is_closed_after_the_idle_timeout(served: Callable[..., Served]) -> None:
    s = served(tcp_idle_timeout=1.0)
    web, _ = web_and_db(s)
    result = subprocess.run(in_ns(web, "send", "0", query_hex("db")), capture_output=True, text=True, timeout=30)
    assert result.stdout == "answers 0 eof\n"
    wait_until(lambda: s.server.stats()["tcp_connections"] == 0, timeout=10)


def test_tcp_connection_is_closed_after_the_query_cap(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    result = subprocess.run(in_ns(web, "send", str(MAX_QUERIES_PER_TCP + 5), query_hex("db")),
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == f"answers {MAX_QUERIES_PER_TCP} eof\n"


def test_tcp_message_longer_than_the_cap_closes_the_connection(served: Callable[..., Served]) -> None:
    web, _ = web_and_db(served())
    too_long = "00" * (MAX_QUERY_SIZE + 1)
    result = subprocess.run(in_ns(web, "send", "1", too_long), capture_output=True, text=True, timeout=30)
    assert result.stdout == "answers 0 eof\n"


def test_forwards_beyond_the_per_container_cap_are_refused(world: World, served: Callable[..., Served]) -> None:
    s = served(timeout=3.0, max_forwards_per_container=2)
    web, db = web_and_db(s)
    world.dnsmasq.send_signal(signal.SIGSTOP)  # forwards stay in flight until the timeout
    try:
        slow = [subprocess.Popen(["ip", "netns", "exec", web, "dig", "+time=8", "+tries=1", "@127.0.0.11",
                                  f"slow{n}.test"], stdout=subprocess.DEVNULL) for n in range(2)]
        wait_until(lambda: s.server.stats()["forwards_in_flight"] == 2, timeout=10)
        assert status(web, "third.test") == "REFUSED"
        assert status(db, "db") == "NOERROR"  # our own names never wait on forwards
        for proc in slow:
            proc.wait(timeout=20)
    finally:
        world.dnsmasq.send_signal(signal.SIGCONT)
    wait_until(lambda: s.server.stats()["forwards_in_flight"] == 0, timeout=10)


def test_forwards_beyond_the_global_cap_are_refused_for_every_container(
        world: World, served: Callable[..., Served]) -> None:
    s = served(timeout=3.0, max_in_flight=2, max_forwards_per_container=2)
    web, db = web_and_db(s)
    world.dnsmasq.send_signal(signal.SIGSTOP)
    try:
        slow = [subprocess.Popen(["ip", "netns", "exec", web, "dig", "+time=8", "+tries=1", "@127.0.0.11",
                                  f"slow{n}.test"], stdout=subprocess.DEVNULL) for n in range(2)]
        wait_until(lambda: s.server.stats()["forwards_in_flight"] == 2, timeout=10)
        assert status(db, "other.test") == "REFUSED"
        for proc in slow:
            proc.wait(timeout=20)
    finally:
        world.dnsmasq.send_signal(signal.SIGCONT)
