"""The CA's gRPC services (swarmkit's CA and NodeCA): the root certificate for anyone, a node certificate for a
CSR with a join token (a new node) or with the caller's own certificate (a renewal). Uses manager/nodes.py's store ops."""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING

import grpc

from common.errdefs import InvalidParameter, ShoalError
from manager.ca import tokens
from manager.ca.auth import Authorizer, peer_identity
from manager.ca.certs import MANAGER_OU, WORKER_OU, CertificateError, RootCA, sign_csr
from manager.grpcstatus import abort
from manager.raft.core import RaftError
from manager.store.errors import StoreError
from proto import objects_pb2, swarm_pb2, swarm_pb2_grpc

if TYPE_CHECKING:
    from manager.nodes import NodeOps

log = logging.getLogger(__name__)
Role = objects_pb2.NodeSpec.Role


def role_for_token(cluster: objects_pb2.Cluster, token: str) -> int:
    """The role a join token grants; InvalidParameter with swarm's messages otherwise (constant-time compares)."""
    if not token:
        raise InvalidParameter(tokens.NEEDS_VALID_TOKEN)
    try:
        tokens.parse_token(token)
    except ValueError:
        raise InvalidParameter(tokens.INVALID_TOKEN) from None
    jt = cluster.root_ca.join_tokens
    # both compared every time: which one matched must not show in the time taken
    is_worker = tokens.tokens_equal(token, jt.worker)
    is_manager = tokens.tokens_equal(token, jt.manager)
    if is_manager:
        return Role.MANAGER
    if is_worker:
        return Role.WORKER
    raise InvalidParameter(tokens.NEEDS_VALID_TOKEN)


def cert_expiry(cluster: objects_pb2.Cluster) -> datetime.timedelta:
    d = cluster.spec.ca_config.node_cert_expiry
    if d.seconds or d.nanos:
        return d.ToTimedelta()
    from manager.ca.certs import DEFAULT_NODE_CERT_EXPIRY

    return DEFAULT_NODE_CERT_EXPIRY


class CAServicer(swarm_pb2_grpc.CAServicer, swarm_pb2_grpc.NodeCAServicer):
    def __init__(self, ops: "NodeOps", auth: Authorizer) -> None:
        self.ops = ops
        self.auth = auth

    async def GetRootCACertificate(self, request: swarm_pb2.GetRootCACertificateRequest,
                                   context: grpc.aio.ServicerContext) -> swarm_pb2.GetRootCACertificateResponse:
        cluster = self.ops.local_cluster()
        if cluster is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the cluster is not initialized yet")
        return swarm_pb2.GetRootCACertificateResponse(certificate=cluster.root_ca.ca_cert)

    async def IssueNodeCertificate(self, request: swarm_pb2.IssueNodeCertificateRequest,
                                   context: grpc.aio.ServicerContext) -> swarm_pb2.IssueNodeCertificateResponse:
        try:
            return await self._issue(request, context)
        except (ShoalError, StoreError, RaftError) as e:
            await abort(context, e)
            raise

    async def _issue(self, request: swarm_pb2.IssueNodeCertificateRequest,
                     context: grpc.aio.ServicerContext) -> swarm_pb2.IssueNodeCertificateResponse:
        cluster = self.ops.local_cluster()
        if cluster is None:
            raise InvalidParameter("the cluster is not initialized yet")
        root = RootCA(cluster.root_ca.ca_cert, cluster.root_ca.ca_key)
        who = peer_identity(context)
        if who is not None and not request.token:  # a renewal: the role is the store's, not the caller's
            why = await self.auth.refusal([(who, False)])
            if why is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            node = await self.ops.get_node(who.node_id)
            node_id, role = node.id, node.role
            cert = self._sign(root, request.csr, node_id, role, cluster)
        else:
            role = role_for_token(cluster, request.token)
            node_id = self.ops.new_node_id()
            cert = self._sign(root, request.csr, node_id, role, cluster)  # a bad CSR leaves no node behind
            await self.ops.create_joining_node(node_id, role, request.availability)
            log.info("CA: issued a %s certificate to new node %s", "manager" if role == Role.MANAGER else "worker", node_id)
        return swarm_pb2.IssueNodeCertificateResponse(
            node_id=node_id, node_membership=objects_pb2.NodeSpec.ACCEPTED, certificate=cert, role=role,
            cluster_id=cluster.id)

    @staticmethod
    def _sign(root: RootCA, csr: bytes, node_id: str, role: int, cluster: objects_pb2.Cluster) -> bytes:
        try:
            return sign_csr(root, csr, node_id, MANAGER_OU if role == Role.MANAGER else WORKER_OU, cluster.id,
                            cert_expiry(cluster))
        except CertificateError as e:
            raise InvalidParameter(str(e)) from None
