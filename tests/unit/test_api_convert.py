"""Specification of shoal.api.convert (records -> Docker JSON) and shoal.api.streams framing."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shoal.api import convert, streams
from shoal.engine.records import ContainerRecord, EndpointRecord, ExecRecord, IPAMConfig, NetworkRecord

NET_ID = "n" * 64
CID = "c" * 64
EP_ID = "e" * 64
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def bridge() -> NetworkRecord:
    return NetworkRecord(
        id=NET_ID, name="bridge", driver="bridge", created="2025-01-01T00:00:00.123456789Z",
        ipam_config=[IPAMConfig(subnet="172.17.0.0/16", gateway="172.17.0.1")],
        options={"com.docker.network.bridge.name": "docker0"}, predefined=True,
    )


def user_net() -> NetworkRecord:
    return NetworkRecord(
        id="u" * 64, name="appnet", driver="bridge", created="2025-01-01T00:00:00Z",
        ipam_config=[IPAMConfig(subnet="10.1.0.0/24", gateway="10.1.0.1", ip_range="10.1.0.128/25")],
        labels={"a": "b"},
    )


def endpoint(net_id: str = NET_ID, ip: str = "172.17.0.2", aliases: list[str] | None = None) -> EndpointRecord:
    return EndpointRecord(id=EP_ID, network_id=net_id, container_id=CID, ipv4=ip, prefixlen=16,
                          gateway="172.17.0.1", mac="02:42:ac:11:00:02", aliases=aliases or [])


def container(**kw) -> ContainerRecord:
    base = dict(
        id=CID, name="web", image="busybox", image_id="sha256:" + "i" * 64,
        created="2025-01-02T03:00:00.000000001Z", args=["sleep", "3600"], cmd=["sleep", "3600"],
        env=["PATH=/bin"], hostname="cccccccccccc", state="running", pid=42,
        started_at="2025-01-02T03:02:05Z", endpoints={NET_ID: endpoint()},
    )
    base.update(kw)
    return ContainerRecord(**base)


# ---- time ---------------------------------------------------------------------------

def test_parse_time_keeps_microseconds_of_a_nanosecond_time():
    assert convert.parse_time("2025-01-02T03:04:05.123456789Z") == datetime(
        2025, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


def test_parse_time_zero_time_is_none():
    assert convert.parse_time("0001-01-01T00:00:00Z") is None


def test_unix_seconds():
    assert convert.unix_seconds("2025-01-02T03:04:05Z") == int(NOW.timestamp())


@pytest.mark.parametrize("seconds, text", [
    (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
    (7200, "2 hours"), (47 * 3600, "47 hours"), (3 * 86400, "3 days"), (15 * 86400, "2 weeks"),
    (90 * 86400, "3 months"), (800 * 86400, "2 years"),
])
def test_human_duration_matches_go_units(seconds, text):
    assert convert.human_duration(seconds) == text


def test_status_of_a_running_container():
    assert convert.container_status(container(), NOW) == "Up 2 minutes"


def test_status_of_an_exited_container():
    c = container(state="exited", exit_code=3, finished_at=(NOW - timedelta(seconds=5)).isoformat())
    assert convert.container_status(c, NOW) == "Exited (3) 5 seconds ago"


def test_status_of_a_created_container():
    assert convert.container_status(container(state="created"), NOW) == "Created"


# ---- networks -----------------------------------------------------------------------

def test_network_json_of_the_default_bridge_with_a_container():
    data = convert.network_json(bridge(), [(container(), endpoint())])
    assert data == {
        "Name": "bridge",
        "Id": NET_ID,
        "Created": "2025-01-01T00:00:00.123456789Z",
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv4": True,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {
            CID: {"Name": "web", "EndpointID": EP_ID, "MacAddress": "02:42:ac:11:00:02",
                  "IPv4Address": "172.17.0.2/16", "IPv6Address": ""},
        },
        "Options": {"com.docker.network.bridge.name": "docker0"},
        "Labels": {},
    }


def test_network_json_shows_ip_range_and_labels():
    data = convert.network_json(user_net())
    assert data["IPAM"]["Config"] == [{"Subnet": "10.1.0.0/24", "IPRange": "10.1.0.128/25", "Gateway": "10.1.0.1"}]
    assert data["Labels"] == {"a": "b"}
    assert data["Containers"] == {}


def test_network_json_of_host_and_none_has_ipv4_disabled_and_empty_lists():
    for driver in ("host", "null"):
        net = NetworkRecord(id="h" * 64, name=driver, driver=driver, created="2025-01-01T00:00:00Z", predefined=True)
        data = convert.network_json(net)
        assert data["EnableIPv4"] is False
        assert data["IPAM"]["Config"] == []
        assert data["Options"] == {} and data["Labels"] == {}


# ---- containers ---------------------------------------------------------------------

def test_container_summary():
    data = convert.container_summary(container(labels={"l": "v"}), {NET_ID: bridge()}, NOW)
    assert data == {
        "Id": CID,
        "Names": ["/web"],
        "Image": "busybox",
        "ImageID": "sha256:" + "i" * 64,
        "Command": "sleep 3600",
        "Created": int(datetime(2025, 1, 2, 3, 0, tzinfo=timezone.utc).timestamp()),
        "Ports": [],
        "Labels": {"l": "v"},
        "State": "running",
        "Status": "Up 2 minutes",
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Networks": {"bridge": convert.endpoint_settings(container(), endpoint(), bridge())}},
        "Mounts": [],
    }


def test_endpoint_settings_on_the_default_bridge_have_no_dns_names():
    data = convert.endpoint_settings(container(), endpoint(), bridge())
    assert data == {
        "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "02:42:ac:11:00:02",
        "DriverOpts": None, "GwPriority": 0, "NetworkID": NET_ID, "EndpointID": EP_ID,
        "Gateway": "172.17.0.1", "IPAddress": "172.17.0.2", "IPPrefixLen": 16, "IPv6Gateway": "",
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None,
    }


def test_endpoint_settings_on_a_user_network_list_dns_names():
    net = user_net()
    ep = endpoint(net.id, "10.1.0.2", aliases=["api", "web"])
    data = convert.endpoint_settings(container(), ep, net)
    assert data["Aliases"] == ["api", "web"]
    assert data["DNSNames"] == ["web", "api", "cccccccccccc"]


def test_container_inspect_state_and_identity():
    data = convert.container_inspect(container(), {NET_ID: bridge()}, f"/run/shoal/containers/{CID}")
    assert data["Id"] == CID
    assert data["Name"] == "/web"
    assert data["Path"] == "sleep"
    assert data["Args"] == ["3600"]
    assert data["Image"] == "sha256:" + "i" * 64
    assert data["State"] == {
        "Status": "running", "Running": True, "Paused": False, "Restarting": False, "OOMKilled": False,
        "Dead": False, "Pid": 42, "ExitCode": 0, "Error": "", "StartedAt": "2025-01-02T03:02:05Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    }
    assert (data["HostsPath"], data["ResolvConfPath"], data["HostnamePath"]) == (
        f"/run/shoal/containers/{CID}/hosts", f"/run/shoal/containers/{CID}/resolv.conf", f"/run/shoal/containers/{CID}/hostname")


def test_container_inspect_config_echoes_the_record():
    c = container(entrypoint=[], labels={"l": "v"}, create_config={"ExposedPorts": {"80/tcp": {}}, "AttachStdout": True})
    config = convert.container_inspect(c, {}, "/d")["Config"]
    assert config["Cmd"] == ["sleep", "3600"]
    assert config["Entrypoint"] is None
    assert config["Env"] == ["PATH=/bin"]
    assert config["Image"] == "busybox"
    assert config["Hostname"] == "cccccccccccc"
    assert config["Labels"] == {"l": "v"}
    assert config["ExposedPorts"] == {"80/tcp": {}}
    assert config["AttachStdout"] is True


def test_container_inspect_host_config_keeps_json_file_logging_for_docker_py():
    c = container(network_mode="host", auto_remove=True, host_config={"NetworkMode": "host", "LogConfig": None})
    host_config = convert.container_inspect(c, {}, "/d")["HostConfig"]
    assert host_config["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert host_config["NetworkMode"] == "host"
    assert host_config["AutoRemove"] is True


def test_container_inspect_host_config_shows_group_add_and_oom_score_adj():
    c = container(host_config={"GroupAdd": ["audio", "4242"], "OomScoreAdj": 500})
    host_config = convert.container_inspect(c, {}, "/d")["HostConfig"]
    assert (host_config["GroupAdd"], host_config["OomScoreAdj"]) == (["audio", "4242"], 500)


def test_container_inspect_host_config_without_them_is_dockers_default():
    host_config = convert.container_inspect(container(host_config={}), {}, "/d")["HostConfig"]
    assert (host_config["GroupAdd"], host_config["OomScoreAdj"]) == (None, 0)


def test_container_inspect_network_settings_on_the_default_bridge():
    c = container(netns="shoal-cccccccccccc", create_config={"ExposedPorts": {"80/tcp": {}}})
    settings = convert.container_inspect(c, {NET_ID: bridge()}, "/d")["NetworkSettings"]
    assert settings["IPAddress"] == "172.17.0.2"
    assert settings["IPPrefixLen"] == 16
    assert settings["Gateway"] == "172.17.0.1"
    assert settings["MacAddress"] == "02:42:ac:11:00:02"
    assert settings["EndpointID"] == EP_ID
    assert settings["SandboxKey"] == "/var/run/netns/shoal-cccccccccccc"
    assert settings["Ports"] == {"80/tcp": None}
    assert list(settings["Networks"]) == ["bridge"]


def test_container_inspect_on_a_user_network_leaves_top_level_address_empty():
    net = user_net()
    c = container(network_mode="appnet", endpoints={net.id: endpoint(net.id, "10.1.0.2")})
    settings = convert.container_inspect(c, {net.id: net}, "/d")["NetworkSettings"]
    assert settings["IPAddress"] == ""
    assert settings["Networks"]["appnet"]["IPAddress"] == "10.1.0.2"


def test_container_networks_are_keyed_by_id_when_the_network_is_unknown():
    data = convert.container_summary(container(), {}, NOW)
    assert list(data["NetworkSettings"]["Networks"]) == [NET_ID]


# ---- exec ---------------------------------------------------------------------------

def test_exec_inspect():
    e = ExecRecord(id="x" * 64, container_id=CID, args=["cat", "/etc/hosts"], user="nobody", exit_code=1, pid=9)
    assert convert.exec_inspect(e) == {
        "CanRemove": False, "ContainerID": CID, "DetachKeys": "", "ExitCode": 1, "ID": "x" * 64,
        "OpenStderr": True, "OpenStdin": False, "OpenStdout": True,
        "ProcessConfig": {"arguments": ["/etc/hosts"], "entrypoint": "cat", "privileged": False,
                          "tty": False, "user": "nobody"},
        "Running": False, "Pid": 9,
    }


def test_exec_inspect_before_it_ran_has_a_null_exit_code():
    e = ExecRecord(id="x", container_id=CID, args=["true"])
    assert convert.exec_inspect(e)["ExitCode"] is None


# ---- images -------------------------------------------------------------------------

@dataclass
class FakeImage:
    id: str = "sha256:" + "a" * 64
    repo_tags: list[str] = field(default_factory=lambda: ["busybox:latest"])
    created: str = "2025-01-02T03:04:05Z"
    size: int = 4096
    architecture: str = "amd64"
    os: str = "linux"
    config: dict = field(default_factory=lambda: {"Cmd": ["sh"], "Labels": {"x": "y"}})
    layers: list[str] = field(default_factory=lambda: ["sha256:" + "b" * 64])
    rootfs: Path = Path("/nonexistent")


def test_image_summary():
    assert convert.image_summary(FakeImage()) == {
        "Id": "sha256:" + "a" * 64, "ParentId": "", "RepoTags": ["busybox:latest"], "RepoDigests": [],
        "Created": int(NOW.timestamp()), "Size": 4096, "SharedSize": -1, "Labels": {"x": "y"}, "Containers": -1,
    }


def test_image_summary_with_null_labels_has_an_empty_object():
    assert convert.image_summary(FakeImage(config={"Labels": None}))["Labels"] == {}


def test_image_inspect():
    data = convert.image_inspect(FakeImage())
    assert data["Id"] == "sha256:" + "a" * 64
    assert data["Created"] == "2025-01-02T03:04:05Z"
    assert data["Architecture"] == "amd64" and data["Os"] == "linux"
    assert data["Config"] == {"Cmd": ["sh"], "Labels": {"x": "y"}}
    assert data["RootFS"] == {"Type": "layers", "Layers": ["sha256:" + "b" * 64]}
    assert data["RepoDigests"] == []


# ---- stream framing -----------------------------------------------------------------

def test_stdout_frame_header():
    assert streams.encode_frame(streams.STDOUT, b"hi\n") == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"


def test_stderr_frame_length_is_big_endian():
    frame = streams.encode_frame(streams.STDERR, b"x" * 258)
    assert frame[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x02"
    assert len(frame) == 8 + 258


def test_tty_output_is_not_framed():
    assert streams.encode_output(streams.STDERR, b"raw", tty=True) == b"raw"


def test_raw_response_head_of_an_upgrade():
    head = streams.raw_response_head(101, "UPGRADED", {"Connection": "Upgrade", "Upgrade": "tcp"})
    assert head == b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
