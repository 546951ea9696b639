"""Services under faults and churn on a 5-host lab swarm (managers h1-h3, workers h4-h5, 1 s heartbeats), issue 12's
"How it must be tested": a node killed under a replica, scale 2 -> 10 -> 1, a rolling update rolled back, `service
rm`, drain and a start-first update, each compared with what the remaining tasks need on EVERY node (containers, namespaces, FDB and
neighbour entries, VIP tables, mesh rules, the host's rules, DNS). A global `probe` service puts a task on the overlay
on every node: DNS and the VIP are asked from there. Flow without faults: tests/lab/test_services_flow.py."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent.gossip.core import GossipConfig
from agent.gossip.suspicion import suspicion_timeout
from common.mac import mac_from_ip
from shoal.client import DaemonError
from shoal.lab import Lab, host_address
from shoal.swarm.service_glue import RESYNC_S
from tests.lab.helpers import SHOAL, wait_until
from tests.lab.swarm_lab import docker, ready_nodes, running_swarm, sh
from tests.lab.test_services_flow import WEB

pytestmark = pytest.mark.lab

HOSTS = ["h1", "h2", "h3", "h4", "h5"]
NET = "faults-net"
HEARTBEAT_S = 1.0
DOWN_S = 3 * HEARTBEAT_S  # the dispatcher declares a node down after 3 missed heartbeat periods
# Gossip's own failure bound (libnetwork's networkdb waits for it): a failed probe, then Lifeguard's suspicion, at most
# its maximum (no confirmation), then the next pass of shoal/swarm/service_glue.py. shoal does not wait for it: the
# VIP, mesh and DNS follow the managers' DOWN verdict (heal_s in the kill -9 test).
_G = GossipConfig()
GOSSIP_DOWN_S = (_G.probe_interval + _G.probe_timeout + RESYNC_S
                 + _G.suspicion_max_timeout_mult * suspicion_timeout(_G.suspicion_mult, 5, _G.probe_interval))
REQUESTS = 12
GRACE = ["--stop-grace-period", "1s"]  # httpd and sleep as PID 1 ignore SIGTERM: no 10 s wait per stopped task
L_TASK = "com.docker.swarm.task.id"


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(5, managers=["h2", "h3"], workers=["h4", "h5"]) as lab:
        sh(lab, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", NET)
        sh(lab, "h1", "service", "create", "--detach", "--mode", "global", "--name", "probe", "--network", NET, *GRACE,
           "busybox", "sleep", "1d")
        try:
            wait_until(lambda: running(lab, "probe", 5), 120, interval=0.5)
        except TimeoutError:
            pytest.fail(f"the probe tasks did not all run: {describe(lab, 'probe')}")
        yield lab


@pytest.fixture
def api(swarm: Lab) -> Iterator[Any]:
    """h1's client; the services a test made are removed after it and their containers waited for on every node, so
    the next test starts from the probe alone."""
    c = swarm.client("h1")
    before = {s["ID"] for s in c.get("/services")}
    yield c
    made = [s for s in c.get("/services") if s["ID"] not in before]
    for s in made:
        c.delete(f"/services/{s['ID']}")
    names = {s["Spec"]["Name"] for s in made}
    wait_until(lambda: not any(service_containers(swarm, h, n) for h in HOSTS for n in names), 60, interval=0.5)


# ---------------------------------------------------------------------------------------------- the managers' view
def node_hosts(lab: Lab) -> dict[str, str]:
    """node id -> lab host."""
    return {n["ID"]: n["Description"]["Hostname"] for n in lab.client("h1").get("/nodes")}


def tasks_of(lab: Lab, service: str) -> list[dict[str, Any]]:
    return lab.client("h1").get("/tasks", {"filters": json.dumps({"service": {service: True}})})


def running(lab: Lab, service: str, n: int) -> list[dict[str, Any]] | None:
    """The service's n tasks, sorted by slot, once exactly n are wanted and all of them run."""
    ts = [t for t in tasks_of(lab, service) if t["DesiredState"] == "running"]
    if len(ts) == n and all(t["Status"]["State"] == "running" for t in ts):
        return sorted(ts, key=lambda t: (t.get("Slot", 0), t["NodeID"]))
    return None


def describe(lab: Lab, service: str) -> list[tuple[Any, ...]]:
    """(host, desired state, state, error) of the service's tasks: what a failing wait shows."""
    hosts = node_hosts(lab)
    return [(hosts.get(t.get("NodeID", ""), "-"), t["DesiredState"], t["Status"]["State"], t["Status"].get("Err", ""))
            for t in tasks_of(lab, service)]


def update_state(service: dict[str, Any]) -> str:
    """UpdateStatus.State; "" before the orchestrator took up the update."""
    return str(service.get("UpdateStatus", {}).get("State", ""))


def net_id(lab: Lab, name: str) -> str:
    return lab.client("h1").get(f"/networks/{name}")["Id"]


def address(task: dict[str, Any], network_id: str) -> str:
    att = next(a for a in task["NetworksAttachments"] if a["Network"]["ID"] == network_id)
    return att["Addresses"][0].split("/")[0]


def vip_of(lab: Lab, service: str, network_id: str) -> str:
    return next(v["Addr"].split("/")[0] for v in lab.client("h1").get(f"/services/{service}")["Endpoint"]["VirtualIPs"]
                if v["NetworkID"] == network_id)


