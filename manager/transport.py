"""gRPC transport between managers: Raft messages <-> protobuf, one stream per peer, chunked snapshots.
Used by manager/raftnode.py (the shell drives the sans-IO core in manager/raft); wire schema in proto/raft.proto."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from manager.raft.core import RaftError
from manager.raft.wirecheck import Rpc, check_message
from manager.raft.messages import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from proto import raft_pb2

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 << 20  # DESIGN §6: gRPC max message 4 MiB
SNAPSHOT_CHUNK_BYTES = 4 << 20
_CHUNK_DATA_BYTES = SNAPSHOT_CHUNK_BYTES - (64 << 10)  # room for the header in the first chunk
_BATCH_BYTES = 3 << 20  # a batch stays well under the 4 MiB cap
_QUEUE_LIMIT = 10_000  # messages waiting for one peer; Raft tolerates the loss of the rest
BACKOFF_START = 0.05
BACKOFF_CAP = 1.0
SERVICE = "shoal.v1.Raft"
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]
CLUSTER_ID_HEADER = "shoal-cluster-id"  # etcd's X-Etcd-Cluster-ID: streams between two clusters are refused
SENDER_ADDR_HEADER = "shoal-raft-addr"  # the sender's advertised address: a reply path for a member that does not know it yet
TLS_SERVER_NAME = "shoal-manager"  # managers' certificates carry this DNS name (swarm uses swarm-manager)


class CodecError(ValueError):
    """A protobuf message that does not describe a valid Raft message."""


# ---------------------------------------------------------------------------------- codec
def entry_to_pb(e: Entry) -> raft_pb2.RaftEntry:
    return raft_pb2.RaftEntry(index=e.index, term=e.term, kind=int(e.kind), data=e.data)


_ENTRY_KINDS = {int(k): k for k in EntryKind}  # a dict lookup: EntryKind(n) costs microseconds per entry
_MESSAGE_TYPES = {int(t): t for t in MessageType}


def entry_from_pb(pb: raft_pb2.RaftEntry) -> Entry:
    kind = _ENTRY_KINDS.get(pb.kind)
    if kind is None:
        raise CodecError(f"invalid entry kind {pb.kind} at index {pb.index}")
    return Entry(pb.index, pb.term, kind, pb.data)


def snapshot_to_pb(s: Snapshot, with_data: bool = True) -> raft_pb2.RaftSnapshot:
    cs = raft_pb2.RaftConfState(voters=s.meta.conf_state.voters, removed=s.meta.conf_state.removed)
    meta = raft_pb2.RaftSnapshotMeta(index=s.meta.index, term=s.meta.term, conf_state=cs)
    return raft_pb2.RaftSnapshot(meta=meta, data=s.data if with_data else b"")


def snapshot_from_pb(pb: raft_pb2.RaftSnapshot) -> Snapshot:
    cs = ConfState(tuple(pb.meta.conf_state.voters), tuple(pb.meta.conf_state.removed))
    return Snapshot(SnapshotMeta(pb.meta.index, pb.meta.term, cs), pb.data)


def message_to_pb(m: Message, with_snapshot_data: bool = True) -> raft_pb2.RaftMessage:
    pb = raft_pb2.RaftMessage(
        type=int(m.type),
        to=m.to,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        entries=[entry_to_pb(e) for e in m.entries],
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
    )
    setattr(pb, "from", m.from_)  # `from` is a Python keyword
    if m.snapshot is not None:
        pb.snapshot.CopyFrom(snapshot_to_pb(m.snapshot, with_snapshot_data))
    return pb


def message_from_pb(pb: raft_pb2.RaftMessage) -> Message:
    kind = _MESSAGE_TYPES.get(pb.type)
    if kind is None:
        raise CodecError(f"invalid raft message type {pb.type}")
    sender = getattr(pb, "from")
    if sender == 0:
        raise CodecError(f"raft message {kind.name} has no sender")
    if kind == MessageType.SNAP and not pb.HasField("snapshot"):
        raise CodecError("raft message SNAP carries no snapshot")
    return Message(
        type=kind,
        to=pb.to,
        from_=sender,
        term=pb.term,
        log_term=pb.log_term,
        index=pb.index,
        entries=list(map(entry_from_pb, pb.entries)),
        commit=pb.commit,
        reject=pb.reject,
        reject_hint=pb.reject_hint,
        snapshot=snapshot_from_pb(pb.snapshot) if pb.HasField("snapshot") else None,
        context=pb.context,
    )


def split_snapshot(m: Message, chunk_bytes: int = _CHUNK_DATA_BYTES) -> list[raft_pb2.SnapshotChunk]:
    """A SNAP message as chunks: the header (snapshot without data) first, then the data in pieces."""
    assert m.snapshot is not None
    data = m.snapshot.data
    pieces = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    chunks = [raft_pb2.SnapshotChunk(data=p) for p in pieces]
    chunks[0].message.CopyFrom(message_to_pb(m, with_snapshot_data=False))
    return chunks


def join_snapshot(chunks: Iterable[raft_pb2.SnapshotChunk]) -> Message:
    """Reassemble split_snapshot()'s chunks into the SNAP message."""
    it = iter(chunks)
    first = next(it, None)
    if first is None or not first.HasField("message"):
        raise CodecError("snapshot stream does not start with its message")
    m = message_from_pb(first.message)
    if m.type != MessageType.SNAP or m.snapshot is None:
        raise CodecError(f"snapshot stream carries a {m.type.name} message, not SNAP")
    data = bytearray(first.data)
    for c in it:
        data += c.data
    m.snapshot = Snapshot(m.snapshot.meta, bytes(data))
    return m


