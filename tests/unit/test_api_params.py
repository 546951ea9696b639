"""Specification of shoal.api.params: versions, query values, filters, request bodies."""
from __future__ import annotations

import pytest

from common.errdefs import http_status
from shoal.api import params
from shoal.engine.errors import InvalidParameter
from shoal.engine.records import IPAMConfig
from shoal.engine.requests import EndpointRequest


# ---- versions -----------------------------------------------------------------------

def test_split_version_strips_the_version_prefix():
    assert params.split_version("/v1.50/networks/create") == ("1.50", "/networks/create")


def test_split_version_leaves_unversioned_paths():
    assert params.split_version("/_ping") == (None, "/_ping")


@pytest.mark.parametrize("version", [None, "1.24", "1.44", "1.50"])
def test_check_version_accepts_supported_versions(version):
    params.check_version(version)


def test_check_version_refuses_a_newer_version_with_moby_wording():
    with pytest.raises(InvalidParameter) as info:
        params.check_version("1.51")
    assert info.value.message == "client version 1.51 is too new. Maximum supported API version is 1.50"
    assert http_status(info.value) == 400


def test_check_version_refuses_an_older_version_with_moby_wording():
    with pytest.raises(InvalidParameter) as info:
        params.check_version("1.12")
    assert info.value.message == (
        "client version 1.12 is too old. Minimum supported API version is 1.24, "
        "please upgrade your client to a newer version"
    )


def test_check_version_compares_numerically_not_as_text():
    # As text "1.5" > "1.24"; as a version it is older.
    with pytest.raises(InvalidParameter) as info:
        params.check_version("1.5")
    assert "too old" in info.value.message


# ---- query values -------------------------------------------------------------------

@pytest.mark.parametrize("raw", [None, "", "0", "no", "false", "False", " NONE "])
def test_bool_value_false_spellings(raw):
    assert params.bool_value(raw) is False


@pytest.mark.parametrize("raw", ["1", "true", "True", "yes", "anything"])
def test_bool_value_true_spellings(raw):
    assert params.bool_value(raw) is True


def test_int_value_names_the_bad_parameter():
    with pytest.raises(InvalidParameter) as info:
        params.int_value("ten", "t")
    assert info.value.message == "invalid value for t: 'ten' is not an integer"


def test_int_value_default_for_empty():
    assert params.int_value("", "t", 7) == 7


# ---- filters ------------------------------------------------------------------------

def test_filters_in_cli_map_shape():
    assert params.parse_filters('{"driver":{"overlay":true},"name":{"a":true,"b":false}}') == {
        "driver": ["overlay"],
        "name": ["a"],
    }


def test_filters_in_docker_py_list_shape():
    assert params.parse_filters('{"name":["a","b"]}') == {"name": ["a", "b"]}


def test_filters_absent_is_empty():
    assert params.parse_filters(None) == {}
    assert params.parse_filters("") == {}


def test_filters_malformed_json_names_the_value():
    with pytest.raises(InvalidParameter) as info:
        params.parse_filters("{bad")
    assert info.value.message.startswith("invalid filters '{bad': ")


def test_filters_not_an_object_is_refused():
    with pytest.raises(InvalidParameter) as info:
        params.parse_filters('["a"]')
    assert info.value.message == "invalid filters '[\"a\"]': expected a JSON object"


def test_filters_with_a_bad_value_type_names_the_filter():
    with pytest.raises(InvalidParameter) as info:
        params.parse_filters('{"name": 3}')
    assert "'name'" in info.value.message


# ---- JSON helpers -------------------------------------------------------------------

def test_get_ci_matches_keys_case_insensitively():
    assert params.get_ci({"mode": 1}, "Mode") == 1


def test_get_ci_prefers_the_exact_key():
    assert params.get_ci({"Mode": 1, "mode": 2}, "Mode") == 1


def test_get_ci_treats_null_as_absent():
    assert params.get_ci({"Labels": None}, "Labels", {}) == {}


def test_parse_json_body_empty_is_an_empty_object():
    assert params.parse_json_body(b"") == {}
    assert params.parse_json_body(b"null") == {}


def test_parse_json_body_invalid_json_is_a_400_invalid_json():
    with pytest.raises(InvalidParameter) as info:
        params.parse_json_body(b"{x")
    assert info.value.message.startswith("invalid JSON: ")
    assert http_status(info.value) == 400


def test_parse_json_body_refuses_a_non_object():
    with pytest.raises(InvalidParameter) as info:
        params.parse_json_body(b"[1]")
    assert info.value.message == "invalid JSON: expected an object, got list"


