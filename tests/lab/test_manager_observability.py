"""The manager's operability: Prometheus metrics at --metrics-addr, gRPC health checking and server
reflection on the manager port. Three `python -m manager run` processes (tests/support LocalCluster)
on 127.0.0.x, each with its own metrics port; needs no root."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proto import control_pb2, control_pb2_grpc, objects_pb2
from tests.support.cluster import ROOT, LocalCluster, Member, free_port

pytestmark = pytest.mark.lab
T = TypeVar("T")
DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: these managers only need loopback addresses, not root."""


@dataclass(slots=True)
class MetricsCluster(LocalCluster):
    """LocalCluster whose member i also serves metrics on 127.0.0.i:<free port>."""

    metrics: dict[int, str] = field(default_factory=dict)

    def _argv(self, m: Member) -> list[str]:
        host = m.addr.rsplit(":", 1)[0]
        addr = self.metrics.setdefault(m.node_id, f"{host}:{free_port(host)}")
        return [*LocalCluster._argv(self, m), "--metrics-addr", addr]


def running_cluster(base: Path) -> Iterator[MetricsCluster]:
    c = MetricsCluster(base, tick_ms=50)
    try:
        c.start(3)
        c.leader()
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsCluster]:
    """Shared by the tests that only read or add configs (starting 3 managers costs seconds)."""
    yield from running_cluster(tmp_path_factory.mktemp("cluster"))


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[MetricsCluster]:
    """For a test that kills a manager."""
    yield from running_cluster(tmp_path)


def wait_for(fn: Callable[[], T | None], what: str, timeout: float = DEADLINE) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = fn()
        except (grpc.RpcError, OSError) as e:
            last, value = e, None
        if value is not None and value is not False:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def scrape(c: MetricsCluster, member: int) -> str:
    with urllib.request.urlopen(f"http://{c.metrics[member]}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def sample(text: str, name: str) -> float:
    """The value of the one sample called `name` (labels included in the name as exposed)."""
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(found) == 1, f"{name}: {found}"
    return float(found[0])


def create_config(c: MetricsCluster, member: int, name: str) -> None:
    spec = objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=name), data=b"x")
    with c.channel(member) as ch:
        control_pb2_grpc.ControlStub(ch).CreateConfig(control_pb2.CreateConfigRequest(spec=spec), timeout=DEADLINE)


# ---- metrics ---------------------------------------------------------------------------
RAFT_SERIES = ["shoal_raft_term", "shoal_raft_commit_index", "shoal_raft_applied_index", "shoal_raft_apply_lag",
               "shoal_raft_is_leader", "shoal_raft_has_leader", "shoal_raft_members",
               "shoal_raft_invalid_messages_total", "shoal_raft_rejected_requests_total"]


def test_every_manager_serves_the_raft_and_dispatcher_metrics(cluster: MetricsCluster) -> None:
    leader = cluster.leader()
    for i in (1, 2, 3):
        text = scrape(cluster, i)
        for name in RAFT_SERIES:
            assert sample(text, f'{name}{{node_id="{i}"}}') >= 0, name
        assert sample(text, f'shoal_raft_is_leader{{node_id="{i}"}}') == (1 if i == leader else 0)
        assert sample(text, f'shoal_raft_members{{node_id="{i}"}}') == 3
        for name in ("shoal_raft_proposal_duration_seconds_count", "shoal_raft_fsync_duration_seconds_count",
                     "shoal_raft_leader_changes_seen_total", "shoal_dispatcher_sessions",
                     "shoal_dispatcher_heartbeats_total"):
            assert sample(text, name) >= 0, name
        assert "# TYPE shoal_manager_nodes gauge" in text
        assert "_created" not in text


def test_commit_index_and_proposals_grow_with_writes(cluster: MetricsCluster) -> None:
    member = 2
    before = scrape(cluster, member)
    commit0 = sample(before, f'shoal_raft_commit_index{{node_id="{member}"}}')
    applied0 = sample(before, 'shoal_raft_proposals_total{result="applied"}') if "shoal_raft_proposals_total{" in before else 0
    for n in range(5):
        create_config(cluster, member, f"metrics-{n}")
    after = scrape(cluster, member)
    assert sample(after, f'shoal_raft_commit_index{{node_id="{member}"}}') >= commit0 + 5
    assert sample(after, f'shoal_raft_applied_index{{node_id="{member}"}}') >= commit0 + 5
    assert sample(after, 'shoal_raft_proposals_total{result="applied"}') == applied0 + 5
    assert sample(after, "shoal_raft_proposal_duration_seconds_count") == applied0 + 5
    assert sample(after, "shoal_raft_fsync_duration_seconds_count") >= 5


