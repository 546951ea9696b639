"""The embedded DNS server's asyncio shell: 127.0.0.11:53 (UDP+TCP) inside every container, one event loop.
Sockets are opened in each container's netns by a short setns thread; answers come from agent.network.dns."""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message

from agent.network import dns as core

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
MAX_IN_FLIGHT = 1024       # libnetwork's maxConcurrent forwarded queries
TCP_IDLE_TIMEOUT = 10.0    # an idle client TCP connection is closed after this long
TCP_BACKLOG = 64


class DnsSetupError(RuntimeError):
    """The resolver could not be opened inside a container's namespace."""


@dataclass(slots=True)
class _Listener:
    netns_identity: tuple[int, int]          # (st_dev, st_ino) of the namespace we bound in
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server
    connections: set[asyncio.StreamWriter] = field(default_factory=set)


class EmbeddedDns:
    """Serves the NameTable to every container it was told about, from the daemon's one loop.

    Forwarded queries leave from the namespace EmbeddedDns was created in (the daemon's), so
    they use the host's routes and resolvers, as Docker's do. Several addresses for a name are
    shuffled per answer, as Docker does."""

    def __init__(self, table: core.NameTable, upstreams: list[str], timeout: float = 4.0, *,
                 address: str = core.LISTEN_ADDRESS, port: int = 53,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if timeout <= 0:
            raise ValueError(f"invalid DNS forwarding timeout {timeout!r}: it must be positive")
        self.table = table
        self.timeout = timeout
        self.address = address
        self.port = port
        self.max_in_flight = max_in_flight
        self._upstreams: list[str] = []
        self.set_upstreams(upstreams)
        # The namespace of the thread creating us is the daemon's: setns threads come back here.
        self._home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._listeners: dict[str, _Listener] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._shuffle = random.Random()
        self._ids = random.SystemRandom()  # upstream query ids: unpredictable, against spoofing

    @property
    def upstreams(self) -> list[str]:
        return list(self._upstreams)

    def set_upstreams(self, upstreams: list[str]) -> None:
        """Replace the forwarders (at most three are used, in order)."""
        self._upstreams = list(upstreams)[: core.MAX_UPSTREAMS]

    def containers(self) -> list[str]:
        """Ids of the containers being served."""
        return list(self._listeners)

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
            loop = asyncio.get_running_loop()
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpResolver(self, container_id), sock=udp_sock)
            except BaseException:
                udp_sock.close()
                tcp_sock.close()
                raise
            listener_box: list[_Listener] = []
            try:
                tcp = await asyncio.start_server(
                    lambda r, w: self._serve_tcp(container_id, listener_box[0], r, w), sock=tcp_sock)
            except BaseException:
                udp.close()
                tcp_sock.close()
                raise
            listener = _Listener(identity, udp, tcp)
            listener_box.append(listener)
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

    # --- queries -------------------------------------------------------------------------

    def _on_datagram(self, container_id: str, data: bytes, send: Callable[[bytes], None]) -> None:
        decision = core.answer(data, container_id, self.table, tcp=False, rng=self._shuffle)
        if isinstance(decision, core.Reply):
            send(decision.wire)
        elif isinstance(decision, core.Forward):
            if self._in_flight >= self.max_in_flight:
                send(core.refused(decision.query))
                return
            task = asyncio.get_running_loop().create_task(self._forward_and_send(decision.query, send))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward_and_send(self, query: dns.message.Message, send: Callable[[bytes], None]) -> None:
        send(await self.forward(query, tcp=False))

    async def forward(self, query: dns.message.Message, *, tcp: bool) -> bytes:
        """Ask the upstreams in order within `timeout` in all; the reply bytes for the client."""
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            servers = list(self._upstreams)
            for index, server in enumerate(servers):
                remaining = deadline - loop.time()
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

    async def _exchange(self, query: dns.message.Message, server: str, tcp: bool,
                        timeout: float) -> dns.message.Message | None:
        outgoing = dns.message.from_wire(query.to_wire())
        outgoing.id = self._ids.randrange(0x10000)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            if not tcp:
                response = await dns.asyncquery.udp(outgoing, server, timeout=timeout)
                if not response.flags & dns.flags.TC:
                    return response
                log.debug("dns: truncated answer from %s, asking again over TCP", server)
            return await dns.asyncquery.tcp(outgoing, server, timeout=max(deadline - loop.time(), 0.001))
        except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
            log.debug("dns: upstream %s failed for %s: %r", server, query.question, exc)
            return None

    async def _serve_tcp(self, container_id: str, listener: _Listener,
                         reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.connections.add(writer)
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    data = await asyncio.wait_for(reader.readexactly(int.from_bytes(header, "big")),
                                                  TCP_IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                decision = core.answer(data, container_id, self.table, tcp=True, rng=self._shuffle)
                if isinstance(decision, core.Drop):
                    return  # garbage on a stream: the framing cannot be trusted any more
                if isinstance(decision, core.Reply):
                    wire = decision.wire
                elif self._in_flight >= self.max_in_flight:
                    wire = core.refused(decision.query)
                else:
                    wire = await self.forward(decision.query, tcp=True)
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            listener.connections.discard(writer)
            writer.close()

    def _close_listener(self, listener: _Listener) -> None:
        listener.udp.close()
        listener.tcp.close()
        # Server.close() leaves accepted connections open (Python 3.11): close them ourselves.
        for writer in list(listener.connections):
            writer.close()


class _UdpResolver(asyncio.DatagramProtocol):
    def __init__(self, server: EmbeddedDns, container_id: str) -> None:
        self.server = server
        self.container_id = container_id
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self.transport

        def send(wire: bytes) -> None:
            # The container may have gone while an upstream was being asked.
            if transport is not None and not transport.is_closing():
                transport.sendto(wire, addr)

        self.server._on_datagram(self.container_id, data, send)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for replies to clients that went away: nothing to do.
        log.debug("dns: %s: %r", self.container_id, exc)


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