def batch_messages(msgs: Iterable[Message], limit: int = _BATCH_BYTES) -> list[raft_pb2.RaftBatch]:
    """Pack messages into batches that stay under `limit` bytes (one big message still gets a batch)."""
    batches: list[raft_pb2.RaftBatch] = []
    cur = raft_pb2.RaftBatch()
    size = 0
    for m in msgs:
        pb = message_to_pb(m)
        n = pb.ByteSize()
        if cur.messages and size + n > limit:
            batches.append(cur)
            cur, size = raft_pb2.RaftBatch(), 0
        cur.messages.append(pb)
        size += n
    if cur.messages:
        batches.append(cur)
    return batches


# ---------------------------------------------------------------------------------- TLS
@dataclass(slots=True, frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), self.key.read_bytes(), self.cert.read_bytes())


MANAGER_OU = "swarm-manager"  # swarmkit's role OU: a manager's certificate says CN=<node id>, OU=swarm-manager


class IdentityError(Exception):
    """The peer's certificate does not name a manager."""


def certificate_member_id(pem: bytes) -> int:
    """The raft member id a manager certificate names: CN=<id>, OU=swarm-manager (swarmkit's layout)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    subject = x509.load_pem_x509_certificate(pem).subject
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    ous = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if MANAGER_OU not in ous:
        raise IdentityError(f"certificate {subject.rfc4514_string()} is not a manager's (OU is not {MANAGER_OU})")
    if len(cns) != 1 or not isinstance(cns[0], str) or not cns[0].isdigit() or int(cns[0]) <= 0:
        raise IdentityError(f"certificate {subject.rfc4514_string()} does not name a raft member id in its CN")
    return int(cns[0])


def open_channel(addr: str, tls: TLSFiles | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(addr, options=GRPC_OPTIONS)
    opts = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
    return grpc.aio.secure_channel(addr, tls.channel_credentials(), options=opts)


# ---------------------------------------------------------------------------------- server
class RaftHost:
    """What the transport needs from the manager shell (RaftManager implements it)."""

    node_id: int
    tls: TLSFiles | None  # set: every peer must show a manager certificate naming the member it speaks for

    def member_error(self, sender: int, reply_addr: str = "", same_cluster: bool = False) -> str | None:
        """None: accept messages from sender. reply_addr: the address its stream advertises; same_cluster: its
        stream names this member's cluster (a member added by a commit not applied here yet)."""
        raise NotImplementedError

    @property
    def cluster_id(self) -> str:  # "" until known (a joining member before its first snapshot)
        raise NotImplementedError

    def membership(self) -> raft_pb2.MembershipResponse:
        raise NotImplementedError

    def deliver(self, msgs: list[Message]) -> None:
        raise NotImplementedError

    async def propose_forwarded(self, req: raft_pb2.ProposeRequest) -> raft_pb2.ProposeResponse:
        raise NotImplementedError


def _looks_like_addr(addr: str) -> bool:
    """host:port with a port number: anything else in the header is ignored, never dialled."""
    host, sep, port = addr.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536) and all(c.isprintable() and not c.isspace() for c in addr)


def _identity(b: bytes) -> bytes:
    return b


