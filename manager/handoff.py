"""The hand-off between the control API's front-end processes (manager/frontend.py) and the raft process: framed
calls over one unix socket per front-end, many per write. The raft side runs them on manager/controlapi.py's servicer.

Why: a unary gRPC call costs the serving process more Python than the store and Raft work it carries, and the raft
process is bound to one core by the GIL. Front-ends terminate gRPC for clients (swarmkit serves its control API apart
from the raft port too: control.sock); the raft process then reads many calls per syscall and answers them likewise.

Frames, both directions: a 9-byte header (big-endian u32 length of what follows the header, u32 call id, u8 method
or status) then the body. Request: method = index into METHODS, body = the request's bytes. Answer: status = a
grpc.StatusCode's number (0: OK), body = the response's bytes, or the error's details in UTF-8."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory

from proto import control_pb2

log = logging.getLogger(__name__)

SERVICE = "shoal.v1.Control"
HEADER = struct.Struct(">IIB")
MAX_FRAME_BYTES = 8 << 20  # above gRPC's 4 MiB message cap: a longer frame is a broken peer
# unary-unary methods only: a streaming one (none yet) would be served by the raft process's own port
_DESCRIPTOR = control_pb2.DESCRIPTOR.services_by_name["Control"]
METHODS: list[str] = sorted(m.name for m in _DESCRIPTOR.methods if not m.client_streaming and not m.server_streaming)
_STATUS_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def request_class(method: str) -> type[Any]:
    return message_factory.GetMessageClass(_DESCRIPTOR.methods_by_name[method].input_type)


def status_code(number: int) -> grpc.StatusCode:
    return _STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


class FrameError(Exception):
    """The other side sent something that is not a frame of this protocol: the connection is closed."""


class FramedProtocol(asyncio.Protocol):
    """Reads frames from the byte stream and writes frames batched: everything written during one pass of
    the event loop leaves in one write() call."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        frames: list[tuple[int, int, bytes]] = []
        while n - pos >= HEADER.size:
            length, call_id, tag = HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME_BYTES:
                log.error("control hand-off: frame of %d bytes: closing the connection", length)
                if self.transport is not None:
                    self.transport.close()
                return
            end = pos + HEADER.size + length
            if end > n:
                break
            frames.append((call_id, tag, bytes(buf[pos + HEADER.size:end])))
            pos = end
        del buf[:pos]
        if frames:
            self.frames_received(frames)

    def frames_received(self, frames: list[tuple[int, int, bytes]]) -> None:
        raise NotImplementedError

    def send_frame(self, call_id: int, tag: int, body: bytes) -> None:
        self._out.append(HEADER.pack(len(body), call_id, tag))
        self._out.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and out:
            self.transport.write(b"".join(out))


class Aborted(Exception):
    """LocalContext.abort: the call ends with this status (what grpc.aio's abort does for a real call)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class LocalContext:
    """The part of grpc.aio.ServicerContext the control servicer uses, for a call a front-end handed over."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: object = ()) -> None:
        raise Aborted(code, details)

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "control front-end"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


class RaftSide(FramedProtocol):
    """One front-end's connection, in the raft process: each call runs on the control servicer; its answer is
    framed back when it finishes (in any order: call ids match them)."""

    def __init__(self, servicer: Any, fast: dict[str, Callable[[bytes], "asyncio.Future[bytes] | None"]] | None = None) -> None:
        super().__init__()
        self.servicer = servicer
        self.fast = fast or {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls = 0

    def frames_received(self, frames: list[tuple[int, int, bytes]]) -> None:
        for call_id, tag, body in frames:
            self.calls += 1
            if tag >= len(METHODS):
                self.send_frame(call_id, grpc.StatusCode.UNIMPLEMENTED.value[0], f"unknown control method {tag}".encode())
                continue
            t = asyncio.ensure_future(self._run(call_id, METHODS[tag], body))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def _run(self, call_id: int, method: str, body: bytes) -> None:
        try:
            req = request_class(method).FromString(body)
            resp = await getattr(self.servicer, method)(req, LocalContext())
        except Aborted as e:
            self.send_frame(call_id, e.code.value[0], e.details.encode())
            return
        except asyncio.CancelledError:
            self.send_frame(call_id, grpc.StatusCode.CANCELLED.value[0], b"manager stopping")
            raise
        except Exception as e:  # what a gRPC server would answer UNKNOWN for (and log)
            log.exception("control hand-off: %s failed", method)
            self.send_frame(call_id, grpc.StatusCode.UNKNOWN.value[0], f"Unexpected {type(e).__name__}: {e}".encode())
            return
        self.send_frame(call_id, 0, resp.SerializeToString())

    def cancel_all(self) -> None:
        for t in list(self.tasks):
            t.cancel()


class FrontSide(FramedProtocol):
    """A front-end's connection to the raft process: call() frames a request and waits for its answer."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._next = 0

    async def call(self, method_index: int, body: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            return grpc.StatusCode.UNAVAILABLE.value[0], b"manager raft process gone"
        self._next = (self._next + 1) & 0xFFFFFFFF
        call_id = self._next
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        self.send_frame(call_id, method_index, body)
        try:
            return await fut
        finally:
            self._pending.pop(call_id, None)

    def frames_received(self, frames: list[tuple[int, int, bytes]]) -> None:
        for call_id, status, body in frames:
            fut = self._pending.pop(call_id, None)
            if fut is not None and not fut.done():
                fut.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result((grpc.StatusCode.UNAVAILABLE.value[0], b"manager raft process gone"))
        self._pending.clear()