def all_running_tasks(lab: Lab) -> list[dict[str, Any]]:
    return [t for t in lab.client("h1").get("/tasks") if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]


# ---------------------------------------------------------------------------------------------- a node's view
def service_containers(lab: Lab, host: str, service: str) -> list[dict[str, Any]]:
    return lab.client(host).get("/containers/json", {"all": "1", "filters": json.dumps(
        {"label": [f"com.docker.swarm.service.name={service}"]})})


def container_of(lab: Lab, host: str, task_id: str) -> str:
    cs = lab.client(host).get("/containers/json", {"filters": json.dumps({"label": [f"{L_TASK}={task_id}"]})})
    assert len(cs) == 1, (host, task_id, cs)
    return cs[0]["Id"]


def probe_on(lab: Lab, host: str) -> str:
    """The container of the running probe task the managers want on host."""
    hosts = node_hosts(lab)
    (task,) = [t for t in tasks_of(lab, "probe") if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
               and hosts.get(t.get("NodeID", "")) == host]
    return container_of(lab, host, task["ID"])


def in_container(lab: Lab, host: str, cid: str, script: str) -> str:
    return lab.exec(host, SHOAL + ["exec", cid, "sh", "-c", script], check=False, timeout=120).stdout


def lookups(lab: Lab, host: str, names: list[str]) -> dict[str, list[str]]:
    """name -> the sorted addresses the probe on host gets from the embedded DNS ([] when none); one exec for all.
    An address as name is a reverse lookup: its value is the names it maps to."""
    script = "; ".join(f"echo '=== {n}'; nslookup {n}" for n in names)
    out: dict[str, list[str]] = {}
    for chunk in in_container(lab, host, probe_on(lab, host), script).split("=== ")[1:]:
        name, _, text = chunk.partition("\n")
        if re.fullmatch(r"[\d.]+", name):
            out[name] = sorted(re.findall(r"name = (\S+)", text))
        else:
            tail = text.split("Name:", 1)[1] if "Name:" in text else ""
            out[name] = sorted(set(re.findall(r"Address(?: \d+)?:\s*(\d+\.\d+\.\d+\.\d+)", tail)))
    return out


def answered_by(lab: Lab, host: str, url: str) -> set[str]:
    """The hostnames (task container ids) answering REQUESTS fetches of url from the probe on host."""
    script = f"for i in $(seq {REQUESTS}); do timeout 3 wget -qO- {url}; done"
    return set(in_container(lab, host, probe_on(lab, host), script).split())


def vip_answered_by(lab: Lab, host: str, vip: str) -> set[str]:
    """As answered_by, to the VIP by address, from the probe's network namespace alone (no exec: a cheap poll)."""
    pid = lab.client(host).get(f"/containers/{probe_on(lab, host)}/json")["State"]["Pid"]
    script = f"for i in $(seq {REQUESTS}); do timeout 3 busybox wget -qO- http://{vip}/; done"
    return set(lab.exec(host, ["nsenter", "-t", str(pid), "-n", "sh", "-c", script], check=False, timeout=120).stdout.split())


def mesh_answered_by(lab: Lab, source: str, target: str, port: int) -> set[str]:
    """The hostnames answering REQUESTS fetches of target's published port, from source's host namespace."""
    script = f"for i in $(seq {REQUESTS}); do timeout 3 busybox wget -qO- http://{host_address(target)}:{port}/; done"
    return set(lab.exec(source, ["sh", "-c", script], check=False, timeout=120).stdout.split())


def hostname_of(lab: Lab, host: str, task: dict[str, Any]) -> str:
    return lab.client(host).get(f"/containers/{container_of(lab, host, task['ID'])}/json")["Config"]["Hostname"]


def namespaces(lab: Lab, host: str) -> list[str]:
    prefix = f"{lab.netns(host)}-"
    return sorted(n[len(prefix):] for n in lab.exec(host, ["ip", "netns", "list"]).stdout.split() if n.startswith(prefix))


def in_ns(lab: Lab, host: str, ns: str, *argv: str) -> str:
    return lab.exec(host, ["ip", "netns", "exec", f"{lab.netns(host)}-{ns}", *argv]).stdout


def overlay_ns(lab: Lab, host: str, vni: int) -> str | None:
    found = [n for n in namespaces(lab, host) if n.startswith(f"ov-{vni}-")]
    assert len(found) <= 1, found
    return found[0] if found else None


def neighbours(lab: Lab, host: str, ns: str) -> dict[str, str]:
    """address -> MAC of the overlay namespace's permanent neighbour entries (remote endpoints)."""
    return {e["dst"]: e["lladdr"] for e in json.loads(in_ns(lab, host, ns, "ip", "-j", "neigh", "show"))
            if "PERMANENT" in e.get("state", [])}


def vteps(lab: Lab, host: str, ns: str) -> dict[str, str]:
    """MAC -> remote host address of the overlay namespace's FDB entries on its VXLAN device."""
    return {e["mac"]: e["dst"] for e in json.loads(in_ns(lab, host, ns, "bridge", "-j", "fdb", "show"))
            if e.get("dst") and e["mac"] != "00:00:00:00:00:00"}


