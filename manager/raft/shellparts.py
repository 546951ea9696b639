"""What the shell simulator (shellsim.py) puts in place of a manager shell's outside world: its disk executor, transport,
peer channel and store (watched), each handing the simulation what crosses that boundary. The shell (manager/raftnode.py) runs as is."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from manager.raft.messages import Message, MessageType
from proto import raft_pb2

if TYPE_CHECKING:
    from manager.raft.shellsim import ShellSim


# ---------------------------------------------------------------------------------- the disk
class SimDisk(concurrent.futures.Executor):
    """The shell's disk executor (one thread in production): jobs run in order on the loop, a write after a virtual
    delay (its fsync), so a crash before then loses it as a crash during a real fsync does. A dead disk (a killed
    manager) runs nothing but close."""

    def __init__(self, sim: ShellSim, node: SimNode) -> None:
        self.sim = sim
        self.node = node
        self.dead = False
        self.free_at = 0.0  # when the job last queued is done: jobs run one after another, as on one thread

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()  # under way at once, as on an idle worker thread: cancelling cannot stop it
        name = getattr(fn, "__name__", "")

        def run() -> None:
            if self.dead and name != "close":
                return  # the process is gone: this write never reached the disk
            try:
                if name == "save_ready":
                    self.sim.before_save(self.node, *args)
                res = fn(*args, **kwargs)
                if name == "save_ready":
                    self.sim.after_save(self.node)
                elif name == "open_storage" and self.sim.observer is not None:
                    self.sim.observer.opened(self.sim, self.node, res)
            except BaseException as e:  # handed to the shell, as the thread pool would
                fut.set_exception(e)
            else:
                fut.set_result(res)

        if self.dead:  # asked of a killed manager (its stop()): nothing reaches the disk any more
            if name == "close":
                run()
            else:
                fut.set_result(None)
        else:
            loop = self.sim.loop
            # strictly increasing: timers due at the same instant have no guaranteed order
            self.free_at = max(loop.now, self.free_at) + (self.sim.fsync_delay() if name == "save_ready" else 1e-7)
            loop.call_at(self.free_at, run)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


# ---------------------------------------------------------------------------------- the network
def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class SimTransport:
    """transport.Transport's interface over the simulated network: the address book is the shell's, messages go
    through the protobuf codec and the servicer's checks (wirecheck, member_error) as on the wire."""

    def __init__(self, sim: ShellSim, node: SimNode, on_snapshot: Callable[[int, bool], None]) -> None:
        self.sim = sim
        self.node = node
        self.node_id = node.id
        self.peers: dict[int, str] = {}
        self.cluster_id = ""
        self.advertise = ""
        self.unknown_dropped = 0
        self.on_snapshot = on_snapshot
        self.snap_busy: set[int] = set()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def set_peer(self, node_id: int, addr: str) -> bool:
        changed = self.peers.get(node_id) != addr
        self.peers[node_id] = addr
        return changed

    def remove_peer(self, node_id: int) -> None:
        self.peers.pop(node_id, None)

    def send(self, msgs: list[Message]) -> None:
        for m in msgs:
            self.sim.on_send(self.node, m)
            addr = self.peers.get(m.to)
            if addr is None or m.to == self.node_id:
                self.unknown_dropped += 1
                if m.type == MessageType.SNAP:
                    self.on_snapshot(m.to, True)
                continue
            if m.type == MessageType.SNAP:
                if m.to in self.snap_busy:
                    self.on_snapshot(m.to, True)  # one snapshot at a time, as transport.Peer
                    continue
                self.snap_busy.add(m.to)
                self.sim.net_snapshot(self, addr, m)
            else:
                self.sim.net_send(self.node, addr, m)

    async def propose(self, to: int, req: raft_pb2.ProposeRequest, timeout: float) -> raft_pb2.ProposeResponse:
        addr = self.peers.get(to)
        if addr is None:
            raise ConnectionError(f"no address for raft member {to}")
        return await self.sim.net_propose(self.node, addr, req, timeout)

    async def close(self) -> None:
        pass


class FakeChannel:
    """transport.open_channel's stand-in: only the Membership unary call (the wiped-member check) is served."""

    def __init__(self, sim: ShellSim, addr: str) -> None:
        self.sim = sim
        self.addr = addr

    def unary_unary(self, path: str, request_serializer: Any = None, response_deserializer: Any = None) -> Any:
        async def call(req: Any, timeout: float | None = None) -> Any:
            return await self.sim.net_membership(self.addr, req, timeout or 2.0)

        return call

    async def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------- the store (observed)
class SimStore:
    """The shell's MemoryStore, watched: every apply and restore is checked against the cluster's history."""

    def __init__(self, sim: ShellSim, node: SimNode) -> None:
        from manager.store.store import MemoryStore

        self.inner = MemoryStore(clock=sim.vtime.time)
        self.sim = sim
        self.node = node

    def apply(self, index: int, data: bytes) -> Any:
        self.sim.on_apply(self.node, index, data)
        return self.inner.apply(index, data)

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)
        self.sim.on_restore(self.node, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# ---------------------------------------------------------------------------------- one manager
@dataclass(slots=True)
class SimNode:
    id: int
    addr: str
    data_dir: Path
    join: bool
    mgr: Any = None  # the RaftManager, None while down
    disk: SimDisk | None = None
    incarnation: int = 0
    up: bool = False
    removed: bool = False  # its removal committed: it stays down
    stop_at: float = -1.0  # when the removed member is stopped (some seconds later, as etcd's stopWithDelay)
    starting: bool = False
    restart_at: float = -1.0
    storage: Any = None  # the last incarnation's SQLite storage: its mirror is what the disk holds, even after a crash
