"""The embedded DNS server's asyncio shell: 127.0.0.11:53 (UDP+TCP) inside every container, one event loop.
Sockets are opened in each container's netns by a short setns thread; answers come from agent.network.dns."""
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import random
import socket
import threading
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message

from agent.network import dns as core
from agent.network.dnsfast import AskerAnswers, FastAnswers

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
# --- resource bounds (issue 7 §3) ---------------------------------------------------------------
# Every number bounds what one container, or all of them, can make the daemon hold. The daemon's
# own fds for DNS beyond the two listening sockets per container are at most
# MAX_TCP_TOTAL + MAX_FORWARDS_TOTAL (512).
# dnsmasq keeps 150 forwards in flight (dns-forward-max) and 20 TCP children for one server; we
# serve every container from one process, so the global caps are a little above dnsmasq's and
# each container gets a slice, so that a flood from one leaves room for the others.
MAX_FORWARDS_TOTAL = 256
MAX_FORWARDS_PER_CONTAINER = 32
MAX_TCP_TOTAL = 256
MAX_TCP_PER_CONTAINER = 16
# Beyond the caps the listening socket is no longer read: clients wait in (then overflow) the
# kernel's accept queue, which costs the daemon no fd.
TCP_BACKLOG = 64
# A TCP client must send a whole query within this long of connecting or of its previous
# query, or the connection is closed (CoreDNS and dnsmasq close idle TCP clients too; a stub
# resolver sends its query at once, so a few seconds is plenty).
TCP_IDLE_TIMEOUT = 5.0
# A connection is closed after this many queries: a client cannot keep a slot for ever. 128 is
# the default of miekg/dns, the library under Docker's embedded DNS and CoreDNS.
MAX_QUERIES_PER_TCP = 128
# A query is one question plus EDNS options: 4096 bytes is generous (UDP reads the same amount;
# a longer datagram is cut and then fails to parse, a longer TCP message closes the connection).
MAX_QUERY_SIZE = 4096
# Unanswered bytes held for one TCP client (queries pipelined behind a forward) at most.
MAX_TCP_BUFFERED = 65536
# Datagrams read from one container's socket per wake-up before the loop serves the others:
# batching saves event-loop turns, the bound keeps containers taking turns.
UDP_BATCH = 32
# After EMFILE/ENFILE on accept, stop accepting on that socket for this long (asyncio does 1 s).
ACCEPT_BACKOFF = 1.0


class DnsSetupError(RuntimeError):
    """The resolver could not be opened inside a container's namespace."""


@dataclass(slots=True, eq=False)
class _Listener:
    container_id: str
    netns_identity: tuple[int, int]          # (st_dev, st_ino) of the namespace we bound in
    udp: socket.socket
    tcp: socket.socket
    answers: AskerAnswers
    connections: set[_TcpConnection] = field(default_factory=set)
    accepting: bool = False                  # the TCP socket is being watched by the loop
    closed: bool = False
    backoff: asyncio.TimerHandle | None = None


