"""The node's swarm state machine (swarmkit's node/node.go): init, join, leave, restart; keys and certificates in
<data-dir>/swarm (0600); runs the manager (manager/nodes_manager.py) when the node is one and always the agent session
(session.py); follows role changes (promote/demote) and renews its certificate. Owned by shoal/daemon.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from common.errdefs import InvalidParameter, NotImplemented_, SystemError_, Unavailable
from common.heap import freeze_long_lived
from manager import gossip_keys
from manager.ca import certs, tokens
from manager import secretbox
from manager.controlapi import new_id
from manager.nodes import NodeOps, NotLeaderHere, new_raft_id
from manager.nodes_manager import ReloadingTLS, SwarmManager, SwarmManagerConfig, bootstrap_addr, force_new_cluster_supported
from manager.nodes_service import error_from_rpc, open_secure
from proto import objects_pb2 as pb
from proto import swarm_pb2, swarm_pb2_grpc
from shoal.swarm.fetchca import parse_remote, remote_root_ca
from shoal.swarm.gossip_agent import GossipAgent, key_ring
from shoal.swarm import overlay_gossip
from shoal.swarm.session import AgentSession, describe
from shoal.swarm.state import SwarmPaths, SwarmState

log = logging.getLogger(__name__)
LEAVE_DEMOTE_TIMEOUT_S = 10.0

DEFAULT_PORT = 2377
JOIN_TIMEOUT_S = 30.0
# docker's words when init/join stop waiting for the node's session; the node goes on joining
JOIN_GOES_ON = ("Timeout was reached before node joined. The attempt to join the swarm will continue in the background. "
                "Use the \"docker info\" command to see the current swarm status of your node.")
ALREADY_IN_SWARM = 'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join another one.'
NOT_IN_SWARM = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.'
WORKER_NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
                      "Please run this command on a manager node or promote the current node to a manager.")
NOT_PART = "This node is not part of a swarm"
Role = pb.NodeSpec.Role


@dataclass(slots=True)
class InitRequest:
    listen_addr: str = "0.0.0.0:2377"
    advertise_addr: str = ""
    force_new_cluster: bool = False
    heartbeat_s: float = 0.0  # 0: default (5 s)
    cert_expiry_s: float = 0.0  # 0: default (90 days)
    availability: int = pb.NodeSpec.ACTIVE
    default_addr_pool: list[str] = field(default_factory=list)  # overlay subnets come from these (10.0.0.0/8)
    subnet_size: int = 0  # their prefix length (24)


@dataclass(slots=True)
class JoinRequest:
    remote: str
    token: str
    listen_addr: str = "0.0.0.0:2377"
    advertise_addr: str = ""
    availability: int = pb.NodeSpec.ACTIVE


def _port_of(addr: str, default: int = DEFAULT_PORT) -> int:
    _h, sep, p = addr.rpartition(":")
    try:
        return int(p) if sep else default
    except ValueError:
        raise InvalidParameter(f"invalid listen address {addr!r}") from None


def _source_ip(towards: str) -> str:
    """The local address the kernel would use to reach `towards` (a UDP connect sends nothing)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((towards, 9))
        return s.getsockname()[0]
    except OSError:
        return ""
    finally:
        s.close()


def advertise_address(given: str, listen: str, remote_host: str = "") -> str:
    """host:port to advertise: --advertise-addr (its port defaults to the listen port), else the address that
    reaches the remote manager, else the listen address if specific, else the default route's source."""
    port = _port_of(listen)
    if given:
        host, sep, p = given.rpartition(":")
        if not sep:
            host, p = given, str(port)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise InvalidParameter(f"advertise address must be a non-zero IP address or network interface (with optional port number): {given}") from None
        return f"{host}:{p}"
    lhost = listen.rpartition(":")[0]
    if remote_host:
        ip = _source_ip(remote_host)
        if ip:
            return f"{ip}:{port}"
    if lhost and lhost not in ("0.0.0.0", "::", ""):
        return f"{lhost}:{port}"
    ip = _source_ip("192.0.2.1")  # TEST-NET-1: only the routing decision is used
    if ip and not ip.startswith("127."):
        return f"{ip}:{port}"
    raise InvalidParameter("could not choose an IP address to advertise since this system has no usable default route")


