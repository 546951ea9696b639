"""The agent's session with the dispatcher (swarmkit's agent/session.go, first form): register with the leader,
heartbeat at the period it sets, take the managers list it pushes and fail over to another manager when one dies.
Run by shoal/swarm/node.py on every node (managers too); the server side is manager/dispatcher.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from manager.transport import GRPC_OPTIONS, TLS_SERVER_NAME, TLSFiles
from proto import objects_pb2 as pb
from proto import swarm_pb2, swarm_pb2_grpc

log = logging.getLogger(__name__)
RETRY_S = 0.2


def describe(hostname: str, engine_version: str) -> pb.NodeDescription:
    arch = {"x86_64": "x86_64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    return pb.NodeDescription(
        hostname=hostname, platform=pb.Platform(architecture=arch, os="linux"),
        resources=pb.Resources(nano_cpus=(os.cpu_count() or 1) * 10**9, memory_bytes=mem),
        engine_version=engine_version)


class AgentSession:
    def __init__(self, tls: TLSFiles, managers: Callable[[], list[str]], description: pb.NodeDescription,
                 on_message: Callable[[swarm_pb2.SessionMessage], Any],
                 on_session: Callable[[grpc.aio.Channel, str], Awaitable[None]] | None = None) -> None:
        self.tls = tls
        self.on_session = on_session  # runs beside each session (the worker's assignments and reports)
        self.managers = managers
        self.description = description
        self.on_message = on_message
        self.connected = asyncio.Event()  # set while a session is up
        self.registered = asyncio.Event()  # set once the first session came up
        self.manager_addr = ""
        self.heartbeats = 0
        self._task: asyncio.Task[None] | None = None
        self._beat_failed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="agent-session")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        turn = 0
        while True:
            addrs = self.managers() or []
            if not addrs:
                await asyncio.sleep(RETRY_S)
                continue
            addr = addrs[turn % len(addrs)]
            turn += 1
            try:
                await self._session(addr)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                log.info("agent: session with %s ended: %s: %s", addr, e.code().name, e.details())
            except Exception as e:  # noqa: BLE001 - any failure: try the next manager
                log.info("agent: session with %s failed: %s: %s", addr, type(e).__name__, e)
            self.connected.clear()
            await asyncio.sleep(RETRY_S)

    async def _session(self, addr: str) -> None:
        opts = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
        async with grpc.aio.secure_channel(addr, self.tls.channel_credentials(), options=opts) as ch:
            stub = swarm_pb2_grpc.DispatcherStub(ch)
            call = stub.Session(swarm_pb2.SessionRequest(description=self.description))
            beat: asyncio.Task[None] | None = None
            side: asyncio.Task[None] | None = None
            self._beat_failed = False
            try:
                async for msg in call:
                    if beat is None:
                        self.manager_addr = addr
                        beat = asyncio.create_task(self._heartbeat(stub, msg.session_id, msg.heartbeat_period_ms / 1000, call))
                        self.connected.set()
                        self.registered.set()
                        log.info("agent: session %s with %s", msg.session_id[:12], addr)
                        if self.on_session is not None:
                            side = asyncio.create_task(self.on_session(ch, msg.session_id), name="agent-session-worker")
                    try:
                        r = self.on_message(msg)
                        if asyncio.iscoroutine(r):
                            await r
                    except Exception:
                        log.exception("agent: handling a session message failed")
            except asyncio.CancelledError:
                # the heartbeat cancelled the call (grpc.aio then raises CancelledError here): a failed
                # session, not a stop of this task
                task = asyncio.current_task()
                if self._beat_failed and task is not None and not task.cancelling():
                    raise ConnectionError("heartbeat failed") from None
                raise
            finally:
                call.cancel()
                for t in (beat, side):
                    if t is not None:
                        t.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await t

    async def _heartbeat(self, stub: Any, session_id: str, period: float, call: Any) -> None:
        try:
            while True:
                await asyncio.sleep(max(0.05, period))
                resp = await stub.Heartbeat(swarm_pb2.HeartbeatRequest(session_id=session_id), timeout=max(1.0, 2 * period))
                self.heartbeats += 1
                if resp.period_ms:
                    period = resp.period_ms / 1000
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the manager is gone or forgot us: end the session, reconnect
            log.info("agent: heartbeat failed: %s", _short(e))
            self._beat_failed = True
            call.cancel()


def _short(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"