def nft_in(lab: Lab, host: str, cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
    pid = lab.client(host).get(f"/containers/{cid}/json")["State"]["Pid"]
    return lab.exec(host, ["nsenter", "-t", str(pid), "-n", "nft", *argv], check=False)


def vip_backends(lab: Lab, host: str, cid: str) -> dict[str, list[str]]:
    """VIP -> its backends in the container's shoal_lb table (agent/network/lbplan.py); a VIP in the `empty` set has []."""
    out: dict[str, list[str]] = {}
    got = nft_in(lab, host, cid, "-j", "list", "map", "ip", "shoal_lb", "backends")
    if got.returncode:
        return out
    for item in json.loads(got.stdout)["nftables"]:
        for (key, backend) in item.get("map", {}).get("elem", []):
            out.setdefault(key["concat"][0], []).append(backend)
    empty = json.loads(nft_in(lab, host, cid, "-j", "list", "set", "ip", "shoal_lb", "empty").stdout)["nftables"]
    for item in empty:
        for vip in item.get("set", {}).get("elem", []):
            out[vip] = []
    return {vip: sorted(b) for vip, b in out.items()}


def mesh_ports(lab: Lab, host: str) -> dict[int, list[str]]:
    """Published port -> the task addresses the node's ingress sandbox spreads it over (agent/network/meshplan.py)."""
    text = in_ns(lab, host, "ingress_sbox", "nft", "list", "table", "ip", "shoal_mesh")
    return {int(port): sorted(re.findall(r": ([\d.]+) \. \d+", pairs))
            for port, pairs in re.findall(r"dport (\d+) dnat ip to numgen random mod \d+ map \{ ([^}]*) \}", text)}


def sandbox_address(lab: Lab, host: str, subnet: str) -> str:
    """The node's ingress sandbox address on the ingress network."""
    found = re.findall(r"inet ([\d.]+)/", in_ns(lab, host, "ingress_sbox", "ip", "-4", "-o", "addr"))
    (ip,) = [a for a in found if ipaddress.ip_address(a) in ipaddress.ip_network(subnet)]
    return ip


def host_rules(lab: Lab, host: str) -> str:
    """The host namespace's ip nat and filter tables without counters (the published ports' DNAT and ACCEPT rules)."""
    text = lab.exec(host, ["nft", "list", "table", "ip", "nat"]).stdout + lab.exec(host, ["nft", "list", "table", "ip", "filter"]).stdout
    return re.sub(r"counter packets \d+ bytes \d+", "counter", text)


# ---------------------------------------------------------------------------------------------- expected vs found
def overlay_vni(lab: Lab, network_id: str) -> int:
    return int(lab.client("h1").get(f"/networks/{network_id}")["Options"]["com.docker.network.driver.overlay.vxlanid_list"])


def endpoints(lab: Lab, network_id: str, hosts: dict[str, str]) -> dict[str, str]:
    """address -> lab host of every running task on the network."""
    out: dict[str, str] = {}
    for t in all_running_tasks(lab):
        if any(a["Network"]["ID"] == network_id for a in t.get("NetworksAttachments") or []):
            out[address(t, network_id)] = hosts[t["NodeID"]]
    return out


def data_plane(lab: Lab, host: str, vni: int) -> tuple[dict[str, str], dict[str, str]]:
    ns = overlay_ns(lab, host, vni)
    return (neighbours(lab, host, ns), vteps(lab, host, ns)) if ns else ({}, {})


def wanted_data_plane(eps: dict[str, str], host: str) -> tuple[dict[str, str], dict[str, str]]:
    """What host's overlay namespace needs for the endpoints eps: a neighbour entry and an FDB entry behind its host
    for every remote one, nothing else."""
    remote = {ip: h for ip, h in eps.items() if h != host}
    return ({ip: mac_from_ip(ip) for ip in remote}, {mac_from_ip(ip): host_address(h) for ip, h in remote.items()})


def node_mismatches(lab: Lab, live: list[str]) -> list[str]:
    """Every difference between what each live node holds and what the managers' running tasks need there: task
    containers, container namespaces, overlay neighbour/FDB entries (the service overlay and ingress), the probes' VIP
    tables, the ingress sandboxes' published ports. [] when every node is exactly right."""
    hosts = node_hosts(lab)
    tasks = all_running_tasks(lab)
    c = lab.client("h1")
    net, ingress = net_id(lab, NET), net_id(lab, "ingress")
    ingress_subnet = c.get(f"/networks/{ingress}")["IPAM"]["Config"][0]["Subnet"]
    net_eps = endpoints(lab, net, hosts)
    ingress_eps = endpoints(lab, ingress, hosts) | {sandbox_address(lab, h, ingress_subnet): h for h in live}
    services = {s["ID"]: s for s in c.get("/services")}
    services_by_name = {s["Spec"]["Name"]: sid for sid, s in services.items()}
    vips = {}  # VIP -> sorted task addresses, every service on NET
    ports = {}  # published port -> sorted ingress addresses of its tasks
    for sid, s in services.items():
        mine = [t for t in tasks if t["ServiceID"] == sid]
        for v in s.get("Endpoint", {}).get("VirtualIPs") or []:
            if v["NetworkID"] == net:
                vips[v["Addr"].split("/")[0]] = sorted(address(t, net) for t in mine)
        for p in s.get("Endpoint", {}).get("Ports") or []:
            ports[p["PublishedPort"]] = sorted(address(t, ingress) for t in mine)

    known = {t["ID"] for t in c.get("/tasks")}  # any state: a task in the history keeps its stopped container (swarm's)

    def one(h: str) -> list[str]:
        wrong: list[str] = []
        want_tasks = sorted(t["ID"] for t in tasks if hosts[t["NodeID"]] == h)
        cs = lab.client(h).get("/containers/json")  # running
        have_tasks = sorted(x["Labels"].get(L_TASK, "") for x in cs)
        if have_tasks != want_tasks:
            wrong.append(f"{h}: running task containers {have_tasks} != {want_tasks}")
        stale = sorted(x["Labels"].get(L_TASK, "") for x in lab.client(h).get("/containers/json", {"all": "1"})
                       if x["Labels"].get(L_TASK, "") not in known)
        if stale:
            wrong.append(f"{h}: containers of tasks the store no longer has {stale}")
        sandboxes = sorted(n for n in namespaces(lab, h) if not n.startswith("ov-") and n != "ingress_sbox")
        if sandboxes != sorted(x["Id"][:12] for x in cs):
            wrong.append(f"{h}: container namespaces {sandboxes} != {sorted(x['Id'][:12] for x in cs)}")
        for name, vni, eps in ((NET, overlay_vni(lab, net), net_eps), ("ingress", overlay_vni(lab, ingress), ingress_eps)):
            have = data_plane(lab, h, vni)
            if have != wanted_data_plane(eps, h):
                wrong.append(f"{h}: {name} neighbours/FDB {have} != {wanted_data_plane(eps, h)}")
        if not any(t["ServiceID"] == services_by_name["probe"] and hosts[t["NodeID"]] == h for t in tasks):
            wrong.append(f"{h}: no probe task running")
            return wrong
        lb = vip_backends(lab, h, probe_on(lab, h))
        if lb != vips:
            wrong.append(f"{h}: probe VIP table {lb} != {vips}")
        mesh = mesh_ports(lab, h)
        if mesh != {p: b for p, b in ports.items() if b}:
            wrong.append(f"{h}: ingress sandbox ports {mesh} != {ports}")
        return wrong

    with ThreadPoolExecutor(len(live)) as pool:  # the nodes are independent: asked at once
        return [w for ws in pool.map(one, live) for w in ws]


def dns_mismatches(lab: Lab, live: list[str], service: str, want: list[str], vip: str, gone: list[str] = ()) -> list[str]:
    """On every live node: tasks.<service> is exactly want, <service> the VIP, and nothing in `gone` (names and
    addresses of tasks that went) resolves."""
    names = [service, f"tasks.{service}", *gone]
    expected = {service: [vip], f"tasks.{service}": sorted(want)} | {n: [] for n in gone}
    with ThreadPoolExecutor(len(live)) as pool:
        found = dict(zip(live, pool.map(lambda h: lookups(lab, h, names), live)))
    return [f"{h}: {got} != {expected}" for h, got in found.items() if got != expected]


def gone_names(lab: Lab, tasks: list[dict[str, Any]], network_id: str) -> list[str]:
    """The task names (<service>.<slot>.<id>, which the embedded DNS answers) and addresses of tasks."""
    services = {t["ServiceID"]: lab.client("h1").get(f"/services/{t['ServiceID']}")["Spec"]["Name"] for t in tasks}
    return [f"{services[t['ServiceID']]}.{t['Slot']}.{t['ID']}" for t in tasks] + [address(t, network_id) for t in tasks]


def settled(check: Any, timeout: float = 60.0) -> list[str]:
    """Polls a *_mismatches check until it finds nothing or the deadline passes; returns its last answer, so a failing
    assert shows what was still wrong."""
    deadline = time.monotonic() + timeout
    while (wrong := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return wrong


# ---------------------------------------------------------------------------------------------- 1. a node killed
def test_a_killed_nodes_replica_is_replaced_and_vip_mesh_dns_heal_within_down_plus_start(swarm: Lab, api: Any) -> None:
    net = net_id(swarm, NET)
    started = time.monotonic()
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "2", "--network", NET, "--name", "kweb", "-p", "8081:80",
       "--constraint", "node.role==worker", *GRACE, "busybox", *WEB)
    web = wait_until(lambda: running(swarm, "kweb", 2), 90, interval=0.2)
    hosts = node_hosts(swarm)
    names = {hosts[t["NodeID"]]: hostname_of(swarm, hosts[t["NodeID"]], t) for t in web}
    vip = vip_of(swarm, "kweb", net)

    def answered(hosts_: list[str], mesh: bool) -> list[set[str]]:
        """Who answers through the VIP from each host (and, with mesh, on each host's published port from the next
        host), every host asked at once: the poll's own length counts in the figures below, keep it short."""
        with ThreadPoolExecutor(2 * len(hosts_)) as pool:
            jobs = [pool.submit(vip_answered_by, swarm, h, vip) for h in hosts_]
            if mesh:
                jobs += [pool.submit(mesh_answered_by, swarm, hosts_[(i + 1) % len(hosts_)], h, 8081)
                         for i, h in enumerate(hosts_)]
            return [j.result() for j in jobs]

    wait_until(lambda: all(a == set(names.values()) for a in answered(HOSTS, mesh=False)), 60, interval=0.2)
    start_s = time.monotonic() - started  # create -> both replicas answer through the VIP on every node

    # the replicas run on the workers (one each: spread), so killing one leaves the managers' quorum alone
    assert sorted(names) == ["h4", "h5"]
    victim = "h5"
    dead = next(t for t in web if hosts[t["NodeID"]] == victim)
    survivor = next(t for t in web if t is not dead)
    live = [h for h in HOSTS if h != victim]
    swarm.kill(victim)
    killed = time.monotonic()
    try:
        marks: dict[str, float] = {}  # when the node was seen down and the replacement running, for the report

        def healed() -> bool:
            if "down" not in marks and victim not in ready_nodes(swarm):
                marks["down"] = time.monotonic() - killed
            ts = running(swarm, "kweb", 2)
            if ts is None or any(hosts[t["NodeID"]] == victim for t in ts):
                return False
            marks.setdefault("running", time.monotonic() - killed)
            new = next(t for t in ts if t["ID"] != survivor["ID"])
            want = {names[hosts[survivor["NodeID"]]], hostname_of(swarm, hosts[new["NodeID"]], new)}
            polled = time.monotonic() - killed
            if not all(a == want for a in answered(live, mesh=True)):
                return False
            marks["poll"] = polled  # the successful poll began here: healed between this and its end
            return True

        # The managers' node-down timeout, then the start of the replacement. The VIP, mesh and DNS follow the managers,
        # not gossip: the dispatcher sends the DOWN set to every node's session at once (its checker runs every
        # quarter period) and each node's service glue applies it at its next pass (RESYNC_S at most).
        heal_s = DOWN_S + HEARTBEAT_S / 4 + RESYNC_S
        bound = heal_s + start_s
        wait_until(healed, max(GOSSIP_DOWN_S, heal_s) + start_s + 30, interval=0.2)
        took = time.monotonic() - killed
        replacement = next(t for t in running(swarm, "kweb", 2) or [] if t["ID"] != survivor["ID"])
        assert (hosts[replacement["NodeID"]], replacement["Slot"]) == ("h4", dead["Slot"])
        assert swarm.client("h1").get(f"/tasks/{dead['ID']}")["DesiredState"] == "shutdown"
        print(f"kill -9 of {victim}: down {marks.get('down', -1):.1f} s, replacement running {marks['running']:.1f} s, "
              f"VIP and mesh healed {took:.1f} s (its poll began at {marks['poll']:.1f} s); bound {heal_s:.2f} s down + {start_s:.1f} s start = {bound:.1f} s "
              f"(gossip's failure bound alone: {GOSSIP_DOWN_S:.1f} s)")
        assert took <= bound, f"healed {took:.1f} s after the kill; bound {heal_s:.2f} + {start_s:.1f} s"
        want = [address(survivor, net), address(replacement, net)]
        # the service name and tasks.kweb never point at the dead task again on a live node: while its node is away,
        # as it comes back, once it is back
        assert dns_mismatches(swarm, live, "kweb", want, vip) == []
        # what gossip itself thinks of the victim as it comes back: "alive" or "suspect" means the managers' DOWN alone
        # kept its entries out (no gossip verdict yet), and its return is judged by its own bulk sync (netdb hold())
        gossip_view = {m["Name"]: m["State"] for m in swarm.client("h1").get("/shoal/gossip")["Members"]}
        marks["back"] = time.monotonic() - killed
        swarm.start(victim)
        wait_until(lambda: ready_nodes(swarm) == HOSTS, 60, interval=0.2)
        print(f"{victim} started again {marks['back']:.1f} s after its kill, gossip on h1 then saw it "
              f"{gossip_view.get(dead['NodeID'], 'absent')}")
        for _ in range(2):
            assert dns_mismatches(swarm, live, "kweb", want, vip) == []
        # the node that came back stops the task the managers moved away (its container stays, stopped, while the task
        # is in the history, as swarm's); then no node knows its name or address any more (the dead node's own records
        # stay suspended in gossip while it is away, as libnetwork's)
        wait_until(lambda: not [c for c in service_containers(swarm, victim, "kweb")
                                if c["Labels"][L_TASK] == dead["ID"] and c["State"] != "exited"], 30, interval=0.2)
        # the node stops the container, then reports SHUTDOWN (its next status batch, then the dispatcher's proposal)
        wait_until(lambda: swarm.client("h1").get(f"/tasks/{dead['ID']}")["Status"]["State"] == "shutdown", 10,
                   interval=0.1)
        gone = gone_names(swarm, [dead], net)
        assert settled(lambda: dns_mismatches(swarm, HOSTS, "kweb", want, vip, gone)) == []
        # and every node, the one that came back included, holds exactly what the running tasks need (no FDB or
        # neighbour entry, VIP backend or mesh backend of the dead task)
        assert settled(lambda: node_mismatches(swarm, HOSTS)) == []
    finally:
        with contextlib.suppress(Exception):
            swarm.start(victim)
        wait_until(lambda: ready_nodes(swarm) == HOSTS, 60, interval=0.2)
        wait_until(lambda: running(swarm, "probe", 5), 60, interval=0.5)


# ---------------------------------------------------------------------------------------------- 2. scale 2 -> 10 -> 1
def test_scale_2_to_10_to_1_leaves_every_node_exactly_what_the_remaining_task_needs(swarm: Lab, api: Any) -> None:
    net = net_id(swarm, NET)
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "2", "--network", NET, "--name", "sweb", "-p", "8082:80",
       *GRACE, "busybox", *WEB)
    wait_until(lambda: running(swarm, "sweb", 2), 90, interval=0.2)
    assert settled(lambda: node_mismatches(swarm, HOSTS)) == []
    rules = {h: host_rules(swarm, h) for h in HOSTS}
    sh(swarm, "h1", "service", "scale", "--detach", "sweb=10")
    wait_until(lambda: running(swarm, "sweb", 10), 120, interval=0.5)
    sh(swarm, "h1", "service", "scale", "--detach", "sweb=1")
    (kept,) = wait_until(lambda: running(swarm, "sweb", 1), 60, interval=0.5)
    hosts = node_hosts(swarm)
    gone = [t for t in tasks_of(swarm, "sweb") if t["ID"] != kept["ID"]]
    assert len(gone) == 9 and all(t["DesiredState"] == "remove" for t in gone)
    wait_until(lambda: not any(c["Labels"][L_TASK] != kept["ID"] for h in HOSTS for c in service_containers(swarm, h, "sweb")),
               60, interval=0.5)
    gone_dns = gone_names(swarm, gone, net)
    assert settled(lambda: node_mismatches(swarm, HOSTS)) == []
    assert settled(lambda: dns_mismatches(swarm, HOSTS, "sweb", [address(kept, net)], vip_of(swarm, "sweb", net),
                                          gone_dns)) == []
    assert {h: host_rules(swarm, h) for h in HOSTS} == rules  # the published port's rules, as at 2 replicas
    kept_name = hostname_of(swarm, hosts[kept["NodeID"]], kept)
    assert {h: answered_by(swarm, h, "http://sweb/") for h in HOSTS} == {h: {kept_name} for h in HOSTS}


