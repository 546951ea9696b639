"""Streams of the Docker API: multiplexed frames, hijacked (upgraded) connections and the
bridge between such a connection and a container's or exec's stdio (stdin, detach keys).

Frame encoding is pure; HijackedConnection takes a socket over from aiohttp for attach and
exec start (shoal.api.routes_containers), the way moby's HijackConnection does; bridge() is
fed by agent.executor.stdio (the shim's socket) or an exec's pty/pipes.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from shoal.api.params import version_before

STDIN, STDOUT, STDERR = 0, 1, 2
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_NAMED_FROM = "1.42"  # before it moby called every stream raw, multiplexed or not


def stream_content_type(tty: bool, version: str) -> str:
    """The Content-Type moby gives a logs, attach or exec stream: multiplexed (8-byte frames) without a TTY, from API
    1.42; raw-stream otherwise, the frames being there all the same."""
    return MULTIPLEXED if not tty and not version_before(version, MULTIPLEXED_NAMED_FROM) else RAW_STREAM
_HEADER = struct.Struct(">BxxxI")
_INPUT_LIMIT = 1 << 20  # stdin bytes a hijacked connection buffers before it stops reading
HEAD_READ_TIMEOUT_S = 1.0  # the most a hijacked stream waits for its client to read the response head


def encode_frame(stream: int, data: bytes) -> bytes:
    """One stdcopy frame: [stream, 0, 0, 0, uint32 big-endian length] + payload."""
    return _HEADER.pack(stream, len(data)) + data


def encode_output(stream: int, data: bytes, tty: bool) -> bytes:
    """With a TTY the stream is raw (one merged stream), otherwise framed."""
    return data if tty else encode_frame(stream, data)


def raw_response_head(status: int, reason: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HijackedConnection(asyncio.Protocol):
    """The protocol of a connection taken away from aiohttp after an upgrade.

    aiohttp's protocol closes the transport when the client half-closes its side, which the
    docker CLI does at once when it has no stdin to send; this protocol keeps writing.
    """

    def __init__(self, transport: asyncio.Transport, previous: asyncio.BaseProtocol) -> None:
        self._transport = transport
        self._previous = previous
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._can_write = asyncio.Event()
        self._can_write.set()
        # What the client sends after the upgrade (a container's stdin), b"" once it half-closed.
        self._input: asyncio.Queue[bytes] = asyncio.Queue()
        self._input_ended = False
        self._queued = 0  # bytes received and not read yet: past _INPUT_LIMIT the socket is not read
        self._reading_paused = False

    @classmethod
    def take_over(cls, request: web.BaseRequest) -> "HijackedConnection":
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client went away before the upgrade")
        conn = cls(transport, request.protocol)  # type: ignore[arg-type]
        transport.set_protocol(conn)
        with contextlib.suppress(Exception):
            transport.resume_reading()  # so a client that goes away is noticed
        return conn

    # -- asyncio.Protocol --
    def data_received(self, data: bytes) -> None:
        self._input.put_nowait(data)
        self._queued += len(data)
        if self._queued > _INPUT_LIMIT and not self._reading_paused:
            self._reading_paused = True
            with contextlib.suppress(Exception):
                self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._end_input()
        return True  # half-closed by the client: keep the write side open

    def _end_input(self) -> None:
        if not self._input_ended:
            self._input_ended = True
            self._input.put_nowait(b"")

    async def read(self) -> bytes:
        """The next bytes the client sent; b"" when it half-closed or went away."""
        if self._input_ended and self._input.empty():
            return b""
        data = await self._input.get()
        self._queued -= len(data)
        if self._reading_paused and self._queued <= _INPUT_LIMIT // 2:
            self._reading_paused = False
            with contextlib.suppress(Exception):
                self._transport.resume_reading()
        return data

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._can_write.set()
        self._end_input()
        if not self.closed.done():
            self.closed.set_result(None)
        # Let aiohttp forget the connection (its bookkeeping of open connections).
        with contextlib.suppress(Exception):
            self._previous.connection_lost(exc)

    # -- writing --
    @property
    def is_closed(self) -> bool:
        return self.closed.done() or self._transport.is_closing()

    async def write(self, data: bytes) -> None:
        if self.is_closed:
            raise ConnectionResetError("client closed the connection")
        self._transport.write(data)
        await self._can_write.wait()

    async def until_read(self, timeout: float = HEAD_READ_TIMEOUT_S) -> None:
        """Waits (bounded) until the client has read everything written so far; used after the response head.
        docker-py (and any client that reads the head through Python's buffered http.client, then takes the raw
        socket) loses the stream bytes that arrived with the head: its buffered readline took them. Under load the
        client reads late and finds both: an attach?logs=1 of a stopped container came back empty. Only a unix
        socket tells this (SIOCOUTQ: bytes the peer has not read yet); over TCP it counts unacknowledged bytes,
        which loopback acknowledges at once, so nothing is waited for there."""
        sock = self._transport.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.0005
        while not self.is_closed and asyncio.get_running_loop().time() < deadline:
            try:
                unread = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                return
            if unread == 0:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def close(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()  # flushes what is buffered, then closes
        await self.closed


async def pump(
    chunks: AsyncIterator[tuple[int, bytes]], write, tty: bool, until_closed: asyncio.Future | None
) -> None:
    """Copies (stream, chunk) pairs to `write` as frames, until the iterator ends or the
    client goes away (`until_closed` resolves)."""

    async def copy() -> None:
        try:
            async for stream, chunk in chunks:
                if chunk:
                    await write(encode_output(stream, chunk, tty))
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    task = asyncio.ensure_future(copy())
    if until_closed is None:
        await task
        return
    try:
        await asyncio.wait({task, until_closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
    if task.done() and not task.cancelled():
        exc = task.exception()
        if exc is not None and not isinstance(exc, ConnectionError):
            raise exc


async def when_disconnected(request: web.BaseRequest, interval: float = 0.5) -> None:
    """Returns once the client of a plain (not hijacked) streaming response has gone.

    aiohttp cancels nothing on disconnect unless handler_cancellation is on, which would also
    cut engine calls in half; so the transport is watched instead.
    """
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(interval)


# ---- attach: a hijacked client <-> a container's shim (agent.executor.stdio) ---------

START_POLL_S = 0.005


async def bridge(
    conn: HijackedConnection,
    output: AsyncIterator[tuple[int, bytes]],
    tty: bool,
    send_stdin=None,
    close_stdin=None,
    detach_keys: bytes = b"",
) -> str:
    """Copies output to the client (raw for a TTY, framed otherwise) and, with send_stdin, the
    client's bytes to the container, watching for the detach keys. Returns why it ended:
    "output" (the process closed its output), "detached", "client" (the client went away or,
    on a TTY, ended its stdin)."""
    from agent.executor.stdio import DetachScanner

    async def copy_out() -> str:
        async for stream, chunk in output:
            if chunk:
                await conn.write(encode_output(stream, chunk, tty))
        return "output"

    async def copy_in() -> str:
        scanner = DetachScanner(detach_keys) if detach_keys else None
        while True:
            data = await conn.read()
            if not data:
                if close_stdin is not None:
                    await close_stdin()
                if conn.is_closed or tty:
                    return "client"  # moby: on a TTY the end of stdin ends this attach
                await conn.closed  # stdin closed, output goes on until the client goes
                return "client"
            if scanner is not None:
                data, detached = scanner.feed(data)
                if data:
                    await send_stdin(data)
                if detached:
                    return "detached"
            else:
                await send_stdin(data)

    tasks = {asyncio.ensure_future(copy_out())}
    if send_stdin is not None:
        tasks.add(asyncio.ensure_future(copy_in()))
    closed = asyncio.ensure_future(asyncio.shield(conn.closed))
    try:
        done, _ = await asyncio.wait(tasks | {closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks | {closed}:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task
    for task in done:
        if task is closed:
            return "client"
        if task.exception() is None:
            return task.result()
        if isinstance(task.exception(), ConnectionError):
            return "client"
        raise task.exception()  # type: ignore[misc]
    return "client"