class SwarmNode:
    def __init__(self, data_dir: Path, hostname: Callable[[], str], engine_version: str,
                 on_joined: Callable[[], Any] | None = None, engine: Any = None) -> None:
        self.paths = SwarmPaths(Path(data_dir) / "swarm")
        self.engine = engine  # runs the tasks assigned to this node (shoal/swarm/worker_glue.py); None: no tasks
        self.hostname = hostname
        self.engine_version = engine_version
        self.on_joined = on_joined  # docker_gwbridge and the like, after init/join and at restart
        self.state: SwarmState | None = None
        self.manager: SwarmManager | None = None
        self.session: AgentSession | None = None
        self.worker: Any = None  # agent/worker.py's Worker, made with the first session
        self.gossip: GossipAgent | None = None  # started by the first session message that carries keys
        self.node_object: Any = None  # this node's pb.Node from the last session message
        self._lock = asyncio.Lock()
        self._role_task: asyncio.Task[None] | None = None
        self._renew_task: asyncio.Task[None] | None = None
        self._background_join: asyncio.Task[None] | None = None  # an init/join whose wait ended first goes on
        self.register_timeout_s = JOIN_TIMEOUT_S  # how long init/join wait for the session (docker: 20 s)
        self.error = ""
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ queries
    @property
    def active(self) -> bool:
        return self.state is not None

    @property
    def is_manager(self) -> bool:
        return self.state is not None and self.manager is not None

    def tls(self) -> ReloadingTLS:
        return ReloadingTLS(self.paths.ca, self.paths.cert, self.paths.key)

    def ops(self) -> NodeOps:
        """The manager's operations for the local API; 503 with Docker's message on a non-manager."""
        if self.state is None:
            raise Unavailable(NOT_IN_SWARM)
        if self.manager is None:
            raise Unavailable(WORKER_NOT_MANAGER)
        return self.manager.ops

    async def on_leader(self, method: str, request: Any) -> Any:
        assert self.manager is not None
        return await self.manager.forward.call(method, request)

    # ------------------------------------------------------------------ lifecycle
    async def restore(self) -> None:
        """At daemon start: a node that was in a swarm comes back in it (manager, session, renewal)."""
        st = self.paths.load()
        if st is None:
            return
        self.state = st
        try:
            if st.role == "manager":
                await self._start_manager(founding=False, members={})
            self._start_agent()
            await self._joined_hook()
        except Exception as e:  # the node keeps serving its containers; docker info shows the error
            self.error = str(e)
            log.exception("swarm: could not resume: %s", e)

    async def close(self) -> None:
        """Daemon shutdown: stop everything, keep the state (the node is still in the swarm)."""
        for t in (self._role_task, self._renew_task, self._background_join):
            if t is not None:
                t.cancel()
        await self._stop_gossip()
        if self.session is not None:
            await self.session.stop()
            self.session = None
        if self.worker is not None:
            await self.worker.close()
            self.worker = None
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None

    async def _joined_hook(self) -> None:
        freeze_long_lived()  # the swarm's components are made now and live as long as the daemon
        if self.on_joined is not None:
            try:
                r = self.on_joined()
                if inspect.isawaitable(r):
                    await r
            except Exception:
                log.exception("swarm: post-join hook failed")

    # ------------------------------------------------------------------ init
    async def init(self, req: InitRequest) -> str:
        async with self._lock:
            if self.state is not None:
                if req.force_new_cluster and self.state.role == "manager":
                    return await self._force_new_cluster()
                raise Unavailable(ALREADY_IN_SWARM)
            # --force-new-cluster on a node in no swarm: a new swarm, as docker does
            t0 = time.monotonic()
            advertise = advertise_address(req.advertise_addr, req.listen_addr)
            node_id, cluster_id, raft_id = new_id(), new_id(), new_raft_id()
            root = certs.create_root_ca()
            key = certs.new_key_pem()
            expiry = datetime.timedelta(seconds=req.cert_expiry_s) if req.cert_expiry_s else certs.DEFAULT_NODE_CERT_EXPIRY
            cert = certs.sign_csr(root, certs.make_csr(key), node_id, certs.MANAGER_OU, cluster_id, expiry)
            try:
                self._write_certs(root.cert_pem, cert, key)
                self.state = SwarmState(node_id, cluster_id, "manager", req.listen_addr, advertise, [advertise], raft_id)
                secretbox.save_key(self.paths.raft, secretbox.new_key())
                await self._start_manager(founding=True, members={})
                assert self.manager is not None
                await self.manager.wait_leader(JOIN_TIMEOUT_S)
                await self.manager.ops.create_cluster(self._new_cluster(cluster_id, root, req), self._first_node(node_id, raft_id, advertise, req))
                await self.manager.networks.create_ingress()  # the routing mesh's overlay, as swarm init makes it
                self.paths.save(self.state)
            except BaseException:
                await self._undo()
                raise
            self._start_agent()
            await self._wait_registered_or_go_on("init", t0)
            return node_id

    async def _force_new_cluster(self) -> str:
        """swarm init --force-new-cluster on a manager that lost its quorum: restart its raft member from its own
        data as a one-member cluster (uncommitted entries dropped, the other members removed)."""
        st = self.state
        assert st is not None
        if not force_new_cluster_supported():
            raise NotImplemented_("--force-new-cluster needs the raft's force-new-cluster support, not in this build")
        if self.session is not None:
            await self.session.stop()
            self.session = None
        if self.manager is not None:
            await self.manager.stop()
            self.manager = None
        await self._start_manager(founding=False, members={}, force_new_cluster=True)
        assert self.manager is not None
        await self.manager.wait_leader(JOIN_TIMEOUT_S)
        st.managers = [st.advertise_addr]
        self.paths.save(st)
        self._start_agent()
        await self._wait_registered()
        return st.node_id

    def _new_cluster(self, cluster_id: str, root: certs.RootCA, req: InitRequest) -> pb.Cluster:
        c = pb.Cluster(id=cluster_id)
        c.spec.annotations.name = "default"
        c.spec.orchestration.task_history_retention_limit = 5
        c.spec.raft.snapshot_interval = 10000
        c.spec.raft.keep_old_snapshots = 0
        c.spec.raft.log_entries_for_slow_followers = 500
        c.spec.raft.heartbeat_tick = 1
        c.spec.raft.election_tick = 10
        c.spec.dispatcher.heartbeat_period.FromNanoseconds(int((req.heartbeat_s or 5.0) * 1e9))
        c.spec.ca_config.node_cert_expiry.FromNanoseconds(
            int((req.cert_expiry_s or certs.DEFAULT_NODE_CERT_EXPIRY.total_seconds()) * 1e9))
        c.root_ca.ca_cert = root.cert_pem
        c.root_ca.ca_key = root.key_pem
        c.root_ca.ca_cert_hash = tokens.ca_digest_hex(root.cert_pem)
        c.root_ca.join_tokens.worker = tokens.new_token(root.cert_pem)
        c.root_ca.join_tokens.manager = tokens.new_token(root.cert_pem)
        c.subnet_size = req.subnet_size or 24
        c.default_address_pool.extend(req.default_addr_pool or ["10.0.0.0/8"])
        c.vxlan_udp_port = 4789
        gossip_keys.add_key(c, datetime.datetime.now(datetime.timezone.utc))  # the first gossip key (netdb)
        return c

    def _first_node(self, node_id: str, raft_id: int, advertise: str, req: InitRequest) -> pb.Node:
        n = pb.Node(id=node_id, role=Role.MANAGER)
        n.spec.desired_role = Role.MANAGER
        n.spec.membership = pb.NodeSpec.ACCEPTED
        n.spec.availability = req.availability
        n.description.CopyFrom(describe(self.hostname(), self.engine_version))
        n.status.state = pb.NodeStatus.UNKNOWN
        n.manager_status.raft_id = raft_id
        n.manager_status.addr = advertise
        return n

    def _write_certs(self, ca: bytes, cert: bytes, key: bytes) -> None:
        self.paths.write_secret(self.paths.ca, ca)
        self.paths.write_secret(self.paths.key, key)
        self.paths.write_secret(self.paths.cert, cert)

    async def _undo(self) -> None:
        """A failed init/join leaves nothing: no manager, no session, no files."""
        await self._stop_gossip()
        if self.session is not None:
            await self.session.stop()
            self.session = None
        if self.manager is not None:
            with contextlib.suppress(Exception):
                await self.manager.stop()
            self.manager = None
        self.state = None
        self.paths.wipe()

    # ------------------------------------------------------------------ join
    async def join(self, req: JoinRequest) -> None:
        async with self._lock:
            if self.state is not None:
                raise Unavailable(ALREADY_IN_SWARM)
            if not req.token:
                raise InvalidParameter(tokens.NEEDS_VALID_TOKEN)
            try:
                tokens.parse_token(req.token)
            except ValueError:
                raise InvalidParameter(tokens.INVALID_TOKEN) from None
            t0 = time.monotonic()
            host, port = parse_remote(req.remote, DEFAULT_PORT)
            remote = f"{host}:{port}"
            advertise = advertise_address(req.advertise_addr, req.listen_addr, host)
            ca_pem = await asyncio.to_thread(remote_root_ca, bootstrap_addr(remote), req.token, remote)
            key = certs.new_key_pem()
            resp = await self._issue(remote, ca_pem, key, req)
            try:
                certs.verify_issued_by(certs.RootCA(ca_pem, b""), resp.certificate)
            except certs.CertificateError as e:
                raise SystemError_(str(e)) from None
            try:
                self._write_certs(ca_pem, resp.certificate, key)
                role = "manager" if resp.role == Role.MANAGER else "worker"
                self.state = SwarmState(resp.node_id, resp.cluster_id, role, req.listen_addr, advertise, [remote], 0)
                if role == "manager":
                    await self._join_raft(remote)
                self.paths.save(self.state)
                self._start_agent()
            except BaseException:
                await self._undo()
                raise
            # From here the swarm knows this node (its certificate, and a manager's raft membership): undoing it now
            # would leave that behind, and a retried join would add a second node (a second raft member: a stuck
            # join of two managers costs the quorum). So a wait that ends first lets the join go on, as docker says.
            await self._wait_registered_or_go_on("join", t0)

    async def _wait_registered_or_go_on(self, what: str, t0: float) -> None:
        """The end of init/join: the node's session registered, then the post-join hook. When the wait ends first
        (Docker's "Timeout was reached before node joined"), both still happen in the background."""
        try:
            await self._wait_registered()
        except Unavailable:
            self._background_join = asyncio.create_task(self._finish_in_background(what, t0), name=f"swarm-{what}-on")
            raise
        self.timings[what] = time.monotonic() - t0
        await self._joined_hook()

    async def _finish_in_background(self, what: str, t0: float) -> None:
        session = self.session
        if session is None:
            return
        await session.registered.wait()
        if self.session is session:  # not left in the meantime
            self.timings[what] = time.monotonic() - t0
            log.info("swarm: %s went through in the background after %.1f s", what, self.timings[what])
            await self._joined_hook()

    async def _issue(self, remote: str, ca_pem: bytes, key: bytes, req: JoinRequest) -> swarm_pb2.IssueNodeCertificateResponse:
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        opts = [("grpc.ssl_target_name_override", certs.TLS_SERVER_NAME)]
        async with grpc.aio.secure_channel(bootstrap_addr(remote), creds, options=opts) as ch:
            stub = swarm_pb2_grpc.NodeCAStub(ch)
            try:
                return await stub.IssueNodeCertificate(swarm_pb2.IssueNodeCertificateRequest(
                    csr=certs.make_csr(key), token=req.token, availability=req.availability), timeout=JOIN_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                raise error_from_rpc(e) from None

    async def _join_raft(self, via: str) -> None:
        """Ask the leader (through `via`) to add this node to the raft, then start the manager as a new member."""
        assert self.state is not None
        async with open_secure(via, self.tls()) as ch:
            try:
                resp = await swarm_pb2_grpc.RaftMembershipStub(ch).Join(
                    swarm_pb2.JoinRaftRequest(addr=self.state.advertise_addr), timeout=JOIN_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                raise error_from_rpc(e) from None
        self.state.raft_id = resp.raft_id
        self.paths.wipe_raft()
        if resp.secrets_key:
            secretbox.save_key(self.paths.raft, resp.secrets_key)
        await self._start_manager(founding=False, members={m.raft_id: (m.node_id, m.addr) for m in resp.members})

    async def _start_manager(self, founding: bool, members: dict[int, tuple[str, str]], force_new_cluster: bool = False) -> None:
        st = self.state
        assert st is not None
        cfg = SwarmManagerConfig(node_id=st.node_id, raft_id=st.raft_id, listen=st.listen_addr, advertise=st.advertise_addr,
                                 data_dir=self.paths.raft, tls=self.tls(), founding=founding, members=members,
                                 force_new_cluster=force_new_cluster)
        mgr = SwarmManager(cfg)
        await mgr.start()
        self.manager = mgr
        log.info("swarm: manager %s (raft %x) serving on %s", st.node_id, st.raft_id, st.listen_addr)

    def _start_agent(self) -> None:
        st = self.state
        assert st is not None
        desc = describe(self.hostname(), self.engine_version)
        on_session = None
        if self.engine is not None:
            from shoal.swarm.worker_glue import session_worker

            on_session = session_worker(self)
        self.session = AgentSession(self.tls(), self._manager_addrs, desc, self._on_message, on_session)
        self.session.start()
        if self._renew_task is None or self._renew_task.done():
            self._renew_task = asyncio.create_task(self._renew_loop(), name="swarm-cert-renewal")

    def _manager_addrs(self) -> list[str]:
        st = self.state
        if st is None:
            return []
        addrs = list(st.managers)
        if st.role == "manager" and st.advertise_addr in addrs:  # our own dispatcher first when we are a manager
            addrs.remove(st.advertise_addr)
            addrs.insert(0, st.advertise_addr)
        return addrs

    async def _wait_registered(self) -> None:
        assert self.session is not None
        try:
            await asyncio.wait_for(self._joined(), self.register_timeout_s)
        except asyncio.TimeoutError:
            raise Unavailable(JOIN_GOES_ON) from None

    async def _joined(self) -> None:
        """The node's session registered and, on a manager, its store caught up with the leader's: a command run
        on a new manager right after its join reads what the cluster had (seen before: `network inspect` of a
        network made just before on another manager said "not found"; the node's own certificate was refused)."""
        session, manager = self.session, self.manager
        assert session is not None
        await session.registered.wait()
        if manager is not None:
            await manager.caught_up()

    # ------------------------------------------------------------------ session messages
    def _on_message(self, msg: swarm_pb2.SessionMessage) -> None:
        st = self.state
        if st is None:
            return
        if msg.node.id == st.node_id:
            self.node_object = msg.node  # wire12: its ingress attachment (shoal/swarm/ingress_glue.py)
        managers = [m.addr for m in msg.managers if m.addr]
        if managers and managers != st.managers:
            st.managers = managers
            self.paths.save(st)
        want = "manager" if msg.node.role == Role.MANAGER else "worker"
        if msg.node.id == st.node_id and want != st.role and (self._role_task is None or self._role_task.done()):
            self._role_task = asyncio.create_task(self._change_role(want), name="swarm-role-change")
        self._on_gossip_keys(msg)
        if self.gossip is not None:  # heal: the managers' DOWN nodes stop counting as VIP/mesh/DNS backends at once
            self.gossip.set_down_nodes(msg.down_nodes)

    # ------------------------------------------------------------------ gossip (shoal/swarm/gossip_agent.py)
    def _on_gossip_keys(self, msg: swarm_pb2.SessionMessage) -> None:
        st = self.state
        ring = key_ring(msg.network_keys, msg.network_key_lamport, msg.network_key_primary)
        if st is None or ring is None:
            return
        if self.gossip is None:
            self.gossip = GossipAgent(st.node_id, st.advertise_addr.rpartition(":")[0].strip("[]"), self._gossip_seeds)
        self.gossip.on_keys(ring)
        if self.engine is not None:  # the overlay driver, when enabled already (shoal/swarm/overlay_gossip.py)
            overlay_gossip.ensure_wired(self.engine)

    def _gossip_seeds(self) -> list[str]:
        """The managers; on a manager also every node it knows (a restarted lone manager must find the workers)."""
        seeds = list(self.state.managers) if self.state is not None else []
        if self.manager is not None:
            with contextlib.suppress(Exception):
                seeds += [n.status.addr for n in self.manager.raft.store.view().list("node") if n.status.addr]
        return seeds

    async def _stop_gossip(self, leave: bool = False) -> None:
        g, self.gossip = self.gossip, None
        if g is not None:
            await (g.leave() if leave else g.stop())

    async def _change_role(self, want: str) -> None:
        async with self._lock:
            st = self.state
            if st is None or st.role == want:
                return
            log.info("swarm: node %s becomes a %s", st.node_id, want)
            try:
                if want == "worker":
                    if self.manager is not None:
                        await self.manager.stop()
                        self.manager = None
                    self.paths.wipe_raft()
                    st.role, st.raft_id = "worker", 0
                    self.paths.save(st)
                    await self._renew()
                else:
                    await self._renew()
                    st.role = "manager"
                    via = self.session.manager_addr if self.session and self.session.manager_addr else st.managers[0]
                    await self._join_raft(via)
                    self.paths.save(st)
            except Exception as e:
                log.exception("swarm: role change to %s failed: %s", want, e)
                if want == "manager":
                    st.role = "worker"
                    st.raft_id = 0

    # ------------------------------------------------------------------ certificates
    async def _renew(self) -> None:
        """A new key and certificate from any manager's CA, shown our current certificate (role from the store)."""
        st = self.state
        assert st is not None
        key = certs.new_key_pem()
        last: Exception | None = None
        for addr in self._manager_addrs():
            try:
                async with open_secure(addr, self.tls()) as ch:
                    resp = await swarm_pb2_grpc.NodeCAStub(ch).IssueNodeCertificate(
                        swarm_pb2.IssueNodeCertificateRequest(csr=certs.make_csr(key)), timeout=10)
            except grpc.aio.AioRpcError as e:
                last = e
                continue
            certs.verify_issued_by(certs.RootCA(self.paths.ca.read_bytes(), b""), resp.certificate)
            self.paths.write_secret(self.paths.key, key)
            self.paths.write_secret(self.paths.cert, resp.certificate)
            log.info("swarm: node certificate renewed (%s)", certs.identity(resp.certificate).role_ou)
            return
        raise Unavailable(f"certificate renewal failed: {last}")

    async def _renew_loop(self) -> None:
        while self.state is not None:
            try:
                who = certs.identity(self.paths.cert.read_bytes())
                delay = certs.renewal_delay(who.not_before, who.not_after, datetime.datetime.now(datetime.timezone.utc))
            except (OSError, certs.CertificateError):
                delay = 5.0
            await asyncio.sleep(max(0.5, delay))
            try:
                async with self._lock:
                    if self.state is not None:
                        await self._renew()
            except Exception as e:  # noqa: BLE001 - retry soon; the certificate is still valid for a while
                log.warning("swarm: %s", e)
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ leave
    async def leave(self, force: bool) -> None:
        async with self._lock:
            st = self.state
            if st is None:
                raise Unavailable(NOT_PART)
            if st.role == "manager" and self.manager is not None and not force:
                voters = list(self.manager.raft.node.voters) if self.manager.raft.node else []
                n = len(voters)
                if n <= 1:
                    raise Unavailable("You are attempting to leave the swarm on a node that is participating as a manager. "
                                      "Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.")
                raise Unavailable(
                    "You are attempting to leave the swarm on a node that is participating as a manager. "
                    f"Removing this node leaves {n - 1} managers out of a possible {n}. Without a Raft quorum your swarm "
                    "will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it "
                    "with `--force-new-cluster`. Use `--force` to suppress this message.")
            if self.engine is not None:  # containers off the swarm's networks, attachments released (overlay_leave.py)
                from shoal.swarm import overlay_leave

                await overlay_leave.before_leave(self.engine)
            if st.role == "manager" and self.manager is not None:
                await self._leave_raft(st.node_id)
            await self._stop_gossip(leave=True)  # the others drop this node's entries now, not after a reap
            await self.close()
            if self.engine is not None:  # as moby: the node's task containers go with its membership
                from shoal.swarm.worker_glue import remove_task_containers

                await remove_task_containers(self.engine, st.node_id)
            self.state = None
            self.paths.wipe()
            if self.engine is not None:  # the ingress sandbox, VIP tables, swarm network copies
                await overlay_leave.after_leave(self.engine)

    async def _leave_raft(self, node_id: str) -> None:
        """A manager forced out demotes itself first, so its raft member goes with it: swarm leaves it a voter that
        never answers again (Down/Unreachable until someone demotes it), and 3 managers minus one forced out then
        lose quorum at the next failure. Best effort: with no quorum the member stays, as it would in swarm."""
        assert self.manager is not None
        try:
            node = await asyncio.wait_for(self.manager.ops.get_node(node_id), LEAVE_DEMOTE_TIMEOUT_S)
            if node.manager_status.raft_id not in self.manager.ops._voters() or len(self.manager.ops._voters()) <= 1:
                return
            spec = pb.NodeSpec()
            spec.CopyFrom(node.spec)
            spec.desired_role = pb.NodeSpec.WORKER
            req = swarm_pb2.UpdateNodeRequest(node_id=node_id, node_version=pb.Version(index=node.meta.version.index), spec=spec)
            try:
                await asyncio.wait_for(self.manager.ops.update_node(node_id, node.meta.version.index, spec), LEAVE_DEMOTE_TIMEOUT_S)
            except NotLeaderHere:
                await asyncio.wait_for(self.on_leader("UpdateNode", req), LEAVE_DEMOTE_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - --force means leave anyway
            log.warning("swarm leave --force: could not remove this manager from the raft first: %s", e)

    # ------------------------------------------------------------------ docker info
    def info_section(self) -> dict[str, Any]:
        st = self.state
        if st is None:
            return {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                    "Error": self.error, "RemoteManagers": None}
        out: dict[str, Any] = {
            "NodeID": st.node_id,
            "NodeAddr": st.advertise_addr.rpartition(":")[0],
            # moby's nodeRunner: "pending" until the node's first session came up (a join going on in the background,
            # a restarted daemon reconnecting), "active" from then on.
            "LocalNodeState": "active" if self.session is not None and self.session.registered.is_set() else "pending",
            "ControlAvailable": self.manager is not None,
            "Error": self.error,
            "RemoteManagers": [],
        }
        if self.manager is not None:
            view = self.manager.raft.store.view()
            nodes = view.list("node")
            mgrs = [n for n in nodes if n.role == Role.MANAGER]
            out["RemoteManagers"] = [{"NodeID": n.id, "Addr": n.manager_status.addr} for n in mgrs if n.manager_status.addr]
            out["Nodes"] = len(nodes)
            out["Managers"] = len(mgrs)
            clusters = view.list("cluster")
            if clusters:
                from shoal.api.swarm_json import cluster_info_json

                out["Cluster"] = cluster_info_json(clusters[0])
        else:
            out["RemoteManagers"] = [{"NodeID": "", "Addr": a} for a in st.managers]
        return out