# ---------------------------------------------------------------------------------------------- 3. rollback
def test_an_update_whose_task_fails_to_start_rolls_back_to_the_previous_spec(swarm: Lab, api: Any) -> None:
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "2", "--name", "rweb", *GRACE, "busybox", "sleep", "1d")
    wait_until(lambda: running(swarm, "rweb", 2), 60, interval=0.2)
    spec = api.get("/services/rweb")["Spec"]
    docker(swarm, "h1", "service", "update", "--detach", "--update-failure-action", "rollback", "--update-monitor", "2s",
           "--args", "/no/such/command", "rweb")
    wait_until(lambda: update_state(api.get("/services/rweb")) == "rollback_completed", 60, interval=0.2)
    # swarm says the rollback completed once its tasks run: both slots on the previous spec at that moment
    back = running(swarm, "rweb", 2)
    assert back is not None and [(t["Slot"], t["Spec"]["ContainerSpec"]["Args"]) for t in back] == [
        (1, ["sleep", "1d"]), (2, ["sleep", "1d"])], tasks_of(swarm, "rweb")
    # the update replaced slot 1 only (parallelism 1), with a task that could not start
    failed = [t for t in tasks_of(swarm, "rweb") if t["Spec"]["ContainerSpec"]["Args"] == ["/no/such/command"]]
    assert [(t["Slot"], t["DesiredState"], t["Status"]["State"], t["Status"]["Err"]) for t in failed] == [
        (1, "shutdown", "failed", f"failed to start container rweb.1.{failed[0]['ID']}: runc run failed: unable to start "
         'container process: exec: "/no/such/command": stat /no/such/command: no such file or directory')]
    inspected = json.loads(docker(swarm, "h1", "service", "inspect", "rweb").stdout)[0]
    assert (inspected["UpdateStatus"]["State"], inspected["UpdateStatus"]["Message"]) == ("rollback_completed",
                                                                                          "rollback completed")
    # back on the spec from before the update, its update config included; swarm's automatic rollback keeps no
    # previous spec (a `service rollback` now has nothing to go back to)
    assert (inspected["Spec"], "PreviousSpec" in inspected) == (spec, False)


