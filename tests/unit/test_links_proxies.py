"""Legacy links (S13), proxy settings from the client config (S20), and Docker's Ports JSON."""
from __future__ import annotations

import json

import pytest

from shoal.api.convert import inspect_ports, summary_ports
from shoal.cli.proxies import config_path, proxy_env
from agent.network import etcfiles, links
from shoal.engine.records import ContainerRecord


def test_link_spec_with_and_without_alias():
    assert links.parse_link("db:database") == ("db", "database")
    assert links.parse_link("/db") == ("db", "db")
    with pytest.raises(ValueError):
        links.parse_link(":x")


def test_link_env_has_dockers_variables_in_order():
    env = links.link_env("my-db", "web", "172.17.0.2", [(5432, "tcp"), (53, "udp")],
                         ["PATH=/bin", "POSTGRES_USER=me"])
    assert env == [
        "MY_DB_NAME=/web/my-db",
        "MY_DB_PORT=udp://172.17.0.2:53",  # the lowest port, as moby sorts them
        "MY_DB_PORT_53_UDP=udp://172.17.0.2:53",
        "MY_DB_PORT_53_UDP_ADDR=172.17.0.2",
        "MY_DB_PORT_53_UDP_PORT=53",
        "MY_DB_PORT_53_UDP_PROTO=udp",
        "MY_DB_PORT_5432_TCP=tcp://172.17.0.2:5432",
        "MY_DB_PORT_5432_TCP_ADDR=172.17.0.2",
        "MY_DB_PORT_5432_TCP_PORT=5432",
        "MY_DB_PORT_5432_TCP_PROTO=tcp",
        "MY_DB_ENV_POSTGRES_USER=me",
    ]


def test_link_hosts_entry_names_alias_short_id_and_name():
    assert links.hosts_entry("172.17.0.2", "database", "a" * 64, "db") == (
        "172.17.0.2", ["database", "a" * 12, "db"])


def test_embedded_resolv_conf_lists_only_the_embedded_server():
    host = "nameserver 10.0.0.2\nsearch lab.test\noptions ndots:3 timeout:2\n"
    assert etcfiles.embedded_resolv_conf(host) == (
        "search lab.test\nnameserver 127.0.0.11\noptions ndots:0 timeout:2\n")


def test_write_in_place_keeps_the_inode(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("old content that is longer\n")
    inode = path.stat().st_ino
    etcfiles.write_in_place(path, "new\n")
    assert (path.read_text(), path.stat().st_ino) == ("new\n", inode)


def test_write_in_place_makes_a_missing_file_with_the_mode_asked(tmp_path):
    path = tmp_path / "hostname"
    etcfiles.write_in_place(path, "h1\n", mode=0o644)
    assert (path.read_text(), path.stat().st_mode & 0o777) == ("h1\n", 0o644)


def test_write_in_place_sets_the_mode_of_an_existing_file_and_keeps_its_inode(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("old\n")
    path.chmod(0o600)
    inode = path.stat().st_ino
    etcfiles.write_in_place(path, "127.0.0.1\tlocalhost \u00e9t\u00e9\n", mode=0o644)
    assert (path.read_text(encoding="utf-8"), path.stat().st_ino, path.stat().st_mode & 0o777) == (
        "127.0.0.1\tlocalhost \u00e9t\u00e9\n", inode, 0o644)


def test_proxies_from_the_config_file_set_both_cases(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"proxies": {"default": {
        "httpProxy": "http://proxy:3128", "noProxy": "localhost,10.0.0.0/8"}}}))
    assert proxy_env(str(config)) == [
        "HTTP_PROXY=http://proxy:3128", "http_proxy=http://proxy:3128",
        "NO_PROXY=localhost,10.0.0.0/8", "no_proxy=localhost,10.0.0.0/8",
    ]


def test_no_config_file_means_no_proxies(tmp_path):
    assert proxy_env(str(tmp_path / "missing.json")) == []


def test_a_malformed_config_file_is_an_error_naming_it(tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{nope")
    with pytest.raises(ValueError, match=f"loading config file {config}"):
        proxy_env(str(config))


def test_config_path_follows_shoal_config():
    assert config_path({"SHOAL_CONFIG": "/etc/shoalcfg"}) == "/etc/shoalcfg/config.json"


def _container(**fields) -> ContainerRecord:
    return ContainerRecord(id="c" * 64, name="web", image="busybox", image_id="sha256:x", created="", **fields)


def test_summary_ports_show_published_then_exposed_only():
    container = _container(
        published=[{"container_port": 80, "proto": "tcp", "host_ip": "", "host_port": 8080}],
        create_config={"ExposedPorts": {"80/tcp": {}, "53/udp": {}}},
    )
    assert summary_ports(container) == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 53, "Type": "udp"},
    ]


def test_inspect_ports_map_published_and_unpublished():
    container = _container(
        published=[{"container_port": 80, "proto": "tcp", "host_ip": "127.0.0.1", "host_port": 8080}],
        create_config={"ExposedPorts": {"80/tcp": {}, "53/udp": {}}},
    )
    assert inspect_ports(container) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
        "53/udp": None,
    }