class RaftServicer:
    """The Raft service; requests are parsed here (raw bytes in) so garbage gets INVALID_ARGUMENT."""

    def __init__(self, host: RaftHost) -> None:
        self.host = host
        self.rejected = 0  # streams and proposals refused (garbage, unknown member, wrong identity)
        self.invalid = 0  # messages dropped by wirecheck

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Step": grpc.stream_unary_rpc_method_handler(self.step, _identity, _ser),
                "StreamSnapshot": grpc.stream_unary_rpc_method_handler(self.stream_snapshot, _identity, _ser),
                "Propose": grpc.unary_unary_rpc_method_handler(self.propose, _identity, _ser),
                "Membership": grpc.unary_unary_rpc_method_handler(self.membership, _identity, _ser),
            },
        )

    async def _reject(self, ctx: grpc.aio.ServicerContext, code: grpc.StatusCode, text: str) -> None:
        self.rejected += 1
        log.warning("raft transport: rejected %s: %s", ctx.peer(), text)
        await ctx.abort(code, text)

    async def _identity(self, ctx: grpc.aio.ServicerContext) -> int | None:
        """With TLS, the member id the peer's certificate names (the stream is refused if it names none)."""
        if self.host.tls is None:
            return None
        pems = ctx.auth_context().get("x509_pem_cert") or []
        try:
            if not pems:
                raise IdentityError("no client certificate")
            # a swarm manager names peers by node id (manager/nodes_manager.py maps it to the raft member)
            resolve = getattr(self.host, "member_for_certificate", None)
            return resolve(pems[0]) if resolve is not None else certificate_member_id(pems[0])
        except IdentityError as e:
            await self._reject(ctx, grpc.StatusCode.PERMISSION_DENIED, str(e))
        except ValueError as e:  # a certificate cryptography cannot parse (gRPC verified it, so unlikely)
            await self._reject(ctx, grpc.StatusCode.PERMISSION_DENIED, f"unreadable client certificate: {e}")
        raise AssertionError("unreachable")

    async def _same_cluster(self, ctx: grpc.aio.ServicerContext) -> tuple[str, bool]:
        """(the sender's advertised address, whether its stream names our cluster); refuses another cluster's."""
        md = dict(ctx.invocation_metadata() or ())
        theirs = md.get(CLUSTER_ID_HEADER, "")
        ours = self.host.cluster_id
        if theirs and ours and theirs != ours:
            await self._reject(ctx, grpc.StatusCode.FAILED_PRECONDITION,
                               f"cluster ID mismatch: the sender belongs to cluster {theirs}, this member to cluster {ours}")
        addr = md.get(SENDER_ADDR_HEADER, "")
        if not isinstance(addr, str) or len(addr) > 255 or not _looks_like_addr(addr):
            addr = ""
        return addr, bool(theirs and ours and theirs == ours)

    async def membership(self, raw: bytes, ctx: grpc.aio.ServicerContext) -> raft_pb2.MembershipResponse:
        await self._identity(ctx)
        return self.host.membership()

    def _verdict(self, m: Message, rpc: Rpc, identity: int | None, stream: tuple[str, bool] = ("", False)) -> tuple[grpc.StatusCode, str] | bool:
        """True: step m; False: drop it (malformed for this RPC); a status: end the stream (the sender is
        not who it may be). Synchronous: it runs for every message of every batch."""
        why = check_message(m, self.host.node_id, rpc)
        if why is not None:
            self.invalid += 1
            log.warning("raft %d: dropped a message from member %d: %s", self.host.node_id, m.from_, why)
            return False
        if identity is not None and m.from_ != identity:
            return (grpc.StatusCode.PERMISSION_DENIED,
                    f"raft message from member {m.from_} on a connection authenticated as member {identity}")
        err = self.host.member_error(m.from_, *stream)
        if err is not None:
            return grpc.StatusCode.FAILED_PRECONDITION, err
        return True

    async def _admit(self, ctx: grpc.aio.ServicerContext, msgs: list[Message], rpc: Rpc, identity: int | None,
                     stream: tuple[str, bool] = ("", False)) -> list[Message]:
        """The messages of a batch the core may step; ends the stream on a sender that is not who it may be."""
        good = []
        for m in msgs:
            verdict = self._verdict(m, rpc, identity, stream)
            if verdict is True:
                good.append(m)
            elif verdict is not False:
                await self._reject(ctx, *verdict)
        return good

    async def step(self, requests: object, ctx: grpc.aio.ServicerContext) -> raft_pb2.StepResponse:
        identity = await self._identity(ctx)
        stream = await self._same_cluster(ctx)
        async for raw in requests:  # type: ignore[attr-defined]
            try:
                batch = raft_pb2.RaftBatch.FromString(raw)
                msgs = [message_from_pb(pb) for pb in batch.messages]
            except (DecodeError, CodecError) as e:
                await self._reject(ctx, grpc.StatusCode.INVALID_ARGUMENT, f"invalid raft batch: {e}")
                raise AssertionError("unreachable")
            good = await self._admit(ctx, msgs, Rpc.STEP, identity, stream)
            if good:
                self.host.deliver(good)
        return raft_pb2.StepResponse()

    async def stream_snapshot(self, requests: object, ctx: grpc.aio.ServicerContext) -> raft_pb2.StepResponse:
        identity = await self._identity(ctx)
        stream = await self._same_cluster(ctx)
        chunks: list[raft_pb2.SnapshotChunk] = []
        try:
            async for raw in requests:  # type: ignore[attr-defined]
                chunks.append(raft_pb2.SnapshotChunk.FromString(raw))
                if len(chunks) == 1:
                    # check the sender and the header before taking in megabytes from it
                    if not await self._admit(ctx, [join_snapshot(chunks[:1])], Rpc.SNAPSHOT, identity, stream):
                        await self._reject(ctx, grpc.StatusCode.INVALID_ARGUMENT, "invalid raft snapshot: dropped")
            m = join_snapshot(chunks)
        except (DecodeError, CodecError) as e:
            await self._reject(ctx, grpc.StatusCode.INVALID_ARGUMENT, f"invalid raft snapshot: {e}")
            raise AssertionError("unreachable")
        self.host.deliver([m])
        return raft_pb2.StepResponse()

    async def propose(self, raw: bytes, ctx: grpc.aio.ServicerContext) -> raft_pb2.ProposeResponse:
        try:
            req = raft_pb2.ProposeRequest.FromString(raw)
        except DecodeError as e:
            await self._reject(ctx, grpc.StatusCode.INVALID_ARGUMENT, f"invalid proposal: {e}")
            raise AssertionError("unreachable")
        identity = await self._identity(ctx)
        stream = await self._same_cluster(ctx)
        sender = getattr(req, "from")
        if identity is not None and sender != identity:
            await self._reject(ctx, grpc.StatusCode.PERMISSION_DENIED,
                               f"proposal from member {sender} on a connection authenticated as member {identity}")
        err = self.host.member_error(sender, *stream)
        if err is not None:
            await self._reject(ctx, grpc.StatusCode.FAILED_PRECONDITION, err)
        if not req.request_id:
            await self._reject(ctx, grpc.StatusCode.INVALID_ARGUMENT, "invalid proposal: no request id")
        try:
            return await self.host.propose_forwarded(req)
        except RaftError as e:  # not the leader (any more), timed out: the follower retries or reports
            await ctx.abort(grpc.StatusCode.UNAVAILABLE, str(e))
            raise AssertionError("unreachable")


