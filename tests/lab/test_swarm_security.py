"""Joining a swarm under bad credentials, and certificate renewal: real managers, real gRPC and TLS on loopback
(in-process SwarmNodes, shoal/swarm/node.py). Each refusal has swarm's exact message and leaves nothing behind."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from common.errdefs import InvalidParameter, ShoalError, SystemError_
from manager.ca import certs, tokens
from manager.nodes_manager import bootstrap_addr
from proto import swarm_pb2, swarm_pb2_grpc
from shoal.swarm.node import ALREADY_IN_SWARM, InitRequest, JoinRequest, SwarmNode


def free_pair(host: str) -> int:
    """A port p with p and p+1 free on host (the manager port and the CA's join port)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            p = s.getsockname()[1]
        if p >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind((host, p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


def addr(host: str = "127.0.0.1") -> str:
    return f"{host}:{free_pair(host)}"


async def init(d: Path, name: str, **kw: float) -> tuple[SwarmNode, str]:
    a = addr()
    n = SwarmNode(d / name, lambda: name, "0.1.0")
    await n.init(InitRequest(listen_addr=a, advertise_addr=a, heartbeat_s=kw.get("heartbeat_s", 0.5),
                             cert_expiry_s=kw.get("cert_expiry_s", 0.0)))
    return n, a


def with_cluster(tmp_path: Path, body: Callable[[SwarmNode, str, Path], Awaitable[None]]) -> None:
    """Runs body(manager, its address, dir) against a fresh one-manager swarm, always stopped after."""

    async def main() -> None:
        mgr, a = await init(tmp_path, "m1")
        try:
            await body(mgr, a, tmp_path)
        finally:
            await mgr.close()

    asyncio.run(main())


async def refused_join(d: Path, remote: str, token: str) -> ShoalError:
    j = SwarmNode(d / "joiner", lambda: "joiner", "0.1.0")
    me = addr()
    with pytest.raises(ShoalError) as e:
        await j.join(JoinRequest(remote=remote, token=token, listen_addr=me, advertise_addr=me))
    assert not j.active and j.manager is None and j.session is None
    assert not (d / "joiner" / "swarm").exists()  # no key, certificate or state left behind
    return e.value


async def node_count(mgr: SwarmNode) -> int:
    return len(await mgr.ops().list_nodes())


def test_join_without_a_token_is_refused(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        err = await refused_join(d, a, "")
        assert (type(err), err.message) == (InvalidParameter, "A valid join token is necessary to join this cluster")
        assert await node_count(mgr) == 1

    with_cluster(tmp_path, body)


def test_the_ca_refuses_a_certificate_request_without_a_token(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        ca = mgr.paths.ca.read_bytes()
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
        async with grpc.aio.secure_channel(bootstrap_addr(a), creds, options=[("grpc.ssl_target_name_override", "shoal-manager")]) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await swarm_pb2_grpc.NodeCAStub(ch).IssueNodeCertificate(
                    swarm_pb2.IssueNodeCertificateRequest(csr=certs.make_csr(certs.new_key_pem())), timeout=10)
        assert (e.value.code(), e.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, tokens.NEEDS_VALID_TOKEN)
        assert await node_count(mgr) == 1

    with_cluster(tmp_path, body)


@pytest.mark.parametrize("token", ["SWMTKN-1-abc", "SWMTKN-2-" + "0" * 50 + "-" + "0" * 25, "not-a-token",
                                   "SWMTKN-1-" + "0" * 50 + "-" + "0" * 24])
def test_a_malformed_token_is_refused(tmp_path: Path, token: str) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        err = await refused_join(d, a, token)
        assert (type(err), err.message) == (InvalidParameter, "invalid join token")
        assert await node_count(mgr) == 1

    with_cluster(tmp_path, body)


def test_another_clusters_token_fails_the_ca_fingerprint_check(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        other, _oa = await init(d, "other")
        try:
            other_token = (await other.ops().get_cluster()).root_ca.join_tokens.worker
            expected = tokens.ca_digest_hex(other.paths.ca.read_bytes())
            err = await refused_join(d, a, other_token)
            assert (type(err), err.message) == (SystemError_, f"remote CA does not match fingerprint. Expected: {expected}")
            assert await node_count(mgr) == 1 and await node_count(other) == 1
        finally:
            await other.close()

    with_cluster(tmp_path, body)


def test_a_manager_impersonated_by_another_ca_is_not_trusted(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        impostor, ia = await init(d, "impostor")  # answers at an address the joiner was given, with its own CA
        try:
            token = (await mgr.ops().get_cluster()).root_ca.join_tokens.manager
            expected = tokens.ca_digest_hex(mgr.paths.ca.read_bytes())
            err = await refused_join(d, ia, token)
            assert err.message == f"remote CA does not match fingerprint. Expected: {expected}"
            assert await node_count(impostor) == 1
        finally:
            await impostor.close()

    with_cluster(tmp_path, body)


def test_a_rotated_out_token_is_refused(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        ops = mgr.ops()
        old = (await ops.get_cluster()).root_ca.join_tokens.worker
        c = await ops.get_cluster()
        await ops.update_cluster(c.meta.version.index, None, rotate_worker=True, rotate_manager=False)
        new = (await ops.get_cluster()).root_ca.join_tokens.worker
        assert new != old and tokens.parse_token(new).digest_hex == tokens.parse_token(old).digest_hex
        err = await refused_join(d, a, old)
        assert (type(err), err.message) == (InvalidParameter, "A valid join token is necessary to join this cluster")
        assert await node_count(mgr) == 1

    with_cluster(tmp_path, body)


def test_init_or_join_twice_is_refused(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        with pytest.raises(ShoalError) as e:
            await mgr.init(InitRequest(listen_addr=addr(), advertise_addr="127.0.0.1"))
        assert (e.value.kind.value, e.value.message) == ("unavailable", ALREADY_IN_SWARM)
        token = (await mgr.ops().get_cluster()).root_ca.join_tokens.worker
        with pytest.raises(ShoalError) as e:
            await mgr.join(JoinRequest(remote=a, token=token))
        assert e.value.message == ALREADY_IN_SWARM

    with_cluster(tmp_path, body)


def test_keys_and_certificates_are_private_to_root(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        for p in (mgr.paths.key, mgr.paths.cert, mgr.paths.ca, mgr.paths.state):
            assert oct(os.stat(p).st_mode & 0o777) == "0o600", p

    with_cluster(tmp_path, body)


def test_a_worker_renews_its_certificate_before_it_expires(tmp_path: Path) -> None:
    asyncio.run(renewal(tmp_path))


async def renewal(tmp_path: Path) -> None:
    mgr, a = await init(tmp_path, "m1", cert_expiry_s=6.0)
    w = SwarmNode(tmp_path / "w1", lambda: "w1", "0.1.0")
    try:
        token = (await mgr.ops().get_cluster()).root_ca.join_tokens.worker
        me = addr()
        await w.join(JoinRequest(remote=a, token=token, listen_addr=me, advertise_addr=me))
        first = certs.identity(w.paths.cert.read_bytes())
        assert datetime.timedelta(seconds=6) <= first.not_after - first.not_before <= datetime.timedelta(seconds=7)  # + 10% backdate, whole seconds

        async def renewed() -> certs.NodeIdentity:
            while True:
                cur = certs.identity(w.paths.cert.read_bytes())
                if cur.serial != first.serial:
                    return cur
                await asyncio.sleep(0.1)

        second = await asyncio.wait_for(renewed(), 15)
        assert (second.node_id, second.role_ou, second.cluster_id) == (first.node_id, certs.WORKER_OU, first.cluster_id)
        assert second.not_after > first.not_after
        # past the first certificate's end, the worker still holds a session
        await asyncio.sleep(max(0.0, (first.not_after - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 1.5)
        nodes = {n.description.hostname: n.status.state for n in await mgr.ops().list_nodes()}
        assert nodes["w1"] == 2  # READY
    finally:
        await w.close()
        await mgr.close()


def test_force_new_cluster_recovers_the_last_manager_standing(tmp_path: Path) -> None:
    from manager.nodes_manager import force_new_cluster_supported

    assert force_new_cluster_supported()
    asyncio.run(force_new_cluster(tmp_path))


async def force_new_cluster(d: Path) -> None:
    from manager.controlapi import new_id
    from proto import objects_pb2 as pb

    m1, a1 = await init(d, "m1")
    others: list[SwarmNode] = []
    try:
        token = (await m1.ops().get_cluster()).root_ca.join_tokens.manager
        for name in ("m2", "m3"):
            a = addr()
            x = SwarmNode(d / name, lambda name=name: name, "0.1.0")
            await x.join(JoinRequest(remote=a1, token=token, listen_addr=a, advertise_addr=a))
            others.append(x)
        cfg = pb.Config(id=new_id(), spec=pb.ConfigSpec(annotations=pb.Annotations(name="kept"), data=b"x"))
        await m1.manager.raft.propose(lambda t: t.create("config", cfg))  # type: ignore[union-attr]
        for x in others:
            await x.close()  # two of three managers gone: no quorum
        node_id = await m1.init(InitRequest(force_new_cluster=True))
        assert node_id == m1.state.node_id  # type: ignore[union-attr]
        assert list(m1.manager.raft.node.voters) == [m1.state.raft_id]  # type: ignore[union-attr]
        nodes = {n.description.hostname: (n.manager_status.leader, n.manager_status.reachability)
                 for n in await m1.ops().list_nodes()}
        unreachable = (False, pb.ManagerStatus.UNREACHABLE)
        assert nodes == {"m1": (True, pb.ManagerStatus.REACHABLE), "m2": unreachable, "m3": unreachable}
        names = await m1.manager.raft.read(lambda v: [c.spec.annotations.name for c in v.list("config")])  # type: ignore[union-attr]
        assert names == ["kept"]
    finally:
        await m1.close()
        for x in others:
            await x.close()


def test_joining_an_address_where_no_manager_listens_names_it_and_leaves_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        nowhere = addr()
        err = await refused_join(tmp_path, nowhere, "SWMTKN-1-" + "0" * 50 + "-" + "0" * 25)
        assert err.kind.value == "unavailable"
        assert err.message.startswith(f"could not connect to the manager at {nowhere}: "), err.message

    asyncio.run(main())


def test_a_node_update_with_a_stale_version_or_demoting_the_last_manager_is_refused(tmp_path: Path) -> None:
    from manager.store.errors import StoreError
    from proto import objects_pb2 as pb

    async def settled(ops: object) -> pb.Node:
        # the node's own session writes its record (READY, description) once after init, and the allocator then
        # writes its ingress address; a version read before either write is stale by the time of the update (both
        # seen in CI), so the checks start after them
        for _ in range(200):
            node = (await ops.list_nodes())[0]  # type: ignore[attr-defined]
            if node.status.state == pb.NodeStatus.READY and node.description.hostname and node.attachment.addresses:
                return node
            await asyncio.sleep(0.05)
        raise AssertionError(f"node never READY: {node}")

    async def main() -> None:
        # a long heartbeat: a loaded CI machine must not mark the node down (another write) during the test
        mgr, _ = await init(tmp_path, "m1", heartbeat_s=30.0)
        try:
            await body(mgr)
        finally:
            await mgr.close()

    async def body(mgr: SwarmNode) -> None:
        ops = mgr.ops()
        node = await settled(ops)
        spec = pb.NodeSpec()
        spec.CopyFrom(node.spec)
        spec.availability = pb.NodeSpec.DRAIN
        with pytest.raises(StoreError) as e:
            await ops.update_node(node.id, node.meta.version.index - 1, spec)
        assert (e.value.kind.value, e.value.message) == ("precondition", "update out of sequence")
        spec.availability = pb.NodeSpec.ACTIVE
        spec.desired_role = pb.NodeSpec.WORKER
        with pytest.raises(InvalidParameter) as e2:
            await ops.update_node(node.id, node.meta.version.index, spec)
        assert e2.value.message == "attempting to demote the last manager of the swarm"
        after = (await ops.list_nodes())[0]
        assert (after.spec.availability, after.role, after.meta.version.index) == (
            pb.NodeSpec.ACTIVE, pb.NodeSpec.MANAGER, node.meta.version.index)

    asyncio.run(main())
