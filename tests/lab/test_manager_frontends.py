"""Control API front-end processes (`python -m manager run --client-listen ADDR`, manager/frontend.py): three managers
as real processes on 127.0.0.x; calls through a leader's and a follower's front-end keep the control API's answers,
and a front-end never outlives its manager. Needs no root and no namespaces."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from manager.transport import GRPC_OPTIONS
from proto import control_pb2, control_pb2_grpc, objects_pb2
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.lab
DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: these managers only need loopback addresses, not root."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, tick_ms=50, frontends=1)
    try:
        c.start(3)
        yield c
    finally:
        c.stop_all()


def stub(addr: str) -> tuple[grpc.Channel, control_pb2_grpc.ControlStub]:
    ch = grpc.insecure_channel(addr, options=GRPC_OPTIONS)
    return ch, control_pb2_grpc.ControlStub(ch)


def create_request(name: str) -> control_pb2.CreateConfigRequest:
    return control_pb2.CreateConfigRequest(spec=objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=name), data=b"payload"))


def frontend_pids(c: LocalCluster, member: int) -> list[int]:
    p = c.members[member].proc
    assert p is not None
    return [int(x) for x in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (its parent has not reaped it yet) has exited too
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def wait_until(cond, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_configs_created_through_leader_and_follower_front_ends_are_listed_everywhere(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    follower = next(i for i in sorted(cluster.members) if i != leader)
    ids = {}
    for member, name in ((leader, "via-leader"), (follower, "via-follower")):
        ch, s = stub(cluster.client_addrs[member])
        with ch:
            cfg = s.CreateConfig(create_request(name), timeout=DEADLINE).config
        assert cfg.spec.annotations.name == name and cfg.meta.version.index > 0
        ids[name] = cfg.id
    ch, s = stub(cluster.client_addrs[follower])
    with ch:
        listed = s.ListConfigs(control_pb2.ListConfigsRequest(), timeout=DEADLINE).configs
        got = s.GetConfig(control_pb2.GetConfigRequest(config_id=ids["via-leader"]), timeout=DEADLINE).config
    assert sorted(c.spec.annotations.name for c in listed) == ["via-follower", "via-leader"]
    assert got.spec.annotations.name == "via-leader"


def test_a_front_end_relays_the_control_apis_error_status_and_message(cluster: LocalCluster) -> None:
    leader = cluster.leader()
    ch, s = stub(cluster.client_addrs[leader])
    with ch:
        s.CreateConfig(create_request("taken"), timeout=DEADLINE)
        with pytest.raises(grpc.RpcError) as dup:
            s.CreateConfig(create_request("taken"), timeout=DEADLINE)
        with pytest.raises(grpc.RpcError) as missing:
            s.GetConfig(control_pb2.GetConfigRequest(config_id="nope"), timeout=DEADLINE)
        with pytest.raises(grpc.RpcError) as bad:
            s.CreateConfig(create_request("bad name!"), timeout=DEADLINE)
    assert (dup.value.code(), dup.value.details()) == (grpc.StatusCode.ALREADY_EXISTS, "config taken already exists")
    assert (missing.value.code(), missing.value.details()) == (grpc.StatusCode.NOT_FOUND, "config nope not found")
    assert (bad.value.code(), bad.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]",
    )


def test_a_front_end_exits_when_its_manager_is_killed(cluster: LocalCluster) -> None:
    cluster.leader()
    [pid] = frontend_pids(cluster, 2)
    proc = cluster.members[2].proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)  # the manager alone, not its process group
    proc.wait(timeout=DEADLINE)
    wait_until(lambda: gone(pid), f"front-end {pid} to exit after its manager was killed")
    ch, s = stub(cluster.client_addrs[2])
    with ch, pytest.raises(grpc.RpcError) as e:
        s.Status(control_pb2.StatusRequest(), timeout=2)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_manager_stopped_by_sigterm_stops_its_front_end(cluster: LocalCluster) -> None:
    cluster.leader()
    [pid] = frontend_pids(cluster, 3)
    proc = cluster.members[3].proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=DEADLINE) == 0
    wait_until(lambda: gone(pid), f"front-end {pid} to exit with its manager")


def test_a_taken_client_address_stops_the_manager_with_a_message_naming_it(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from tests.support.cluster import ROOT, free_port

    raft_addr = f"127.0.0.1:{free_port('127.0.0.1')}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        client_addr = f"127.0.0.1:{taken.getsockname()[1]}"
        r = subprocess.run(
            [sys.executable, "-m", "manager", "run", "--id", "1", "--listen", raft_addr, "--peers", f"1={raft_addr}",
             "--data-dir", str(tmp_path / "m1"), "--client-listen", client_addr],
            cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE * 2,
        )
    assert r.returncode == 1
    assert f"control front-end: cannot listen on {client_addr}" in r.stderr
    assert r.stderr.rstrip().endswith(f"manager 1: control front-end exited with status 1 (client address {client_addr})")
    assert not (tmp_path / "m1" / "control.sock").exists()
