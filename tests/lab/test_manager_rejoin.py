"""Issue 8 item 3: a manager that lost its data must not rejoin as a founder (etcd's "member has already been
bootstrapped"), while a founder that merely starts late still joins. Three `python -m manager run` processes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto import control_pb2, control_pb2_grpc, objects_pb2
from tests.support.cluster import LocalCluster, wait_for

pytestmark = pytest.mark.lab
DEADLINE = 30.0


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: these managers only need loopback addresses, not root."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, tick_ms=50)
    try:
        yield c
    finally:
        c.stop_all()



def create(c: LocalCluster, member: int, name: str) -> None:
    spec = objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=name), data=b"x")
    with c.channel(member) as ch:
        control_pb2_grpc.ControlStub(ch).CreateConfig(control_pb2.CreateConfigRequest(spec=spec), timeout=DEADLINE)


def names_on(c: LocalCluster, member: int) -> list[str]:
    with c.channel(member) as ch:
        resp = control_pb2_grpc.ControlStub(ch).ListConfigs(control_pb2.ListConfigsRequest(), timeout=DEADLINE)
    return sorted(cfg.spec.annotations.name for cfg in resp.configs)


def started(c: LocalCluster, member: int) -> list[int]:
    return json.loads((c.members[member].data_dir / "members.json").read_text())["started"]


def test_a_wiped_founder_restarted_with_the_same_command_is_refused(cluster: LocalCluster) -> None:
    cluster.start(3)
    leader = cluster.leader(DEADLINE)
    create(cluster, leader, "before")
    wait_for(lambda: all(started(cluster, i) == [1, 2, 3] for i in (1, 2, 3)), "every member's start in the log")
    wiped = next(i for i in (3, 2, 1) if i != leader)
    cluster.kill(wiped)
    shutil.rmtree(cluster.members[wiped].data_dir)
    cluster.spawn(wiped)
    proc = cluster.members[wiped].proc
    assert proc is not None
    assert proc.wait(timeout=DEADLINE) == 1
    last = cluster.members[wiped].log_path.read_text().strip().splitlines()[-1]
    assert last.startswith(f"manager {wiped}: member {wiped} has already been bootstrapped: cluster ")
    assert last.endswith(f"knows it as started, but {cluster.members[wiped].data_dir} holds no raft data; "
                         f"remove member {wiped} from the cluster and add this manager back under a new id with --join (or, if the "
                         f"cluster lost its quorum for good, restart a surviving member with --force-new-cluster)")
    assert not (cluster.members[wiped].data_dir / "raft.db").exists()
    create(cluster, cluster.leader(DEADLINE), "after")
    assert names_on(cluster, leader) == ["after", "before"]


def test_a_founder_that_starts_late_still_joins_its_cluster(cluster: LocalCluster) -> None:
    cluster.start(3, hold=frozenset({3}))
    leader = cluster.leader(DEADLINE)
    create(cluster, leader, "early")
    cluster.spawn(3)
    wait_for(lambda: names_on(cluster, 3) == ["early"], "the late founder to catch up")
    wait_for(lambda: started(cluster, leader) == [1, 2, 3], "the late founder's start in the log")