class EmbeddedDns:
    """Serves the NameTable to every container it was told about, from the daemon's one loop.

    Forwarded queries leave from the namespace EmbeddedDns was created in (the daemon's), so
    they use the host's routes and resolvers, as Docker's do. Several addresses for a name are
    shuffled per answer, as Docker does. Resources are bounded (see the constants above)."""

    def __init__(self, table: core.NameTable, upstreams: list[str], timeout: float = 4.0, *,
                 address: str = core.LISTEN_ADDRESS, port: int = 53,
                 max_in_flight: int = MAX_FORWARDS_TOTAL,
                 max_forwards_per_container: int = MAX_FORWARDS_PER_CONTAINER,
                 max_tcp_total: int = MAX_TCP_TOTAL,
                 max_tcp_per_container: int = MAX_TCP_PER_CONTAINER,
                 tcp_idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError(f"invalid DNS forwarding timeout {timeout!r}: it must be positive")
        if tcp_idle_timeout <= 0:
            raise ValueError(f"invalid DNS TCP idle timeout {tcp_idle_timeout!r}: it must be positive")
        for label, value in (("max_in_flight", max_in_flight),
                             ("max_forwards_per_container", max_forwards_per_container),
                             ("max_tcp_total", max_tcp_total), ("max_tcp_per_container", max_tcp_per_container)):
            if value < 1:
                raise ValueError(f"invalid DNS limit {label}={value!r}: it must be at least 1")
        self.table = table
        self.timeout = timeout
        self.address = address
        self.port = port
        self.max_in_flight = max_in_flight
        self.max_forwards_per_container = max_forwards_per_container
        self.max_tcp_total = max_tcp_total
        self.max_tcp_per_container = max_tcp_per_container
        self.tcp_idle_timeout = tcp_idle_timeout
        self._upstreams: list[str] = []
        self.set_upstreams(upstreams)
        self._container_upstreams: dict[str, list[str]] = {}  # --dns on a user network
        # The namespace of the thread creating us is the daemon's: setns threads come back here.
        self._home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._loop = asyncio.get_running_loop()
        self._listeners: dict[str, _Listener] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._in_flight_by: dict[str, int] = {}
        self._tcp_total = 0
        self._fast = FastAnswers(table)
        self._ids = random.SystemRandom()  # upstream query ids: unpredictable, against spoofing

    @property
    def upstreams(self) -> list[str]:
        return list(self._upstreams)

    def set_container_upstreams(self, container_id: str, upstreams: list[str]) -> None:
        """A container's own resolvers (`--dns`): its forwarded queries go there, not to the
        host's; an empty list goes back to the host's."""
        if upstreams:
            self._container_upstreams[container_id] = list(upstreams)[: core.MAX_UPSTREAMS]
        else:
            self._container_upstreams.pop(container_id, None)

    def set_upstreams(self, upstreams: list[str]) -> None:
        """Replace the forwarders (at most three are used, in order)."""
        self._upstreams = list(upstreams)[: core.MAX_UPSTREAMS]

    def containers(self) -> list[str]:
        """Ids of the containers being served."""
        return list(self._listeners)

    def stats(self) -> dict[str, int]:
        """What is held now: TCP connections and forwards in flight (for tests and inspection)."""
        return {"tcp_connections": self._tcp_total, "forwards_in_flight": self._in_flight}

    async def add_container(self, container_id: str, netns_path: str) -> None:
        """Serve `container_id` at 127.0.0.11:53 inside the namespace at `netns_path`.

        Idempotent; if the path now names a different namespace (the container was restarted),
        the old sockets are closed and new ones opened."""
        async with self._lock:
            identity = _netns_identity(container_id, netns_path)
            current = self._listeners.get(container_id)
            if current is not None:
                if current.netns_identity == identity:
                    return
                self._close_listener(self._listeners.pop(container_id))
            udp_sock, tcp_sock = await _open_in_netns(container_id, netns_path, self._home_fd,
                                                      self.address, self.port)
            listener = _Listener(container_id, identity, udp_sock, tcp_sock, self._fast.view(container_id))
            try:
                self._loop.add_reader(udp_sock.fileno(), self._udp_readable, listener)
                self._start_accepting(listener)
            except BaseException:
                self._close_listener(listener)
                raise
            self._listeners[container_id] = listener

    async def remove_container(self, container_id: str) -> None:
        """Stop serving the container (no error if it was not served)."""
        async with self._lock:
            listener = self._listeners.pop(container_id, None)
            if listener is not None:
                self._close_listener(listener)

    async def close(self) -> None:
        """Close every listener and in-flight forward; the object cannot be used afterwards."""
        async with self._lock:
            for listener in self._listeners.values():
                self._close_listener(listener)
            self._listeners.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._home_fd >= 0:
            os.close(self._home_fd)
            self._home_fd = -1

    # --- UDP -----------------------------------------------------------------------------

    def _udp_readable(self, listener: _Listener) -> None:
        # The hot path: a bounded batch of datagrams, each a dict lookup when the answer is known.
        sock, answers = listener.udp, listener.answers
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_QUERY_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors for replies to clients that went away
                log.debug("dns: %s: %r", listener.container_id, exc)
                continue
            result = answers.answer(data)
            if result.__class__ is bytes:
                _send_udp(sock, result, addr)  # type: ignore[arg-type]
            else:
                self._udp_decision(listener, result, addr)  # type: ignore[arg-type]

    def _udp_decision(self, listener: _Listener, decision: core.Decision, addr: tuple[str, int]) -> None:
        if isinstance(decision, core.Reply):
            _send_udp(listener.udp, decision.wire, addr)
        elif isinstance(decision, core.Forward):
            if not self._may_forward(listener.container_id):
                _send_udp(listener.udp, core.refused(decision.query), addr)
                return
            task = self._loop.create_task(self._forward_udp(listener, decision.query, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward_udp(self, listener: _Listener, query: dns.message.Message, addr: tuple[str, int]) -> None:
        wire = await self.forward(query, tcp=False, container_id=listener.container_id)
        if not listener.closed:  # the container may have gone while an upstream was being asked
            _send_udp(listener.udp, wire, addr)

    # --- forwarding ----------------------------------------------------------------------

    def _may_forward(self, container_id: str) -> bool:
        return (self._in_flight < self.max_in_flight
                and self._in_flight_by.get(container_id, 0) < self.max_forwards_per_container)

    async def forward(self, query: dns.message.Message, *, tcp: bool, container_id: str = "") -> bytes:
        """Ask the upstreams in order within `timeout` in all; the reply bytes for the client."""
        self._in_flight += 1
        self._in_flight_by[container_id] = self._in_flight_by.get(container_id, 0) + 1
        try:
            deadline = self._loop.time() + self.timeout
            servers = list(self._container_upstreams.get(container_id) or self._upstreams)
            for index, server in enumerate(servers):
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    break
                # An even share of what is left, so a dead first server leaves time for the others.
                share = remaining / (len(servers) - index)
                response = await self._exchange(query, server, tcp, share)
                if response is not None and core.usable_upstream(response):
                    return core.upstream_reply(query, response, tcp=tcp)
            return core.upstream_reply(query, None, tcp=tcp)
        finally:
            self._in_flight -= 1
            left = self._in_flight_by[container_id] - 1
            if left:
                self._in_flight_by[container_id] = left
            else:
                del self._in_flight_by[container_id]

    async def _exchange(self, query: dns.message.Message, server: str, tcp: bool,
                        timeout: float) -> dns.message.Message | None:
        outgoing = dns.message.from_wire(query.to_wire())
        outgoing.id = self._ids.randrange(0x10000)
        deadline = self._loop.time() + timeout
        try:
            if not tcp:
                response = await dns.asyncquery.udp(outgoing, server, timeout=timeout)
                if not response.flags & dns.flags.TC:
                    return response
                log.debug("dns: truncated answer from %s, asking again over TCP", server)
            return await dns.asyncquery.tcp(outgoing, server, timeout=max(deadline - self._loop.time(), 0.001))
        except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
            log.debug("dns: upstream %s failed for %s: %r", server, query.question, exc)
            return None

    # --- TCP -----------------------------------------------------------------------------

    def _start_accepting(self, listener: _Listener) -> None:
        if not listener.accepting and not listener.closed:
            listener.accepting = True
            self._loop.add_reader(listener.tcp.fileno(), self._tcp_acceptable, listener)

    def _stop_accepting(self, listener: _Listener) -> None:
        if listener.accepting:
            listener.accepting = False
            self._loop.remove_reader(listener.tcp.fileno())

    def _tcp_acceptable(self, listener: _Listener) -> None:
        while True:
            if (len(listener.connections) >= self.max_tcp_per_container
                    or self._tcp_total >= self.max_tcp_total):
                # Full: leave the rest in the kernel's accept queue until a connection ends.
                self._stop_accepting(listener)
                return
            try:
                conn, _ = listener.tcp.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("dns: %s: cannot accept a TCP client: %s; pausing %.0f s",
                                listener.container_id, exc.strerror, ACCEPT_BACKOFF)
                    self._stop_accepting(listener)
                    listener.backoff = self._loop.call_later(ACCEPT_BACKOFF, self._end_backoff, listener)
                return
            conn.setblocking(False)
            connection = _TcpConnection(self, listener)
            listener.connections.add(connection)
            self._tcp_total += 1
            task = self._loop.create_task(self._attach(connection, conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _end_backoff(self, listener: _Listener) -> None:
        listener.backoff = None
        self._start_accepting(listener)

    async def _attach(self, connection: _TcpConnection, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: connection, conn)
        except BaseException:
            conn.close()
            self._tcp_closed(connection)
            raise

    def _tcp_closed(self, connection: _TcpConnection) -> None:
        listener = connection.listener
        if connection not in listener.connections:
            return
        listener.connections.discard(connection)
        self._tcp_total -= 1
        if listener.closed:
            return
        if self._tcp_total == self.max_tcp_total - 1:
            # A global slot came free: every listener that stopped for it may accept again.
            for other in self._listeners.values():
                if not other.accepting and other.backoff is None and \
                        len(other.connections) < self.max_tcp_per_container:
                    self._start_accepting(other)
        elif listener.backoff is None:
            self._start_accepting(listener)

    def _close_listener(self, listener: _Listener) -> None:
        listener.closed = True
        if listener.backoff is not None:
            listener.backoff.cancel()
            listener.backoff = None
        self._stop_accepting(listener)
        self._loop.remove_reader(listener.udp.fileno())
        listener.udp.close()
        listener.tcp.close()
        for connection in list(listener.connections):
            connection.abort()
            listener.connections.discard(connection)
            self._tcp_total -= 1


class _TcpConnection(asyncio.Protocol):
    """One client TCP connection: length-prefixed queries answered in order, within the bounds."""

    def __init__(self, server: EmbeddedDns, listener: _Listener) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.queries = 0
        self.busy = False          # a forward is under way; later queries wait for it
        self.write_paused = False  # the client does not read its answers
        self.idle: asyncio.TimerHandle | None = None
        self.last_query = 0.0
        self.ending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.listener.closed:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._arm()

    def _arm(self) -> None:
        # One timer per connection, moved lazily: a query only notes the time.
        loop = self.server._loop
        self.last_query = loop.time()
        if self.idle is None:
            self.idle = loop.call_at(self.last_query + self.server.tcp_idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        loop = self.server._loop
        due = self.last_query + self.server.tcp_idle_timeout
        if self.busy:   # waiting on an upstream (bounded by the forwarding timeout)
            due = max(due, loop.time() + self.server.tcp_idle_timeout)
        if due > loop.time():
            self.idle = loop.call_at(due, self._idle_expired)
            return
        self.idle = None
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._process()
        if len(self.buffer) > MAX_TCP_BUFFERED:
            # Queries queued behind a forward beyond any honest pipelining: not held.
            self.abort()

    def _process(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        while not self.busy and not self.ending and len(self.buffer) >= 2:
            size = (self.buffer[0] << 8) | self.buffer[1]
            if size > MAX_QUERY_SIZE or size < 12:
                self.abort()  # not a DNS query we will hold: the framing cannot be trusted
                return
            if len(self.buffer) < size + 2:
                break
            wire = bytes(self.buffer[2:size + 2])
            del self.buffer[:size + 2]
            self.queries += 1
            self._arm()
            result = self.listener.answers.answer(wire, tcp=True)
            if result.__class__ is bytes:
                self._write(result)  # type: ignore[arg-type]
            elif isinstance(result, core.Reply):
                self._write(result.wire)
            elif isinstance(result, core.Drop):
                self.abort()  # garbage on a stream: the framing cannot be trusted any more
                return
            else:
                assert isinstance(result, core.Forward)
                if not self.server._may_forward(self.listener.container_id):
                    self._write(core.refused(result.query))
                else:
                    self.busy = True
                    transport.pause_reading()
                    task = self.server._loop.create_task(self._forward(result.query))
                    self.server._tasks.add(task)
                    task.add_done_callback(self.server._tasks.discard)
                    return
            if self.queries >= MAX_QUERIES_PER_TCP:
                self.ending = True
                transport.close()  # after the answers already written are sent
                return

    async def _forward(self, query: dns.message.Message) -> None:
        try:
            wire = await self.server.forward(query, tcp=True, container_id=self.listener.container_id)
        finally:
            self.busy = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._write(wire)
        if self.queries >= MAX_QUERIES_PER_TCP:
            self.ending = True
            transport.close()
            return
        if not self.write_paused:
            transport.resume_reading()
        self._process()

    def _write(self, wire: bytes) -> None:
        assert self.transport is not None
        self.transport.write(len(wire).to_bytes(2, "big") + wire)

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its queries until it does (the
        # idle timer still runs, so a client that never reads is closed).
        self.write_paused = True
        if self.transport is not None and not self.busy:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.busy and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.server._tcp_closed(self)


def _send_udp(sock: socket.socket, wire: bytes, addr: tuple[str, int]) -> None:
    try:
        sock.sendto(wire, addr)
    except (BlockingIOError, InterruptedError):
        pass  # the socket's buffer is full: the client retries, as over any lossy path
    except OSError as exc:
        log.debug("dns: reply to %s: %r", addr, exc)


def _netns_identity(container_id: str, netns_path: str) -> tuple[int, int]:
    try:
        st = os.stat(netns_path)
    except OSError as exc:
        raise DnsSetupError(f"cannot serve DNS for container {container_id}: network namespace "
                            f"{netns_path!r}: {exc.strerror}") from None
    return st.st_dev, st.st_ino


async def _open_in_netns(container_id: str, netns_path: str, home_fd: int, address: str,
                         port: int) -> tuple[socket.socket, socket.socket]:
    """Bound UDP and listening TCP sockets made inside the namespace (a socket keeps the
    namespace it was created in). A fresh thread does the setns so that no pooled thread can
    ever be left in a container's namespace."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[socket.socket, socket.socket]] = loop.create_future()

    def settle(result: tuple[socket.socket, socket.socket] | None, error: BaseException | None) -> None:
        if done.cancelled():
            if result is not None:
                for sock in result:
                    sock.close()
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = _bind_in_netns(container_id, netns_path, home_fd, address, port)
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name=f"dns-netns-{container_id[:12]}", daemon=True).start()
    return await done


def _bind_in_netns(container_id: str, netns_path: str, home_fd: int, address: str,
                   port: int) -> tuple[socket.socket, socket.socket]:
    try:
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DnsSetupError(f"cannot serve DNS for container {container_id}: network namespace "
                            f"{netns_path!r}: {exc.strerror}") from None
    try:
        try:
            _setns(target)
        except OSError as exc:
            raise DnsSetupError(f"cannot serve DNS for container {container_id}: cannot enter "
                                f"{netns_path!r}: {exc.strerror}") from None
        try:
            return _bind_pair(container_id, address, port)
        finally:
            # If this fails the thread is stranded in the container's namespace; it ends right
            # after, and no other work ever runs on it.
            _setns(home_fd)
    finally:
        os.close(target)


def _bind_pair(container_id: str, address: str, port: int) -> tuple[socket.socket, socket.socket]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((address, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address, port))
        tcp.listen(TCP_BACKLOG)
        udp.setblocking(False)
        tcp.setblocking(False)
    except OSError as exc:
        udp.close()
        tcp.close()
        raise DnsSetupError(f"cannot serve DNS for container {container_id}: bind {address}:{port}: "
                            f"{exc.strerror}") from None
    return udp, tcp


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