# ---- networks -----------------------------------------------------------------------

def test_network_create_cli_body():
    body = {
        "Name": "ov1", "Driver": "overlay", "Scope": "", "Internal": True, "Attachable": True,
        "Ingress": False, "ConfigOnly": False, "ConfigFrom": None,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.10.0.0/24", "Gateway": "10.10.0.1"}]},
        "Options": {"encrypted": "", "com.docker.network.driver.mtu": "1400"}, "Labels": {"a": "b"},
    }
    req = params.parse_network_create(body)
    assert req.name == "ov1"
    assert req.driver == "overlay"
    assert req.internal and req.attachable and not req.ingress
    assert req.ipam_config == [IPAMConfig(subnet="10.10.0.0/24", gateway="10.10.0.1", ip_range="")]
    assert req.options == {"encrypted": "", "com.docker.network.driver.mtu": "1400"}
    assert req.labels == {"a": "b"}


def test_network_create_docker_py_body_with_nulls():
    body = {
        "Name": "n", "Driver": None, "Options": None, "Labels": None, "Attachable": None,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.5.0.0/24", "IPRange": None, "Gateway": None, "AuxiliaryAddresses": None}]},
    }
    req = params.parse_network_create(body)
    assert req.driver == "bridge"
    assert req.ipam_config == [IPAMConfig(subnet="10.5.0.0/24")]
    assert req.options == {} and req.labels == {}


def test_network_create_with_no_config_leaves_allocation_to_the_engine():
    req = params.parse_network_create({"Name": "n", "IPAM": {"Config": []}})
    assert req.ipam_config == []


def test_network_create_refuses_a_label_that_is_not_a_string():
    with pytest.raises(InvalidParameter) as info:
        params.parse_network_create({"Name": "n", "Labels": {"a": 1}})
    assert info.value.message == "invalid JSON: Labels['a'] must be a string, got 1"


def test_network_connect_body():
    container, endpoint = params.parse_network_connect(
        {"Container": "ctr1", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.0.0.9"}, "Aliases": ["web"],
                                                 "DriverOpts": {"k": "v"}, "Links": None, "NetworkID": ""}}
    )
    assert container == "ctr1"
    assert endpoint == EndpointRequest(ipv4="10.0.0.9", aliases=["web"], links=[], driver_opts={"k": "v"})


def test_network_disconnect_body():
    assert params.parse_network_disconnect({"Container": "c", "Force": True}) == ("c", True)


# ---- containers ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["web", "/web", "a1", "my_ctr.1-x"])
def test_valid_container_names(name):
    assert params.validate_container_name(name) == name.lstrip("/")


@pytest.mark.parametrize("name", ["a", "-web", "b@d", "a b", "_x"])
def test_invalid_container_name_uses_docker_wording(name):
    with pytest.raises(InvalidParameter) as info:
        params.validate_container_name(name)
    assert info.value.message == f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


def test_empty_container_name_means_generate_one():
    assert params.validate_container_name("") == ""


CLI_CREATE_BODY = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": True,
    "AttachStderr": True, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": ["A=1"],
    "Cmd": ["sleep", "3600"], "Image": "busybox", "Volumes": {}, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": {"l": "v"}, "ExposedPorts": {"80/tcp": {}},
    "HostConfig": {"Binds": None, "NetworkMode": "n1", "PortBindings": {}, "AutoRemove": True,
                   "Links": ["db:database"], "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}},
    "NetworkingConfig": {"EndpointsConfig": {"n1": {"IPAMConfig": {"IPv4Address": "172.20.0.5"}, "Aliases": ["web"]}}},
}