# ---------------------------------------------------------------------------------------------- 4. service rm
def test_service_rm_leaves_no_container_namespace_entry_or_rule_on_any_node(swarm: Lab, api: Any) -> None:
    net = net_id(swarm, NET)
    rules = {h: host_rules(swarm, h) for h in HOSTS}
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "3", "--network", NET, "--name", "gweb", "-p", "8083:80",
       *GRACE, "busybox", *WEB)
    ts = wait_until(lambda: running(swarm, "gweb", 3), 90, interval=0.2)
    gone = ["gweb", "tasks.gweb", *gone_names(swarm, ts, net)]
    vip = vip_of(swarm, "gweb", net)
    assert settled(lambda: node_mismatches(swarm, HOSTS)) == []
    assert sh(swarm, "h1", "service", "rm", "gweb").stdout == "gweb\n"
    wait_until(lambda: not any(service_containers(swarm, h, "gweb") for h in HOSTS), 60, interval=0.5)
    assert settled(lambda: node_mismatches(swarm, HOSTS)) == []
    assert {h: host_rules(swarm, h) for h in HOSTS} == rules
    for h in HOSTS:
        assert lookups(swarm, h, gone) == {n: [] for n in gone}, h
        assert vip not in vip_backends(swarm, h, probe_on(swarm, h))


