"""A container whose network needs a driver the node cannot serve yet (a swarm overlay before the swarm session is
back) is not restarted at boot with no network: it waits, and restart_deferred starts it once the driver is there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.network.drivers.base import Driver, Registry, UnavailableDriver
from common.errdefs import Unavailable
from shoal.engine.restart import restart_at_boot, restart_deferred


@dataclass
class Net:
    name: str
    driver: str


@dataclass
class Container:
    id: str
    endpoints: dict[str, Any]
    state: str = "exited"
    started_before: bool = True
    exit_code: int = 137
    manually_stopped: bool = False
    restart_count: int = 0
    restarting: bool = False
    host_config: dict[str, Any] = field(default_factory=lambda: {"RestartPolicy": {"Name": "always"}})


class Controller:
    def __init__(self, registry: Registry) -> None:
        self.drivers = registry
        self.networks = {"ov": Net("ov", "overlay"), "br": Net("br", "bridge")}

    def lookup(self, ref: str) -> Net:
        return self.networks[ref]


class Restarts:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start_now(self, container_id: str) -> None:
        self.started.append(container_id)


class Engine:
    def __init__(self) -> None:
        registry = Registry()
        registry.register(UnavailableDriver("overlay", "This node is not a swarm manager."))
        bridge = Driver()
        bridge.name = "bridge"
        registry.register(bridge)
        self.net = Controller(registry)
        self.restarts = Restarts()
        self.containers = {"on-ov": Container("on-ov", {"ov": None}), "on-br": Container("on-br", {"br": None})}


def test_a_container_on_an_overlay_waits_at_boot_and_one_on_a_bridge_starts():
    engine = Engine()
    restart_at_boot(engine)
    assert engine.restarts.started == ["on-br"]
    assert engine.containers["on-ov"].restarting is True
    assert restart_deferred(engine) == 0  # the driver is still unavailable


def test_the_waiting_container_starts_once_the_overlay_driver_is_there():
    engine = Engine()
    restart_at_boot(engine)
    overlay = Driver()
    overlay.name = "overlay"
    engine.net.drivers.register(overlay)
    assert restart_deferred(engine) == 1
    assert engine.restarts.started == ["on-br", "on-ov"]
    assert restart_deferred(engine) == 0  # once


def test_an_unavailable_driver_refuses_a_join_naming_the_network():
    with pytest.raises(Unavailable, match=r"^network ov is not available on this node yet: no swarm$"):
        UnavailableDriver("overlay", "no swarm").join(Net("ov", "overlay"), None, None)  # type: ignore[arg-type]