def test_a_new_leader_after_kill_9_is_counted_as_a_leader_change(own_cluster: MetricsCluster) -> None:
    cluster = own_cluster
    old = cluster.leader()
    survivor = next(i for i in (1, 2, 3) if i != old)
    before = sample(scrape(cluster, survivor), "shoal_raft_leader_changes_seen_total")
    cluster.kill(old, signal.SIGKILL)
    wait_for(lambda: sample(scrape(cluster, survivor), "shoal_raft_leader_changes_seen_total") >= before + 1,
             "the survivor to count the new leader")
    text = scrape(cluster, survivor)
    assert sample(text, f'shoal_raft_has_leader{{node_id="{survivor}"}}') == 1


def test_a_bad_metrics_address_stops_the_manager_with_its_name(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "manager", "run", "--id", "1", "--listen", "127.0.0.1:1",
                             "--data-dir", str(tmp_path), "--metrics-addr", "localhost"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (result.returncode, result.stderr) == (1, "manager 1: invalid metrics address 'localhost': expected HOST:PORT\n")
    assert not (tmp_path / "raft.db").exists()


# ---- health and reflection ----------------------------------------------------------------
def test_health_check_answers_serving_for_the_server_and_its_services(cluster: MetricsCluster) -> None:
    with cluster.channel(1) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "shoal.v1.Control", "shoal.v1.Raft"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="shoal.v1.Nothing"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def reflect(ch: grpc.Channel, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))


def test_reflection_lists_the_services_as_grpcurl_would(cluster: MetricsCluster) -> None:
    with cluster.channel(2) as ch:
        resp = reflect(ch, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert sorted(s.name for s in resp.list_services_response.service) == [
        "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "shoal.v1.Control", "shoal.v1.Raft"]


def test_reflection_describes_the_control_api(cluster: MetricsCluster) -> None:
    with cluster.channel(3) as ch:
        resp = reflect(ch, reflection_pb2.ServerReflectionRequest(file_containing_symbol="shoal.v1.Control"))
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in resp.file_descriptor_response.file_descriptor_proto]
    control = next(s for f in files for s in f.service if f.package == "shoal.v1" and s.name == "Control")
    assert [m.name for m in control.method] == ["CreateConfig", "GetConfig", "ListConfigs", "RemoveConfig", "Status",
                                                "CreateNetwork", "GetNetwork", "ListNetworks", "RemoveNetwork"]


def test_a_refused_raft_batch_counts_as_a_rejected_request(cluster: MetricsCluster) -> None:
    before = sample(scrape(cluster, 1), 'shoal_raft_rejected_requests_total{node_id="1"}')
    with cluster.channel(1) as ch:
        step = ch.stream_unary("/shoal.v1.Raft/Step", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as garbage:
            step(iter([b"\xff\xfe not a protobuf"]), timeout=5)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sample(scrape(cluster, 1), 'shoal_raft_rejected_requests_total{node_id="1"}') == before + 1


def test_shoal_daemon_serves_metrics_at_its_metrics_addr(lab: Callable[..., object]) -> None:
    made = lab(1, daemon_args=["--metrics-addr", "127.0.0.1:9323"])
    script = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9323/metrics', timeout=5).read().decode())"
    text = made.exec("h1", [sys.executable, "-c", script]).stdout  # type: ignore[attr-defined]
    assert sample(text, "shoal_dispatcher_sessions") == 0
    assert "shoal_raft_term" not in text  # no manager role on this node


def test_shoal_daemon_refuses_a_bad_metrics_addr(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "shoal", "daemon", "--host", f"unix://{tmp_path}/s.sock",
                             "--data-dir", str(tmp_path / "data"), "--exec-root", str(tmp_path / "run"),
                             "--metrics-addr", "9323"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "shoal daemon: invalid metrics address '9323': expected HOST:PORT"