# ---------------------------------------------------------------------------------------------- 5. drain
def test_drain_moves_every_task_off_the_node_and_leaves_it_no_running_task_container(swarm: Lab, api: Any) -> None:
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "5", "--name", "dweb", *GRACE, "busybox", "sleep", "1d")
    ts = wait_until(lambda: running(swarm, "dweb", 5), 60, interval=0.2)
    hosts = node_hosts(swarm)
    assert "h4" in [hosts[t["NodeID"]] for t in ts]  # spread over nodes holding one probe each
    sh(swarm, "h1", "node", "update", "--availability", "drain", "h4")
    try:
        moved = wait_until(lambda: (r := running(swarm, "dweb", 5)) and all(hosts[t["NodeID"]] != "h4" for t in r) and r,
                           60, interval=0.2)
        assert [t["Slot"] for t in moved] == [1, 2, 3, 4, 5]
        # the probe is global: drain takes it off h4 too
        # stopped, and kept while their tasks are in the history (swarm's): none runs
        wait_until(lambda: lab_containers(swarm, "h4", running=True) == [] or None, 30, interval=0.2)
        assert {c["State"] for c in swarm.client("h4").get("/containers/json", {"all": "1"})} <= {"exited"}
        assert [t for t in tasks_of(swarm, "probe") if hosts.get(t["NodeID"]) == "h4" and t["DesiredState"] == "running"] == []
    finally:
        sh(swarm, "h1", "node", "update", "--availability", "active", "h4")
    wait_until(lambda: running(swarm, "probe", 5), 60, interval=0.5)