def test_container_create_cli_body():
    req = params.parse_container_create(CLI_CREATE_BODY)
    assert req.image == "busybox"
    assert req.cmd == ["sleep", "3600"]
    assert req.entrypoint is None
    assert req.env == ["A=1"]
    assert req.labels == {"l": "v"}
    assert req.network_mode == "n1"
    assert req.auto_remove is True
    assert req.links == ["db:database"]
    assert req.endpoints == {"n1": EndpointRequest(ipv4="172.20.0.5", aliases=["web"])}
    assert "HostConfig" not in req.raw_config and "NetworkingConfig" not in req.raw_config
    assert req.raw_config["ExposedPorts"] == {"80/tcp": {}}
    assert req.raw_host_config["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}


def test_container_create_docker_py_body():
    body = {
        "Image": "busybox", "Cmd": "echo hi", "Entrypoint": None, "Env": None, "Labels": None,
        "Tty": False, "HostConfig": {"NetworkMode": "default"}, "NetworkingConfig": None,
    }
    req = params.parse_container_create(body)
    assert req.cmd == ["echo hi"]
    assert req.env == [] and req.labels == {}
    assert req.network_mode == "default"
    assert req.endpoints == {}


def test_container_create_entrypoint_as_a_string():
    assert params.parse_container_create({"Image": "b", "Entrypoint": "/bin/sh"}).entrypoint == ["/bin/sh"]


def test_container_create_empty_entrypoint_resets_the_images():
    assert params.parse_container_create({"Image": "b", "Entrypoint": [""]}).entrypoint == []


def test_container_create_empty_cmd_takes_the_images():
    assert params.parse_container_create({"Image": "b", "Cmd": []}).cmd is None


def test_container_create_without_image_is_refused():
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create({"Cmd": ["true"]})
    assert info.value.message == "No image was specified: Config.Image is empty"


def test_container_create_refuses_a_cmd_of_numbers():
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create({"Image": "b", "Cmd": [1]})
    assert info.value.message == "invalid JSON: Cmd must be a string or a list of strings, got [1]"


def test_container_create_refuses_an_env_entry_without_a_name():
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create({"Image": "b", "Env": ["=x"]})
    assert info.value.message == "invalid environment variable: =x"


def test_container_create_lowercase_keys():
    req = params.parse_container_create({"image": "b", "cmd": ["true"], "hostconfig": {"networkmode": "host"}})
    assert (req.image, req.cmd, req.network_mode) == ("b", ["true"], "host")


# ---- exec ---------------------------------------------------------------------------

def test_exec_create_cli_body():
    body = {"User": "", "Privileged": False, "Tty": False, "ConsoleSize": [24, 80], "AttachStdin": False,
            "AttachStderr": True, "AttachStdout": True, "Detach": False, "DetachKeys": "", "Env": None,
            "WorkingDir": "", "Cmd": ["cat", "/etc/hosts"]}
    req = params.parse_exec_create(body)
    assert req.cmd == ["cat", "/etc/hosts"]
    assert req.attach_stdout and req.attach_stderr and not req.tty
    assert req.env == []


def test_exec_create_without_cmd_is_refused():
    with pytest.raises(InvalidParameter) as info:
        params.parse_exec_create({"Cmd": []})
    assert info.value.message == "No exec command specified"


def test_exec_start_body():
    assert params.parse_exec_start({"Detach": False, "Tty": True, "ConsoleSize": None}) == (False, True)
    assert params.parse_exec_start({}) == (False, False)


# ---- image filters (shoal.api.routes_images) ----------------------------------------

from dataclasses import dataclass, field  # noqa: E402

from shoal.api import routes_images  # noqa: E402


@dataclass
class _Image:
    repo_tags: list[str]
    config: dict = field(default_factory=dict)


@pytest.mark.parametrize("pattern, tag, expected", [
    ("busybox", "busybox:latest", True),
    ("busybox:latest", "busybox:latest", True),
    ("busybox:1*", "busybox:1.36", True),
    ("my*", "mybox:1", True),
    ("busybox", "mybox:1", False),
    ("localhost:5000/app", "localhost:5000/app:v1", True),
])
def test_reference_filter_matches_name_or_name_and_tag(pattern, tag, expected):
    assert routes_images.reference_matches(pattern, tag) is expected


def test_reference_filter_shows_only_the_matching_tags():
    image = _Image(["busybox:latest", "mybox:1"])
    assert routes_images.filter_images([image], {"reference": ["busybox"]}) == [(image, ["busybox:latest"])]


def test_dangling_filter_keeps_untagged_images():
    tagged, untagged = _Image(["a:1"]), _Image([])
    assert routes_images.filter_images([tagged, untagged], {"dangling": ["true"]}) == [(untagged, [])]


def test_label_filter_by_key_and_value():
    image = _Image(["a:1"], {"Labels": {"k": "v"}})
    assert routes_images.filter_images([image], {"label": ["k=v"]}) == [(image, ["a:1"])]
    assert routes_images.filter_images([image], {"label": ["k=w"]}) == []


def test_unknown_image_filter_is_refused():
    with pytest.raises(InvalidParameter) as info:
        routes_images.filter_images([], {"bogus": ["1"]})
    assert info.value.message == "invalid filter 'bogus'"


def test_pulled_reference_is_made_familiar():
    assert routes_images.familiar_reference("docker.io/library/busybox") == "busybox"
    assert routes_images.familiar_reference("docker.io/me/app") == "me/app"
    assert routes_images.familiar_reference("quay.io/x/y") == "quay.io/x/y"


# ---- smaller bad inputs (issue 7, item 8); wording checked against dockerd 20.10 -----------

def _create_error(body: dict) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create({"Image": "busybox", **body})
    assert http_status(info.value) == 400
    return info.value


def test_a_port_binding_that_is_not_a_list_is_dockers_decoder_error():
    error = _create_error({"HostConfig": {"PortBindings": {"80/tcp": "x"}}})
    assert error.message == (
        "json: cannot unmarshal string into Go struct field HostConfig.HostConfig.PortBindings of type []nat.PortBinding"
    )


def test_an_integer_host_port_is_dockers_decoder_error():
    error = _create_error({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": 8080}]}}})
    assert error.message == (
        "json: cannot unmarshal number into Go struct field PortBinding.HostConfig.PortBindings.HostPort of type string"
    )


def test_a_port_binding_entry_that_is_not_an_object_is_refused():
    error = _create_error({"HostConfig": {"PortBindings": {"80/tcp": ["8080"]}}})
    assert error.message == (
        "json: cannot unmarshal string into Go struct field HostConfig.HostConfig.PortBindings of type nat.PortBinding"
    )


def test_a_huge_api_version_is_too_new_not_an_internal_error():
    version = "1." + "9" * 5000
    with pytest.raises(InvalidParameter) as info:
        params.check_version(version)
    assert info.value.message == f"client version {version} is too new. Maximum supported API version is 1.50"


def test_a_huge_api_version_with_leading_zeros_compares_as_a_number():
    params.check_version("1." + "0" * 5000 + "44")


def test_a_container_name_with_a_trailing_newline_is_refused():
    with pytest.raises(InvalidParameter) as info:
        params.validate_container_name("abc\n")
    assert info.value.message == "Invalid container name (abc\n), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


def test_the_engines_name_check_refuses_a_trailing_newline_too():
    from shoal.engine.names import validate_container_name

    with pytest.raises(InvalidParameter) as info:
        validate_container_name("abc\n")
    assert info.value.message == "Invalid container name (abc\n), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


def test_a_relative_working_dir_is_refused_at_create():
    error = _create_error({"WorkingDir": "rel"})
    assert error.message == "the working directory 'rel' is invalid, it needs to be an absolute path"


def test_a_relative_working_dir_is_refused_at_exec_create():
    with pytest.raises(InvalidParameter) as info:
        params.parse_exec_create({"Cmd": ["pwd"], "WorkingDir": "rel"})
    assert info.value.message == "the working directory 'rel' is invalid, it needs to be an absolute path"


def test_an_env_entry_without_equals_is_accepted_as_docker_does():
    # moby keeps it in Config.Env and unsets that variable in the process (helpers.merge_env).
    assert params.parse_container_create({"Image": "busybox", "Env": ["NOEQ"]}).env == ["NOEQ"]


def test_an_unknown_capability_is_refused_at_create():
    error = _create_error({"HostConfig": {"CapAdd": ["FOO"]}})
    assert error.message == 'invalid CapAdd: unknown capability: "CAP_FOO"'


def test_an_unknown_security_opt_is_refused_at_create():
    error = _create_error({"HostConfig": {"SecurityOpt": ["foo=bar"]}})
    assert error.message == 'invalid --security-opt 2: "foo=bar"'


def test_a_privileged_exec_is_refused_not_ignored():
    with pytest.raises(InvalidParameter) as info:
        params.parse_exec_create({"Cmd": ["id"], "Privileged": True})
    assert info.value.message == "shoal does not support a privileged exec (Privileged) yet"


def test_the_docker_cli_exec_body_is_accepted():
    # As docker CLI 28 sent it for `docker exec c1 id` (captured on a unix socket).
    body = {"User": "", "Privileged": False, "Tty": False, "AttachStdin": False, "AttachStderr": True,
            "AttachStdout": True, "Detach": False, "DetachKeys": "", "Env": None, "WorkingDir": "", "Cmd": ["id"]}
    assert params.parse_exec_create(body).cmd == ["id"]


def test_version_before_orders_versions_as_numbers() -> None:
    from shoal.api.params import version_before

    assert [version_before(v, "1.42") for v in ("1.9", "1.41", "1.42", "1.100", "1")] == [True, True, False, False, True]


def test_version_before_takes_a_version_padded_with_thousands_of_zeros() -> None:
    # /v1.000...041/volumes/prune passes check_version (it is 1.41); int() of its minor part raises ValueError
    from shoal.api.params import version_before

    padded = "1." + "0" * 5000 + "41"
    assert (version_before(padded, "1.42"), version_before(padded, "1.41")) == (True, False)
