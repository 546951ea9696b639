"""NetworkController.create rewrites shoal's iptables rules only for a network that has rules of its own (a bridge);
one without (macvlan here, an overlay's local copy in a swarm) leaves them as they are: no iptables-restore on a
swarm task's first start. In a lab host's namespace (the fake daemon: nothing else touches its firewall)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.lab import Lab

pytestmark = pytest.mark.lab

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
    net.apply_firewall()
    counts = [net.firewall.full_applies]
    net.create(NetworkCreate(name="mv", driver="macvlan", options={"parent": "eth0"},
                             ipam_config=[IPAMConfig(subnet="10.66.0.0/24")]))
    counts.append(net.firewall.full_applies)
    net.create(NetworkCreate(name="br", ipam_config=[IPAMConfig(subnet="10.67.0.0/24")]))
    counts.append(net.firewall.full_applies)
    print(json.dumps([b - a for a, b in zip(counts, counts[1:])]))
''')


def test_a_network_without_rules_of_its_own_leaves_the_firewall_as_it_is(
        lab: Callable[..., Lab], fake_daemon: Callable[..., Path], tmp_path: Path) -> None:
    fake_daemon()
    made = lab(1)
    result = made.exec("h1", [sys.executable, "-c", SCRIPT, str(tmp_path / "state")])
    assert json.loads(result.stdout) == [0, 1]  # full rewrites: none for the macvlan network, one for the bridge
