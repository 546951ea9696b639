"""The manager role's root: one ManagerNode composes the raft node, the store and the control API on one
gRPC server, and starts/stops leader-only components (next: CA, dispatcher, allocator, orchestrator,
scheduler) as leadership comes and goes. Run by `python -m manager run` and by `shoal daemon --manager-config`.
With cfg.client_listen, the control API is also served there by front-end processes (manager/frontends.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from manager import metrics
from manager.controlapi import ControlServicer
from manager.controlapi_services import ServiceControlServicer
from manager.health import ManagerHealth
from manager.frontends import Frontends
from manager.raftnode import ManagerConfig, RaftManager
from manager.transport import GRPC_OPTIONS, SERVICE as RAFT_SERVICE, TLSFiles
from proto import control_pb2, control_pb2_grpc

log = logging.getLogger(__name__)


class LeaderComponent(Protocol):
    """Runs only on the leader (swarmkit: allocator, orchestrators, scheduler, dispatcher's leader part).
    start() when this manager becomes leader, stop() when it stops leading; never both at once."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(slots=True, frozen=True)
class LeadershipChange:
    leader: bool  # True: this manager now leads; False: it stopped leading
    term: int


class ManagerNode:
    """One manager: raft + store + control API served together; leader-only components follow leadership."""

    def __init__(self, cfg: ManagerConfig, components: list[LeaderComponent] | None = None) -> None:
        self.cfg = cfg
        self.raft = RaftManager(cfg)
        self.store = self.raft.store
        self.control = ControlServicer(self.raft)
        self.components: list[LeaderComponent] = list(components or [])
        self.server = grpc.aio.server(options=GRPC_OPTIONS)
        self.server.add_generic_rpc_handlers((self.raft.servicer.handler(),))
        control_pb2_grpc.add_ControlServicer_to_server(self.control, self.server)
        self.service_control = ServiceControlServicer(self.raft)  # services and tasks (controlapi_services.py)
        control_pb2_grpc.add_ServiceControlServicer_to_server(self.service_control, self.server)
        self.health = ManagerHealth(self.server, [control_pb2.DESCRIPTOR.services_by_name["Control"].full_name,
                                                  RAFT_SERVICE])
        self._subscribers: list[asyncio.Queue[LeadershipChange]] = []
        self._changes: asyncio.Queue[LeadershipChange] = asyncio.Queue()
        self._running: list[LeaderComponent] = []  # started, in start order
        self._supervisor: asyncio.Task[None] | None = None
        self.frontends = Frontends(cfg, self.control) if cfg.client_listen else None

    async def start(self) -> None:
        if self.cfg.tls is not None:
            self.server.add_secure_port(self.cfg.listen, self.cfg.tls.server_credentials())
        else:
            self.server.add_insecure_port(self.cfg.listen)
        self.raft.on_leadership(self._on_leadership)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"manager-{self.cfg.node_id}-leadership")
        try:
            await self.raft.start()  # raises AlreadyBootstrapped for a wiped member
        except BaseException:
            self._supervisor.cancel()
            await self.raft.stop()
            raise
        if self.frontends is not None:
            # before the raft port opens: a manager that answers there serves its client address too
            try:
                await self.frontends.start()
            except BaseException:
                await self.stop()
                raise
        await self.server.start()
        await self.health.serving(True)
        metrics.bind_raft(self.raft)

    async def stop(self) -> None:
        metrics.unbind_raft(self.raft)
        await self.health.serving(False)
        if self.frontends is not None:
            await self.frontends.stop()
        await self.server.stop(grace=0.5)
        await self.raft.stop()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._stop_components()

    async def wait_stopped(self) -> None:
        """Returns when the raft node stopped by itself (a storage failure: see raft.failure)."""
        await self.raft.stopped.wait()

    # ------------------------------------------------------------------ leadership
    def _on_leadership(self, leader: bool, term: int) -> None:
        change = LeadershipChange(leader, term)
        self._changes.put_nowait(change)
        for q in self._subscribers:
            q.put_nowait(change)

    async def leadership(self) -> AsyncIterator[LeadershipChange]:
        """Every leadership change of this manager from now on, in order."""
        q: asyncio.Queue[LeadershipChange] = asyncio.Queue()
        self._subscribers.append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.remove(q)

    async def _supervise(self) -> None:
        """Start/stop components one change at a time, in order: a stop always follows the start it undoes."""
        while True:
            change = await self._changes.get()
            if change.leader:
                await self._stop_components()  # a new term while leading: restart them (should not happen)
                for c in self.components:
                    try:
                        await c.start()
                    except Exception:
                        log.exception("manager %d: leader component %s failed to start", self.cfg.node_id, c.name)
                        continue
                    self._running.append(c)
            else:
                await self._stop_components()

    async def _stop_components(self) -> None:
        while self._running:
            c = self._running.pop()
            try:
                await c.stop()
            except Exception:
                log.exception("manager %d: leader component %s failed to stop", self.cfg.node_id, c.name)


# ---------------------------------------------------------------------------------- config file
def config_from_file(path: Path, default_data_dir: Path) -> ManagerConfig:
    """A manager config as JSON: {"id": 1, "listen": "H:P", "peers": {"1": "H:P", ...}, "data_dir": "...",
    "join": false, "tls": {"ca": "...", "cert": "...", "key": "..."}}; shoal daemon --manager-config reads it."""
    try:
        raw = json.loads(Path(path).read_text())
        node_id = int(raw["id"])
        listen = str(raw["listen"])
        peers = {int(k): str(v) for k, v in raw.get("peers", {}).items()}
        tls = raw.get("tls")
        tls_files = TLSFiles(Path(tls["ca"]), Path(tls["cert"]), Path(tls["key"])) if tls else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"invalid manager config {path}: {type(e).__name__}: {e}") from None
    if node_id <= 0:
        raise ValueError(f"invalid manager config {path}: id {node_id} must be positive")
    peers.setdefault(node_id, listen)
    return ManagerConfig(
        node_id=node_id,
        listen=listen,
        peers=peers,
        data_dir=Path(raw.get("data_dir") or default_data_dir),
        join=bool(raw.get("join", False)),
        tls=tls_files,
    )