def _ser(msg: object) -> bytes:
    return msg.SerializeToString()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- client
class Peer:
    """One remote manager: a channel, a long-lived Step stream fed from a queue, snapshot sends."""

    def __init__(self, owner: "Transport", node_id: int, addr: str) -> None:
        self.owner = owner
        self.node_id = node_id
        self.addr = addr
        self.channel = open_channel(addr, owner.tls)
        self.queue: deque[Message] = deque()
        self.wake = asyncio.Event()
        self.dropped = 0
        self.failures = 0
        self.task = asyncio.create_task(self._run(), name=f"raft-peer-{node_id}")
        self.snap_task: asyncio.Task[None] | None = None

    def enqueue(self, m: Message) -> None:
        if len(self.queue) >= _QUEUE_LIMIT:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(m)
        self.wake.set()

    def send_snapshot(self, m: Message) -> None:
        if self.snap_task is not None and not self.snap_task.done():
            self.owner.on_snapshot_result(self.node_id, failed=True)  # one snapshot at a time
            return
        self.snap_task = asyncio.create_task(self._send_snapshot(m), name=f"raft-snap-{self.node_id}")

    async def _send_snapshot(self, m: Message) -> None:
        call = self.channel.stream_unary(f"/{SERVICE}/StreamSnapshot", request_serializer=_ser, response_deserializer=raft_pb2.StepResponse.FromString)
        try:
            await call(iter(split_snapshot(m)), timeout=60, metadata=self.owner.metadata())
        except (grpc.RpcError, asyncio.TimeoutError) as e:
            log.info("raft transport: snapshot to %d failed: %s", self.node_id, e)
            self.owner.on_snapshot_result(self.node_id, failed=True)
            return
        self.owner.on_snapshot_result(self.node_id, failed=False)

    async def _run(self) -> None:
        backoff = BACKOFF_START
        step = self.channel.stream_unary(f"/{SERVICE}/Step", request_serializer=_ser, response_deserializer=raft_pb2.StepResponse.FromString)
        while True:
            await self.wake.wait()
            call = step(metadata=self.owner.metadata())
            try:
                while True:
                    await self.wake.wait()
                    self.wake.clear()
                    if call.done():
                        await call  # raises the server's status
                        raise ConnectionError("stream ended")
                    msgs = list(self.queue)
                    self.queue.clear()
                    for batch in batch_messages(msgs):
                        await call.write(batch)
                    backoff = BACKOFF_START
            except asyncio.CancelledError:
                call.cancel()
                raise
            except Exception as e:  # grpc.aio errors, InvalidStateError on a dead stream
                call.cancel()
                self.failures += 1
                self.dropped += len(self.queue)
                self.queue.clear()  # stale by the time we reconnect; raft resends what matters
                log.info("raft transport: peer %d at %s unreachable (%s); retry in %.2fs", self.node_id, self.addr, _short(e), backoff)
                self.owner.on_unreachable(self.node_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)

    async def propose(self, req: raft_pb2.ProposeRequest, timeout: float) -> raft_pb2.ProposeResponse:
        call = self.channel.unary_unary(f"/{SERVICE}/Propose", request_serializer=_ser, response_deserializer=raft_pb2.ProposeResponse.FromString)
        return await call(req, timeout=timeout, metadata=self.owner.metadata())

    async def close(self) -> None:
        for t in (self.task, self.snap_task):
            if t is not None:
                t.cancel()
        await self.channel.close()


