"""A 5-host swarm formed with the CLI (h1 init, h2/h3 join as managers, h4/h5 as workers; 1 s heartbeats):
node ls, the manager-only API, failover, restarts, Down/Ready, promote/demote, node rm and its refusals.
One cluster for the module (tests run in file order; each leaves the cluster as it found it, except the last ones)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shoal.client import DaemonError
from shoal.lab import Lab, data_dir, host_address
from tests.docker_client import docker_client
from tests.lab.helpers import SHOAL, running_lab, wait_until

HEARTBEAT_S = 1.0
MANAGERS = ["h1", "h2", "h3"]
WORKERS = ["h4", "h5"]
NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
               "Please run this command on a manager node or promote the current node to a manager.")

# A gRPC call from inside a lab host with that host's node certificate (or none: plain text).
GRPC_CALL = textwrap.dedent('''
    import sys, grpc
    from proto import control_pb2, control_pb2_grpc, objects_pb2, swarm_pb2, swarm_pb2_grpc
    addr, certdir, call = sys.argv[1], sys.argv[2], sys.argv[3]
    if certdir == "-":
        ch = grpc.insecure_channel(addr)
    else:
        rd = lambda n: open(f"{certdir}/{n}", "rb").read()
        creds = grpc.ssl_channel_credentials(rd("swarm-root-ca.crt"), rd("swarm-node.key"), rd("swarm-node.crt"))
        ch = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "shoal-manager")])
    try:
        if call == "list-configs":
            r = control_pb2_grpc.ControlStub(ch).ListConfigs(control_pb2.ListConfigsRequest(), timeout=20)
            print("OK", sorted(c.spec.annotations.name for c in r.configs))
        elif call.startswith("create-config="):
            spec = objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name=call.split("=", 1)[1]), data=b"x")
            control_pb2_grpc.ControlStub(ch).CreateConfig(control_pb2.CreateConfigRequest(spec=spec), timeout=20)
            print("OK created")
        elif call == "list-nodes":
            r = swarm_pb2_grpc.SwarmControlStub(ch).ListNodes(swarm_pb2.ListNodesRequest(), timeout=20)
            print("OK", len(r.nodes))
        elif call == "session":
            for m in swarm_pb2_grpc.DispatcherStub(ch).Session(swarm_pb2.SessionRequest(), timeout=20):
                print("OK session"); break
    except grpc.RpcError as e:
        print("ERR", e.code().name, e.details())
''')


def sh(lab: Lab, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lab.exec(host, SHOAL + list(args), check=check, timeout=120)


def grpc_call(lab: Lab, host: str, target: str, call: str, certs_of: str | None = None) -> str:
    certdir = "-" if certs_of == "-" else str(data_dir(lab.name, certs_of or host) / "swarm" / "certificates")
    return lab.exec(host, [sys.executable, "-c", GRPC_CALL, f"{host_address(target)}:2377", certdir, call],
                    timeout=60).stdout.strip()


def node_rows(lab: Lab, host: str = "h1") -> dict[str, list[str]]:
    """hostname -> [status, availability, manager status] from `shoal node ls`."""
    out = sh(lab, host, "node", "ls").stdout.splitlines()[1:]
    rows = {}
    for line in out:
        cells = [c for c in line.replace(" * ", "   ").split("  ") if c.strip()]
        cells = [c.strip() for c in cells]
        rows[cells[1]] = cells[2:-1] if len(cells) == 6 else cells[2:4] + [""]
    return rows


def node_id(lab: Lab, host: str) -> str:
    return lab.client(host).get("/info")["Swarm"]["NodeID"]


def leader_host(lab: Lab, via: str) -> str | None:
    try:
        rows = node_rows(lab, via)
    except subprocess.CalledProcessError:
        return None
    return next((h for h, r in rows.items() if r[-1] == "Leader"), None)


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_lab(5) as lab:
        sh(lab, "h1", "swarm", "init", "--advertise-addr", host_address("h1"), "--dispatcher-heartbeat", f"{int(HEARTBEAT_S)}s")
        manager_token = sh(lab, "h1", "swarm", "join-token", "-q", "manager").stdout.strip()
        worker_token = sh(lab, "h1", "swarm", "join-token", "-q", "worker").stdout.strip()
        for h in ("h2", "h3"):
            assert sh(lab, h, "swarm", "join", "--token", manager_token, f"{host_address('h1')}:2377").stdout == \
                "This node joined a swarm as a manager.\n"
        for h in WORKERS:
            assert sh(lab, h, "swarm", "join", "--token", worker_token, host_address("h1")).stdout == \
                "This node joined a swarm as a worker.\n"
        yield lab


def all_ready(lab: Lab, via: str = "h1") -> bool:
    rows = node_rows(lab, via)
    return len(rows) == 5 and all(r[0] == "Ready" for r in rows.values()) and leader_host(lab, via) is not None


def test_node_ls_shows_three_managers_and_two_workers_exactly(swarm: Lab) -> None:
    wait_until(lambda: all_ready(swarm), 20)
    ids = {h: swarm.client(h).get("/info")["Swarm"]["NodeID"] for h in MANAGERS + WORKERS}
    status = {"h1": "Leader", "h2": "Reachable", "h3": "Reachable", "h4": "", "h5": ""}
    lines = ["ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION"]
    for h in MANAGERS + WORKERS:
        ident = ids[h] + (" *" if h == "h1" else "")
        lines.append(f"{ident:<30}{h:<11}{'Ready':<10}{'Active':<15}{status[h]:<17}0.1.0")
    assert sh(swarm, "h1", "node", "ls").stdout == "\n".join(lines) + "\n"


def test_docker_node_ls_prints_what_shoal_node_ls_prints(swarm: Lab) -> None:
    docker = docker_client()
    assert docker is not None, "no docker client: run scripts/install.sh"
    wait_until(lambda: all_ready(swarm), 20)
    assert swarm.exec("h2", [docker, "node", "ls"]).stdout == sh(swarm, "h2", "node", "ls").stdout


def test_a_worker_gets_the_not_a_manager_error_for_node_ls(swarm: Lab) -> None:
    r = sh(swarm, "h4", "node", "ls", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"Error response from daemon: {NOT_MANAGER}\n")
    with pytest.raises(DaemonError) as e:
        swarm.client("h4").get("/swarm")
    assert (e.value.status, e.value.message) == (503, NOT_MANAGER)


def test_a_worker_certificate_cannot_call_the_control_or_node_api(swarm: Lab) -> None:
    refused = ("ERR PERMISSION_DENIED Permission denied: unauthorized peer role: rpc error: code = PermissionDenied "
               "desc = Permission denied: remote certificate not part of the allowed roles")
    assert grpc_call(swarm, "h4", "h1", "list-configs") == refused
    assert grpc_call(swarm, "h4", "h2", "list-nodes") == refused
    assert grpc_call(swarm, "h4", "h1", "create-config=from-a-worker") == refused
    assert grpc_call(swarm, "h1", "h1", "list-configs") == "OK []"  # nothing was created


def test_a_plain_text_grpc_client_is_refused(swarm: Lab) -> None:
    out = grpc_call(swarm, "h4", "h1", "list-configs", certs_of="-")
    assert out.startswith("ERR UNAVAILABLE"), out


def test_every_manager_serves_the_control_api(swarm: Lab) -> None:
    assert grpc_call(swarm, "h2", "h2", "create-config=via-h2") == "OK created"
    assert grpc_call(swarm, "h3", "h3", "list-configs") == "OK ['via-h2']"


def test_a_partitioned_manager_refuses_writes_and_catches_up_when_healed(swarm: Lab) -> None:
    wait_until(lambda: node_rows(swarm)["h1"][2] == "Leader", 30, interval=0.2)
    swarm.partition(["h3"])  # h3 cut off from every other host on the lab switch
    try:
        assert grpc_call(swarm, "h1", "h1", "create-config=majority-side") == "OK created"
        isolated = grpc_call(swarm, "h3", "h3", "create-config=minority-side")
        # seen: "ERR UNAVAILABLE no raft leader elected" (before h3's election timeout the
        # forward to the old leader may fail otherwise: any refusal, never a write)
        assert isolated.startswith("ERR "), isolated
    finally:
        swarm.heal()
    wait_until(lambda: grpc_call(swarm, "h3", "h3", "list-configs").startswith("OK [")
               and "'majority-side'" in grpc_call(swarm, "h3", "h3", "list-configs"), 60, interval=0.5)
    assert "'minority-side'" not in grpc_call(swarm, "h1", "h1", "list-configs")


def test_a_stopped_worker_is_down_within_three_heartbeats_and_ready_after_it_returns(swarm: Lab) -> None:
    swarm.stop_daemon("h5", kill9=True)
    wait_until(lambda: node_rows(swarm)["h5"][0] == "Down", 20, interval=0.2)
    # Marked by the dispatcher's heartbeat deadline (3 periods; no wall-clock assertion here:
    # the machine's load decides how long the lab takes, the deadline logic is the dispatcher's)
    status = json.loads(sh(swarm, "h1", "node", "inspect", "h5").stdout)[0]["Status"]
    assert (status["State"], status["Message"]) == ("down", "heartbeat failure")
    swarm.start_daemon("h5")
    wait_until(lambda: node_rows(swarm)["h5"][0] == "Ready", 20, interval=0.2)


def test_demote_then_promote_round_trip(swarm: Lab) -> None:
    assert sh(swarm, "h1", "node", "demote", "h3").stdout == "Manager h3 demoted in the swarm.\n"
    wait_until(lambda: sh(swarm, "h3", "node", "ls", check=False).returncode == 1, 20, interval=0.2)
    assert node_rows(swarm)["h3"] == ["Ready", "Active", ""]
    assert sh(swarm, "h1", "node", "promote", "h3").stdout == "Node h3 promoted to a manager in the swarm.\n"
    wait_until(lambda: sh(swarm, "h3", "node", "ls", check=False).returncode == 0, 20, interval=0.2)
    wait_until(lambda: node_rows(swarm)["h3"] == ["Ready", "Active", "Reachable"], 20, interval=0.2)
    assert sh(swarm, "h3", "node", "promote", "h3").stdout == f"Node {node_id(swarm, 'h3')} is already a manager.\n"


def test_node_rm_of_a_ready_worker_or_a_raft_member_is_refused(swarm: Lab) -> None:
    wait_until(lambda: all_ready(swarm), 20)
    h4, h2 = node_id(swarm, "h4"), node_id(swarm, "h2")
    r = sh(swarm, "h1", "node", "rm", h4, check=False)
    assert (r.returncode, r.stderr) == (1, f"Error response from daemon: node {h4} is not down and can't be removed\n")
    r = sh(swarm, "h1", "node", "rm", h2, check=False)
    assert (r.returncode, r.stderr) == (1, f"Error response from daemon: node {h2} is a cluster manager and is a member "
                                          "of the raft cluster. It must be demoted to worker before removal\n")
    assert len(node_rows(swarm)) == 5


def test_demoting_a_manager_when_that_would_lose_quorum_is_refused(swarm: Lab) -> None:
    swarm.stop_daemon("h3", kill9=True)
    try:
        # as a user would see it: h3 is Down (raft alone may still count it as active for an election timeout)
        wait_until(lambda: node_rows(swarm)["h3"][0] == "Down", 20, interval=0.2)
        r = sh(swarm, "h1", "node", "demote", "h2", check=False)
        assert (r.returncode, r.stderr) == (1, "Error response from daemon: can't remove member from the raft: "
                                              "this would result in a loss of quorum\n")
    finally:
        swarm.start_daemon("h3")
    wait_until(lambda: all_ready(swarm), 30, interval=0.2)
    assert node_rows(swarm)["h2"] == ["Ready", "Active", "Reachable"]


def test_killing_the_leader_elects_another_and_a_survivor_serves_the_control_api(swarm: Lab) -> None:
    wait_until(lambda: all_ready(swarm), 20)
    old = leader_host(swarm, "h1")
    assert old is not None
    survivors = [h for h in MANAGERS if h != old]
    swarm.stop_daemon(old, kill9=True)
    try:
        new = wait_until(lambda: leader_host(swarm, survivors[0]) not in (None, old) and leader_host(swarm, survivors[0]), 20, interval=0.1)
        assert new in survivors
        assert grpc_call(swarm, survivors[1], survivors[1], "create-config=after-failover") == "OK created"
    finally:
        swarm.start_daemon(old)
    wait_until(lambda: all_ready(swarm, survivors[0]), 30, interval=0.2)


def test_restarting_every_manager_keeps_the_cluster_state(swarm: Lab) -> None:
    before = {h: node_id(swarm, h) for h in MANAGERS + WORKERS}
    configs = grpc_call(swarm, "h2", "h2", "list-configs")  # what the tests before wrote
    assert configs.startswith("OK ['") and "'via-h2'" in configs, configs
    with ThreadPoolExecutor(3) as pool:  # all together, as after a power cut
        list(pool.map(swarm.stop_daemon, MANAGERS))
        list(pool.map(swarm.start_daemon, MANAGERS))
    wait_until(lambda: all_ready(swarm), 30, interval=0.2)
    assert {h: node_id(swarm, h) for h in MANAGERS + WORKERS} == before
    assert grpc_call(swarm, "h2", "h2", "list-configs") == configs


def test_node_rm_of_a_down_worker_then_its_certificate_is_refused(swarm: Lab) -> None:
    h5 = node_id(swarm, "h5")
    swarm.stop_daemon("h5", kill9=True)
    wait_until(lambda: node_rows(swarm)["h5"][0] == "Down", 20, interval=0.2)
    assert sh(swarm, "h1", "node", "rm", h5).stdout == f"{h5}\n"
    assert "h5" not in node_rows(swarm)
    out = grpc_call(swarm, "h4", "h1", "session", certs_of="h5")  # h5's certificate, from another host
    assert out == f"ERR PERMISSION_DENIED Permission denied: node {h5} is not a member of this cluster (it was removed)"
