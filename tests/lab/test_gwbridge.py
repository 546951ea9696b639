"""Lab tests of docker_gwbridge (agent.network.gwbridge) through the real NetworkController in a lab
host's namespace: the bridge, address and firewall Docker makes at swarm init, a second call that
changes nothing, and a user's docker_gwbridge used as it is.

The hosts run the fake daemon, so the controller of the test is the only one in the namespace.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.lab import Lab

pytestmark = pytest.mark.lab

LabFactory = Callable[..., Lab]

# Runs inside the host's namespace: a controller over STATE (restored as at daemon start), then
# what the test asks for (argv[2]), then ensure_gwbridge through the controller.
SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from agent.network.controller import NetworkController, NetworkOptions
    from agent.network.records import IPAMConfig
    from shoal.engine.requests import NetworkCreate
    from shoal.engine.state import StateDir
    state = StateDir(Path(sys.argv[1]))
    net = NetworkController(state, NetworkOptions(), daemon_id=state.daemon_id())
    net.restore()
    if sys.argv[2] == "user-made":
        net.create(NetworkCreate(name="docker_gwbridge", ipam_config=[IPAMConfig(subnet="10.11.0.0/16")]))
    record, made = net.ensure_gwbridge()
    print(json.dumps({"id": record.id, "made": made, "subnet": record.ipam_config[0].subnet,
                      "gateway": record.ipam_config[0].gateway, "options": record.options,
                      "bridge": net.bridge_name(record), "count": sum(n.name == "docker_gwbridge" for n in net.networks.values())}))
''')


def ensure(made: Lab, state: Path, mode: str = "") -> dict:  # type: ignore[type-arg]
    result = made.exec("h1", [sys.executable, "-c", SCRIPT, str(state), mode])
    return json.loads(result.stdout)


def ip_addrs(made: Lab, ifname: str) -> list[str]:
    out = subprocess.run(["ip", "-n", made.netns("h1"), "-j", "addr", "show", "dev", ifname], check=True,
                         capture_output=True, text=True).stdout
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"] if a["family"] == "inet"]


def iptables(made: Lab) -> list[str]:
    return made.exec("h1", ["iptables-save"]).stdout.splitlines()


def test_ensure_gwbridge_makes_dockers_bridge(lab: LabFactory, fake_daemon: Callable[..., Path], tmp_path: Path) -> None:
    fake_daemon()
    made = lab(1)
    got = ensure(made, tmp_path / "state")
    assert (got["made"], got["subnet"], got["gateway"], got["bridge"]) == (True, "172.18.0.0/16", "172.18.0.1",
                                                                          "docker_gwbridge")
    assert got["options"] == {"com.docker.network.bridge.enable_icc": "false",
                              "com.docker.network.bridge.enable_ip_masquerade": "true",
                              "com.docker.network.bridge.name": "docker_gwbridge"}
    assert ip_addrs(made, "docker_gwbridge") == ["172.18.0.1/16"]
    rules = iptables(made)
    assert "-A POSTROUTING -s 172.18.0.0/16 ! -o docker_gwbridge -j MASQUERADE" in rules
    assert "-A DOCKER-FORWARD -i docker_gwbridge -o docker_gwbridge -j DROP" in rules  # ICC off (Docker 28 chains)


def test_ensure_gwbridge_again_after_a_restart_changes_nothing(lab: LabFactory, fake_daemon: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    fake_daemon()
    made = lab(1)
    first = ensure(made, tmp_path / "state")
    rules = iptables(made)
    again = ensure(made, tmp_path / "state")
    assert (again["made"], again["id"], again["count"]) == (False, first["id"], 1)
    assert ip_addrs(made, "docker_gwbridge") == ["172.18.0.1/16"]
    assert [r for r in iptables(made) if not r.startswith("#")] == [r for r in rules if not r.startswith("#")]


def test_a_users_docker_gwbridge_is_used_as_it_is(lab: LabFactory, fake_daemon: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    fake_daemon()
    made = lab(1)
    got = ensure(made, tmp_path / "state", "user-made")
    assert (got["made"], got["subnet"], got["count"]) == (False, "10.11.0.0/16", 1)
    assert got["options"] == {} and got["bridge"] == f"br-{got['id'][:12]}"
    assert ip_addrs(made, got["bridge"]) == ["10.11.0.1/16"]
    missing = subprocess.run(["ip", "-n", made.netns("h1"), "link", "show", "docker_gwbridge"], capture_output=True)
    assert missing.returncode != 0


ENGINE_SCRIPT = textwrap.dedent('''
    import asyncio, json, sys
    from pathlib import Path
    from agent.network.gwbridge import ensure_gwbridge
    from shoal.engine.engine import Engine, EngineOptions

    async def main():
        root = Path(sys.argv[1])
        engine = Engine(EngineOptions(data_dir=root / "data", exec_root=root / "run", netns_prefix=sys.argv[2]))
        await engine.restore()
        try:
            record, made = await ensure_gwbridge(engine)  # what shoal/swarm/hooks.on_joined does
            print(json.dumps({"made": made, "subnet": record.ipam_config[0].subnet,
                              "listed": [n.name for n in engine.net.list({})]}))
        finally:
            await engine.close()

    asyncio.run(main())
''')


def test_ensure_gwbridge_of_an_engine_runs_on_its_kernel_thread(lab: LabFactory, fake_daemon: Callable[..., Path],
                                                                tmp_path: Path) -> None:
    """The swarm hook passes the engine: the bridge is made through its controller, listed as a network."""
    fake_daemon()
    made = lab(1)
    result = made.exec("h1", [sys.executable, "-c", ENGINE_SCRIPT, str(tmp_path), f"{made.netns('h1')}-"])
    assert json.loads(result.stdout) == {"made": True, "subnet": "172.18.0.0/16",
                                         "listed": ["bridge", "docker_gwbridge", "host", "none"]}
    assert ip_addrs(made, "docker_gwbridge") == ["172.18.0.1/16"]
