"""Specification of shoal.api.create_fields: create fields shoal does not apply are refused by name.

The bodies in tests/unit/data are what `docker run busybox true` sent (docker CLI 28 and 20.10,
captured on a unix socket); docker-py's is inline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errdefs import http_status
from shoal.api import params
from shoal.api.create_fields import refuse_unapplied
from shoal.engine.errors import InvalidParameter

DATA = Path(__file__).parent / "data"
DOCKER_PY_BODY = {
    "Tty": False, "OpenStdin": False, "StdinOnce": False, "AttachStdin": False, "AttachStdout": True,
    "AttachStderr": True, "Cmd": ["true"], "Image": "busybox", "NetworkDisabled": False,
    "HostConfig": {"NetworkMode": "default"},
}  # fmt: skip


def _cli_body(version: str) -> dict:
    return json.loads((DATA / f"create_body_docker_cli_{version}.json").read_text())


@pytest.mark.parametrize("version", ["28", "20.10"])
def test_plain_docker_run_body_of_the_stock_cli_is_accepted(version: str) -> None:
    request = params.parse_container_create(_cli_body(version))
    assert request.image == "busybox" and request.cmd == ["true"]


def test_plain_docker_py_create_body_is_accepted() -> None:
    assert params.parse_container_create(DOCKER_PY_BODY).image == "busybox"


def test_inspect_style_defaults_are_accepted() -> None:
    # What shoal's own inspect shows, sent back by a client that copies a container's config.
    body = _cli_body("28")
    body["HostConfig"].update(
        {"LogConfig": {"Type": "json-file", "Config": {}}, "CgroupnsMode": "private", "IpcMode": "private",
         "ShmSize": 67108864, "Runtime": "runc", "MemorySwappiness": -1, "Init": None}
    )  # fmt: skip
    refuse_unapplied(body)


def _refused(host_config: dict | None = None, **config) -> str:
    body = {"Image": "busybox", "Cmd": ["true"], **config}
    if host_config is not None:
        body["HostConfig"] = host_config
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create(body)
    assert http_status(info.value) == 400
    return info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("BlkioWeight", 500),  # cgroup settings shoal does not apply (the limits it applies pass)
        ("OomKillDisable", True),
        ("KernelMemory", 10485760),
        ("VolumesFrom", ["other"]),  # mounts (Binds, Mounts, Tmpfs are applied: test_mount_specs)
        ("PidMode", "host"),  # namespaces
        ("IpcMode", "host"),
        ("ShmSize", 1048576),
    ],
)
def test_unapplied_host_config_field_is_refused_by_name(field: str, value: object) -> None:
    assert _refused({field: value}) == f"shoal does not support HostConfig.{field} yet (got {json.dumps(value)})"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("NetworkDisabled", True),
    ],
)
def test_unapplied_config_field_is_refused_by_name(field: str, value: object) -> None:
    assert _refused(**{field: value}) == f"shoal does not support Config.{field} yet (got {json.dumps(value)})"


def test_a_healthcheck_is_accepted_on_create() -> None:
    request = params.parse_container_create(
        {"Image": "busybox", "Healthcheck": {"Test": ["CMD", "true"], "Interval": 100_000_000, "Retries": 2}})
    assert request.raw_config["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 100_000_000, "Retries": 2}


def test_unapplied_endpoint_field_is_refused_by_name() -> None:
    body = {
        "Image": "busybox",
        "NetworkingConfig": {"EndpointsConfig": {"net1": {"GwPriority": 5}}},
    }
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create(body)
    assert info.value.message == "shoal does not support NetworkingConfig.EndpointsConfig[net1].GwPriority yet (got 5)"


def test_an_ipv6_address_request_is_refused_by_name() -> None:
    body = {
        "Image": "busybox",
        "NetworkingConfig": {"EndpointsConfig": {"net1": {"IPAMConfig": {"IPv4Address": "", "IPv6Address": "fd00::9"}}}},
    }
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create(body)
    assert info.value.message == (
        'shoal does not support NetworkingConfig.EndpointsConfig[net1].IPAMConfig.IPv6Address yet (got "fd00::9")'
    )


def test_applied_confinement_fields_are_accepted() -> None:
    request = params.parse_container_create(
        {"Image": "busybox", "HostConfig": {"CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD"], "ReadonlyRootfs": True,
                                            "SecurityOpt": ["no-new-privileges", "seccomp=unconfined"]}}
    )  # fmt: skip
    assert request.raw_host_config["CapAdd"] == ["NET_ADMIN"]


def test_a_logging_driver_other_than_json_file_is_refused_by_name() -> None:
    assert _refused({"LogConfig": {"Type": "syslog", "Config": {}}}) == (
        "shoal supports only the json-file logging driver (got 'syslog')")


def test_json_file_max_size_and_max_file_are_accepted() -> None:
    body = {"Image": "busybox", "HostConfig": {"LogConfig": {"Type": "json-file",
                                                             "Config": {"max-size": "10k", "max-file": "3"}}}}
    assert params.parse_container_create(body).image == "busybox"


def test_a_bad_max_size_is_refused_naming_the_value() -> None:
    assert _refused({"LogConfig": {"Type": "json-file", "Config": {"max-size": "ten"}}}) == "invalid size: 'ten'"


def test_an_unknown_log_opt_is_refused_naming_it() -> None:
    assert _refused({"LogConfig": {"Type": "json-file", "Config": {"labels-regex": "x"}}}) == (
        "unknown log opt 'labels-regex' for json-file log driver")
def test_applied_cgroup_limits_are_accepted() -> None:
    limits = {"Memory": 16777216, "MemorySwap": 33554432, "MemoryReservation": 8388608, "NanoCpus": 500000000,
              "CpuShares": 512, "CpuPeriod": 0, "CpuQuota": 0, "CpusetCpus": "0", "CpusetMems": "",
              "PidsLimit": 20}
    request = params.parse_container_create({"Image": "busybox", "HostConfig": dict(limits)})
    assert {k: request.raw_host_config[k] for k in limits} == limits


def test_group_add_and_oom_score_adj_are_accepted_on_create() -> None:
    request = params.parse_container_create(
        {"Image": "busybox", "HostConfig": {"GroupAdd": ["audio", "4242"], "OomScoreAdj": 500}})
    assert (request.raw_host_config["GroupAdd"], request.raw_host_config["OomScoreAdj"]) == (["audio", "4242"], 500)


def test_an_oom_score_adj_out_of_range_is_refused_on_create_with_mobys_words() -> None:
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create({"Image": "busybox", "HostConfig": {"OomScoreAdj": 2000}})
    assert (info.value.message, http_status(info.value)) == (
        "Invalid value 2000, range for oom score adj is [-1000, 1000]", 400)
