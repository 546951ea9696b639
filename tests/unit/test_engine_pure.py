"""Pure parts of the local engine: /etc files, names, env merging, signals, options, state files."""
from __future__ import annotations

import random
import signal

import pytest

from agent.network import etcfiles
from shoal.engine.helpers import merge_env as _merge_env, parse_signal as _parse_signal, parse_tail as _parse_tail
from shoal.engine.errors import InvalidParameter
from shoal.engine.names import generate_name, validate_container_name
from agent.network.drivers.bridge import parse_bool_option, parse_mtu
from shoal.engine.state import StateDir
from shoal.engine.timefmt import rfc3339_from_ns, unix_seconds


def test_hosts_file_has_the_localhost_lines_then_the_containers_address():
    assert etcfiles.hosts_file([("172.17.0.2", ["a1b2c3d4e5f6"])]) == (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "ff00::0\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
        "172.17.0.2\ta1b2c3d4e5f6\n"
    )


def test_hosts_file_of_a_container_without_address_has_only_localhost_lines():
    assert etcfiles.hosts_file([("", ["x"])]) == etcfiles.HOSTS_HEADER


def test_container_resolv_conf_drops_loopback_resolvers_and_keeps_search_and_options():
    host = "# generated\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nsearch lab.example\noptions ndots:2 edns0\n"
    assert etcfiles.container_resolv_conf(host) == (
        "search lab.example\nnameserver 10.1.2.3\noptions ndots:2 edns0\n"
    )


def test_container_name_rule_is_dockers():
    assert validate_container_name("/web.1_a-b") == "web.1_a-b"
    for bad in ("bad name", "-x", "x", "a/b", ""):
        with pytest.raises(InvalidParameter) as err:
            validate_container_name(bad)
        assert err.value.message == (
            f"Invalid container name ({bad}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )


def test_generated_names_avoid_taken_ones():
    rng = random.Random(1)
    first = generate_name(set(), random.Random(1))
    assert generate_name({first}, rng) != first


def test_env_overrides_replace_by_key_in_place():
    assert _merge_env(["PATH=/bin", "A=1"], ["A=2", "B=3"]) == ["PATH=/bin", "A=2", "B=3"]


def test_env_keep_first_does_not_override():
    assert _merge_env(["HOSTNAME=mine"], ["HOSTNAME=x", "Z=1"], keep_first=True) == ["HOSTNAME=mine", "Z=1"]


@pytest.mark.parametrize("text", ["SIGKILL", "KILL", "kill", "9"])
def test_signal_names_and_numbers_parse(text):
    assert _parse_signal(text) == signal.SIGKILL


def test_an_unknown_signal_is_refused_by_name():
    with pytest.raises(InvalidParameter) as err:
        _parse_signal("SIGNOPE")
    assert err.value.message == "Invalid signal: SIGNOPE"


def test_tail_must_be_a_number():
    assert _parse_tail("5") == 5
    with pytest.raises(InvalidParameter):
        _parse_tail("five")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("FALSE", False), ("0", False)])
def test_bool_options_parse(text, value):
    assert parse_bool_option("com.docker.network.bridge.enable_icc", text) is value


def test_a_bad_bool_option_names_the_option_and_value():
    with pytest.raises(InvalidParameter) as err:
        parse_bool_option("com.docker.network.bridge.enable_icc", "maybe")
    assert err.value.message == (
        "invalid value 'maybe' for option com.docker.network.bridge.enable_icc: expected true or false"
    )


def test_mtu_must_be_a_number_in_range():
    assert parse_mtu("1400") == 1400
    with pytest.raises(InvalidParameter):
        parse_mtu("big")
    with pytest.raises(InvalidParameter):
        parse_mtu("70000")


def test_state_dir_round_trips_and_keeps_a_stable_daemon_id(tmp_path):
    state = StateDir(tmp_path)
    state.save("networks", "n1", {"name": "a"})
    assert StateDir(tmp_path).load_all("networks") == {"n1": {"name": "a"}}
    assert state.daemon_id() == StateDir(tmp_path).daemon_id()
    state.delete("networks", "n1")
    assert state.load_all("networks") == {}
    assert not list((tmp_path / "networks").glob(".*tmp"))
    assert len(state.daemon_id()) == 64 and int(state.daemon_id(), 16) >= 0


def test_timestamps_are_rfc3339_with_nanoseconds():
    ns = 1_700_000_000_123_456_789
    assert rfc3339_from_ns(ns) == "2023-11-14T22:13:20.123456789Z"
    assert unix_seconds(rfc3339_from_ns(ns)) == 1_700_000_000


def test_merge_env_entry_without_equals_unsets_the_key_as_moby_does():
    assert _merge_env(["PATH=/bin", "NOEQ=image"], ["NOEQ", "A=1"]) == ["PATH=/bin", "A=1"]


def test_merge_env_entry_without_equals_and_no_such_key_adds_nothing():
    assert _merge_env(["PATH=/bin"], ["NOEQ"]) == ["PATH=/bin"]