def _short(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"


class Transport:
    """Sends the core's messages to peers by id. The address book is the shell's, from committed membership
    entries (manager/raftnode.py); nothing a peer sends changes it."""

    def __init__(
        self,
        node_id: int,
        peers: dict[int, str],
        tls: TLSFiles | None = None,
        on_unreachable: Callable[[int], None] | None = None,
        on_snapshot: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.tls = tls
        self.peers: dict[int, str] = dict(peers)
        self._conns: dict[int, Peer] = {}
        self._on_unreachable = on_unreachable or (lambda _id: None)
        self._on_snapshot = on_snapshot or (lambda _id, _failed: None)
        self.unknown_dropped = 0
        self.cluster_id = ""  # set by the shell once known
        self.advertise = ""  # this member's address as the cluster book has it (set by the shell)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md = ((CLUSTER_ID_HEADER, self.cluster_id),) if self.cluster_id else ()
        return md + (((SENDER_ADDR_HEADER, self.advertise),) if self.advertise else ())

    def set_peer(self, node_id: int, addr: str) -> bool:
        """Record a member's address; True if the book changed."""
        if self.peers.get(node_id) == addr:
            return False
        self.peers[node_id] = addr
        old = self._conns.pop(node_id, None)
        if old is not None:
            asyncio.create_task(old.close())
        return True

    def remove_peer(self, node_id: int) -> None:
        self.peers.pop(node_id, None)
        old = self._conns.pop(node_id, None)
        if old is not None:
            asyncio.create_task(old.close())

    def peer(self, node_id: int) -> Peer | None:
        conn = self._conns.get(node_id)
        if conn is None:
            addr = self.peers.get(node_id)
            if addr is None or node_id == self.node_id:
                return None
            conn = self._conns[node_id] = Peer(self, node_id, addr)
        return conn

    def send(self, msgs: list[Message]) -> None:
        for m in msgs:
            conn = self.peer(m.to)
            if conn is None:
                self.unknown_dropped += 1
                if m.type == MessageType.SNAP:
                    self._on_snapshot(m.to, True)
                continue
            if m.type == MessageType.SNAP:
                conn.send_snapshot(m)
            else:
                conn.enqueue(m)

    def on_unreachable(self, node_id: int) -> None:
        self._on_unreachable(node_id)

    def on_snapshot_result(self, node_id: int, failed: bool) -> None:
        self._on_snapshot(node_id, failed)

    async def propose(self, to: int, req: raft_pb2.ProposeRequest, timeout: float) -> raft_pb2.ProposeResponse:
        conn = self.peer(to)
        if conn is None:
            raise ConnectionError(f"no address for raft member {to}")
        return await conn.propose(req, timeout)

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

