"""The asyncio shell around the gossip core: one UDP socket and one TCP listener (push-pull) on the gossip port,
every byte sealed with the AES-GCM keyring. Wraps agent.gossip.core; used by the netdb layer (agent.gossip.netdb*).

Public API (what netdb and the node use):

    shell = GossipShell(name, bind_addr, bind_port, advertise_addr, keys, delegate, events, config=None)
    await shell.start()                      # binds UDP+TCP on bind_port (0: any free port, see shell.port)
    await shell.join(["10.0.0.1:7946", ("10.0.0.2", 7946)])  # push-pull with each seed; returns how many
                                             # answered, raises errdefs.Unavailable if none did; the seeds are
                                             # retried whenever this member finds itself alone
    shell.members() -> list[Member]          # everyone known, ourselves included, with state
                                             # (ALIVE/SUSPECT/DEAD/LEFT); dead ones stay until forgotten
    shell.send_to(member_name, data) -> bool # one direct user message over UDP (best effort, no retry; at most
                                             # 65000 bytes); False for an unknown, dead or own name
    shell.num_members() -> int               # alive + suspect, ourselves included (to size retransmits)
    shell.set_keys(keys, primary)            # rotation: keep up to three; seal with primary, open with any
    shell.update_meta()                      # re-read delegate.node_meta and gossip it
    shell.poke()                             # the delegate queued broadcasts outside a call of ours: send them
    shell.counters() -> dict[str, int]       # drops (truncated, unknown_key, bad_tag, decode_errors, tcp_*...)
    await shell.leave()                      # gossip our leave, wait until sent (config.leave_timeout at most)
    await shell.stop()                       # close sockets, stop the timers

Broadcasts to everyone go the memberlist way: the delegate's get_broadcasts is asked for messages to
piggyback on every packet, and each member's delegate.notify_msg receives them. The EventDelegate gets
notify_join for every member that comes alive (ourselves included, at start), notify_leave for dead/left,
notify_update for changed meta or address; suspicion is not an event.

Timers: one loop timer (call_at) at the core's next deadline, moved after every input; an idle member wakes for
its probe about once a second, not at a fixed polling rate.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import struct
from collections.abc import Iterable

from common.errdefs import InvalidParameter, Unavailable

from .core import Datagram, GossipConfig, GossipCore, StreamRequest
from .delegate import Delegate, EventDelegate, Member
from .keyring import Keyring, OpenError

log = logging.getLogger(__name__)

DEFAULT_PORT = 7946
_LEN = struct.Struct("!I")
STREAM_TIMEOUT = 10.0        # a push-pull exchange (connect, send, answer) must finish in this
MAX_USER_DATAGRAM = 65000   # a user message and its framing must fit one UDP datagram


def parse_seed(seed: str | tuple[str, int]) -> tuple[str, int]:
    """"host:port", "host" (default port) or (host, port); refused with the bad value named."""
    if isinstance(seed, tuple):
        host, port = seed
    else:
        host, sep, port_s = seed.rpartition(":")
        if not sep:
            host, port_s = seed, str(DEFAULT_PORT)
        host = host.strip("[]")
        try:
            port = int(port_s)
        except ValueError:
            raise InvalidParameter(f"invalid gossip seed address {seed!r}: bad port") from None
    if not host or not 0 < int(port) < 65536:
        raise InvalidParameter(f"invalid gossip seed address {seed!r}")
    return host, int(port)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, shell: GossipShell) -> None:
        self.shell = shell

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.shell._on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.shell._count("udp_errors")


class GossipShell:
    def __init__(self, name: str, bind_addr: str, bind_port: int, advertise_addr: str, keys: list[bytes],
                 delegate: Delegate | None, events: EventDelegate | None, config: GossipConfig | None = None,
                 rng: random.Random | None = None) -> None:
        for what, value in (("name", name), ("advertise address", advertise_addr)):
            if not value or len(value.encode()) > 255:
                raise InvalidParameter(f"invalid gossip {what} {value[:60]!r}: 1 to 255 bytes")
        if not 0 <= bind_port < 65536:
            raise InvalidParameter(f"invalid gossip port {bind_port}")
        self.name = name
        self.bind_addr = bind_addr
        self.port = bind_port
        self.advertise_addr = advertise_addr
        self.keyring = Keyring(keys)
        self.delegate = delegate
        self.events = events
        self.config = config or GossipConfig()
        self.rng = rng or random.Random()
        self.core: GossipCore | None = None
        self._counters: dict[str, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._timer: asyncio.TimerHandle | None = None   # the core's next deadline
        self._running = False
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        any_port = self.port == 0
        for attempt in range(20 if any_port else 1):
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self),
                                                               local_addr=(self.bind_addr, 0 if any_port else self.port))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_stream, self.bind_addr, self.port,
                                                       reuse_address=True)
                break
            except OSError as e:
                self._udp.close()
                # port 0: the free UDP port the kernel chose may be taken for TCP: another pair is tried
                if not any_port or e.errno != errno.EADDRINUSE or attempt == 19:
                    raise
        self.core = GossipCore(self.name, self.advertise_addr, self.port, self.delegate, self.events, self.rng,
                               self.config)
        self.core.start(loop.time())
        self._running = True
        self._flush()

    async def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def join(self, seed_addrs: Iterable[str | tuple[str, int]]) -> int:
        seeds = [parse_seed(s) for s in seed_addrs]
        core = self._require_core()
        requests = core.join(seeds)
        results = await asyncio.gather(*(self._exchange(r) for r in requests))
        self._flush()
        ok = sum(1 for r in results if r)
        if requests and not ok:
            raise Unavailable("gossip join failed: no seed answered (" +
                              ", ".join(f"{r.addr}:{r.port}" for r in requests) + ")")
        return ok

    async def leave(self) -> None:
        core = self._require_core()
        core.leave(self._now())
        self._flush()
        deadline = self._now() + self.config.leave_timeout
        while not core.left_done and self._now() < deadline:
            await asyncio.sleep(min(self.config.gossip_interval, 0.05))

    # --- API ---------------------------------------------------------------------------------------------

    def members(self) -> list[Member]:
        return self._require_core().members()

    def num_members(self) -> int:
        """Alive and suspect members, ourselves included (what a TransmitLimitedQueue above should scale by)."""
        return self._require_core().num_members()

    def send_to(self, member_name: str, data: bytes) -> bool:
        if len(data) > MAX_USER_DATAGRAM:
            raise InvalidParameter(f"gossip message of {len(data)} bytes exceeds {MAX_USER_DATAGRAM}")
        sent = self._require_core().send_to(member_name, data)
        self._flush()
        return sent

    def set_keys(self, keys: list[bytes], primary: bytes | None = None) -> None:
        self.keyring.set_keys(keys, primary)

    def update_meta(self) -> None:
        self._require_core().update_meta()
        self._flush()

    def counters(self) -> dict[str, int]:
        out = dict(self.core.counters) if self.core else {}
        out.update(self._counters)
        return out

    # --- plumbing ----------------------------------------------------------------------------------------

    def _require_core(self) -> GossipCore:
        if self.core is None:
            raise Unavailable("gossip is not started")
        return self.core

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _count(self, key: str) -> None:
        self._counters[key] = self._counters.get(key, 0) + 1

    def poke(self) -> None:
        """The delegate queued something while no call of ours was running: move the timer (the core arms its
        gossip round for it)."""
        self._rearm()

    def _on_timer(self) -> None:
        self._timer = None
        if not self._running or self.core is None:
            return
        try:
            self.core.tick(self._now())
        except Exception:  # a bug in a handler must not stop the timers for good
            log.exception("gossip: timer handling failed")
            self._count("tick_errors")
        self._flush()

    def _rearm(self) -> None:
        """One loop timer at the core's next deadline (re-checked after every input: packets, streams and calls
        add timers, answered probes drop theirs)."""
        if not self._running or self.core is None or self._loop is None:
            return
        due = self.core.next_deadline()
        timer = self._timer
        if timer is not None:
            if due is not None and timer.when() == due:
                return
            timer.cancel()
            self._timer = None
        if due is not None:
            self._timer = self._loop.call_at(due, self._on_timer)

    def _flush(self) -> None:
        if self.core is None:
            return
        for out in self.core.pop_outgoing():
            if isinstance(out, Datagram):
                if self._udp is None:
                    continue
                try:
                    self._udp.sendto(self.keyring.seal(out.data), (out.addr, out.port))
                except OSError:
                    self._count("udp_send_errors")
            else:
                self._spawn(self._exchange(out))
        self._rearm()

    def _spawn(self, coro) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self._count("udp_in")
        try:
            plain = self.keyring.open(data)
        except OpenError as exc:
            self._count(exc.reason)
            return
        core = self.core
        if core is None:
            return
        core.receive(addr, plain, self._now())
        self._flush()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        """One length-prefixed sealed frame, bounded by max_stream_bytes; None (counted) for anything else."""
        try:
            head = await reader.readexactly(_LEN.size)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._count("tcp_truncated")
            return None
        (n,) = _LEN.unpack(head)
        if n > self.config.max_stream_bytes:
            self._count("tcp_oversize")
            return None
        try:
            frame = await reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._count("tcp_truncated")
            return None
        try:
            return self.keyring.open(frame)
        except OpenError as exc:
            self._count("tcp_" + exc.reason)
            return None

    def _write_frame(self, writer: asyncio.StreamWriter, plain: bytes) -> None:
        sealed = self.keyring.seal(plain)
        writer.write(_LEN.pack(len(sealed)) + sealed)

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count("tcp_in")
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            plain = await asyncio.wait_for(self._read_frame(reader), STREAM_TIMEOUT)
            if plain is None or self.core is None:
                return
            reply = self.core.handle_stream((peer[0], peer[1]), plain, self._now())
            self._flush()
            if reply is None:
                self._count("tcp_garbage")
                return
            self._write_frame(writer, reply)
            await asyncio.wait_for(writer.drain(), STREAM_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            self._count("tcp_errors")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _exchange(self, req: StreamRequest) -> bool:
        """Carries one push-pull to req's peer and hands the answer (or the failure) to the core."""
        core = self._require_core()
        reply: bytes | None = None
        writer = None
        try:
            async with asyncio.timeout(STREAM_TIMEOUT):
                reader, writer = await asyncio.open_connection(req.addr, req.port)
                self._write_frame(writer, req.data)
                await writer.drain()
                reply = await self._read_frame(reader)
        except (TimeoutError, ConnectionError, OSError):
            self._count("push_pull_failed")
        finally:
            if writer is not None:
                writer.close()
                try:
                    await writer.wait_closed()
                except (ConnectionError, OSError):
                    pass
        merged = core.handle_stream_reply(req.id, reply, self._now())
        self._flush()
        return merged
