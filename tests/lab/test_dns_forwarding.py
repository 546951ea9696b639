"""The embedded DNS of a lab daemon forwards names it does not own to the upstream it was
given with `shoal daemon --dns` (S11): a dnsmasq that this test runs on lab host h2.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.lab.helpers import SHOAL, running_lab, wait_until

pytestmark = pytest.mark.lab

UPSTREAM = "192.168.200.12"  # h2's underlay address
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@pytest.fixture(scope="module")
def lab():
    assert os.path.exists(DNSMASQ), f"{DNSMASQ} is missing: scripts/install.sh installs dnsmasq-base"
    with running_lab(hosts=2, daemon_args=["--dns", UPSTREAM]) as lab:
        upstream = subprocess.Popen(lab.exec_argv("h2", [
            DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={UPSTREAM}", "--port=53", "--local=/test/", "--host-record=upstream.test,10.9.9.9",
        ]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            lab.exec("h1", SHOAL + ["network", "create", "appnet"])
            lab.exec("h1", SHOAL + ["run", "-d", "--network", "appnet", "--name", "asker", "busybox",
                                    "sleep", "3600"])
            yield lab
        finally:
            upstream.kill()
            upstream.wait()


def nslookup(lab, container: str, name: str):
    return lab.exec("h1", SHOAL + ["exec", container, "nslookup", name], check=False)


def test_a_name_the_daemon_does_not_own_is_answered_by_the_upstream(lab):
    result = wait_until(lambda: (r := nslookup(lab, "asker", "upstream.test")).returncode == 0 and r, timeout=15)
    assert "Address: 10.9.9.9" in result.stdout
    assert "Server:\t\t127.0.0.11" in result.stdout


def test_the_upstreams_nxdomain_reaches_the_container(lab):
    result = nslookup(lab, "asker", "nosuchname.test")
    assert result.returncode != 0
    assert "NXDOMAIN" in result.stdout + result.stderr


def test_a_container_on_the_default_bridge_uses_the_daemons_dns_directly(lab):
    out = lab.exec("h1", SHOAL + ["run", "--rm", "busybox", "cat", "/etc/resolv.conf"]).stdout
    assert [l for l in out.splitlines() if l.startswith("nameserver")] == [f"nameserver {UPSTREAM}"]
