"""A container create as an older API version meant it (moby's postContainersCreate): fields that version lacked are
dropped, options it did not check are reset, what it could not ask for is refused with moby's words."""

from __future__ import annotations

from typing import Any

import pytest

from common.errdefs import InvalidParameter
from shoal.api.create_versions import adjust_create_for_api_version


def mount(kind: str, **extra: Any) -> dict[str, Any]:
    return {"Image": "busybox", "HostConfig": {"Mounts": [{"Type": kind, "Target": "/m", **extra}]}}


def refusal(body: dict[str, Any], version: str) -> str:
    with pytest.raises(InvalidParameter) as e:
        adjust_create_for_api_version(body, version)
    return e.value.message


@pytest.mark.parametrize(("version", "kept"), [("1.43", {}), ("1.44", {"StartInterval": 10**9})])
def test_start_interval_is_dropped_below_api_1_44(version: str, kept: dict[str, int]) -> None:
    body = {"Image": "busybox", "Healthcheck": {"Test": ["CMD", "true"], "StartInterval": 10**9}}
    assert adjust_create_for_api_version(body, version)["Healthcheck"] == {"Test": ["CMD", "true"], **kept}


def test_the_request_itself_is_left_as_it_was() -> None:
    body = {"Image": "busybox", "Healthcheck": {"StartInterval": 10**9}}
    adjust_create_for_api_version(body, "1.43")
    assert body == {"Image": "busybox", "Healthcheck": {"StartInterval": 10**9}}


def test_two_networks_at_create_are_refused_below_api_1_44_with_mobys_words() -> None:
    body = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"front": {}, "back": {}}}}
    assert refusal(body, "1.43") == "Container cannot be created with multiple network endpoints: front, back"
    assert adjust_create_for_api_version(body, "1.44") == body


@pytest.mark.parametrize(("options", "kind"), [("VolumeOptions", "bind"), ("BindOptions", "volume"),
                                               ("TmpfsOptions", "bind")])
def test_options_for_another_mount_type_are_refused_from_api_1_42(options: str, kind: str) -> None:
    assert refusal(mount(kind, **{options: {}}), "1.42") == f'{options} must not be specified on mount type "{kind}"'


def test_volume_and_tmpfs_options_for_another_mount_type_are_dropped_below_api_1_42() -> None:
    body = mount("bind", Source="/srv", VolumeOptions={"NoCopy": True}, TmpfsOptions={"SizeBytes": 1},
                 BindOptions={"CreateMountpoint": True, "Propagation": "rprivate"})
    out = adjust_create_for_api_version(body, "1.41")
    assert out["HostConfig"]["Mounts"] == [{"Type": "bind", "Target": "/m", "Source": "/srv",
                                            "BindOptions": {"Propagation": "rprivate"}}]


def test_console_size_is_not_applied_below_api_1_42() -> None:
    body = {"Image": "busybox", "HostConfig": {"ConsoleSize": [24, 80]}}
    assert (adjust_create_for_api_version(body, "1.41")["HostConfig"],
            adjust_create_for_api_version(body, "1.42")["HostConfig"]) == ({}, {"ConsoleSize": [24, 80]})


def test_bind_non_recursive_is_dropped_below_api_1_40() -> None:
    body = mount("bind", Source="/srv", BindOptions={"NonRecursive": True})
    assert adjust_create_for_api_version(body, "1.39")["HostConfig"]["Mounts"][0]["BindOptions"] == {}


def test_read_only_force_recursive_is_refused_below_api_1_44() -> None:
    body = mount("bind", Source="/srv", ReadOnly=True, BindOptions={"ReadOnlyForceRecursive": True})
    assert refusal(body, "1.43") == "BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer"


def test_a_volume_subpath_is_refused_below_api_1_45() -> None:
    assert refusal(mount("volume", Source="v", VolumeOptions={"Subpath": "a"}), "1.44") == (
        "VolumeOptions.Subpath needs API v1.45 or newer")


def test_an_image_mount_is_refused_below_api_1_48() -> None:
    assert refusal(mount("image", Source="busybox"), "1.47") == 'Mount type "Image" needs API v1.48 or newer'


def test_gateway_priority_is_dropped_from_every_endpoint_below_api_1_48() -> None:
    body = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"front": {"GwPriority": 5, "Aliases": ["a"]}}}}
    assert adjust_create_for_api_version(body, "1.47")["NetworkingConfig"] == {"EndpointsConfig": {"front": {"Aliases": ["a"]}}}


