"""Unit tests of agent.network.gwbridge's plan: the request Docker's docker_gwbridge corresponds to,
and a user's docker_gwbridge kept as it is (pure: no kernel, no controller)."""
from __future__ import annotations

import dataclasses

import pytest

from agent.network.gwbridge import GwbridgeCreate, plan
from agent.network.records import IPAMConfig, NetworkRecord
from common.errdefs import ShoalError, http_status
from shoal.engine.requests import NetworkCreate


def record(name: str, driver: str = "bridge", **kw: object) -> NetworkRecord:
    return NetworkRecord(id=name[0] * 64, name=name, driver=driver, created="t", **kw)  # type: ignore[arg-type]


def test_without_one_the_plan_is_dockers_gwbridge() -> None:
    wanted = plan([record("bridge", predefined=True), record("user")])
    assert isinstance(wanted, GwbridgeCreate)
    assert (wanted.name, wanted.driver, wanted.attachable, wanted.internal, wanted.ipam_config) == (
        "docker_gwbridge", "bridge", False, False, [])
    assert wanted.options == {"com.docker.network.bridge.enable_icc": "false",
                              "com.docker.network.bridge.enable_ip_masquerade": "true",
                              "com.docker.network.bridge.name": "docker_gwbridge"}


def test_the_request_has_every_field_of_a_network_create() -> None:
    """The controller reads a NetworkCreate's fields: the gwbridge request must have them all."""
    assert {f.name for f in dataclasses.fields(NetworkCreate)} <= {f.name for f in dataclasses.fields(GwbridgeCreate)}


def test_a_users_docker_gwbridge_is_kept_as_it_is() -> None:
    mine = record("docker_gwbridge", ipam_config=[IPAMConfig(subnet="10.11.0.0/16", gateway="10.11.0.1")],
                  options={"com.docker.network.bridge.enable_icc": "true"})
    assert plan([record("bridge"), mine]) is mine


def test_a_docker_gwbridge_of_another_driver_is_refused_by_name() -> None:
    with pytest.raises(ShoalError) as caught:
        plan([record("docker_gwbridge", driver="macvlan")])
    assert (http_status(caught.value), caught.value.message) == (
        400, "network docker_gwbridge exists with driver macvlan: remove it or make it a bridge network before "
             "joining a swarm")
