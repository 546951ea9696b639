"""Issue 12's seed example end to end on a 3-host lab swarm (h1 manager, h2/h3 workers, 1 s heartbeats): an overlay,
a 2-replica web service publishing 8080, a client task on the node without a web task; DNS, VIP, routing mesh,
scale down and removal, with exact outcomes. Glue under test: shoal/swarm/service_glue.py, ingress_glue.py."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.lab import Lab, host_address
from tests.lab.helpers import SHOAL, wait_until
from tests.lab.swarm_lab import running_swarm, sh

HOSTS = ["h1", "h2", "h3"]
NET = "my-multi-host-network"
# each replica answers with its own hostname (busybox httpd serves a file; `httpd -f -p 80` alone has none)
WEB = ["sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 80 -h /tmp"]
REQUESTS = 20


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(3, workers=["h2", "h3"]) as lab:
        yield lab


def hostnames(lab: Lab) -> dict[str, str]:
    """node id -> lab host."""
    return {n["ID"]: n["Description"]["Hostname"] for n in lab.client("h1").get("/nodes")}


def running(lab: Lab, service: str, n: int) -> list[dict[str, Any]] | None:
    ts = [t for t in lab.client("h1").get("/tasks", {"filters": json.dumps({"service": {service: True}})})
          if t["DesiredState"] == "running"]
    if len(ts) == n and all(t["Status"]["State"] == "running" for t in ts):
        return sorted(ts, key=lambda t: t["Slot"])
    return None


def task_ip(task: dict[str, Any], network_id: str) -> str:
    att = next(a for a in task["NetworksAttachments"] if a["Network"]["ID"] == network_id)
    return att["Addresses"][0].split("/")[0]


def container_of(lab: Lab, host: str, task_id: str) -> str:
    cs = lab.client(host).get("/containers/json", {"filters": json.dumps({"label": [f"com.docker.swarm.task.id={task_id}"]})})
    assert len(cs) == 1, cs
    return cs[0]["Id"]


def in_task(lab: Lab, host: str, cid: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return lab.exec(host, SHOAL + ["exec", cid, *argv], check=False, timeout=60)


def resolve(lab: Lab, host: str, cid: str, name: str) -> list[str]:
    """The addresses nslookup prints for name inside the container (after its "Name:" line)."""
    out = in_task(lab, host, cid, "nslookup", name).stdout
    tail = out.split("Name:", 1)[1] if "Name:" in out else ""
    return sorted(re.findall(r"Address(?: \d+)?:\s*(\d+\.\d+\.\d+\.\d+)", tail))


def fetch(lab: Lab, host: str, cid: str | None, url: str) -> str | None:
    # busybox's own -T crashes (SIGSEGV) here: the coreutils-style `timeout` bounds a connection that hangs
    argv = ["timeout", "3", "wget", "-qO-", url]
    got = in_task(lab, host, cid, *argv) if cid else lab.exec(host, ["timeout", "3", "busybox", *argv[2:]],
                                                               check=False, timeout=30)
    return got.stdout.strip() if got.returncode == 0 else None


def answers(get: Any, n: int = REQUESTS) -> set[str]:
    return {a for a in (get() for _ in range(n)) if a is not None}


def lb_table(lab: Lab, host: str, cid: str) -> str:
    """The container's VIP table (agent/network/lbplan.py's shoal_lb), "" when it has none."""
    pid = lab.client(host).get(f"/containers/{cid}/json")["State"]["Pid"]
    return lab.exec(host, ["nsenter", "-t", str(pid), "-n", "nft", "list", "table", "ip", "shoal_lb"], check=False).stdout


def test_service_flow_dns_vip_mesh_scale_and_rm(swarm: Lab) -> None:
    c = swarm.client("h1")
    sh(swarm, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", NET)
    net_id = c.get(f"/networks/{NET}")["Id"]
    sh(swarm, "h1", "service", "create", "--detach", "--replicas", "2", "--network", NET, "--name", "my-web",
       "-p", "8080:80", "busybox", *WEB)
    web = wait_until(lambda: running(swarm, "my-web", 2), 90, interval=0.5)
    names = hostnames(swarm)
    web_hosts = [names[t["NodeID"]] for t in web]
    assert len(set(web_hosts)) == 2  # spread: one per node
    ps = sh(swarm, "h1", "service", "ps", "my-web").stdout
    rows = [line.split()[1:7] for line in ps.splitlines()[1:]]
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [("my-web.1", web_hosts[0], "Running", "Running"),
                                                        ("my-web.2", web_hosts[1], "Running", "Running")], ps
    vip = next(v["Addr"].split("/")[0] for v in c.get("/services/my-web")["Endpoint"]["VirtualIPs"]
               if v["NetworkID"] == net_id)
    ips = sorted(task_ip(t, net_id) for t in web)
    replica_names = {c2["Config"]["Hostname"] for c2 in
                     (swarm.client(h).get(f"/containers/{container_of(swarm, h, t['ID'])}/json")
                      for h, t in zip(web_hosts, web))}

    spare = next(h for h in HOSTS if h not in web_hosts)  # the node without a web task
    sh(swarm, "h1", "service", "create", "--detach", "--name", "client", "--network", NET,
       "--constraint", f"node.hostname=={spare}", "busybox", "sleep", "1d")
    client_task = wait_until(lambda: running(swarm, "client", 1), 90, interval=0.5)[0]
    client = container_of(swarm, spare, client_task["ID"])

    # DNS and the VIP, from a task on another node than both replicas
    assert wait_until(lambda: resolve(swarm, spare, client, "my-web") == [vip] or None, 30, interval=0.5)
    assert wait_until(lambda: resolve(swarm, spare, client, "tasks.my-web") == ips or None, 30, interval=0.5)
    assert answers(lambda: fetch(swarm, spare, client, "http://my-web/")) == replica_names
    assert answers(lambda: fetch(swarm, spare, client, f"http://{vip}/")) == replica_names

    # routing mesh: every node answers on 8080, the one without a task too, spreading over both replicas
    for target in HOSTS:
        source = next(h for h in HOSTS if h != target)
        url = f"http://{host_address(target)}:8080/"
        wait_until(lambda: fetch(swarm, source, None, url), 30, interval=0.5)
        assert answers(lambda: fetch(swarm, source, None, url)) == replica_names, target

    # scale to 1: the removed task leaves DNS and the VIP
    sh(swarm, "h1", "service", "scale", "--detach", "my-web=1")
    kept = wait_until(lambda: running(swarm, "my-web", 1), 60, interval=0.5)[0]
    kept_name = swarm.client(names[kept["NodeID"]]).get(
        f"/containers/{container_of(swarm, names[kept['NodeID']], kept['ID'])}/json")["Config"]["Hostname"]
    assert wait_until(lambda: resolve(swarm, spare, client, "tasks.my-web") == [task_ip(kept, net_id)] or None,
                      30, interval=0.5)
    assert resolve(swarm, spare, client, "my-web") == [vip]
    assert answers(lambda: fetch(swarm, spare, client, "http://my-web/")) == {kept_name}

    # service rm: containers, names and the VIP table go
    assert vip in lb_table(swarm, spare, client)
    assert sh(swarm, "h1", "service", "rm", "my-web").stdout == "my-web\n"

    def web_gone() -> bool:
        return all(not swarm.client(h).get("/containers/json", {"all": "1", "filters": json.dumps(
            {"label": ["com.docker.swarm.service.name=my-web"]})}) for h in HOSTS)

    wait_until(web_gone, 60, interval=0.5)
    assert wait_until(lambda: resolve(swarm, spare, client, "my-web") == [] or None, 30, interval=0.5)
    assert resolve(swarm, spare, client, "tasks.my-web") == []
    assert fetch(swarm, spare, client, f"http://{vip}/") is None
    assert vip not in lb_table(swarm, spare, client)
    for h in HOSTS:
        assert fetch(swarm, next(x for x in HOSTS if x != h), None, f"http://{host_address(h)}:8080/") is None, h
    sh(swarm, "h1", "service", "rm", "client")
