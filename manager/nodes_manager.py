"""A swarm manager: the ManagerNode (raft + store + Control) with the CA, dispatcher, node/cluster control and raft
join services on the same gRPC server, mTLS with node certificates (peers identified by CN=node id, OU=role).
Started and stopped by the node (shoal/swarm/node.py); services in manager/ca, dispatcher.py, nodes_service.py."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from manager.ca.auth import Authorizer, guarded_handlers
from manager.ca.certs import MANAGER_OU, CertificateError, identity
from manager.allocator.runner import AllocatorRunner
from manager.ca.server import CAServicer
from manager.configs import ConfigOps, SecretOps
from manager.controlapi_networks import NetworkOps, ResourceAllocatorServicer
from manager.dispatcher import Dispatcher
from manager.logbroker import LogBroker
from manager import testhooks
from manager.node import ManagerNode
from manager.nodes import NodeOps
from manager.nodes_service import LeaderForwarder, SwarmControlServicer
from manager.orchestrator.runner import Orchestrator
from manager.scheduler.runner import Scheduler
from manager.raftnode import ManagerConfig
from manager.secretbox import load_key
from manager.transport import GRPC_OPTIONS, IdentityError, TLSFiles, certificate_member_id
from proto import control_pb2_grpc, swarm_pb2_grpc

log = logging.getLogger(__name__)


class ReloadingTLS(TLSFiles):
    """TLSFiles whose server side re-reads the certificate files when they change (renewal without restart)."""

    def server_credentials(self, require_client_auth: bool = True) -> grpc.ServerCredentials:
        seen = {"cert": self.cert.read_bytes()}

        def config() -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration([self._chain_pair()], root_certificates=self.ca.read_bytes())

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            try:
                cur = self.cert.read_bytes()
            except OSError:
                return None
            if cur == seen["cert"]:
                return None
            seen["cert"] = cur
            return config()

        return grpc.dynamic_ssl_server_credentials(config(), fetch, require_client_authentication=require_client_auth)

    def _chain_pair(self) -> tuple[bytes, bytes]:
        # the root goes out with the leaf: a joining node reads it from the handshake, then checks its digest
        return self.key.read_bytes(), self.cert.read_bytes() + self.ca.read_bytes()


def bootstrap_addr(listen: str) -> str:
    """The CA's join port: the manager port + 1. Python's gRPC server either requires client certificates or
    never asks for them, so the token-authenticated CSR (a node without a certificate yet) has its own port."""
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + 1}"


@dataclass(slots=True)
class SwarmManagerConfig:
    node_id: str
    raft_id: int
    listen: str  # bind address host:port (0.0.0.0:2377)
    advertise: str  # the address other managers use, host:port
    data_dir: Path  # raft data
    tls: ReloadingTLS
    founding: bool = False
    members: dict[int, tuple[str, str]] = field(default_factory=dict)  # raft id -> (node id, addr) from the join
    tick_s: float = 0.1
    election_tick: int = 10
    force_new_cluster: bool = False  # recover from this member's data as a one-member cluster


def force_new_cluster_supported() -> bool:
    """ManagerConfig.force_new_cluster (raftshell's manager/raft/forcenew.py) is there to use."""
    return "force_new_cluster" in ManagerConfig.__dataclass_fields__


class SwarmManager:
    def __init__(self, cfg: SwarmManagerConfig) -> None:
        self.cfg = cfg
        peers = {rid: addr for rid, (_nid, addr) in cfg.members.items()}
        peers[cfg.raft_id] = cfg.advertise
        mcfg = ManagerConfig(node_id=cfg.raft_id, listen=cfg.listen, peers=peers, data_dir=cfg.data_dir,
                             join=not cfg.founding, tls=cfg.tls, tick_s=cfg.tick_s, election_tick=cfg.election_tick,
                             **({"force_new_cluster": True} if cfg.force_new_cluster else {}))
        self.node = ManagerNode(mcfg)
        self.raft = self.node.raft
        self.ops = NodeOps(self.raft)
        self.auth = Authorizer(self.ops.cluster_id, self.ops.node_exists, self.ops.catch_up)
        self.dispatcher = Dispatcher(self.ops, self.auth)
        self.ops.reachable = self.dispatcher.alive
        self.node.components.append(self.dispatcher)
        self.allocator = AllocatorRunner(self.raft)  # leader only: subnets, VNIs, VIPs, task IPs (manager/allocator)
        self.node.components.append(self.allocator)
        self.networks = NetworkOps(self.raft)
        self.node.components += [Orchestrator(self.raft), Scheduler(self.raft)]  # services (issue 12)
        self.forward = LeaderForwarder(self.ops, cfg.tls)
        self.configs = ConfigOps(self.raft)
        # the secrets key sits beside the raft data (made at init, handed over in JoinRaft); read when used
        self.secrets = SecretOps(self.raft, lambda: load_key(Path(cfg.data_dir)))
        self.dispatcher.unseal = self.secrets.plaintext  # assignments carry the secrets their tasks use
        self._seed = {nid: rid for rid, (nid, _a) in cfg.members.items() if nid}
        self._seed[cfg.node_id] = cfg.raft_id
        # raft peers are identified by their node certificate (CN = node id): map it to the raft member
        self.raft.member_for_certificate = self._member_for_certificate  # type: ignore[attr-defined]
        self._build_server()

    def _build_server(self) -> None:
        """ManagerNode's server again, with the swarm services and the Control API guarded (managers only)."""
        server = grpc.aio.server(options=GRPC_OPTIONS)
        server.add_generic_rpc_handlers((self.raft.servicer.handler(),))

        async def managers_only(ctx: grpc.aio.ServicerContext) -> None:
            await self.auth.check(ctx, managers_only=True)

        server.add_generic_rpc_handlers(tuple(guarded_handlers(
            lambda s: control_pb2_grpc.add_ControlServicer_to_server(self.node.control, s), managers_only)))
        server.add_generic_rpc_handlers(tuple(guarded_handlers(
            lambda s: control_pb2_grpc.add_ServiceControlServicer_to_server(self.node.service_control, s), managers_only)))
        ca = CAServicer(self.ops, self.auth)
        swarm_pb2_grpc.add_CAServicer_to_server(ca, server)
        swarm_pb2_grpc.add_NodeCAServicer_to_server(ca, server)
        swarm_pb2_grpc.add_DispatcherServicer_to_server(self.dispatcher, server)
        swarm_pb2_grpc.add_TaskDispatcherServicer_to_server(self.dispatcher, server)  # assignments, task status
        self.logbroker = LogBroker(self.raft.store, self.auth, self._session_ok, lambda: self.dispatcher.running)
        swarm_pb2_grpc.add_LogBrokerServicer_to_server(self.logbroker, server)  # service logs across nodes
        if testhooks.enabled():  # lab tests of the task executor only (SHOAL_TEST_HOOKS=1)
            server.add_generic_rpc_handlers((testhooks.handler(self.raft, managers_only),))
        control_pb2_grpc.add_ResourceAllocatorServicer_to_server(ResourceAllocatorServicer(self.networks, self.auth), server)
        ctl = SwarmControlServicer(self.ops, self.auth, self.forward, self.secrets.key)
        swarm_pb2_grpc.add_SwarmControlServicer_to_server(ctl, server)
        swarm_pb2_grpc.add_RaftMembershipServicer_to_server(ctl, server)
        self.node.server = server

    def _session_ok(self, node_id: str, session_id: str) -> bool:
        s = self.dispatcher.sessions.get(node_id)
        return s is not None and s.session_id == session_id and not s.ended

    def _member_for_certificate(self, pem: bytes) -> int:
        try:
            who = identity(pem)
        except CertificateError:
            return certificate_member_id(pem)  # static test certificates (CN = raft id)
        if who.role_ou != MANAGER_OU:
            raise IdentityError(f"certificate of node {who.node_id} is not a manager's (OU {who.role_ou})")
        cid = self.ops.cluster_id()
        if cid and who.cluster_id != cid:
            raise IdentityError(f"certificate of node {who.node_id} belongs to cluster {who.cluster_id}")
        node = self.ops.local_node(who.node_id)
        if node is not None and node.manager_status.raft_id:
            return node.manager_status.raft_id
        if cid:  # the store is here: it alone says who is a member (a removed node stays refused)
            raise IdentityError(f"node {who.node_id} is not a raft member")
        rid = self._seed.get(who.node_id)  # a joining member before the leader's snapshot reached it
        if rid is None:
            raise IdentityError(f"node {who.node_id} is not a raft member")
        return rid

    async def start(self) -> None:
        self.node.server.add_secure_port(bootstrap_addr(self.cfg.listen), self.cfg.tls.server_credentials(require_client_auth=False))
        await self.node.start()
        if (self.cfg.founding and not self.cfg.members) or self.cfg.force_new_cluster:
            # a new one-member cluster: no one to wait for, elect now instead of after an election timeout
            self.raft._call(lambda: self.raft.node.campaign())  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.node.stop()

    async def wait_leader(self, timeout: float) -> None:
        await self.raft.wait_leader(time.monotonic() + timeout)

    async def caught_up(self) -> None:
        """Returns once this manager's store holds everything the leader had committed when asked; waits (for a
        leader, for the log) as long as it takes: the caller bounds it."""
        while not await self.ops.catch_up():
            await asyncio.sleep(self.cfg.tick_s)