def lab_containers(lab: Lab, host: str, running: bool = False) -> list[str]:
    return [c["Names"][0] for c in lab.client(host).get("/containers/json", {} if running else {"all": "1"})]


# ---------------------------------------------------------------------------------------------- start-first
def test_a_start_first_update_stops_the_old_task_only_once_its_replacement_runs(swarm: Lab, api: Any) -> None:
    # on one node, so one daemon's event stream orders the old container's stop and the new one's start
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "1", "--name", "oweb", "--constraint", "node.hostname==h2",
       *GRACE, "busybox", "sleep", "1d")
    (old,) = wait_until(lambda: running(swarm, "oweb", 1), 60, interval=0.2)
    since = time.time()
    docker(swarm, "h1", "service", "update", "--detach", "--update-order", "start-first", "--update-monitor", "1s",
           "--env-add", "V=2", "oweb")
    svc = wait_until(lambda: update_state(s := api.get("/services/oweb")) == "completed" and s, 60, interval=0.2)
    assert (svc["Spec"]["UpdateConfig"]["Order"], svc["UpdateStatus"]["Message"]) == ("start-first", "update completed")
    (new,) = running(swarm, "oweb", 1) or [None]
    assert (new["Spec"]["ContainerSpec"]["Env"], new["Slot"], old["Slot"]) == (["V=2"], 1, 1)
    # the update is complete once the new task is healthy; the old one is told to stop and does so on its own time
    stopped = wait_until(lambda: (t := api.get(f"/tasks/{old['ID']}"))["Status"]["State"] == "shutdown" and t, 30,
                         interval=0.2)
    assert stopped["DesiredState"] == "shutdown"
    names = {f"oweb.1.{old['ID']}": "old", f"oweb.1.{new['ID']}": "new"}
    events = docker(swarm, "h2", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}", "--filter",
                    "type=container", "--format", "{{.Action}} {{.Actor.Attributes.name}}").stdout.split("\n")
    order = [(action, names[name]) for action, _, name in (e.partition(" ") for e in events)
             if name in names and action in ("start", "kill")]
    # the new container started before the old one got its first signal (stop-first: the other way round)
    assert order == [("start", "new"), ("kill", "old"), ("kill", "old")], events


def test_a_stop_first_update_starts_the_new_task_only_once_the_old_one_stopped_so_its_host_port_is_free(
        swarm: Lab, api: Any) -> None:
    # both tasks on one node and publishing the same host port: started together, the new one would find the port
    # taken ("Bind for 0.0.0.0:8093 failed") and the update would pause
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "1", "--name", "hweb", "--constraint", "node.hostname==h2",
       "--publish", "mode=host,target=80,published=8093", *GRACE, "busybox", "httpd", "-f", "-p", "80")
    (old,) = wait_until(lambda: running(swarm, "hweb", 1), 60, interval=0.2)
    since = time.time()
    docker(swarm, "h1", "service", "update", "--detach", "--update-monitor", "1s", "--env-add", "V=2", "hweb")
    svc = wait_until(lambda: update_state(s := api.get("/services/hweb")) == "completed" and s, 60, interval=0.2)
    assert (svc["Spec"]["UpdateConfig"]["Order"], svc["UpdateStatus"]["Message"]) == ("stop-first", "update completed")
    (new,) = running(swarm, "hweb", 1) or [None]
    assert (new["Spec"]["ContainerSpec"]["Env"], new["Slot"]) == (["V=2"], 1)
    assert sorted((t["ID"] == new["ID"], t["Status"]["State"], t["Status"].get("Err", "")) for t in tasks_of(swarm, "hweb")) == [
        (False, "shutdown", ""), (True, "running", "")]
    names = {f"hweb.1.{old['ID']}": "old", f"hweb.1.{new['ID']}": "new"}
    events = docker(swarm, "h2", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}", "--filter",
                    "type=container", "--format", "{{.Action}} {{.Actor.Attributes.name}}").stdout.split("\n")
    order = [(action, names[name]) for action, _, name in (e.partition(" ") for e in events)
             if name in names and action in ("start", "kill", "die")]
    # SIGTERM (ignored by httpd as PID 1), SIGKILL after the 1 s grace, its end; only then the new one's start
    assert order == [("kill", "old"), ("kill", "old"), ("die", "old"), ("start", "new")], events
    answer = swarm.exec("h2", ["busybox", "timeout", "5", "busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8093/"],
                        check=False)
    assert "404 Not Found" in answer.stdout + answer.stderr  # the new task has the port (httpd serves no index here)


