"""gRPC services for nodes and the cluster (SwarmControl) and for managers joining raft (RaftMembership), over
manager/nodes.py. What must run on the raft leader (membership changes) is forwarded to it with this manager's cert."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from common.errdefs import ShoalError, Unavailable
from manager.ca.auth import Authorizer, caller_identity, forwarded_for
from manager.ca.certs import NodeIdentity
from manager.grpcstatus import abort
from manager.nodes import NodeOps, NotLeaderHere
from manager.raft.core import RaftError
from manager.transport import GRPC_OPTIONS, TLS_SERVER_NAME, TLSFiles
from proto import swarm_pb2, swarm_pb2_grpc

def error_from_rpc(e: grpc.aio.AioRpcError) -> ShoalError:
    """The ShoalError a remote manager's status stands for (the reverse of manager/grpcstatus)."""
    from common import errdefs

    cls = {
        "INVALID_ARGUMENT": errdefs.InvalidParameter, "NOT_FOUND": errdefs.NotFound, "ALREADY_EXISTS": errdefs.Conflict,
        "PERMISSION_DENIED": errdefs.Forbidden, "UNAVAILABLE": errdefs.Unavailable,
        "FAILED_PRECONDITION": errdefs.Precondition, "DEADLINE_EXCEEDED": errdefs.Unavailable,
    }.get(e.code().name, errdefs.SystemError_)
    return cls(e.details() or e.code().name)


def open_secure(addr: str, tls: TLSFiles) -> grpc.aio.Channel:
    opts = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
    return grpc.aio.secure_channel(addr, tls.channel_credentials(), options=opts)


class LeaderForwarder:
    """Calls a SwarmControl/RaftMembership method on the raft leader with this manager's certificate."""

    def __init__(self, ops: NodeOps, tls: TLSFiles) -> None:
        self.ops = ops
        self.tls = tls

    async def call(self, method: str, request: Any, timeout: float = 15.0, on_behalf_of: NodeIdentity | None = None) -> Any:
        """on_behalf_of: the remote caller this manager relays (the leader authorizes that caller, as swarmkit's
        raft proxy does); None when this node's own user asks (the local API)."""
        addr = self.ops.raft.leader_addr()
        if not addr:
            raise Unavailable("rpc error: code = Unavailable desc = no raft leader elected")
        async with open_secure(addr, self.tls) as ch:
            stub: Any = swarm_pb2_grpc.RaftMembershipStub(ch) if method == "Join" else swarm_pb2_grpc.SwarmControlStub(ch)
            try:
                return await getattr(stub, method)(request, timeout=timeout,
                                                   metadata=forwarded_for(on_behalf_of) if on_behalf_of else None)
            except grpc.aio.AioRpcError as e:
                raise error_from_rpc(e) from None


class SwarmControlServicer(swarm_pb2_grpc.SwarmControlServicer, swarm_pb2_grpc.RaftMembershipServicer):
    def __init__(self, ops: NodeOps, auth: Authorizer, forward: LeaderForwarder,
                 secrets_key: Callable[[], bytes] | None = None) -> None:
        self.ops = ops
        self.secrets_key = secrets_key
        self.auth = auth
        self.forward = forward

    def _secrets_key(self) -> bytes:
        try:
            return self.secrets_key() if self.secrets_key is not None else b""
        except Exception:  # a cluster made before secrets existed: the new manager gets none, secrets say why
            return b""

    async def _run(self, ctx: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[Any]],
                   method: str = "", request: Any = None) -> Any:
        try:
            try:
                return await fn()
            except NotLeaderHere:
                return await self.forward.call(method, request, on_behalf_of=caller_identity(ctx))
        except (ShoalError, RaftError) as e:
            await abort(ctx, e)
            raise

    async def GetNode(self, request: swarm_pb2.GetNodeRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.GetNodeResponse:
        await self.auth.check(context, managers_only=True)
        node = await self._run(context, lambda: self.ops.get_node(request.node_id))
        return swarm_pb2.GetNodeResponse(node=node)

    async def ListNodes(self, request: swarm_pb2.ListNodesRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.ListNodesResponse:
        await self.auth.check(context, managers_only=True)
        nodes = await self._run(context, self.ops.list_nodes)
        return swarm_pb2.ListNodesResponse(nodes=nodes)

    async def UpdateNode(self, request: swarm_pb2.UpdateNodeRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.UpdateNodeResponse:
        await self.auth.check(context, managers_only=True)

        async def run() -> Any:
            node = await self.ops.update_node(request.node_id, request.node_version.index, request.spec)
            return swarm_pb2.UpdateNodeResponse(node=node)

        return await self._run(context, run, "UpdateNode", request)

    async def RemoveNode(self, request: swarm_pb2.RemoveNodeRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.RemoveNodeResponse:
        await self.auth.check(context, managers_only=True)

        async def run() -> Any:
            await self.ops.remove_node(request.node_id, request.force)
            return swarm_pb2.RemoveNodeResponse()

        return await self._run(context, run, "RemoveNode", request)

    async def GetCluster(self, request: swarm_pb2.GetClusterRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.GetClusterResponse:
        await self.auth.check(context, managers_only=True)
        cluster = await self._run(context, self.ops.get_cluster)
        return swarm_pb2.GetClusterResponse(cluster=cluster)

    async def UpdateCluster(self, request: swarm_pb2.UpdateClusterRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.UpdateClusterResponse:
        await self.auth.check(context, managers_only=True)

        async def run() -> Any:
            spec = request.spec if request.HasField("spec") else None
            c = await self.ops.update_cluster(request.cluster_version.index, spec, request.rotate_worker_token,
                                              request.rotate_manager_token)
            return swarm_pb2.UpdateClusterResponse(cluster=c)

        return await self._run(context, run)

    async def Join(self, request: swarm_pb2.JoinRaftRequest, context: grpc.aio.ServicerContext) -> swarm_pb2.JoinRaftResponse:
        who = await self.auth.check(context, managers_only=True)
        # the caller joins itself; a manager forwarding a join names the joiner
        node_id = request.node_id or who.node_id
        fwd = swarm_pb2.JoinRaftRequest(addr=request.addr, node_id=node_id)

        async def run() -> Any:
            raft_id, members = await self.ops.join_raft(node_id, request.addr)
            return swarm_pb2.JoinRaftResponse(
                raft_id=raft_id, cluster_id=self.ops.raft.cluster_id,
                members=[swarm_pb2.RaftMember(raft_id=r, node_id=n, addr=a) for r, n, a in members],
                secrets_key=self._secrets_key())

        return await self._run(context, run, "Join", fwd)
