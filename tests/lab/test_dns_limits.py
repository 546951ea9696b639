"""The issue's reproduction of a DNS TCP flood against a real lab daemon (issue 7 §3): one container
opens thousands of TCP connections to 127.0.0.11:53; the daemon's fds stay bounded and it keeps serving.
Uses tests/lab/helpers.py (running_lab) and the client of tests/lab/test_dns_server.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.network.dnsserver import MAX_TCP_PER_CONTAINER
from tests.lab.helpers import SHOAL, running_lab, wait_until
from tests.lab.test_dns_server import CLIENT

pytestmark = pytest.mark.lab

FLOOD = 3000


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        lab.exec("h1", SHOAL + ["network", "create", "capnet"])
        for name in ("flooder", "asker"):
            lab.exec("h1", SHOAL + ["run", "-d", "--network", "capnet", "--name", name, "busybox", "sleep", "3600"])
        yield lab


def daemon_fds(lab) -> int:
    return len(os.listdir(f"/proc/{lab.daemon_pid('h1')}/fd"))


def sandbox(lab, name: str) -> str:
    out = lab.exec("h1", SHOAL + ["inspect", name]).stdout
    return json.loads(out)[0]["NetworkSettings"]["SandboxKey"]


def test_tcp_flood_from_one_container_leaves_the_daemon_bounded_and_serving(lab) -> None:
    before = daemon_fds(lab)
    flood = subprocess.Popen(["nsenter", f"--net={sandbox(lab, 'flooder')}", sys.executable, "-c", CLIENT,
                              "hold", str(FLOOD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None and flood.stdout.readline() == f"holding {FLOOD}\n"
        wait_until(lambda: daemon_fds(lab) >= before + MAX_TCP_PER_CONTAINER, timeout=20)
        # The API answers and both containers are still running.
        listed = lab.client("h1").get("/containers/json?all=1")
        assert sorted((c["Names"][0], c["State"]) for c in listed) == [("/asker", "running"), ("/flooder", "running")]
        # Another container's UDP DNS answers.
        ip = json.loads(lab.exec("h1", SHOAL + ["inspect", "flooder"]).stdout)[0][
            "NetworkSettings"]["Networks"]["capnet"]["IPAddress"]
        looked_up = lab.exec("h1", SHOAL + ["exec", "asker", "nslookup", "flooder"], check=False)
        assert f"Address: {ip}" in looked_up.stdout, looked_up.stdout + looked_up.stderr
        # By now an unbounded daemon would have accepted them all.
        assert daemon_fds(lab) - before <= MAX_TCP_PER_CONTAINER + 8
    finally:
        flood.communicate(timeout=60)
    wait_until(lambda: daemon_fds(lab) <= before + 2, timeout=20)