# ---------------------------------------------------------------------------------------------- aliases
def test_a_service_alias_names_the_vip_and_tasks_alias_the_tasks_as_the_service_name_does(swarm: Lab, api: Any) -> None:
    # the alias once named each task's container too: `front` answered the VIP and every task address
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "2", "--name", "aweb", "--network", f"name={NET},alias=front",
       *GRACE, "busybox", "httpd", "-f", "-p", "80")
    tasks = wait_until(lambda: running(swarm, "aweb", 2), 60, interval=0.2)
    nid = net_id(swarm, NET)
    vip, ips = vip_of(swarm, "aweb", nid), sorted(address(t, nid) for t in tasks)
    want = {"aweb": [vip], "front": [vip], "tasks.aweb": ips, "tasks.front": ips}
    got = wait_until(lambda: (r := lookups(swarm, "h1", list(want))) == want and r, 30, interval=0.5)
    assert got == want
    # and `network inspect --verbose` lists the service with its VIP and tasks, as moby's does
    verbose = json.loads(docker(swarm, "h1", "network", "inspect", "--verbose", "-f", "{{json .Services}}", NET).stdout)
    assert (verbose["aweb"]["VIP"], sorted(x["EndpointIP"] for x in verbose["aweb"]["Tasks"])) == (vip, ips)


# ---------------------------------------------------------------------------------------------- daemon restart
def test_a_task_adopted_after_its_daemon_restarts_stays_in_its_services_vip_and_names(swarm: Lab, api: Any) -> None:
    # the restarted worker adopts the running container without a new report; its endpoint used to be announced only
    # on a report, so the task left `tasks.<service>` and the VIP on every node until it restarted. A long heartbeat
    # meanwhile: with the module's 1 s one the managers could mark h4 down during the restart and replace the task.
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "1", "--name", "rweb", "--network", NET,
       "--constraint", "node.hostname==h4", *GRACE, "busybox", "httpd", "-f", "-p", "80")
    (t,) = wait_until(lambda: running(swarm, "rweb", 1), 60, interval=0.2)
    nid = net_id(swarm, NET)
    want = {"rweb": [vip_of(swarm, "rweb", nid)], "tasks.rweb": [address(t, nid)]}
    wait_until(lambda: lookups(swarm, "h1", list(want)) == want, 30, interval=0.5)
    sh(swarm, "h1", "swarm", "update", "--dispatcher-heartbeat", "20s")
    try:
        time.sleep(2)  # every node's session has the new period
        swarm.kill("h4")
        swarm.start("h4")
        for host in ("h1", "h4"):
            seen: list[dict[str, list[str]]] = []
            with contextlib.suppress(TimeoutError):
                wait_until(lambda h=host: seen.append(lookups(swarm, h, list(want))) or seen[-1] == want, 30, interval=0.5)
            assert (host, seen[-1]) == (host, want)
        assert [x["ID"] for x in running(swarm, "rweb", 1) or []] == [t["ID"]]  # adopted, not replaced
    finally:
        sh(swarm, "h1", "swarm", "update", "--dispatcher-heartbeat", "1s")


def test_a_replicated_job_completes_each_slot_once_across_a_kill_9_of_the_leader(swarm: Lab, api: Any) -> None:
    """The new leader's job orchestrator picks the run up from the store: no slot runs twice to completion, none is
    lost, MaxConcurrent holds throughout (the tasks run on the workers, which the kill does not touch)."""
    [leader] = [n["Description"]["Hostname"] for n in api.get("/nodes")
                if (n.get("ManagerStatus") or {}).get("Leader")]
    survivor = swarm.client(next(h for h in ("h1", "h2", "h3") if h != leader))
    sid = sh(swarm, "h1", "service", "create", "-d", "--name", "failoverjob", "--mode", "replicated-job",
             "--replicas", "6", "--max-concurrent", "2", "--constraint", "node.role==worker", "busybox", "sleep",
             "1").stdout.strip()
    query = {"filters": json.dumps({"service": {sid: True}})}
    wait_until(lambda: any(t["Status"]["State"] == "complete" for t in survivor.get("/tasks", query)), 60, interval=0.1)
    most = 0

    def all_complete() -> bool:
        nonlocal most
        try:
            ts = survivor.get("/tasks", query)
        except DaemonError:  # no leader yet
            return False
        most = max(most, sum(1 for t in ts if t["Status"]["State"] in ("assigned", "accepted", "preparing",
                                                                          "starting", "running")))
        return [t["Status"]["State"] for t in ts].count("complete") >= 6

    swarm.stop_daemon(leader, kill9=True)
    try:
        wait_until(all_complete, 90, interval=0.2)
    finally:
        swarm.start_daemon(leader)
        wait_until(lambda: ready_nodes(swarm) == HOSTS, 60, interval=0.2)
    completed = sorted(t.get("Slot", 0) for t in survivor.get("/tasks", query) if t["Status"]["State"] == "complete")
    assert (completed, most <= 2) == ([0, 1, 2, 3, 4, 5], True), most