def test_annotations_are_dropped_below_api_1_43() -> None:
    body = {"Image": "busybox", "HostConfig": {"Annotations": {"a": "b"}}}
    assert adjust_create_for_api_version(body, "1.42")["HostConfig"] == {}


# ---- the container-wide MacAddress (moby's handleMACAddressBC) ------------------------------------------------------

def mac_refusal(body: dict[str, Any], version: str) -> str:
    from shoal.api.create_versions import migrate_container_mac

    with pytest.raises(InvalidParameter) as e:
        migrate_container_mac(body, version)
    return e.value.message


def migrated(body: dict[str, Any], version: str) -> tuple[dict[str, Any], list[str]]:
    from shoal.api.create_versions import migrate_container_mac

    warnings = migrate_container_mac(body, version)
    return body, warnings


def test_from_api_1_44_the_container_wide_mac_moves_to_the_main_network_with_mobys_warning() -> None:
    from shoal.api.create_versions import MAC_DEPRECATED

    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99", "HostConfig": {"NetworkMode": "front"}}
    assert migrated(body, "1.44") == ({"Image": "busybox", "HostConfig": {"NetworkMode": "front"},
                                       "NetworkingConfig": {"EndpointsConfig": {"front": {"MacAddress": "02:42:ac:11:00:99"}}}},
                                      [MAC_DEPRECATED])


def test_from_api_1_44_an_empty_network_mode_means_the_bridge() -> None:
    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99"}
    assert migrated(body, "1.50")[0]["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {"MacAddress": "02:42:ac:11:00:99"}}}


def test_from_api_1_44_a_container_wide_mac_unlike_the_endpoints_is_refused() -> None:
    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99", "HostConfig": {"NetworkMode": "front"},
            "NetworkingConfig": {"EndpointsConfig": {"front": {"MacAddress": "02:42:ac:11:00:01"}}}}
    assert mac_refusal(body, "1.44") == ("the container-wide MAC address must match the endpoint-specific MAC address "
                                         "for the main network, or be left empty")


def test_from_api_1_44_a_container_wide_mac_fills_an_endpoint_without_one() -> None:
    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99", "HostConfig": {"NetworkMode": "bridge"},
            "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": ["a"]}}}}  # the CLI's key for the bridge
    assert migrated(body, "1.44")[0]["NetworkingConfig"] == {
        "EndpointsConfig": {"default": {"Aliases": ["a"], "MacAddress": "02:42:ac:11:00:99"}}}


def test_from_api_1_44_endpoints_without_the_network_modes_one_refuse_a_container_wide_mac() -> None:
    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99", "HostConfig": {"NetworkMode": "front"},
            "NetworkingConfig": {"EndpointsConfig": {"back": {}}}}
    assert mac_refusal(body, "1.44") == ("if a container-wide MAC address is supplied, HostConfig.NetworkMode must match "
                                         "the identity of a network in NetworkSettings.Networks")


def test_from_api_1_44_a_container_wide_mac_with_host_networking_is_dropped_with_the_warning() -> None:
    from shoal.api.create_versions import MAC_DEPRECATED

    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99", "HostConfig": {"NetworkMode": "host"}}
    assert migrated(body, "1.44") == ({"Image": "busybox", "HostConfig": {"NetworkMode": "host"}}, [MAC_DEPRECATED])


def test_below_api_1_44_the_container_wide_mac_is_the_endpoints_and_stays() -> None:
    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99", "HostConfig": {"NetworkMode": "front"},
            "NetworkingConfig": {"EndpointsConfig": {"f1d2": {"MacAddress": "02:42:ac:11:00:01"}}}}
    assert migrated(body, "1.43") == ({"Image": "busybox", "MacAddress": "02:42:ac:11:00:99",
                                       "HostConfig": {"NetworkMode": "front"},
                                       "NetworkingConfig": {"EndpointsConfig": {"f1d2": {"MacAddress": "02:42:ac:11:00:99"}}}},
                                      [])


def test_below_api_1_44_endpoint_macs_without_a_container_wide_one_are_ignored() -> None:
    body = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"front": {"MacAddress": "02:42:ac:11:00:01"}}}}
    assert migrated(body, "1.43")[0]["NetworkingConfig"] == {"EndpointsConfig": {"front": {}}}


@pytest.mark.parametrize("mode", ["host", "none", "container:abc"])
def test_below_api_1_44_a_container_wide_mac_conflicts_with_a_network_mode_of_no_endpoint(mode: str) -> None:
    body = {"Image": "busybox", "MacAddress": "02:42:ac:11:00:99", "HostConfig": {"NetworkMode": mode}}
    assert mac_refusal(body, "1.43") == "conflicting options: mac-address and the network mode"
