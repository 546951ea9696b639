"""A service spec as an older API version meant it (moby's adjustForAPIVersion), and the update's `version` query
parsed as moby's strconv.ParseUint with its words."""

from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter
from shoal.api.service_json import service_spec_from_json
from shoal.api.service_versions import adjust_for_api_version, service_version


def spec(**container: object) -> dict:
    return {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", **container}}}


def test_a_replicated_job_from_an_api_1_40_client_becomes_a_replicated_service_of_one_task() -> None:
    old = {**spec(), "Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}}}
    parsed = service_spec_from_json(adjust_for_api_version(old, "1.40"))
    assert (parsed.WhichOneof("mode"), parsed.replicated.replicas) == ("replicated", 1)


def test_a_replicated_job_from_an_api_1_41_client_stays_a_job() -> None:
    new = {**spec(), "Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}}}
    assert adjust_for_api_version(new, "1.41") == new


@pytest.mark.parametrize(("version", "kept"), [("1.43", []), ("1.44", ["StartInterval"])])
def test_start_interval_is_dropped_below_api_1_44(version: str, kept: list[str]) -> None:
    check = {"Test": ["CMD", "true"], "StartInterval": 1_000_000_000}
    out = adjust_for_api_version(spec(Healthcheck=check), version)
    assert [k for k in out["TaskTemplate"]["ContainerSpec"]["Healthcheck"] if k != "Test"] == kept


def test_fields_are_matched_in_any_case_as_moby_decodes_json() -> None:
    out = adjust_for_api_version({"tasktemplate": {"containerspec": {"image": "busybox", "oomscoreadj": 500}}}, "1.45")
    assert out == {"tasktemplate": {"containerspec": {"image": "busybox"}}}


def test_tmpfs_options_are_dropped_from_every_mount_below_api_1_46() -> None:
    mounts = [{"Type": "tmpfs", "Target": f"/t{i}", "TmpfsOptions": {"SizeBytes": 1024, "Options": [["exec"]]}}
              for i in (1, 2)]
    out = adjust_for_api_version(spec(Mounts=mounts), "1.45")
    assert [m["TmpfsOptions"] for m in out["TaskTemplate"]["ContainerSpec"]["Mounts"]] == [{"SizeBytes": 1024}] * 2


def test_the_older_fields_are_dropped_below_their_versions_and_the_request_is_left_as_it_was() -> None:
    old = {**spec(Sysctls={"net.core.somaxconn": "1024"}, CapabilityAdd=["CAP_NET_ADMIN"], Ulimits=[]),
           "Mode": {"GlobalJob": {}}}
    old["TaskTemplate"]["Placement"] = {"MaxReplicas": 2, "Constraints": ["node.role==worker"]}
    old["TaskTemplate"]["Resources"] = {"Limits": {"Pids": 10, "MemoryBytes": 1 << 20}}
    before = repr(old)
    out = adjust_for_api_version(old, "1.39")
    assert (out["TaskTemplate"], out["Mode"], repr(old)) == ({
        "ContainerSpec": {"Image": "busybox"}, "Placement": {"Constraints": ["node.role==worker"]},
        "Resources": {"Limits": {"MemoryBytes": 1 << 20}}}, {}, before)


@pytest.mark.parametrize(("version", "networks"), [("1.43", ["net1"]), ("1.44", [])])
def test_the_top_level_networks_are_read_below_api_1_44_only(version: str, networks: list[str]) -> None:
    parsed = service_spec_from_json(adjust_for_api_version({**spec(), "Networks": [{"Target": "net1"}]}, version))
    assert [n.target for n in parsed.task.networks] == networks


@pytest.mark.parametrize(("raw", "message"), [
    (None, "invalid service version '': strconv.ParseUint: parsing \"\": invalid syntax"),
    ("-1", "invalid service version '-1': strconv.ParseUint: parsing \"-1\": invalid syntax"),
    (" 7", "invalid service version ' 7': strconv.ParseUint: parsing \" 7\": invalid syntax"),
    ("18446744073709551616", "invalid service version '18446744073709551616': strconv.ParseUint: parsing "
                             "\"18446744073709551616\": value out of range"),
])
def test_a_bad_update_version_is_refused_with_mobys_words(raw: str | None, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        service_version(raw)
    assert e.value.message == message


def test_the_largest_update_version_is_taken() -> None:
    assert service_version("18446744073709551615") == (1 << 64) - 1
