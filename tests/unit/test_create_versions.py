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
