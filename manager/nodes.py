"""Nodes and the cluster object in the replicated store: join, promote/demote, remove, tokens, raft membership of
managers. Plain async operations over RaftManager used by the gRPC services (nodes_service.py, ca/, dispatcher.py)
and in-process by the node's local API (shoal/swarm)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from common.errdefs import InvalidParameter, NotFound, Precondition, Unavailable
from manager.ca import tokens
from manager.controlapi import new_id
from manager.raft.core import ConfChangeError, NotLeader, QuorumLossError, RaftError
from manager.raftnode import RaftManager
from manager.store.errors import StoreError
from proto import objects_pb2 as pb

log = logging.getLogger(__name__)
Role = pb.NodeSpec.Role
State = pb.NodeStatus.State
Reach = pb.ManagerStatus.Reachability


class NotLeaderHere(Exception):
    """This operation changes raft membership: it must run on the leader (the gRPC layer forwards it)."""


def new_raft_id() -> int:
    """A random non-zero 63-bit raft id (swarmkit picks raft ids at random too; ids are never reused)."""
    while True:
        n = int.from_bytes(os.urandom(8), "big") >> 1
        if n:
            return n


def lookup(nodes: list[pb.Node], ref: str) -> pb.Node:
    """moby's getNode: full id, then name or hostname, then a unique id prefix."""
    for n in nodes:
        if n.id == ref:
            return n
    named = [n for n in nodes if ref and ref in (n.spec.annotations.name, n.description.hostname)]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise InvalidParameter(f"node {ref} is ambiguous ({len(named)} matches found)")
    prefixed = [n for n in nodes if ref and n.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise InvalidParameter(f"node {ref} is ambiguous ({len(prefixed)} matches found)")
    raise NotFound(f"node {ref} not found")


def copy(msg: Any) -> Any:
    dup = type(msg)()
    dup.CopyFrom(msg)
    return dup


class NodeOps:
    def __init__(self, raft: RaftManager, reachable: Callable[[str], bool] | None = None) -> None:
        self.raft = raft
        # node id -> its agent session is alive (the dispatcher's view; only the leader has one)
        self.reachable = reachable or (lambda _nid: True)

    # ---------------------------------------------------------------- reads
    def local_cluster(self) -> pb.Cluster | None:
        clusters = self.raft.store.view().list("cluster")
        return clusters[0] if clusters else None

    def local_node(self, node_id: str) -> pb.Node | None:
        return self.raft.store.view().get("node", node_id)

    def node_exists(self, node_id: str) -> bool:
        return self.raft.store.view().exists("node", node_id)  # asked by every RPC's check: no copy of the node

    async def catch_up(self) -> bool:
        """Bring the local store up to the leader's commit index (a linearizable read); False when no leader
        answered in time, and the store is as current as it can be."""
        try:
            await self.raft.read(lambda _view: None)
        except RaftError:
            return False
        return True

    def cluster_id(self) -> str:
        ids = self.raft.store.view().ids("cluster")  # the id of local_cluster(), without copying the cluster
        return ids[0] if ids else ""

    def new_node_id(self) -> str:
        return new_id()

    def decorate(self, n: pb.Node) -> pb.Node:
        """Manager status as raft sees it now: Leader, Reachable or Unreachable."""
        if n.role != Role.MANAGER or not n.manager_status.raft_id:
            return n
        out = copy(n)
        ms = out.manager_status
        ms.leader = ms.raft_id == (self.raft.leader_id or 0)
        alive = ms.leader or (n.status.state == State.READY and ms.raft_id in self._voters())
        ms.reachability = Reach.REACHABLE if alive else Reach.UNREACHABLE
        return out

    def _voters(self) -> list[int]:
        node = self.raft.node
        return list(node.voters) if node is not None else []

    async def list_nodes(self) -> list[pb.Node]:
        nodes = await self._read(lambda v: v.list("node"))
        return [self.decorate(n) for n in sorted(nodes, key=lambda n: n.id)]

    async def get_node(self, ref: str) -> pb.Node:
        nodes = await self._read(lambda v: v.list("node"))
        return self.decorate(lookup(nodes, ref))

    async def get_cluster(self) -> pb.Cluster:
        clusters = await self._read(lambda v: v.list("cluster"))
        if not clusters:
            raise Unavailable("the cluster is not initialized yet")
        return clusters[0]

    def managers(self) -> list[tuple[str, str]]:
        """(node id, raft address) of every manager the store knows, for the agents' failover list."""
        out = []
        for n in self.raft.store.view().list("node"):
            if n.role == Role.MANAGER and n.manager_status.addr:
                out.append((n.id, n.manager_status.addr))
        return sorted(out)

    async def _read(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return await self.raft.read(fn)
        except RaftError as e:
            raise Unavailable(f"rpc error: code = Unavailable desc = {e}") from None

    async def _propose(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return await self.raft.propose(fn)
        except RaftError as e:
            raise Unavailable(f"rpc error: code = Unavailable desc = {e}") from None

    # ---------------------------------------------------------------- bootstrap and join
    async def create_cluster(self, cluster: pb.Cluster, first: pb.Node) -> None:
        def tx(t: Any) -> None:
            t.create("cluster", cluster)
            t.create("node", first)

        await self._propose(tx)

    async def create_joining_node(self, node_id: str, role: int, availability: int) -> None:
        n = pb.Node(id=node_id, role=role)
        n.spec.desired_role = role
        n.spec.membership = pb.NodeSpec.ACCEPTED
        n.spec.availability = availability
        n.status.state = State.UNKNOWN
        await self._propose(lambda t: t.create("node", n))

    async def join_raft(self, node_id: str, addr: str) -> tuple[int, list[tuple[int, str, str]]]:
        """On the leader: record the new manager's raft id and address, then add it as a voter. Returns its raft
        id and the members (raft id, node id, address) to start from."""
        if not self.raft.is_leader:
            raise NotLeaderHere()
        node = self.local_node(node_id)
        if node is None:
            raise NotFound(f"node {node_id} not found")
        if node.role != Role.MANAGER:
            raise Precondition(f"node {node_id} is not a manager")
        if node.manager_status.raft_id and node.manager_status.raft_id in self._voters():
            raft_id = node.manager_status.raft_id  # a retried join: same member
            if node.manager_status.addr == addr:
                return raft_id, self._members()
        raft_id = new_raft_id()

        def tx(t: Any) -> None:
            cur = t.get("node", node_id)
            if cur is None:
                raise NotFound(f"node {node_id} not found")
            upd = copy(cur)
            upd.manager_status.raft_id = raft_id
            upd.manager_status.addr = addr
            t.update("node", upd)

        await self._propose(tx)  # first the identity (peers check certificates against it), then the vote
        try:
            await self.raft.add_member(raft_id, addr)
        except ConfChangeError as e:
            raise InvalidParameter(str(e)) from None
        except RaftError as e:
            raise Unavailable(str(e)) from None
        return raft_id, self._members()

    def _members(self) -> list[tuple[int, str, str]]:
        by_raft = {n.manager_status.raft_id: n.id for n in self.raft.store.view().list("node") if n.manager_status.raft_id}
        return [(rid, by_raft.get(rid, ""), addr) for rid, addr in sorted(self.raft.info.members.items())]

    # ---------------------------------------------------------------- dispatcher writes
    async def set_status(self, node_id: str, state: int, addr: str | None = None,
                         description: pb.NodeDescription | None = None, message: str = "") -> pb.Node | None:
        def tx(t: Any) -> pb.Node | None:
            cur = t.get("node", node_id)
            if cur is None:
                return None
            upd = copy(cur)
            upd.status.state = state
            upd.status.message = message
            if addr is not None:
                upd.status.addr = addr
            if description is not None:
                upd.description.CopyFrom(description)
            t.update("node", upd)
            return upd

        for attempt in range(5):  # another write to the node between prepare and apply: read it again
            try:
                return await self._propose(tx)
            except StoreError as e:
                if "out of sequence" not in e.message or attempt == 4:
                    raise
        return None

    # ---------------------------------------------------------------- updates (docker node update/promote/demote)
    async def update_node(self, ref: str, version: int, spec: pb.NodeSpec) -> pb.Node:
        node = await self.get_node(ref)
        if version != node.meta.version.index:
            raise StoreError("FAILED_PRECONDITION", "update out of sequence")
        demote = node.role == Role.MANAGER and spec.desired_role == Role.WORKER
        if demote:
            await self._check_demote(node)
            if node.manager_status.raft_id:
                await self._remove_member(node.manager_status.raft_id)

        def tx(t: Any) -> pb.Node:
            cur = t.get("node", node.id)
            if cur is None:
                raise NotFound(f"node {ref} not found")
            upd = copy(cur)
            if not demote and upd.meta.version.index != version:
                raise StoreError("FAILED_PRECONDITION", "update out of sequence")
            upd.spec.CopyFrom(spec)
            upd.spec.membership = cur.spec.membership
            upd.role = spec.desired_role
            if spec.desired_role == Role.WORKER:
                upd.ClearField("manager_status")
            t.update("node", upd)
            return upd

        return await self._propose(tx)

    async def _check_demote(self, node: pb.Node) -> None:
        managers = [n for n in await self._read(lambda v: v.list("node")) if n.role == Role.MANAGER]
        if len(managers) <= 1:
            raise InvalidParameter("attempting to demote the last manager of the swarm")
        if not self.raft.is_leader:
            raise NotLeaderHere()
        # swarmkit's CanRemoveMember: the managers left must still reach a quorum among those that are up
        # (raft's own check only knows who answered within an election timeout)
        target = node.manager_status.raft_id
        rest = [n for n in managers if n.manager_status.raft_id in self._voters() and n.manager_status.raft_id != target]
        up = [n for n in rest if n.manager_status.raft_id == self.raft.id or self.reachable(n.id)]
        if len(up) < len(rest) // 2 + 1:
            raise InvalidParameter(str(QuorumLossError()))

    async def _remove_member(self, raft_id: int) -> None:
        if raft_id not in self._voters():
            return
        try:
            await self.raft.remove_member(raft_id)
        except NotLeader:  # this leader removed itself: it handed leadership over; the new leader does it
            raise NotLeaderHere() from None
        except QuorumLossError as e:
            raise InvalidParameter(str(e)) from None
        except ConfChangeError as e:
            raise InvalidParameter(str(e)) from None
        except RaftError as e:
            raise Unavailable(str(e)) from None

    async def remove_node(self, ref: str, force: bool) -> None:
        node = await self.get_node(ref)
        if node.role == Role.MANAGER and node.manager_status.raft_id in self._voters():
            raise InvalidParameter(
                f"node {node.id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal")
        if not force and node.status.state == State.READY:
            raise InvalidParameter(f"node {node.id} is not down and can't be removed")
        await self._propose(lambda t: t.remove("node", node.id))

    # ---------------------------------------------------------------- cluster
    async def update_cluster(self, version: int, spec: pb.ClusterSpec | None, rotate_worker: bool, rotate_manager: bool) -> pb.Cluster:
        cluster = await self.get_cluster()

        def tx(t: Any) -> pb.Cluster:
            cur = t.get("cluster", cluster.id)
            upd = copy(cur)
            upd.meta.version.index = version
            if spec is not None:
                upd.spec.CopyFrom(spec)
                upd.spec.annotations.name = cur.spec.annotations.name or "default"
            if rotate_worker:
                upd.root_ca.join_tokens.worker = tokens.new_token(cur.root_ca.ca_cert)
            if rotate_manager:
                upd.root_ca.join_tokens.manager = tokens.new_token(cur.root_ca.ca_cert)
            t.update("cluster", upd)
            return upd

        return await self._propose(tx)


